"""Typing: one static type per name of a variant's IR (``compiler/ir.py``), or the first
statement that does not type and why.

Input: the forward and adjoint IR, the generated module's namespace (kernels, globals)
and the types of the arguments.  Output: a ``Typing`` -- a type for every name of each
function, for every stack tag, the result and the seed -- or ``NotTyped``.  Nothing
downstream guesses a type.

Types (numba's idea, kept small):

- ``Num(kind)``: a number.  Kinds follow what the Python road computes with: ``f64``
  (``np.float64``), ``f32`` (``np.float32``), ``pyfloat`` (a Python float),
  ``float`` (a Python float or an ``np.float64``: a name assigned both), ``int`` (a
  Python int; native code holds an int64 and leaves the native road on overflow),
  ``bool``.
- ``NONE`` (``None``, a zero gradient), ``Opt(T)`` (None or a T: gradients, values
  before a loop's first trip), ``Tup(T...)`` (a tuple: a kernel's outputs, the saved
  values), ``GList(T...)`` (a list of per-item gradients, ``support.index_grad``),
  ``Parts(T...)`` (a kernel VJP's result: all None or all numbers), ``RANGE``,
  ``Slice(T, T, T)`` (``slice(start, stop, step)`` of ints and Nones: an array index).

Names are typed flow-insensitively: the type of a name is the join of every value
assigned to it (``None`` then a float is ``Opt(float)``), computed to a fixed point.

Semantics are the Python road's, decided here once per operation (``binary``,
``ufunc``): numpy's promotion with Python numbers as weak scalars (NEP 50), float64
arithmetic, and a ``Check`` for each place where the Python road could raise or leave
int64 (a division of two Python numbers by zero, int overflow, an int too large to
convert exactly, ``None`` where a value is needed).  The lowering emits those checks;
when one fails at run time, the native call returns "not here" and the Python road runs
the call instead (functions in the IR have no side effects), so the caller sees exactly
the Python road's result or exception.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

import gast
import numpy as np

from pullback.runtime.fused import FusedKernel

from .ir import dotted, is_atom


@dataclass(frozen=True)
class Num:
    kind: str

    def __str__(self):
        return self.kind


@dataclass(frozen=True)
class Opt:
    inner: object

    def __str__(self):
        return f"{self.inner}?"


@dataclass(frozen=True)
class Tup:
    items: tuple

    def __str__(self):
        return f"({', '.join(map(str, self.items))})"


@dataclass(frozen=True)
class GList:
    items: tuple

    def __str__(self):
        return f"[{', '.join(map(str, self.items))}]"


@dataclass(frozen=True)
class Parts:
    items: tuple

    def __str__(self):
        return f"parts({', '.join(map(str, self.items))})"


@dataclass(frozen=True)
class Arr:
    """A C-contiguous numpy array of ``kind`` elements and ``ndim`` axes; its shape is a
    run-time value (arrays are values: native code never writes one it did not just
    allocate)."""

    kind: str
    ndim: int

    def __str__(self):
        return f"{self.kind}[{self.ndim}d]"


@dataclass(frozen=True)
class Slice:
    """``slice(start, stop, step)``: each item NONE (absent), INT or Opt(INT) (absent
    where None at run time)."""

    items: tuple

    def __str__(self):
        return f"slice({', '.join(map(str, self.items))})"


@dataclass(frozen=True)
class Rule:
    """A VJP rule named in the adjoint (``vjp.sum_0``): a static function, no data."""

    name: str

    def __str__(self):
        return f"vjp.{self.name}"


@dataclass(frozen=True)
class _Atom:
    label: str

    def __str__(self):
        return self.label


NONE = _Atom("None")
RANGE = _Atom("range")
STR = _Atom("str")   # only as a stack tag
F64, F32, PYFLOAT, FLOAT, INT, BOOL = (Num(k) for k in ("f64", "f32", "pyfloat", "float",
                                                        "int", "bool"))
FLOAT_KINDS = ("f64", "f32", "pyfloat", "float")
#: Python-number kinds: an operation on two of them is Python's, not numpy's
WEAK = ("pyfloat", "float", "int")


class NotTyped(Exception):
    """A statement of the IR does not type (or the lowering lacks it)."""

    def __init__(self, reason: str, statement=None, part: str = ""):
        super().__init__(reason)
        self.reason, self.statement, self.part = reason, statement, part

    @property
    def line(self) -> int:
        return getattr(self.statement, "lineno", 0)


def argument_type(value):
    """The type of an argument as compiled code receives it, or None (not native)."""
    kind = {float: PYFLOAT, np.float64: F64, np.float32: F32, bool: BOOL}.get(type(value))
    if kind is not None:
        return kind
    if type(value) is int and -(1 << 63) <= value < (1 << 63):
        return INT
    if type(value) is np.ndarray and value.dtype == np.float64 \
            and 1 <= value.ndim <= MAX_NDIM:
        return Arr("f64", value.ndim)
    return None


#: the most axes an array argument may have on the native road
MAX_NDIM = 4


# ----- the lattice -------------------------------------------------------------------------

def can_be_none(t) -> bool:
    return t is NONE or isinstance(t, Opt)


def inner(t):
    """``t`` without its None case (None for NONE)."""
    return None if t is NONE else t.inner if isinstance(t, Opt) else t


def join(a, b):
    """The type of a name assigned an ``a`` and a ``b``; raises NotTyped if none."""
    if a is None or a == b:
        return b
    if b is None:
        return a
    if can_be_none(a) or can_be_none(b):
        ia, ib = inner(a), inner(b)
        return Opt(ia if ib is None else ib if ia is None else join(ia, ib))
    if isinstance(a, Num) and isinstance(b, Num):
        if a.kind in ("f64", "pyfloat", "float") and b.kind in ("f64", "pyfloat", "float"):
            return FLOAT
    for kind in (Tup, GList, Parts):
        if isinstance(a, kind) and isinstance(b, kind) and len(a.items) == len(b.items):
            return kind(tuple(join(x, y) for x, y in zip(a.items, b.items, strict=True)))
    raise NotTyped(f"a name holds a {a} here and a {b} elsewhere")


# ----- numbers: the Python road's semantics --------------------------------------------------

@dataclass(frozen=True)
class Binary:
    """How to compute ``a OP b``: the result kind, the kind both operands are converted
    to (``operand``), and which checks the Python road implies."""

    kind: str
    operand: str
    python_division: bool = False   # both may be Python numbers: /0 raises
    overflow: bool = False          # int arithmetic: leave int64 -> Python road


_INT_OPS = {"add", "sub", "mul", "floordiv", "mod"}
_FLOAT_OPS = {"add", "sub", "mul", "div", "pow"}


def binary(op: str, a: str, b: str) -> Binary:
    """``a OP b`` for number kinds ``a`` and ``b`` (op: add sub mul div floordiv mod pow)."""
    if "bool" in (a, b):
        raise NotTyped(f"arithmetic on a bool ({op})")
    if a == b == "int":
        if op == "div":
            return Binary("pyfloat", "int", python_division=True)
        if op not in _INT_OPS:
            raise NotTyped(f"int {op} is not lowered (Python's ints)")
        return Binary("int", "int", python_division=op in ("floordiv", "mod"), overflow=True)
    if op not in _FLOAT_OPS:
        raise NotTyped(f"float {op} is not lowered")
    kind = promote(a, b, what=op)
    weak = a in WEAK and b in WEAK
    if op == "pow" and weak:
        raise NotTyped("a power of two Python numbers (Python's rules: errors, complex)")
    return Binary(kind, kind, python_division=weak and op == "div")


def promote(a: str, b: str, what: str) -> str:
    """numpy's result kind for two number kinds (Python numbers are weak, NEP 50)."""
    kinds = {a, b}
    if "f64" in kinds:
        return "f64"
    if "f32" in kinds:
        if "float" in kinds:   # a Python float or an np.float64: f32 or f64
            raise NotTyped(f"{what} of a float32 and a value that is a Python float on one "
                           f"path and an np.float64 on another")
        return "f32"
    if kinds <= {"pyfloat", "int"}:
        return "pyfloat"
    return "float"


def ufunc(name: str, kinds) -> str:
    """The kind a numpy function of numbers returns (``np.sin(x)``, ``np.maximum(x, y)``)."""
    if any(k == "bool" for k in kinds):
        raise NotTyped(f"np.{name} of a bool")
    if all(k == "int" for k in kinds):
        raise NotTyped(f"np.{name} of ints (int64 results are not lowered)")
    kind = kinds[0] if len(kinds) == 1 else promote(*kinds, what=name)
    return "f32" if kind == "f32" else "f64"


#: the scalar-language functions the native road lowers (lower.FUNCTIONS' names) and
#: the numpy spelling each has in generated code
SCALAR_FUNCTIONS = {"exp": 1, "log": 1, "sin": 1, "cos": 1, "tan": 1, "tanh": 1, "log1p": 1,
                    "expm1": 1, "sqrt": 1, "fabs": 1, "floor": 1, "ceil": 1, "round": 1,
                    "sign": 1, "max": 2, "min": 2, "pow": 2}
NUMPY_NAMES = {"_np.exp": "exp", "_np.log": "log", "_np.sin": "sin", "_np.cos": "cos",
               "_np.tan": "tan", "_np.tanh": "tanh", "_np.log1p": "log1p",
               "_np.expm1": "expm1", "_np.sqrt": "sqrt", "_np.abs": "fabs",
               "_np.floor": "floor", "_np.ceil": "ceil", "_np.round": "round",
               "_np.sign": "sign", "_np.maximum": "max", "_np.minimum": "min",
               "_np.power": "pow", "_kernels.power": "pow", "_kernels.absolute": "fabs"}
# numpy coverage (issue 11 item 5): libm functions and logaddexp (lower.FUNCTIONS)
_COVERAGE = {"sinh": "sinh", "cosh": "cosh", "asin": "arcsin", "acos": "arccos",
             "atan": "arctan", "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh",
             "log2": "log2", "log10": "log10", "exp2": "exp2", "cbrt": "cbrt",
             "atan2": "arctan2", "hypot": "hypot", "logaddexp": "logaddexp"}
SCALAR_FUNCTIONS.update({f: 2 if f in ("atan2", "hypot", "logaddexp") else 1
                         for f in _COVERAGE})
NUMPY_NAMES.update({f"_np.{numpy_name}": f for f, numpy_name in _COVERAGE.items()})

_AST_OPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div",
            ast.FloorDiv: "floordiv", ast.Mod: "mod", ast.Pow: "pow"}
_GAST_OPS = {gast.Add: "add", gast.Sub: "sub", gast.Mult: "mul", gast.Div: "div",
             gast.FloorDiv: "floordiv", gast.Mod: "mod", gast.Pow: "pow"}


def constant_type(value):
    if type(value) is bool:
        return BOOL
    if value is None:
        return NONE
    if type(value) is int and -(1 << 63) <= value < (1 << 63):
        return INT
    if type(value) is float:
        return PYFLOAT
    if type(value) is str:
        return STR
    raise NotTyped(f"the constant {value!r}")


def expression_kind(node, env: dict) -> str:
    """The kind of a scalar-language expression (a kernel statement, ``ast``)."""
    if isinstance(node, ast.Name):
        return number(env[node.id], node.id).kind
    if isinstance(node, ast.Constant):
        t = constant_type(node.value)
        if not isinstance(t, Num) or t.kind == "bool":
            raise NotTyped(f"the constant {node.value!r} in a kernel")
        return t.kind
    if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
        return binary(_AST_OPS[type(node.op)], expression_kind(node.left, env),
                      expression_kind(node.right, env)).kind
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        kind = expression_kind(node.operand, env)
        if kind == "bool":
            raise NotTyped("negation of a bool")
        return kind
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        return compare_kind([expression_kind(node.left, env),
                             expression_kind(node.comparators[0], env)])
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords \
            and node.func.id == "where" and len(node.args) == 3:
        expression_kind(node.args[0], env)
        return ufunc("where", [expression_kind(a, env) for a in node.args[1:]])
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and SCALAR_FUNCTIONS.get(node.func.id) == len(node.args) and not node.keywords:
        return ufunc(node.func.id, [expression_kind(a, env) for a in node.args])
    raise NotTyped(f"`{ast.unparse(node)}` in a kernel is not lowered")


def compare_kind(kinds) -> str:
    """A kernel's comparison (``g * (x >= y)``, ``where(x > 0, ...)``) as the number 1.0 or
    0.0.  numpy gives a bool that the next operation promotes; its value is exact in any
    float, so only the kind of that promotion matters: float64, or refused with float32
    (a bool does not keep float32 against a Python float as a float32 would)."""
    if "f32" in kinds:
        raise NotTyped("a comparison in a float32 kernel is not lowered")
    if "bool" in kinds:
        raise NotTyped("a comparison of bools in a kernel is not lowered")
    return "f64" if "f64" in kinds else "float"


def number(t, what: str) -> Num:
    """``t`` as a number (an ``Opt`` is checked for None at run time)."""
    t = inner(t) if isinstance(t, Opt) else t
    if not isinstance(t, Num):
        raise NotTyped(f"{what} is a {t}, not a number")
    return t


# ----- kernels -------------------------------------------------------------------------------

def kernel_supported(kernel: FusedKernel) -> None:
    if kernel.forward_program[3] is not None:
        raise NotTyped(f"{kernel.name} ends in a reduction (arrays only)")


def program_kinds(params, statements, env: dict) -> dict:
    """Kinds of every value of a scalar-language program, ``env`` giving the inputs."""
    env = dict(env)
    for target, text in statements:
        env[target] = Num(expression_kind(ast.parse(text.strip(), mode="eval").body, env))
    return env


def kernel_outputs(kernel: FusedKernel, inputs) -> Tup:
    """The tuple ``kernel(*inputs)`` returns on numbers."""
    kernel_supported(kernel)
    params, statements, outputs, _ = kernel.forward_program
    env = program_kinds(params, statements, dict(zip(params, inputs, strict=True)))
    return Tup(tuple(env[o] for o in outputs))


def vjp_seed_kinds(kernel: FusedKernel, grads) -> tuple:
    """The output gradients the VJP computes with: ``0.0`` where one is None."""
    n = len(kernel.adjoint_program[0])
    items = grads.items if isinstance(grads, GList) else ()
    if len(items) < n:
        raise NotTyped(f"the gradient of {kernel.name}'s outputs is a {grads}")
    return tuple(Num(join(inner(g), PYFLOAT).kind) if can_be_none(g) else number(g, "a "
                 "gradient") for g in items[:n])


def kernel_vjp(kernel: FusedKernel, grads, outputs, inputs) -> Parts:
    """The type of ``kernel.vjp(grads, outputs, *inputs)`` on numbers."""
    kernel_supported(kernel)
    gnames, onames, inames, statements, results = kernel.adjoint_program
    if grads is NONE:
        return Parts(tuple(NONE for _ in inames))
    out = inner(outputs)
    if not isinstance(out, Tup) or len(out.items) != len(onames):
        raise NotTyped(f"{kernel.name}.vjp of outputs typed {outputs}")
    env = dict(zip(gnames, vjp_seed_kinds(kernel, inner(grads)), strict=True))
    env.update(zip(onames, out.items, strict=True))
    env.update(zip(inames, inputs, strict=True))
    env = program_kinds(None, statements, env)
    return Parts(tuple(NONE if r is None else env[r] for r in results))   # None: no gradient


# ----- gradient helpers ----------------------------------------------------------------------

def add_grads(total, part):
    """The type of ``support.add_grads(total, part)``."""
    if part is NONE:
        return total
    if total is NONE:
        return part
    t, p = inner(total), inner(part)
    if isinstance(t, GList) and isinstance(p, GList) and len(t.items) == len(p.items):
        both = GList(tuple(add_grads(a, b) for a, b in zip(t.items, p.items, strict=True)))
    elif isinstance(t, Num) and isinstance(p, Num):
        both = Num(binary("add", t.kind, p.kind).kind)
    elif isinstance(t, (Arr, Num)) and isinstance(p, (Arr, Num)):
        both = array_binary("add", t, p)
    else:
        raise NotTyped(f"adding gradients of types {total} and {part}")
    result = both
    if can_be_none(part):
        result = join(result, total)
    if can_be_none(total):
        result = join(result, part)
    return result


def index_grad(total, g, value, key):
    """The type of ``support.index_grad(total, g, value, key)``."""
    if g is NONE or value is RANGE:
        return total
    v = inner(value)
    if not isinstance(v, Tup) or type(key) is not int or not 0 <= key < len(v.items):
        raise NotTyped(f"the gradient of indexing a {value}")
    t = inner(total)
    if t is None:
        items = [NONE] * len(v.items)
    elif isinstance(t, GList) and len(t.items) == len(v.items):
        items = list(t.items)
    else:
        raise NotTyped(f"the gradient of a tuple typed {total}")
    items[key] = add_grads(items[key], g)
    return join(total, GList(tuple(items)))


# ----- the typing pass ----------------------------------------------------------------------

@dataclass
class Typing:
    """The result of typing a variant's IR for one argument signature."""

    params: list
    arguments: tuple        # the argument types
    forward: dict           # name -> type, forward function
    adjoint: dict           # name -> type, adjoint function
    tags: dict              # stack tag -> type pushed
    result: object          # the forward's result type
    seed: object            # result_grad's type
    gradients: tuple        # the adjoint's returned types, one per parameter
    namespace: dict
    functions: object = None   # the Functions registry of native calls (None: no calls)
    calls: dict = None         # callee reference -> the argument types of its calls here


class _Unknown(Exception):
    """An operand is not typed yet (fixed-point iteration: try again next round)."""


class _Typer:
    def __init__(self, namespace, env, tags, part, pops=None, functions=None, calls=None):
        self.namespace, self.env, self.tags, self.part = namespace, env, tags, part
        self.pops = pops   # tag -> type (adjoint), None in the forward
        self.functions = functions   # Functions: calls of user functions (None: refused)
        self.calls = {} if calls is None else calls   # shared by a function's two parts
        self.changed = False
        self.strict = False

    def run(self, body):
        for _ in range(100):
            self.changed = False
            self.block(body)
            if not self.changed:
                self.strict = True
                self.block(body)
                return
        raise NotTyped("types did not settle", None, self.part)

    def block(self, stmts):
        for s in stmts:
            try:
                getattr(self, f"stmt_{type(s).__name__.lower()}")(s)
            except _Unknown as unknown:
                if self.strict:
                    raise NotTyped(f"{unknown} is read before any assignment", s,
                                   self.part) from None
            except NotTyped as error:
                if error.statement is None:
                    error.statement, error.part = s, self.part
                raise

    def bind(self, name, t):
        new = join(self.env.get(name), t)
        if new != self.env.get(name):
            self.env[name] = new
            self.changed = True

    def atom(self, node):
        if isinstance(node, gast.Constant):
            return constant_type(node.value)
        t = self.env.get(node.id)
        if t is None:
            raise _Unknown(node.id)
        return t

    # statements
    def stmt_assign(self, s):
        self.bind(s.targets[0].id, self.value(s.value))

    def stmt_expr(self, s):
        call = s.value
        if isinstance(call, gast.Call) and dotted(call.func) == "support.leaf":
            value = self.atom(call.args[0])   # a check the Python road makes: never fails
            if not (is_array(value) or isinstance(inner(value), Num)):   # on these types
                raise NotTyped(f"support.leaf of a {value}")
            return
        if not (isinstance(call, gast.Call) and dotted(call.func) == "_stack.push"):
            raise NotTyped("a statement with a side effect")
        tag = call.args[1].value
        new = join(self.tags.get(tag), self.atom(call.args[0]))
        if new != self.tags.get(tag):
            if self.pops is not None:
                raise NotTyped("the adjoint pushes")
            self.tags[tag] = new
            self.changed = True

    def stmt_if(self, s):
        truth(self.atom(s.test), s.test.id)
        self.block(s.body)
        self.block(s.orelse)

    def stmt_while(self, s):
        try:
            truth(self.atom(s.test), s.test.id)
        except _Unknown:
            if self.strict:
                raise
        self.block(s.body)

    def stmt_for(self, s):
        if self.atom(s.iter) is not RANGE:
            raise NotTyped(f"a for loop over a {self.atom(s.iter)} (ranges only)")
        self.bind(s.target.id, INT)
        self.block(s.body)

    def stmt_return(self, s):
        pass

    # values
    def value(self, node):
        if is_atom(node):
            return self.atom(node)
        visitor = getattr(self, f"value_{type(node).__name__.lower()}", None)
        if visitor is None:
            raise NotTyped(f"a {type(node).__name__} expression")
        return visitor(node)

    def value_binop(self, node):
        if type(node.op) not in _GAST_OPS:   # << >> & | ^ of ints: left to the Python road
            raise NotTyped(f"the operator {type(node.op).__name__} (not lowered natively)")
        if is_array(self.atom(node.left)) or is_array(self.atom(node.right)):
            return array_binary(_GAST_OPS[type(node.op)], self.atom(node.left),
                                self.atom(node.right))
        a = number(self.atom(node.left), "an operand")
        b = number(self.atom(node.right), "an operand")
        return Num(binary(_GAST_OPS[type(node.op)], a.kind, b.kind).kind)

    def value_unaryop(self, node):
        t = self.atom(node.operand)
        if isinstance(node.op, gast.Not):
            truth(t, "an operand of not")
            return BOOL
        if is_array(t):
            return array_binary("sub", Num("f64"), t)   # -x: an elementwise negation
        t = number(t, "an operand")
        if t.kind == "bool":
            raise NotTyped("negation of a bool")
        return t

    def value_boolop(self, node):
        for v in node.values:
            if self.atom(v) != BOOL:
                raise NotTyped("and/or of values that are not bools")
        return BOOL

    def value_compare(self, node):
        a, b = self.atom(node.left), self.atom(node.comparators[0])
        op = node.ops[0]
        if isinstance(op, (gast.Is, gast.IsNot)):
            if b is not NONE:
                raise NotTyped("`is` with something other than None")
            return BOOL
        ka, kb = number(a, "a compared value").kind, number(b, "a compared value").kind
        if "bool" in (ka, kb):
            raise NotTyped("a comparison of bools")
        if "f32" in (ka, kb) and ka != kb and "f64" not in (ka, kb):
            raise NotTyped("a comparison of a float32 with a Python number")
        return BOOL

    def value_subscript(self, node):
        t = self.atom(node.value)
        if is_array(t) and isinstance(self.atom(node.slice), Slice):
            return inner(t)   # x[a:b:c]: the same dtype and axes
        if is_array(t):
            return array_item(t, self.atom(node.slice))
        if isinstance(node.slice, gast.Name):   # range[i] of a normalized loop
            if t is not RANGE or number(self.atom(node.slice), "an index").kind != "int":
                raise NotTyped(f"indexing a {t} by a {self.atom(node.slice)}")
            return INT
        key = node.slice.value
        base = inner(t)
        if isinstance(base, (Tup, GList, Parts)) and type(key) is int \
                and 0 <= key < len(base.items):
            item = base.items[key]
            if isinstance(base, Parts) and isinstance(item, (Num, Arr)):
                return Opt(item)
            return item
        raise NotTyped(f"indexing a {t} by {key!r}")

    def value_tuple(self, node):
        return Tup(tuple(self.atom(e) for e in node.elts))

    def value_attribute(self, node):
        base, _, attr = dotted(node).rpartition(".")
        if base == "vjp" and "." not in base and self.namespace.get("vjp") is _VJP_MODULE:
            return Rule(attr)
        if "." not in base and is_array(self.env.get(base)):
            return array_attribute(self.env[base], attr)
        raise NotTyped(f"the attribute {dotted(node)} (not lowered natively)")

    def value_call(self, node):
        name = dotted(node.func)
        head, _, attr = name.partition(".")
        if attr in NUMPY_CONSTRUCTORS and self.namespace.get(head) is np:
            if node.keywords:
                raise NotTyped(f"keyword arguments to np.{attr}")
            return NUMPY_CONSTRUCTORS[attr](node, [self.atom(a) for a in node.args])
        if name in ARRAY_CALLS:
            keywords = {}
            for k in node.keywords:
                if not isinstance(k.value, gast.Constant):
                    raise NotTyped(f"a computed keyword argument {k.arg}= to {name}")
                keywords[k.arg] = k.value.value
            return ARRAY_CALLS[name](node, [self.atom(a) for a in node.args], keywords)
        if node.keywords:
            raise NotTyped(f"keyword arguments to {name}")
        head, _, attr = name.partition(".")
        target = self.namespace.get(head)
        if attr in ("forward", "adjoint", "tangent") and hasattr(target, "function"):
            if self.functions is not None:
                return self.user_call(head, target, attr, node)
            user = getattr(getattr(target.function, "fn", None), "__name__", head)
            raise NotTyped(f"a call of the user function {user}() (native calls between "
                           f"functions are not lowered yet)")
        args = [self.atom(a) for a in node.args]
        if isinstance(target, FusedKernel) and any(map(is_array, args)):
            if not attr:
                return array_kernel_outputs(target, args)
            if attr == "with_gradient":
                return array_with_gradient(target, args[1:])
            if attr == "vjp" and len(inner(args[1]).items) > len(target.forward_program[2]):
                return unit_gradients(target, args[0], args[1])
            if attr == "vjp":
                return array_kernel_vjp(target, args[0], args[1], args[2:])
        if isinstance(target, FusedKernel):
            if not attr:
                return kernel_outputs(target, [number(a, "a kernel input") for a in args])
            if attr == "vjp":
                inputs = [number(a, "a kernel input") for a in args[2:]]
                return kernel_vjp(target, args[0], args[1], inputs)
            raise NotTyped(f"{name}")
        if name in NUMPY_NAMES:
            return Num(ufunc(NUMPY_NAMES[name], [number(a, f"an argument of {name}").kind
                                                 for a in args]))
        rule = _CALLS.get(name, False)
        if rule is False and head in ("ops", "npops", "mathops") and attr in ELEMENTWISE:
            kinds = [number(a, f"an argument of {name}").kind for a in args]
            if head == "mathops":   # a Python float, as Python's math gives it
                if "f32" in kinds:
                    raise NotTyped(f"math.{attr} of a float32 (Python computes it in "
                                   "double; not lowered natively)")
                ufunc(attr, kinds)   # the same refusals
                return Num("pyfloat")
            return Num(ufunc(attr, kinds))
        if rule is False:
            raise NotTyped(f"a call of {name} (not lowered natively)")
        if name in ("range", "reversed", "len", "slice") and self.namespace.get(name, getattr(
                builtins, name)) is not getattr(builtins, name):
            raise NotTyped(f"{name} is rebound")
        if name == "_stack.pop":
            if self.pops is None:
                raise NotTyped("the forward pops")
            tag = node.args[0].value
            if tag not in self.pops:
                raise NotTyped(f"a pop of {tag!r}, which the forward never pushes")
            return self.pops[tag]
        return rule(node, args)


    def user_call(self, ref, variant, attr, node):
        """``ref.forward(_stack, *args)``: the callee's result for the join of the argument
        types of every forward call of ``ref`` in this function (one native signature per
        callee and caller); ``ref.adjoint(_stack, g)``: its gradients for that signature and
        the type of ``g``."""
        if attr in ("forward", "tangent"):   # a tangent variant's call: no _stack argument
            args = tuple(self.atom(a) for a in node.args[attr == "forward":])
            known = self.calls.get(ref)
            joined = args if known is None else tuple(
                join(a, b) for a, b in zip(known, args, strict=True))
            if joined != known:
                self.calls[ref] = joined
                self.changed = True
            return self.functions.forward_result(variant, joined)
        signature = self.calls.get(ref)
        if signature is None:
            raise NotTyped(f"{ref}.adjoint without its forward call")
        return self.functions.gradients(variant, signature, self.atom(node.args[1]))


def truth(t, what):
    if not (isinstance(t, Num)):
        raise NotTyped(f"the truth of {what}, a {t}")


def _range(node, args):
    if not 1 <= len(args) <= 3 or any(number(a, "a range bound").kind != "int" for a in args):
        raise NotTyped("range() of values that are not ints")
    return RANGE


def _len(node, args):
    if args != [RANGE]:
        raise NotTyped("len() of something other than a range")
    return INT


def _reversed(node, args):
    if args != [RANGE]:
        raise NotTyped("reversed() of something other than a range")
    return RANGE


def _double(node, args):
    kind = number(args[0], "the operand of support.double").kind
    return Num(binary("add", kind, kind).kind)


def _unbroadcast(node, args):
    g, value = args
    for t in (g, value):
        if not (t is NONE or isinstance(inner(t), Num)):
            raise NotTyped(f"support.unbroadcast of a {t}")
    return g


def _item_grad(node, args):
    g, index = args[0], node.args[1]
    base = inner(g)
    if base is None:
        return NONE
    if isinstance(base, (GList, Tup)) and isinstance(index, gast.Constant) \
            and type(index.value) is int and 0 <= index.value < len(base.items):
        item = base.items[index.value]
        return join(NONE, item) if can_be_none(g) else item
    raise NotTyped(f"support.item_grad of a {g}")


def _index_grad(node, args):
    key = node.args[3]
    if not isinstance(key, gast.Constant):
        raise NotTyped("support.index_grad by a computed key")
    return index_grad(args[0], args[1], args[2], key.value)


def _item_grad_into(node, args):
    key, length = node.args[2], node.args[3]
    if not (isinstance(key, gast.Constant) and isinstance(length, gast.Constant)):
        raise NotTyped("support.item_grad_into by a computed key")
    return index_grad(args[0], args[1], Tup((NONE,) * length.value), key.value)


def _like(node, args):
    t = args[0]
    if t is NONE or isinstance(inner(t), (Num, Tup, Arr)):
        return t   # natively a number's stand-in is the number: only its type is read
    raise NotTyped(f"support.like of a {t}")


def _slice_call(node, args):
    """``slice(stop)`` / ``slice(start, stop[, step])`` of ints, Nones and ints that may
    be None (bools and floats are the Python road's)."""
    if not 1 <= len(args) <= 3 or any(a not in (NONE, INT, Opt(INT)) for a in args):
        raise NotTyped(f"slice({', '.join(map(str, args))}) (native: of ints and None)")
    items = [NONE, args[0], NONE] if len(args) == 1 else [*args, NONE][:3]
    return Slice(tuple(items))


_CALLS = {
    "range": _range, "slice": _slice_call, "reversed": _reversed, "len": _len,
    "support.like": _like, "support.item_grad_into": _item_grad_into,
    "support.add_grads": lambda node, args: add_grads(*args),
    "support.unbroadcast": _unbroadcast, "support.item_grad": _item_grad,
    "support.index_grad": _index_grad, "support.double": _double,
}
_CALLS["_stack.pop"] = None   # typed by its tag, in _Typer.value_call

#: primitives lowered through their scalar formula when called unfused (``ops.sin(x)``)
ELEMENTWISE = {"add", "subtract", "multiply", "divide", "negative", "exp", "log", "sqrt",
               "square", "abs", "sign", "sin", "cos", "tan", "tanh", "log1p", "expm1",
               "reciprocal", "floor", "ceil", "round", "maximum", "minimum", "relu", "power"}
ELEMENTWISE |= set(_COVERAGE.values())   # sinc is not: its formula compares (float32)


def infer(forward, adjoint, namespace: dict, arguments: tuple, variant=None) -> Typing:
    """Type the IR ``(forward, adjoint)`` for ``arguments`` (argument types).

    ``variant``: the pipeline's Variant the IR is of; with it, calls of other user
    functions (and of itself) are typed as native calls (``Functions``).

    Raises:
        NotTyped: the first statement that does not type, and why.
    """
    params = [a.id for a in forward.args.args[1:]]   # after _stack
    if len(params) != len(arguments):
        raise NotTyped(f"{len(arguments)} arguments for {len(params)} parameters")
    env = dict(zip(params, arguments, strict=True))
    tags, calls = {}, {}
    functions = None if variant is None else Functions()
    key = ("forward", id(variant), tuple(arguments))
    with _active(functions, key, env, forward):
        _Typer(namespace, env, tags, "forward", functions=functions, calls=calls).run(
            forward.body)
    result = _returned(forward, env)
    if isinstance(result, Opt):   # None before an early return's value: checked when lowered
        result = result.inner
    if not isinstance(result, Num) or result.kind not in FLOAT_KINDS:
        raise NotTyped(f"the function returns a {result} (native: a float)",
                       forward.body[-1], "forward")
    seed = F32 if result.kind == "f32" else F64
    adjoint_env = {"result_grad": seed}
    with _active(functions, ("adjoint", id(variant), tuple(arguments), seed), adjoint_env,
                 adjoint):
        _Typer(namespace, adjoint_env, dict(tags), "adjoint", pops=tags, functions=functions,
               calls=calls).run(adjoint.body)
    gradients = _returned(adjoint, adjoint_env)
    if not isinstance(gradients, Tup) or len(gradients.items) != len(params):
        raise NotTyped(f"the adjoint returns a {gradients}", adjoint.body[-1], "adjoint")
    for g, a in zip(gradients.items, arguments, strict=True):
        base = inner(g)
        if isinstance(base, Arr) and base == a:
            continue   # an array's gradient: checked to have the array's shape when lowered
        if not (base is None or (isinstance(base, Num) and base.kind in FLOAT_KINDS)):
            raise NotTyped(f"a gradient typed {g}", adjoint.body[-1], "adjoint")
    return Typing(params, tuple(arguments), env, adjoint_env, tags, result, seed,
                  gradients.items, namespace, functions, calls)


def _returned(fn, env):
    last = fn.body[-1]
    if not isinstance(last, gast.Return):
        raise NotTyped("no final return", last)
    value = last.value
    if isinstance(value, gast.Tuple):
        return Tup(tuple(constant_type(e.value) if isinstance(e, gast.Constant)
                         else env[e.id] for e in value.elts))
    return constant_type(value.value) if isinstance(value, gast.Constant) else env[value.id]


# ----- arrays (issue 10, item 4) -------------------------------------------------------------
# The Python road's numpy semantics on float64 arrays of run-time shapes: elementwise
# operations with broadcasting (a shape mismatch: the Python road, which raises numpy's
# ValueError), whole-array and per-axis reductions, ``np.dot`` of vectors and matrices,
# reads by an int index, and the adjoint's helpers and VJP rules for them.  Everything else
# with an array is NotTyped.

from pullback.runtime import support as _support  # noqa: E402

_VJP_MODULE = _support.vjp


def is_array(t) -> bool:
    return isinstance(inner(t), Arr)


def element(t):
    """The type of one element of ``t``: an array's number kind, through Opt/Tup/GList."""
    if isinstance(t, Arr):
        return Num(t.kind)
    if isinstance(t, Opt):
        return Opt(element(t.inner))
    if isinstance(t, (Tup, GList, Parts)):
        return type(t)(tuple(element(x) for x in t.items))
    return t


def array_ndim(*types) -> int:
    """The most axes of the arrays among ``types`` (through Opt/Tup/GList), 0 if none."""
    best = 0
    for t in types:
        t = inner(t)
        if isinstance(t, Arr):
            best = max(best, t.ndim)
        elif isinstance(t, (Tup, GList, Parts)):
            best = max(best, array_ndim(*t.items))
    return best


def _as_array_operand(t, what):
    t = inner(t) if isinstance(t, Opt) else t
    if isinstance(t, Arr):
        return t
    return number(t, what)


def array_binary(op: str, a, b) -> Arr:
    """``a OP b`` where one operand is an array (numpy's broadcasting and promotion)."""
    a, b = _as_array_operand(a, "an operand"), _as_array_operand(b, "an operand")
    kind = binary(op, element(a).kind, element(b).kind).kind
    if kind != "f64":
        raise NotTyped(f"an array {op} giving {kind} elements (native arrays: float64)")
    return Arr("f64", array_ndim(a, b))


def array_item(t, key) -> object:
    """``x[i]`` for an int ``i``: a view of one row, or a number of a vector."""
    a = inner(t)
    if number(key, "an array index").kind != "int":
        raise NotTyped(f"indexing an array by a {key}")
    return Num(a.kind) if a.ndim == 1 else Arr(a.kind, a.ndim - 1)


def array_attribute(t, attr):
    a = inner(t)
    if attr == "shape":
        return Tup((INT,) * a.ndim)
    if attr in ("size", "ndim"):
        return INT
    raise NotTyped(f"the attribute .{attr} of an array (not lowered natively)")


#: trailing reductions of a fused run lowered with arrays (``_kernels.total``/``average``)
KERNEL_REDUCTIONS = ("sum", "mean")


def kernel_reduction(kernel: FusedKernel):
    """``(output, source, how)`` of a kernel's trailing reduction, or None."""
    reduction = kernel.forward_program[3]
    if reduction is not None and reduction[2] not in KERNEL_REDUCTIONS:
        raise NotTyped(f"{kernel.name} ends in a {reduction[2]} (native arrays: a sum or "
                       "mean)")
    return reduction


def seed_statements(statements) -> tuple:
    """A kernel VJP's statements with ``spread(g, ...)`` (a reduction's gradient over the
    broadcast shape) as ``g``: elementwise, the seed itself."""
    out = []
    for target, text in statements:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "spread":
            text = ast.unparse(node.args[0])
        out.append((target, text))
    return tuple(out)


def output_sources(kernel) -> list:
    """Per output of ``kernel``, the positions of the inputs it is computed from (for a
    trailing reduction: those of its source)."""
    from pullback.runtime.fused import _positions_read

    params, statements, outputs, reduction = kernel.forward_program
    names = [reduction[1] if reduction is not None and o == reduction[0] else o
             for o in outputs]
    return list(_positions_read(params, statements, names))


def number_outputs(kernel, inputs) -> set:
    """The outputs of ``kernel`` computed from numbers only (numbers beside the arrays);
    every other output must have all the inputs' axes (else NotTyped: numpy's would be
    smaller)."""
    numbers = set()
    for k, deps in enumerate(output_sources(kernel)):
        ndim = array_ndim(*[inputs[j] for j in deps])
        if ndim == 0:
            numbers.add(k)
        elif ndim != array_ndim(*inputs):
            raise NotTyped(f"{kernel.name} has an output of fewer axes than its inputs")
    return numbers


def array_kernel_outputs(kernel: FusedKernel, inputs) -> Tup:
    """``kernel(*inputs)`` with array inputs: one array per output, of the broadcast
    shape; a trailing sum or mean is a (1,)-array, as the primitive's."""
    reduction = kernel_reduction(kernel)
    numbers = number_outputs(kernel, inputs)
    ndim = array_ndim(*inputs)
    params, statements, outputs, _ = kernel.forward_program
    env = program_kinds(params, statements, dict(zip(
        params, [number(element(a), "a kernel input") for a in inputs], strict=True)))
    items = []
    for k, o in enumerate(outputs):
        reduced = reduction is not None and o == reduction[0]
        kind = env[reduction[1] if reduced else o].kind
        if kind != "f64" and k not in numbers:
            raise NotTyped(f"{kernel.name} computes {kind} elements (native arrays: f64)")
        items.append(Num(kind) if k in numbers else Arr("f64", 1 if reduced else ndim))
    if all(isinstance(item, Num) and item.kind != "f64" for item in items):
        raise NotTyped(f"{kernel.name} computes no float64 array")
    return Tup(tuple(items))


def array_kernel_vjp(kernel: FusedKernel, grads, outputs, inputs) -> Parts:
    """``kernel.vjp(grads, outputs, *inputs)`` with arrays: each input's gradient over the
    broadcast shape (the adjoint's ``support.unbroadcast`` sums it to the input's)."""
    kernel_reduction(kernel)
    ndim = array_ndim(grads, outputs, *inputs)
    gnames, onames, inames, statements, results = kernel.adjoint_program
    if grads is NONE:
        return Parts(tuple(NONE for _ in inames))
    out = inner(outputs)
    if not isinstance(out, Tup) or len(out.items) != len(onames):
        raise NotTyped(f"{kernel.name}.vjp of outputs typed {outputs}")
    env = dict(zip(gnames, vjp_seed_kinds(kernel, element(inner(grads))), strict=True))
    env.update(zip(onames, element(out).items, strict=True))
    env.update(zip(inames, [number(element(a), "a kernel input") for a in inputs],
                   strict=True))
    env = program_kinds(None, seed_statements(statements), env)
    return Parts(tuple(NONE if r is None else Arr("f64", ndim) for r in results))


def with_gradient_seeds(kernel):
    """The output gradients ``with_gradient`` runs the VJP with: 1.0 for the sum."""
    reduction = kernel_reduction(kernel)
    if reduction is None or reduction[2] != "sum":
        raise NotTyped(f"{kernel.name}.with_gradient of a {reduction and reduction[2]}")
    outputs = kernel.forward_program[2][:len(kernel.adjoint_program[0])]   # gradients' order
    return GList(tuple(F64 if o == reduction[0] else NONE for o in outputs))


def array_with_gradient(kernel: FusedKernel, inputs) -> Tup:
    """``kernel.with_gradient(wanted, *inputs)``: the sum (other outputs None), then every
    input's gradient for a seed of 1 over the broadcast shape (all inputs: wanted or not,
    the values the Python road computes for the wanted ones)."""
    outputs = array_kernel_outputs(kernel, inputs)
    reduction = kernel.forward_program[3]
    parts = array_kernel_vjp(kernel, with_gradient_seeds(kernel), outputs, inputs)
    values = tuple(t if o == reduction[0] else NONE
                   for o, t in zip(kernel.forward_program[2], outputs.items, strict=True))
    return Tup(values + parts.items)


def unit_gradients(kernel: FusedKernel, grads, outputs) -> Parts:
    """``kernel.vjp(grads, with_gradient's outputs, ...)``: the unit gradients times the
    sum's gradient."""
    if grads is NONE:
        return Parts(tuple(NONE for _ in kernel.adjoint_program[2]))
    n = len(kernel.forward_program[2])
    seed = inner(grads).items[0]
    if not (isinstance(inner(seed), Num) or inner(seed) == Arr("f64", 1)):
        raise NotTyped(f"{kernel.name}.vjp seeded by a {seed}")
    return Parts(tuple(inner(outputs).items[n:]))


#: whole-array reductions of generated code: name -> the reduction
SCALAR_REDUCTIONS = {"support.scalar_sum": "sum", "support.scalar_mean": "mean",
                     "support.scalar_max": "max", "support.scalar_min": "min",
                     "support.scalar_norm": "norm"}
NUMPY_REDUCTIONS = {"npops.sum": "sum", "npops.mean": "mean", "npops.max": "max",
                    "npops.min": "min"}


def _reduction_axis(node, args, keywords, name):
    """The ``axis`` of a numpy reduction (None: all), or NotTyped."""
    axis = keywords.pop("axis", None)
    if len(node.args) == 2:
        if not isinstance(node.args[1], gast.Constant):
            raise NotTyped(f"{name} over a computed axis")
        axis = node.args[1].value
    if keywords or len(node.args) > 2:
        raise NotTyped(f"{name} with {sorted(keywords) or 'more arguments'}")
    if axis is not None and type(axis) is not int:
        raise NotTyped(f"{name} over axis {axis!r}")
    return axis


def _reduction(node, args, keywords):
    name = dotted(node.func)
    x = inner(args[0])
    if not isinstance(x, Arr):
        raise NotTyped(f"{name} of a {args[0]} (native: of an array)")
    if name in SCALAR_REDUCTIONS:
        if len(args) != 1 or keywords:
            raise NotTyped(f"{name} with more arguments")
        return Num(x.kind)
    axis = _reduction_axis(node, args, keywords, name)
    if axis is None or x.ndim == 1:
        if axis is not None and axis not in (0, -1):
            raise NotTyped(f"{name} over axis {axis} of a vector")
        return Num(x.kind)
    if not -x.ndim <= axis < x.ndim:
        raise NotTyped(f"{name} over axis {axis} of a {x}")
    return Arr(x.kind, x.ndim - 1)


def dot_type(x, y):
    """``np.dot(x, y)`` of vectors and matrices."""
    x, y = inner(x), inner(y)
    if not (isinstance(x, Arr) and isinstance(y, Arr) and x.ndim <= 2 and y.ndim <= 2):
        raise NotTyped(f"np.dot of a {x} and a {y} (native: vectors and matrices)")
    ndim = x.ndim + y.ndim - 2
    return Num("f64") if ndim == 0 else Arr("f64", ndim)


def _dot(node, args, keywords):
    if dotted(node.func).endswith("matmul"):   # `@`: np.dot for vectors and matrices
        if len(args) != 2 or keywords:
            raise NotTyped("matmul with parameters")
        return dot_type(*args)
    if len(args) != 2 or keywords.pop("numpy", True) is not True or keywords:
        raise NotTyped("npops.dot with MXNet's parameters")
    return dot_type(*args)


def _numpy_scalar(node, args, keywords):
    x = inner(args[0])
    if not (isinstance(x, Arr) and x.ndim == 1) or can_be_none(args[0]):
        raise NotTyped(f"support.numpy_scalar of a {args[0]}")
    return Num(x.kind)   # a kernel's (1,)-array reduction (otherwise not an array here)


def _array_index_grad(node, args, keywords):
    total, g, value, key = args
    if not is_array(value):
        return _index_grad(node, args)
    if g is NONE:
        return total
    v = inner(value)
    if isinstance(key, Slice):   # the gradient of x[a:b:c] has x's axes
        if inner(g) != v:
            raise NotTyped(f"the gradient of slicing a {value} typed {g}")
        return join(total, add_grads(total, v))
    if number(key, "an index").kind != "int" or (
            array_item(v, key) != inner(g) and not (v.ndim == 1 and isinstance(inner(g), Num))):
        raise NotTyped(f"the gradient of indexing a {value} typed {g}")
    return join(total, add_grads(total, v))


def _double_array(node, args, keywords):
    if not is_array(args[0]):
        return _double(node, args)
    return array_binary("add", args[0], args[0])


def _array_unbroadcast(node, args, keywords):
    g, value = args
    if not (is_array(g) or is_array(value)):
        return _unbroadcast(node, args)
    if g is NONE:
        return NONE
    if not is_array(g):
        raise NotTyped(f"support.unbroadcast of a {g} to a {value}")
    v = inner(value)
    if isinstance(v, Num):
        result = Num("f64")
    elif isinstance(v, Arr) and v.ndim <= inner(g).ndim:
        result = v
    else:
        raise NotTyped(f"support.unbroadcast of a {g} to a {value}")
    return Opt(result) if can_be_none(g) else result


#: VJP rules that read the primitive's result (``ans``)
READS_RESULT = ("max_0", "min_0")


def reduced_type(x: Arr, keywords):
    """The type of a reduction of ``x`` over ``keywords``' axis (NotTyped for others)."""
    if set(keywords) - {"axis"}:
        raise NotTyped(f"a reduction's rule with {sorted(keywords)}")
    axis = keywords.get("axis")
    if axis is None or x.ndim == 1:
        if axis not in (None, 0, -1):
            raise NotTyped(f"a reduction over axis {axis!r} of a {x}")
        return Num(x.kind)
    if type(axis) is not int or not -x.ndim <= axis < x.ndim:
        raise NotTyped(f"a reduction over axis {axis!r} of a {x}")
    return Arr(x.kind, x.ndim - 1)


def rule_type(rule: str, g, args, keywords, ans=NONE):
    """The type of ``vjp.<rule>(g, ans, *args, **keywords)`` for a present ``g``."""
    base, _, position = rule.rpartition("_")
    if base in ("sum", "mean", "max", "min") and position == "0" and len(args) == 1 \
            and isinstance(inner(args[0]), Arr):
        x = inner(args[0])
        reduced = reduced_type(x, keywords)
        if (ans is NONE) != (rule not in READS_RESULT):
            raise NotTyped(f"vjp.{rule} passed a result typed {ans}")
        if type(inner(g)) is type(reduced) and array_ndim(g) == array_ndim(reduced) and (
                ans is NONE or ans == reduced):
            return x
    if (base == "dot" and keywords == {"numpy": True} or base == "matmul" and not keywords) \
            and position in ("0", "1") and len(args) == 2 and ans is NONE:
        out = dot_type(*args)
        if type(inner(g)) is type(out) and array_ndim(g) == array_ndim(out):
            return inner(args[int(position)])
    raise NotTyped(f"the rule vjp.{rule} of a {g} and {', '.join(map(str, args))} (not "
                   f"lowered natively)")


def _accumulate(node, args, keywords):
    total, rule, g = args[0], args[1], args[2]
    if not isinstance(rule, Rule) or len(args) < 4 or (
            args[3] is not NONE and rule.name not in READS_RESULT):
        raise NotTyped(f"support.accumulate of the rule {rule} passed its result")
    if g is NONE:
        return total
    part = rule_type(rule.name, g, args[4:], keywords, args[3])
    return join(total, add_grads(total, part))


def _linspace(node, args):
    """``np.linspace(start, stop, num)``: numbers in, a float64 vector out (a negative
    ``num``: numpy's ValueError, the Python road's)."""
    if len(args) != 3:
        raise NotTyped("np.linspace without exactly start, stop and num")
    start, stop, num = (number(a, "an argument of np.linspace") for a in args)
    if num.kind != "int" or {start.kind, stop.kind} & {"bool", "f32"}:
        # (a float32 end makes numpy's result float32, computed in float32)
        raise NotTyped("np.linspace of other than float/int start and stop and an int num")
    return Arr("f64", 1)


#: numpy functions of the user's module that make arrays from numbers (``np`` must be
#: numpy in the function's namespace): a typing rule here, ``call_np_<name>`` in
#: lower_arrays.py
def _filled(node, args):
    """``np.ones(shape)`` / ``np.zeros(shape)``: an int or a tuple of 1 to MAX_NDIM ints
    (a negative size: numpy's ValueError, the Python road's)."""
    shape = args[0] if len(args) == 1 else None
    dims = shape.items if isinstance(shape, Tup) else (shape,)
    if not 1 <= len(dims) <= MAX_NDIM or any(d != INT for d in dims):
        raise NotTyped(f"np.{dotted(node.func).rpartition('.')[2]} of other than a shape of "
                       "ints (native: float64)")
    return Arr("f64", len(dims))


NUMPY_CONSTRUCTORS = {"linspace": _linspace, "ones": _filled, "zeros": _filled}


def _join_items(items, what):
    """The arrays of ``support.join``/``join_grad`` (a tuple of float64 arrays of the same
    axes) and their number of axes."""
    base = inner(items)   # (None: the Python road's TypeError, checked at run time)
    if not (isinstance(base, Tup) and base.items
            and all(isinstance(t, Arr) for t in base.items)
            and len({t.ndim for t in base.items}) == 1):
        raise NotTyped(f"{what} of a {items} (native: a tuple of arrays of the same axes)")
    return base.items[0].ndim


def _join_keywords(keywords, what):
    if keywords.get("stack") is not False or keywords.get("axis") != 0 \
            or set(keywords) != {"axis", "stack"}:
        raise NotTyped(f"{what} with {keywords} (native: np.concatenate along axis 0)")


def _join(node, args, keywords):
    """``support.join(items, axis=0, stack=False)``: np.concatenate of arrays along the
    first axis."""
    _join_keywords(keywords, "support.join")
    return Arr("f64", _join_items(args[0], "support.join"))


def _join_grad(node, args, keywords):
    """``support.join_grad(g, items, axis=0, stack=False)``: per item, its rows of ``g``."""
    _join_keywords(keywords, "support.join_grad")
    g, items = args
    ndim = _join_items(items, "support.join_grad")
    if g is NONE:
        return NONE
    if inner(g) != Arr("f64", ndim):
        raise NotTyped(f"support.join_grad of a {g}")
    parts = GList(tuple(inner(items).items))
    return Opt(parts) if can_be_none(g) else parts


ARRAY_CALLS = {
    **{name: _reduction for name in (*SCALAR_REDUCTIONS, *NUMPY_REDUCTIONS)},
    "npops.dot": _dot, "ops.matmul": _dot, "npops.matmul": _dot,
    "support.double": _double_array, "support.numpy_scalar": _numpy_scalar,
    "support.unbroadcast": _array_unbroadcast, "support.index_grad": _array_index_grad,
    "support.accumulate": _accumulate,
    "support.join": _join, "support.join_grad": _join_grad,
}
# ----- calls of other user functions: native calls ----------------------------------------------

#: most nested typings of callees at once (a recursion whose argument types keep changing)
MAX_CALL_DEPTH = 16


@dataclass
class Part:
    """One typed part of a callee: its forward for one argument signature, or its adjoint
    for one signature and seed type.  ``typing`` holds the part's env in ``forward`` (a
    forward) or ``adjoint`` (an adjoint), the callee's tags and namespace."""

    key: tuple
    variant: object
    ir: object
    typing: Typing


class _active:
    """Registers a function part being typed, so a recursive call reads its types so far."""

    def __init__(self, functions, key, env, ir):
        self.functions, self.key, self.env, self.ir = functions, key, env, ir

    def __enter__(self):
        if self.functions is not None:
            if len(self.functions.stack) >= MAX_CALL_DEPTH:
                raise NotTyped("native calls nested too deeply while typing (argument "
                               "types that keep changing through a recursion)")
            self.functions.active[self.key] = (self.env, self.ir)
            self.functions.stack.append(self.key)

    def __exit__(self, *exc):
        if self.functions is not None:
            self.functions.stack.pop()
            del self.functions.active[self.key]


class Functions:
    """The parts of user functions a native function calls, typed on demand and kept by
    key: ``("forward", id(variant), argument types)`` and ``("adjoint", id(variant),
    argument types, seed type)``.

    A call of a part being typed (recursion) reads its types so far (its returned names'
    types; not yet known: ``_Unknown``, so the fixed point of the caller's typing runs
    again), and every part typed inside that recursion is *provisional*: not kept, typed
    again the next time (its caller's types may still grow), so kept parts are final."""

    def __init__(self):
        self.parts, self.active, self.stack = {}, {}, []
        self.provisional = set()
        self._ir = {}

    def ir(self, variant) -> tuple:
        """``(forward IR, adjoint IR, namespace, name)`` of a callee variant."""
        found = self._ir.get(id(variant))
        if found is None:
            from .ir import function_ir

            variant._build()
            if getattr(variant, "_tangent", None) is not None:   # a tangent variant
                found = self._ir[id(variant)] = tangent_callee_ir(variant)
                return found[:4]
            name = variant._forward.__name__[:-len("_forward")]
            forward, adjoint = function_ir(variant.source, name)
            found = self._ir[id(variant)] = (forward, adjoint, variant._forward.__globals__,
                                             name, variant)
        return found[:4]

    def _in_progress(self, key, returned):
        env, ir = self.active[key]
        at = self.stack.index(key)
        self.provisional.update(self.stack[at + 1:])
        try:
            return returned(ir, env)
        except KeyError:
            raise _Unknown(f"the result of the recursive call {key[0]}") from None

    def forward_result(self, variant, arguments: tuple):
        key = ("forward", id(variant), arguments)
        if key in self.active:
            return self._in_progress(key, _returned)
        return self.forward_part(variant, arguments).typing.result

    def forward_part(self, variant, arguments: tuple) -> Part:
        key = ("forward", id(variant), arguments)
        part = self.parts.get(key)
        if part is not None:
            return part
        forward, _, namespace, name = self.ir(variant)
        params = [a.id for a in forward.args.args[1:]]
        if len(params) != len(arguments):
            raise NotTyped(f"{len(arguments)} arguments for {name}()'s {len(params)}")
        if any(is_array(a) for a in arguments):   # native callees share no array arena yet
            raise NotTyped(f"a call of {name}() with an array argument (native calls of user "
                           f"functions take numbers)")
        env, tags, calls = dict(zip(params, arguments, strict=True)), {}, {}
        with _active(self, key, env, forward), _in_callee(name, "forward"):
            _Typer(namespace, env, tags, "forward", functions=self, calls=calls).run(
                forward.body)
            result = _returned(forward, env)
        if is_array(result) or any(is_array(t) for t in env.values()):
            raise NotTyped(f"{name}() computes with arrays (native calls of user functions "
                           f"take and return numbers)")
        typing = Typing(params, arguments, env, {}, tags, result, None, (), namespace, self,
                        calls)
        return self._keep(Part(key, variant, forward, typing))

    def gradients(self, variant, arguments: tuple, seed):
        key = ("adjoint", id(variant), arguments, seed)
        if key in self.active:
            return self._in_progress(key, _returned)
        return self.adjoint_part(variant, arguments, seed).typing.result

    def adjoint_part(self, variant, arguments: tuple, seed) -> Part:
        key = ("adjoint", id(variant), arguments, seed)
        part = self.parts.get(key)
        if part is not None:
            return part
        forward_part = self.forward_part(variant, arguments)
        _, adjoint, namespace, name = self.ir(variant)
        tags = forward_part.typing.tags
        env = {"result_grad": seed}
        with _active(self, key, env, adjoint), _in_callee(name, "adjoint"):
            _Typer(namespace, env, dict(tags), "adjoint", pops=tags, functions=self,
                   calls=forward_part.typing.calls).run(adjoint.body)
            gradients = _returned(adjoint, env)
        typing = Typing(forward_part.typing.params, arguments, {}, env, tags, gradients, seed,
                        gradients.items, namespace, self, forward_part.typing.calls)
        return self._keep(Part(key, variant, adjoint, typing))

    def _keep(self, part: Part) -> Part:
        if part.key in self.provisional:
            self.provisional.discard(part.key)
        else:
            self.parts[part.key] = part
        return part


class _in_callee:
    """A callee's NotTyped names the callee and its generated statement; the caller's
    typing then attaches the call statement (whose line is the user's)."""

    def __init__(self, name, part):
        self.name, self.part = name, part

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, NotTyped):
            where = ""
            if error.statement is not None:
                where = " at `" + ast.unparse(gast.gast_to_ast(error.statement)).splitlines()[0] \
                    + "`"
            wrapped = NotTyped(f"in the {self.part} of the called {self.name}(){where}: "
                               f"{error.reason}")
            raise wrapped from error
        return False


# ----- forward mode (issue 12): a tangent variant's function typed as a forward -------------
# ``ir.tangent_ir`` reads ``<f>_tangent`` back as a forward that never pushes; it is typed by
# the same ``_Typer`` (its result is the pair ``(value, value_dot)``), with rules for the two
# helpers only tangent code calls.  A call of another user function's tangent variant
# (``g_10.tangent(x, x_dot)``) is a native call of that variant's tangent, typed as a
# forward part by ``Functions``.

def tangent_callee_ir(variant) -> tuple:
    """``(tangent IR, None, namespace, name, variant)`` of a tangent variant (built)."""
    from .ir import tangent_ir

    name = variant._tangent.__name__[:-len("_tangent")]
    return (tangent_ir(variant.source, name), None, variant._tangent.__globals__, name,
            variant)


def _zero_tangent(node, args):
    """``support.zero_tangent(value)``: numpy's zero of the value's float dtype (float32
    stays float32, every other number is float64), zeros of a float64 array's shape."""
    if len(args) != 1:
        raise NotTyped("support.zero_tangent with a batch (batched tangents are not lowered)")
    t = args[0]
    if is_array(t):
        return t
    return F32 if number(t, "the value of support.zero_tangent").kind == "f32" else F64


def _tangent_like(node, args):
    """``support.tangent_like(t, ans)``: a number's tangent of a number is itself; an
    array tangent of an array of as many axes is itself (its shape checked when lowered:
    a broadcast one leaves for the Python road); a float tangent of an array (a trailing
    reduction's of its (1,)-array) is a float64 array of the array's shape holding it."""
    t, ans = args
    if isinstance(t, Num) and isinstance(ans, Num):
        return t
    if is_array(t) and is_array(ans) and t == ans:
        return t
    if isinstance(t, Num) and t.kind in ("f64", "pyfloat", "float") and isinstance(ans, Arr):
        return ans   # numpy reshapes or broadcasts the number: float64 of ans's shape
    raise NotTyped(f"support.tangent_like of a {t} for a {ans} (a broadcast tangent: "
                   f"not lowered natively)")


#: the reductions' JVP rules lowered natively (whole-array, float64): what the tangent of a
#: fused run's trailing reduction and of an unfused ``np.max``/``np.min`` calls
TANGENT_REDUCTION_RULES = {"jvp.sum_0": "sum", "jvp.mean_0": "mean", "jvp.max_0": "max",
                           "jvp.min_0": "min"}


def _reduction_rule(node, args):
    """``jvp.sum_0(t, ans, x)`` (and mean, max, min) over a whole float64 array: the
    primitive's rule (``primitives._linear_jvp``, ``_extremum_jvp``) gives numpy's float64
    scalar.  Over an axis, or of a number: NotTyped."""
    name = dotted(node.func)
    if node.keywords or len(args) != 3:
        raise NotTyped(f"{name} over an axis (not lowered natively)")
    t, ans, x = args
    if not (isinstance(t, Arr) and t.kind == "f64"):
        raise NotTyped(f"{name} of a {t} tangent (native: of a float64 array)")
    if TANGENT_REDUCTION_RULES[name] in ("max", "min") and not (
            x == t and isinstance(ans, Num) and ans.kind == "f64"):
        raise NotTyped(f"{name} of a {x} reaching {ans}")
    return F64


for _name in TANGENT_REDUCTION_RULES:
    _CALLS[_name] = _reduction_rule
_CALLS["support.zero_tangent"] = _zero_tangent
_CALLS["support.tangent_like"] = _tangent_like


def infer_tangent(tangent, namespace: dict, arguments: tuple, variant=None) -> Typing:
    """Type the tangent IR ``tangent`` (``ir.tangent_ir``) for ``arguments`` (the primals'
    types, then the tangents'); the Typing's ``forward`` holds its names, ``result`` the
    pair ``Tup((value, value_dot))``, both numbers of a float kind (native: the value is
    a number).

    Raises:
        NotTyped: the first statement that does not type, and why.
    """
    params = [a.id for a in tangent.args.args[1:]]   # after _stack
    if len(params) != len(arguments):
        raise NotTyped(f"{len(arguments)} arguments for {len(params)} parameters")
    env = dict(zip(params, arguments, strict=True))
    tags, calls = {}, {}
    functions = None if variant is None else Functions()
    with _active(functions, ("forward", id(variant), tuple(arguments)), env, tangent):
        _Typer(namespace, env, tags, "tangent", functions=functions, calls=calls).run(
            tangent.body)
    if tags:
        raise NotTyped("the tangent function pushes", None, "tangent")
    result = _returned(tangent, env)
    if not (isinstance(result, Tup) and len(result.items) == 2 and all(
            isinstance(t, Num) and t.kind in FLOAT_KINDS for t in result.items)):
        raise NotTyped(f"the function returns a {result} with its tangent (native: a float "
                       f"and its tangent)", tangent.body[-1], "tangent")
    return Typing(params, tuple(arguments), env, {}, tags, result, None, (), namespace,
                  functions, calls)
