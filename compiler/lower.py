"""Lowering, the compiler half of the native backend: a KernelSpec -> LLVM IR text.

``lower(spec)`` returns the IR of one kernel with the ABI of ``runtime/native.py``
(``pb_kernel_<digest>(start, stop, arrays, scalars, partials)``); the runtime
compiles and calls it.  What the IR guarantees:

- **Explicitly vectorised for the host**: ``W`` lanes, one vector register of the
  dtype (AVX-512: 8 doubles or 16 floats).  The statements
  are lowered once, into an always-inlined function over ``<W x T>`` vectors
  (``pb_kernel_<digest>.body``), which reads like the spec; the kernel is the loop
  that calls it.
- **Same instructions for every element**: the main loop calls the body on full
  vectors; the last, partial vector calls the same body with masked loads and
  stores.  An element's result does not depend on its position, on the array
  length or on aliasing.  (LLVM's loop vectoriser with the
  ``vector-function-abi-variant`` attribute keeps scalar libm for its remainder
  loop and whenever its alias check fails, e.g. in place: 43% of exp results then
  differ, ``bench/native_vectoriser_determinism.py``.)
- **Vector math from glibc's libmvec**: exp, log, sin, cos, tan, tanh, log1p,
  expm1, pow and ``COVERAGE_LIBM`` (sinh, asin, atan2, hypot, cbrt, ...) call libmvec's
  variant for the host ISA directly
  (``_ZGVeN8v_exp``); where libmvec lacks one, the scalar libm function per lane.
  float64 tanh is ``E / (E + 2)`` with ``E = expm1(2|x|)`` and x's sign (``_tanh``):
  ~0.5 ns/element cheaper than libmvec's tanh and within 3 ulp of numpy (measured).
  float32 calls libmvec's float variants where they are within 2 ulp of numpy's
  float32 results (``_SINGLE_PRECISION_ACCURATE``); exp, log and pow are computed
  in float64 and rounded (libmvec's expf and logf are 4 and 6 ulp from numpy's;
  the rounded float64 result is within 1 ulp of correctly rounded).
- **numpy's semantics, IEEE arithmetic**: no fast-math flags and no FMA
  contraction, so ``+ - * /``, sqrt, comparisons, floor/ceil/round are bit-equal
  to numpy; max/min propagate NaN like ``np.maximum``; sign(-0) = 0; round is
  half-to-even; ``pow`` takes numpy's exact shortcuts (square, sqrt, reciprocal)
  for an exponent of 2, 0.5 or -1 when the exponent is a literal or a scalar.
- **Reductions** accumulate in ``<W x double>`` per chunk of ``CHUNK`` elements
  (float32 values are widened, so float32 sums are more accurate than numpy's),
  combine the lanes pairwise and store one partial per chunk.

Scalar language (Python syntax, parsed with ``ast``): names, int/float literals,
``+ - * / **``, unary ``-``, one comparison ``== != < <= > >=`` (1.0 or 0.0), and
the calls in ``FUNCTIONS``.
"""

from __future__ import annotations

import ast
import hashlib
from functools import partial
from typing import ClassVar

from llvmlite import ir
from pullback.runtime.irhelpers import (
    I64,
    PTR,
    FloatConstant,
    Poison,
    Splat,
    add_string_attribute,
    conditional,
    counted_loop,
)
from pullback.runtime.native import CHUNK, Host, KernelSpec, KernelSpecError, host

_FLOAT_TYPES = {"float32": ir.FloatType(), "float64": ir.DoubleType()}
_KERNEL_TYPE = ir.FunctionType(ir.VoidType(), [I64, I64, PTR, PTR, PTR])
_KERNEL_ARGS = ("start", "stop", "arrays", "scalars", "partials")


def lower(spec: KernelSpec, *, vector_math: bool = True, target: Host | None = None) -> str:
    """LLVM IR text of ``spec``'s kernel for the host CPU.

    Args:
        spec: the kernel.
        vector_math: call libmvec's vector functions where the host has them (False:
            scalar libm per lane; for testing the fallback).
        target: the host to compile for (default: this machine).

    Returns:
        The module's IR text; its one external function is ``pb_kernel_<digest>``
        (``runtime.native.kernel_symbol(ir_text)``).

    Raises:
        KernelSpecError: an expression outside the scalar language, naming the
            statement and pointing at the construct.
    """
    target = target or host()
    variant = (spec, target.lanes, target.isa, vector_math and sorted(target.vector_math),
               vector_math and sorted(target.vector_math_single))
    digest = hashlib.sha256(repr(variant).encode()).hexdigest()[:16]
    module = ir.Module(name=f"pullback kernel {digest}")
    module.triple = _target_triple()
    vectors = _Vectors(module, spec.dtype, target, vector_math)
    body = _emit_body(module, spec, vectors, f"pb_kernel_{digest}.body")
    _KernelLoop(module, spec, vectors, body, f"pb_kernel_{digest}").emit()
    return str(module)


def _target_triple() -> str:
    import llvmlite.binding as llvm

    return llvm.get_process_triple()


# ----- vectors of the kernel's dtype ----------------------------------------------------

class _Vectors:
    """Builds ``<W x T>`` values: constants, comparisons, intrinsics and math calls."""

    def __init__(self, module: ir.Module, dtype: str, target: Host, vector_math: bool):
        self.module, self.target = module, target
        self.scalar = _FLOAT_TYPES[dtype]
        self.single = dtype == "float32"
        self.lanes = target.lanes * (2 if self.single else 1)     # one register of T
        self.type = ir.VectorType(self.scalar, self.lanes)
        self.double = ir.VectorType(ir.DoubleType(), self.lanes)
        self.register_double = ir.VectorType(ir.DoubleType(), target.lanes)
        self.vector_math = target.vector_math if vector_math else frozenset()
        self.single_math = (target.vector_math_single & _SINGLE_PRECISION_ACCURATE
                            if vector_math and self.single else frozenset())
        self.b: ir.IRBuilder | None = None

    def const(self, value: float, vtype=None) -> ir.Constant:
        return Splat(vtype or self.type, float(value))

    def splat(self, scalar, name: str) -> ir.Value:
        one = self.b.insert_element(Poison(ir.VectorType(scalar.type, self.lanes)),
                                    scalar, ir.Constant(I64, 0), name=f"{name}.one")
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), None)
        return self.b.shuffle_vector(one, one, zeros, name=name)

    def compare(self, predicate: str, a, b, name: str) -> ir.Value:
        """``fcmp`` with an LLVM predicate name: oeq, une, olt, ole, ogt, oge, uno."""
        return self.b.fcmp_ordered(predicate, a, b, name=name)

    def function(self, name: str, ftype: ir.FunctionType, attributes=()) -> ir.Function:
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        fn = ir.Function(self.module, ftype, name=name)
        for attribute in attributes:
            fn.attributes.add(attribute)
        return fn

    def intrinsic(self, name: str, *args, name_as: str) -> ir.Value:
        """``llvm.<name>.v<W>f<bits>`` applied to vectors of the kernel's type."""
        vtype = args[0].type
        fn = self.function(f"llvm.{name}.{self.suffix(vtype)}",
                           ir.FunctionType(vtype, [a.type for a in args]))
        return self.b.call(fn, args, name=name_as)

    def suffix(self, vtype=None) -> str:
        """The overload suffix of an intrinsic on ``vtype``: v8f64, v8f32, ..."""
        vtype = vtype or self.type
        return f"v{self.lanes}f{64 if vtype.element == ir.DoubleType() else 32}"

    def libm(self, function: str, *args, name: str) -> ir.Value:
        """A libm function of vectors: libmvec's vector variant, else scalar libm per
        lane.  float32 uses libmvec's float variant where that is accurate enough
        (``_SINGLE_PRECISION_ACCURATE``), else computes in float64, a register of doubles
        at a time, and rounds."""
        if function in self.single_math:
            symbol = self.target.vector_symbol(function, single=True)
            fn = self.function(symbol, ir.FunctionType(self.type, [self.type] * len(args)),
                               ("nounwind", "readnone"))
            return self.b.call(fn, args, name=name)
        parts = self.lanes // self.target.lanes
        results = []
        for part in range(parts):
            part_name = f"{name}.part{part}" if parts > 1 else name
            wide = [self.widen(self.register(a, part, part_name), part_name) for a in args]
            results.append(self.double_libm(function, wide, part_name))
        result = results[0] if parts == 1 else self.b.shuffle_vector(
            results[0], results[1], _lanes(range(self.lanes)), name=f"{name}.f64")
        if result.type == self.type:
            return result
        return self.b.fptrunc(result, self.type, name=name)

    def register(self, vector, part: int, name: str):
        """Part ``part`` of ``vector``, one register of doubles wide."""
        if self.lanes == self.target.lanes:
            return vector
        width = self.target.lanes
        return self.b.shuffle_vector(vector, vector, _lanes(range(part * width, (part + 1) * width)),
                                     name=f"{name}.lanes")

    def widen(self, vector, name: str):
        if vector.type.element == ir.DoubleType():
            return vector
        return self.b.fpext(vector, self.register_double, name=f"{name}.wide")

    def double_libm(self, function: str, args, name: str) -> ir.Value:
        """``function`` on one register of doubles: libmvec, else libm lane by lane."""
        if function not in self.vector_math:
            return self._per_lane(function, args, name)
        symbol = self.target.vector_symbol(function)
        vtype = self.register_double
        fn = self.function(symbol, ir.FunctionType(vtype, [vtype] * len(args)),
                           ("nounwind", "readnone"))
        return self.b.call(fn, args, name=f"{name}.f64" if self.single else name)

    def _per_lane(self, function: str, args, name: str) -> ir.Value:
        scalar_fn = self.function(function, ir.FunctionType(ir.DoubleType(),
                                                            [ir.DoubleType()] * len(args)),
                                  ("nounwind", "readnone"))
        result = Poison(self.register_double)
        for lane in range(self.target.lanes):
            index = ir.Constant(I64, lane)
            lane_args = [self.b.extract_element(a, index, name=f"{name}.x{lane}") for a in args]
            value = self.b.call(scalar_fn, lane_args, name=f"{name}.lane{lane}")
            result = self.b.insert_element(result, value, index, name=f"{name}.{lane}")
        return result

    def maximum(self, a, b, name: str) -> ir.Value:
        """np.maximum: a if a > b or a is NaN, else b (so NaN in either propagates)."""
        keep_a = self.b.or_(self.compare("ogt", a, b, f"{name}.gt"),
                            self.compare("uno", a, a, f"{name}.nan"), name=f"{name}.keep")
        return self.b.select(keep_a, a, b, name=name)

    def minimum(self, a, b, name: str) -> ir.Value:
        """np.minimum: a if a < b or a is NaN, else b."""
        keep_a = self.b.or_(self.compare("olt", a, b, f"{name}.lt"),
                            self.compare("uno", a, a, f"{name}.nan"), name=f"{name}.keep")
        return self.b.select(keep_a, a, b, name=name)


# ----- the scalar language ---------------------------------------------------------------

def _sigmoid(v: _Vectors, x, name):
    # numpy's formula (primitives._sigmoid_forward): exp of a non-positive number only.
    e = v.libm("exp", v.b.fneg(v.intrinsic("fabs", x, name_as=f"{name}.abs"),
                               name=f"{name}.negabs"), name=f"{name}.exp")
    one_plus_e = v.b.fadd(v.const(1.0), e, name=f"{name}.denominator")
    positive = v.b.fdiv(v.const(1.0), one_plus_e, name=f"{name}.positive")
    negative = v.b.fdiv(e, one_plus_e, name=f"{name}.negative")
    return v.b.select(v.compare("oge", x, v.const(0.0), f"{name}.ge0"), positive, negative,
                      name=name)


def _sign(v: _Vectors, x, name):
    # np.sign: 1, -1, NaN for NaN, +0 for either zero.
    zero_or_nan = v.b.select(v.compare("uno", x, x, f"{name}.nan"), x, v.const(0.0),
                             name=f"{name}.zero_or_nan")
    negative = v.b.select(v.compare("olt", x, v.const(0.0), f"{name}.lt0"), v.const(-1.0),
                          zero_or_nan, name=f"{name}.not_positive")
    return v.b.select(v.compare("ogt", x, v.const(0.0), f"{name}.gt0"), v.const(1.0), negative,
                      name=name)


def _tanh(v: _Vectors, x, name):
    # tanh(x) = sign(x) * E / (E + 2) with E = expm1(2 min(|x|, 20)): libmvec's expm1 and one
    # division cost ~0.5 ns/element less than its tanh (1.3 vs 1.8, bench/native_kernel.py),
    # 3 ulp from numpy at most (1e7 values).  The relative error of E reaches the result
    # scaled by 2 / (E + 2) <= 1; with expm1(-2|x|) instead it is scaled up to 3x (4 ulp
    # near tanh = 0.5).  tanh(20) rounds to 1, so the clamp changes no result and E never
    # overflows; a NaN passes the clamp, and copysign keeps -0 and the sign.
    # float32: libmvec's tanhf is faster than this formula, and within 2 ulp where the
    # formula in float32 arithmetic is not (4 ulp measured).  An AVX-512 reciprocal with
    # Newton steps instead of the division was slower (it competes with expm1 for FMA ports).
    if v.single or "expm1" not in v.vector_math:
        return v.libm("tanh", x, name=name)
    magnitude = v.intrinsic("fabs", x, name_as=f"{name}.abs")
    clamped = v.b.select(v.compare("ogt", magnitude, v.const(20.0), f"{name}.saturates"),
                         v.const(20.0), magnitude, name=f"{name}.clamped")
    e = v.libm("expm1", v.b.fmul(clamped, v.const(2.0), name=f"{name}.twice"),
               name=f"{name}.expm1")
    positive = v.b.fdiv(e, v.b.fadd(e, v.const(2.0), name=f"{name}.denominator"),
                        name=f"{name}.positive")
    return v.intrinsic("copysign", positive, x, name_as=name)


def _where(v: _Vectors, condition, a, b, name):
    nonzero = v.compare("une", condition, v.const(0.0), f"{name}.cond")
    return v.b.select(nonzero, a, b, name=name)


def _libm(function, v: _Vectors, *args, name):
    return v.libm(function, *args, name=name)


def _intrinsic(intrinsic, v: _Vectors, x, name):
    return v.intrinsic(intrinsic, x, name_as=name)


def _maximum(v: _Vectors, a, b, name):
    return v.maximum(a, b, name)


def _minimum(v: _Vectors, a, b, name):
    return v.minimum(a, b, name)


_LN2 = 0.6931471805599453


def _logaddexp(v: _Vectors, x, y, name):
    # numpy's npy_logaddexp: x + ln 2 where x == y (equal infinities stay infinite), else the
    # larger plus log1p(exp(-|x - y|)); NaN wherever x - y is NaN (max propagates it).
    difference = v.b.fsub(x, y, name=f"{name}.difference")
    distance = v.b.fneg(v.intrinsic("fabs", difference, name_as=f"{name}.distance"),
                        name=f"{name}.negdistance")
    tail = v.libm("log1p", v.libm("exp", distance, name=f"{name}.exp"), name=f"{name}.tail")
    general = v.b.fadd(v.maximum(x, y, f"{name}.larger"), tail, name=f"{name}.general")
    tied = v.b.fadd(x, v.const(_LN2), name=f"{name}.tied")
    return v.b.select(v.compare("oeq", x, y, f"{name}.equal"), tied, general, name=name)


#: libm functions of numpy coverage (issue 11 item 5), one per numpy ufunc: arcsin is
#: asin, ... (libmvec has them all since glibc 2.35; else scalar libm per lane)
COVERAGE_LIBM = {"sinh": 1, "cosh": 1, "asin": 1, "acos": 1, "atan": 1, "asinh": 1, "acosh": 1,
                 "atanh": 1, "log2": 1, "log10": 1, "exp2": 1, "cbrt": 1, "atan2": 2,
                 "hypot": 2}

#: name -> (number of arguments, lowering(v, *args, name=...)); pow is lowered by
#: ``_Expression.power`` (it needs to know whether the exponent is a literal or uniform).
FUNCTIONS = {
    **{f: (1, partial(_libm, f)) for f in ("exp", "log", "sin", "cos", "tan", "log1p",
                                           "expm1")},
    "tanh": (1, _tanh),
    "sqrt": (1, partial(_intrinsic, "sqrt")),
    "fabs": (1, partial(_intrinsic, "fabs")),
    "floor": (1, partial(_intrinsic, "floor")),
    "ceil": (1, partial(_intrinsic, "ceil")),
    "round": (1, partial(_intrinsic, "roundeven")),
    "sigmoid": (1, _sigmoid),
    "sign": (1, _sign),
    "max": (2, _maximum),
    "min": (2, _minimum),
    "where": (3, _where),
    "pow": (2, None),
    **{f: (arity, partial(_libm, f)) for f, arity in COVERAGE_LIBM.items()},
    "logaddexp": (2, _logaddexp),
}

_BINARY = {ast.Add: "fadd", ast.Sub: "fsub", ast.Mult: "fmul", ast.Div: "fdiv"}
_COMPARE = {ast.Eq: "oeq", ast.NotEq: "une", ast.Lt: "olt", ast.LtE: "ole", ast.Gt: "ogt",
            ast.GtE: "oge"}


def _square(v, x, name):
    return v.b.fmul(x, x, name=name)


def _square_root(v, x, name):
    return v.intrinsic("sqrt", x, name_as=name)


def _reciprocal(v, x, name):
    return v.b.fdiv(v.const(1.0), x, name=name)


#: float32 functions computed with libmvec's float variants: within 2 ulp of numpy's float32
#: results (tests/test_native.py checks it).  libmvec's expf and logf are 4 and 6 ulp from
#: numpy's (which are themselves up to 2 and 3 ulp from correctly rounded), and powf is
#: not better: those go through float64.
_SINGLE_PRECISION_ACCURATE = frozenset({"tanh", "tan", "sin", "cos", "log1p", "expm1"})

#: Exponents numpy computes exactly without pow (np.power's scalar fast paths and C99's
#: pow(x, 1) = x, pow(x, 0) = 1); any other exponent calls pow.
_EXACT_POWERS = {2.0: _square, 0.5: _square_root, -1.0: _reciprocal}


class _Expression:
    """Lowers one statement's expression; values are named after the statement's target."""

    def __init__(self, v: _Vectors, env: dict, uniform: set, index: int, statement):
        self.v, self.env, self.uniform = v, env, uniform
        self.index, (self.target, self.text) = index, statement
        self.root = None

    def lower(self) -> ir.Value:
        try:
            tree = ast.parse(self.text.strip(), mode="eval")
        except SyntaxError as error:
            raise self.error(f"syntax error: {error.msg}", None) from None
        self.root = tree.body
        return self.visit(tree.body)

    def visit(self, node) -> ir.Value:
        visitor = self._VISITORS.get(type(node))
        if visitor is None:
            raise self.error(f"{type(node).__name__} is not part of the kernel language", node)
        return visitor(self, node)

    def name_for(self, node, what: str) -> str:
        return self.target if node is self.root else f"{self.target}.{what}"

    def error(self, message: str, node) -> KernelSpecError:
        col = getattr(node, "col_offset", None)
        lead = f"{self.target} = "
        lines = [f"kernel statement {self.index + 1}: {message}", f"    {lead}{self.text.strip()}"]
        if col is not None:
            lines.append("    " + " " * (len(lead) + col) + "^")
        return KernelSpecError("\n".join(lines))

    def name(self, node: ast.Name):
        if node.id not in self.env:
            raise self.error(f"{node.id!r} is not an array, a scalar or an earlier target", node)
        return self.env[node.id]

    def constant(self, node: ast.Constant):
        if type(node.value) not in (int, float):
            raise self.error(f"only int and float literals, not {node.value!r}", node)
        return self.v.const(node.value)

    def binary(self, node: ast.BinOp):
        if isinstance(node.op, ast.Pow):
            return self.power(node, node.left, node.right)
        opname = _BINARY.get(type(node.op))
        if opname is None:
            raise self.error(f"operator {type(node.op).__name__} is not supported", node)
        left, right = self.visit(node.left), self.visit(node.right)
        return getattr(self.v.b, opname)(left, right, name=self.name_for(node, opname[1:]))

    def unary(self, node: ast.UnaryOp):
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.UAdd):
            return operand
        if not isinstance(node.op, ast.USub):
            raise self.error(f"operator {type(node.op).__name__} is not supported", node)
        return self.v.b.fneg(operand, name=self.name_for(node, "neg"))

    def compare(self, node: ast.Compare):
        if len(node.ops) != 1:
            raise self.error("one comparison at a time (write `where` for a range)", node)
        predicate = _COMPARE[type(node.ops[0])]
        left, right = self.visit(node.left), self.visit(node.comparators[0])
        name = self.name_for(node, predicate)
        holds = self.v.compare(predicate, left, right, f"{name}.holds")
        return self.v.b.select(holds, self.v.const(1.0), self.v.const(0.0), name=name)

    def call(self, node: ast.Call):
        fname = node.func.id if isinstance(node.func, ast.Name) else None
        if fname not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise self.error(f"unknown function {ast.unparse(node.func)!r} (known: {known})",
                             node)
        arity, lowering = FUNCTIONS[fname]
        if len(node.args) != arity or node.keywords:
            raise self.error(f"{fname} takes {arity} positional argument(s)", node)
        if lowering is None:
            return self.power(node, *node.args)
        args = [self.visit(arg) for arg in node.args]
        return lowering(self.v, *args, name=self.name_for(node, fname))

    def power(self, node, base_node, exponent_node):
        base, name = self.visit(base_node), self.name_for(node, "pow")
        literal = _literal(exponent_node)
        if literal is not None:
            return self.literal_power(base, literal, name)
        exponent = self.visit(exponent_node)
        if not self.is_uniform(exponent_node):
            return self.v.libm("pow", base, exponent, name=name)
        return self.uniform_power(base, exponent, name)

    def literal_power(self, base, exponent: float, name: str):
        if exponent in _EXACT_POWERS:
            return _EXACT_POWERS[exponent](self.v, base, name)
        if exponent == 1.0:
            return base
        if exponent == 0.0:
            return self.v.const(1.0)
        return self.v.libm("pow", base, self.v.const(exponent), name=name)

    def uniform_power(self, base, exponent, name: str):
        """A scalar exponent: numpy's shortcut when it is 2, 0.5 or -1, else pow (the
        branches are uniform: every lane takes the same one)."""
        b = self.v.b
        scalar = b.extract_element(exponent, ir.Constant(I64, 0), name=f"{name}.exponent")
        tests = {value: b.fcmp_ordered("==", scalar, FloatConstant(self.v.scalar, value),
                                       name=f"{name}.is_{_label(value)}")
                 for value in _EXACT_POWERS}
        shortcut = b.or_(b.or_(tests[2.0], tests[0.5]), tests[-1.0], name=f"{name}.shortcut")
        result = Poison(self.v.type)
        with conditional(b, b.not_(shortcut, name=f"{name}.general"), f"{name}.pow", [result],
                         [f"{name}.after_pow"]) as branch:
            branch.values = [self.v.libm("pow", base, exponent, name=f"{name}.pow")]
        result = branch.values[0]
        for value, lowering in _EXACT_POWERS.items():
            label = _label(value)
            with conditional(b, tests[value], f"{name}.{label}", [result],
                             [name if value == -1.0 else f"{name}.after_{label}"]) as branch:
                branch.values = [lowering(self.v, base, f"{name}.{label}")]
            result = branch.values[0]
        return result

    def is_uniform(self, node) -> bool:
        return all(n.id in self.uniform for n in ast.walk(node) if isinstance(n, ast.Name))

    _VISITORS: ClassVar[dict] = {ast.Name: name, ast.Constant: constant, ast.BinOp: binary,
                                 ast.UnaryOp: unary, ast.Compare: compare, ast.Call: call}


def _literal(node):
    """The value of a numeric literal (optionally negated), else None."""
    sign = 1.0
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * float(node.value)
    return None


def _label(value: float) -> str:
    return {2.0: "square", 0.5: "sqrt", -1.0: "reciprocal"}[value]


# ----- the body: the statements over one vector of elements -----------------------------

def _emit_body(module, spec: KernelSpec, v: _Vectors, name: str) -> ir.Function:
    """``body(<W x T> arrays..., T scalars...) -> {outputs..., reduced values...}``."""
    returned = [*spec.outputs, *(r for r, _ in spec.reductions)]
    ftype = ir.FunctionType(ir.LiteralStructType([v.type] * len(returned)),
                            [v.type] * len(spec.arrays) + [v.scalar] * len(spec.scalars))
    fn = ir.Function(module, ftype, name=name)
    fn.linkage = "internal"
    fn.attributes.add("alwaysinline")
    fn.attributes.add("nounwind")
    _vector_width_attributes(fn, v)
    v.b = ir.IRBuilder(fn.append_basic_block("entry"))
    env = {}
    for arg, array in zip(fn.args[:len(spec.arrays)], spec.arrays, strict=True):
        arg.name = array
        env[array] = arg
    for arg, scalar in zip(fn.args[len(spec.arrays):], spec.scalars, strict=True):
        arg.name = f"{scalar}.scalar"
        env[scalar] = v.splat(arg, scalar)
    uniform = set(spec.scalars)
    for index, statement in enumerate(spec.statements):
        expression = _Expression(v, env, uniform, index, statement)
        env[statement[0]] = expression.lower()
        if expression.is_uniform(expression.root):
            uniform.add(statement[0])
    result = Poison(ftype.return_type)
    for position, value_name in enumerate(returned):
        result = v.b.insert_value(result, env[value_name], position, name=f"returns.{value_name}")
    v.b.ret(result)
    return fn


def _vector_width_attributes(fn: ir.Function, v: _Vectors) -> None:
    # Without these, LLVM splits 512-bit vectors on CPUs that prefer 256-bit ones, and
    # would pass <8 x double> to libmvec's AVX-512 functions in two ymm registers.
    bits = str(v.target.lanes * 64)
    add_string_attribute(fn.attributes, "min-legal-vector-width", bits)
    add_string_attribute(fn.attributes, "prefer-vector-width", bits)


# ----- the kernel: the loop over elements -----------------------------------------------

_IDENTITY = {"sum": -0.0, "max": float("-inf"), "min": float("inf")}


class _KernelLoop:
    """Emits ``kernel(start, stop, arrays, scalars, partials)``: full vectors, then one
    masked vector for the rest; with reductions, chunk by chunk."""

    def __init__(self, module, spec: KernelSpec, v: _Vectors, body: ir.Function, name: str):
        self.spec, self.v, self.body = spec, v, body
        self.fn = ir.Function(module, _KERNEL_TYPE, name=name)
        self.fn.attributes.add("nounwind")
        _vector_width_attributes(self.fn, v)
        for arg, arg_name in zip(self.fn.args, _KERNEL_ARGS, strict=True):
            arg.name = arg_name
        self.b = v.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.align = 4 if v.scalar == ir.FloatType() else 8
        self.lane_numbers = ir.Constant(ir.VectorType(I64, v.lanes),
                                        [ir.Constant(I64, i) for i in range(v.lanes)])

    def emit(self) -> None:
        b, spec, (start, stop, arrays, scalars, _) = self.b, self.spec, self.fn.args
        names = [*spec.arrays, *spec.outputs]
        self.data = [self.load_indexed(arrays, PTR, k, f"{name}.data")
                     for k, name in enumerate(names)]
        self.scalars = [self.load_scalar(scalars, j, name) for j, name in enumerate(spec.scalars)]
        if spec.reductions:
            self.emit_chunks(start, stop)
        else:
            self.emit_elements(start, stop, [])
        b.ret_void()

    def load_indexed(self, base, etype, index: int, name: str):
        address = self.b.gep(base, [ir.Constant(I64, index)], source_etype=etype,
                             name=f"{name}.address")
        return self.b.load(address, typ=etype, name=name)

    def load_scalar(self, scalars, index: int, name: str):
        value = self.load_indexed(scalars, ir.DoubleType(), index, f"{name}.f64"
                                  if self.v.scalar != ir.DoubleType() else name)
        if self.v.scalar == ir.DoubleType():
            return value
        return self.b.fptrunc(value, self.v.scalar, name=name)

    def emit_chunks(self, start, stop) -> None:
        """One partial per reduction per chunk of CHUNK elements."""
        b, chunk_size = self.b, ir.Constant(I64, CHUNK)

        def more_chunks(b, i):
            return b.icmp_signed("<", i, stop, name="chunk.more")

        with counted_loop(b, "chunk", start, chunk_size, more_chunks) as chunk:
            chunk_end = b.add(chunk.index, chunk_size, name="chunk.end")
            chunk_stop = b.select(b.icmp_signed("<", chunk_end, stop, name="chunk.inside"),
                                  chunk_end, stop, name="chunk.stop")
            identities = [self.v.const(_IDENTITY[op], self.v.double)
                          for _, op in self.spec.reductions]
            accumulators = self.emit_elements(chunk.index, chunk_stop, identities)
            self.store_partials(chunk.index, accumulators)

    def emit_elements(self, lo, hi, accumulators: list) -> list:
        """Full vectors over [lo, hi), then one masked vector for what is left."""
        b, lanes = self.b, ir.Constant(I64, self.v.lanes)
        acc_names = [f"{name}.{op}" for name, op in self.spec.reductions]

        def full_vector_left(b, i):
            return b.icmp_signed(">=", b.sub(hi, i, name="vector.left"), lanes,
                                 name="vector.full")

        with counted_loop(b, "vector", lo, lanes, full_vector_left, accumulators,
                          acc_names) as loop:
            loop.next = self.step(loop.index, loop.carried, mask=None)
        with conditional(b, b.icmp_signed("<", loop.index, hi, name="tail.any"), "tail",
                         loop.carried, acc_names) as tail:
            left = b.sub(hi, loop.index, name="tail.left")
            mask = b.icmp_signed("<", self.lane_numbers, self.v.splat(left, "tail.lanes_left"),
                                 name="tail.mask")
            tail.values = self.step(loop.index, loop.carried, mask)
        return tail.values

    def step(self, index, accumulators: list, mask) -> list:
        """The body on the vector at ``index`` (masked: only the lanes in ``mask``)."""
        b, spec, v = self.b, self.spec, self.v
        n_in = len(spec.arrays)
        inputs = [self.load_vector(self.data[k], index, name, mask)
                  for k, name in enumerate(spec.arrays)]
        results = b.call(self.body, [*inputs, *self.scalars], name="results")
        for k, name in enumerate(spec.outputs):
            value = b.extract_value(results, k, name=name)
            self.store_vector(value, self.data[n_in + k], index, name, mask)
        updated = []
        for r, ((name, op), acc) in enumerate(zip(spec.reductions, accumulators, strict=True)):
            value = b.extract_value(results, len(spec.outputs) + r, name=f"{name}.value")
            if value.type != v.double:
                value = b.fpext(value, v.double, name=f"{name}.f64")
            if mask is not None:
                value = b.select(mask, value, v.const(_IDENTITY[op], v.double),
                                 name=f"{name}.in_range")
            updated.append(self.combine(op, acc, value, f"{name}.{op}.next"))
        return updated

    def combine(self, op: str, a, b, name: str):
        if op == "sum":
            return self.b.fadd(a, b, name=name)
        return (self.v.maximum if op == "max" else self.v.minimum)(a, b, name)

    def element_address(self, data, index, name: str):
        return self.b.gep(data, [index], source_etype=self.v.scalar, name=f"{name}.at")

    def load_vector(self, data, index, name: str, mask):
        address = self.element_address(data, index, name)
        if mask is None:
            return self.b.load(address, typ=self.v.type, name=name, align=self.align)
        masked_load = self.v.function(f"llvm.masked.load.{self.v.suffix()}.p0", ir.FunctionType(
            self.v.type, [PTR, mask.type, self.v.type]))
        # The lanes past the end read as 1.0: harmless for every function (no special-case
        # path in libmvec), and never stored.
        call = self.b.call(masked_load, [address, mask, self.v.const(1.0)], name=name)
        self._align_pointer_argument(call)
        return call

    def store_vector(self, value, data, index, name: str, mask) -> None:
        address = self.element_address(data, index, f"{name}.out")
        if mask is None:
            self.b.store(value, address, align=self.align)
            return
        masked_store = self.v.function(f"llvm.masked.store.{self.v.suffix()}.p0",
                                       ir.FunctionType(ir.VoidType(),
                                                       [self.v.type, PTR, mask.type]))
        call = self.b.call(masked_store, [value, address, mask])
        self._align_pointer_argument(call, position=1)

    def _align_pointer_argument(self, call, position: int = 0) -> None:
        attributes = ir.values.ArgumentAttributes()
        attributes.align = self.align
        call.arg_attributes[position] = attributes

    def store_partials(self, chunk_start, accumulators: list) -> None:
        b, n_reductions = self.b, len(self.spec.reductions)
        partials = self.fn.args[4]
        chunk = b.udiv(chunk_start, ir.Constant(I64, CHUNK), name="chunk.number")
        first = b.mul(chunk, ir.Constant(I64, n_reductions), name="chunk.partials")
        for r, ((name, op), acc) in enumerate(zip(self.spec.reductions, accumulators,
                                                  strict=True)):
            total = self.reduce_lanes(op, acc, f"{name}.{op}.chunk")
            slot = b.add(first, ir.Constant(I64, r), name=f"{name}.slot")
            address = b.gep(partials, [slot], source_etype=ir.DoubleType(),
                            name=f"{name}.partial")
            b.store(total, address)

    def reduce_lanes(self, op: str, vector, name: str):
        """Combine the lanes pairwise: lane i with lane i + width/2, halving the width."""
        width = self.v.lanes
        while width > 1:
            width //= 2
            low = self.b.shuffle_vector(vector, vector, _lanes(range(width)),
                                        name=f"{name}.low{width}")
            high = self.b.shuffle_vector(vector, vector, _lanes(range(width, 2 * width)),
                                         name=f"{name}.high{width}")
            vector = self.combine(op, low, high, f"{name}.{width}")
        return self.b.extract_element(vector, ir.Constant(I64, 0), name=name)


def _lanes(numbers) -> ir.Constant:
    numbers = list(numbers)
    return ir.Constant(ir.VectorType(ir.IntType(32), len(numbers)),
                       [ir.Constant(ir.IntType(32), i) for i in numbers])

