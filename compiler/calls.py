"""What each normalized statement computes: its operation, inputs and parameters.

``describe(parsed, value)`` turns the right-hand side of a normalized
assignment into an ``Operation``:

- ``prim``: a primitive of the table, with the array arguments (atoms) and
  the non-array parameters (keyword expressions), reached from an ``nd`` op,
  a numpy function, an NDArray method or attribute, or a Python operator;
- ``copy``, ``const``: ``y = x`` and ``y = 3.0``;
- ``user``: a call of another user function (transformed recursively);
- ``index``, ``pack``, ``append``, ``join``: structural reads/builds of arrays,
  tuples and lists; ``dict`` (a literal with constant keys, ``dict(x=a)``),
  ``setitem`` (``d[k] = v``, normalized to ``d = support.setitem(d, k, v)``), ``get``,
  ``values``, ``items``, ``extend`` (``lst.extend(xs)``), ``without`` (after the item
  read of ``x.pop(k)``): containers as values (compiler/pytree.py);
- ``inert``: anything whose result has a zero derivative by nature (comparisons,
  ``len``, ``range``, ``int``, ``x.shape``, ``x.argmax()``, ``x.detach()``, ...);
- ``severs``: a conversion that leaves the differentiated world (``float(x)``,
  ``x.asscalar()``, ``x.item()``, ``x.tolist()``, ``x.asnumpy()``): fine where its
  result only decides control flow, a CompileError where the result reaches the
  differentiated result (analysis);
- ``unknown``: a call with no gradient rule; analysis raises a CompileError if a
  differentiated value reaches it in any way.

Every operand an ``Operation`` does not list in ``args`` (followed by a gradient rule)
or ``cut`` (read on purpose without a gradient: index keys, comparison operands, the
receiver of ``.shape``) is, for analysis, a flow the compiler cannot follow: reading a
differentiated value there is a CompileError (``analysis.check_flows``).  ``mutates``
lists the atoms a call may change in place (``x.sort()``, ``np.copyto(x, v)``,
``lst.extend(...)``, any call pullback does not know).

All op-specific knowledge of the compiler is in the tables of this module.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import math
import types
from dataclasses import dataclass, field

import gast
import numpy as np

from pullback.runtime import primitives as P
from pullback.runtime import rng

from . import implicit
from .errors import error_at
from .parse import signature_function

BINARY = {gast.Add: "add", gast.Sub: "subtract", gast.Mult: "multiply", gast.Div: "divide",
          gast.Pow: "power", gast.MatMult: "matmul", gast.Mod: "mod"}
UNARY = {gast.USub: "negative"}

# numpy functions that are primitives: numpy name -> (primitive, {numpy kw: our kw})
NUMPY = {
    "sin": "sin", "cos": "cos", "tan": "tan", "tanh": "tanh", "exp": "exp", "log": "log",
    "sqrt": "sqrt", "square": "square", "abs": "abs", "absolute": "abs", "sign": "sign",
    "log1p": "log1p", "expm1": "expm1", "negative": "negative", "reciprocal": "reciprocal",
    "floor": "floor", "ceil": "ceil", "round": "round", "rint": "round", "add": "add",
    "subtract": "subtract", "multiply": "multiply", "divide": "divide",
    "true_divide": "divide", "power": "power", "maximum": "maximum", "minimum": "minimum",
    "mod": "mod", "remainder": "mod",
    "dot": "dot", "matmul": "matmul", "sum": "sum", "mean": "mean", "max": "max", "amax": "max",
    "min": "min", "amin": "min", "prod": "prod", "where": "where", "transpose": "transpose",
    "reshape": "reshape", "clip": "clip", "zeros_like": "zeros_like", "ones_like": "ones_like",
    "broadcast_to": "broadcast_to", "tile": "tile", "repeat": "repeat",
    "expand_dims": "expand_dims", "squeeze": "squeeze",
}
# numpy coverage (issue 11 item 5): elementwise math of the same name
NUMPY.update({name: name for name in (
    "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "log2",
    "log10", "exp2", "cbrt", "sinc", "arctan2", "hypot", "logaddexp",
    # structural: numpy's signatures (np.einsum and np.pad: _describe_coverage)
    "cumsum", "cumprod", "atleast_1d", "atleast_2d", "atleast_3d", "flip", "roll", "diag",
    "trace", "triu", "tril", "pad", "take_along_axis", "outer", "inner", "vdot",
    "tensordot",
    "asarray")})
NUMPY["array"] = "asarray"   # np.array(x) of a (nested) list holding differentiated values
# numpy.linalg functions that are primitives (linear algebra on stacks of matrices)
NUMPY_LINALG = {np.linalg.det: "det", np.linalg.slogdet: "slogdet", np.linalg.inv: "inverse",
                np.linalg.solve: "solve", np.linalg.cholesky: "cholesky"}
NUMPY_KEYWORDS = {"newshape": "shape", "a_min": "a_min", "a_max": "a_max", "axes": "axes"}

# math-module functions that are primitives (in compiled code they compute with numpy's
# semantics: inf and nan instead of exceptions, but in double precision whatever the
# argument, as Python's math does: ``support.mathops``, never fused); any other math
# function (floor, ceil, which return ints, pow, which always returns a float, ...) runs
# as written: a differentiated value flowing into one is a CompileError, never a silent
# zero
MATH = {"sin": "sin", "cos": "cos", "tan": "tan", "tanh": "tanh", "exp": "exp", "log": "log",
        "sqrt": "sqrt", "log1p": "log1p", "expm1": "expm1", "fabs": "abs",
        "sinh": "sinh", "cosh": "cosh", "asin": "arcsin", "acos": "arccos", "atan": "arctan",
        "asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh", "log2": "log2",
        "log10": "log10", "exp2": "exp2", "cbrt": "cbrt", "atan2": "arctan2", "hypot": "hypot"}

# NDArray methods and attributes that are primitives
METHODS = {name: name for name in (
    "sum", "mean", "max", "min", "prod", "norm", "exp", "log", "sqrt", "square", "abs",
    "sign", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "log1p", "expm1", "reciprocal",
    "floor", "ceil", "round", "transpose", "flatten", "expand_dims", "squeeze", "tile",
    "repeat", "broadcast_to", "clip", "softmax", "log_softmax", "copy", "astype", "reshape",
    "pick", "take", "slice_axis", *P.COVERAGE_METHODS)}
ATTRIBUTES = {"T": "transpose"}
INERT_ATTRIBUTES = {"shape", "ndim", "size", "dtype", "context", "ctx"}
INERT_METHODS = {"argmax", "argmin", "wait_to_read", "zeros_like", "ones_like", "detach"}
# conversions to Python or numpy values outside autograd (MXNet: no gradient through them)
SEVERING_METHODS = {"asscalar", "asnumpy", "item", "tolist"}
# methods that read their receiver only (containers' and arrays'); any other method of a
# local pullback has no rule for may change its receiver in place (sort, fill, extend, ...)
PURE_METHODS = {"get", "keys", "values", "items", "copy", "index", "count", "any", "all",
                "nonzero", "argsort", "tolist", "item", "asscalar", "asnumpy",
                "searchsorted"}
# a dict's methods compiled code follows: d.get(k, default), d.values(), d.items() (as
# lists: ``support.values``), d.keys() (no gradient)
CONTAINER_METHODS = {"get": "get", "values": "values", "items": "items", "keys": "keys"}
INERT_CALLABLES = {builtins.range, builtins.len, builtins.int, builtins.bool, builtins.print,
                   builtins.isinstance, builtins.round}
# calls that never change their arguments: builtins and the math module (numpy's are
# pure too unless listed in NUMPY_MUTATING or given ``out=``)
PURE_BUILTINS = {v for v in vars(builtins).values() if callable(v)} - {
    builtins.setattr, builtins.delattr, builtins.exec, builtins.eval}
# numpy functions that write into their first argument
NUMPY_MUTATING = {np.copyto, np.put, np.place, np.putmask, np.put_along_axis,
                  np.fill_diagonal, np.random.shuffle}
# calls whose result is a new array, sharing memory with none of their arguments (so a
# write into it is seen through no other name); ``np.array(x, copy=False)`` is not
FRESH_CALLS = {np.zeros, np.ones, np.empty, np.full, np.zeros_like, np.ones_like,
               np.empty_like, np.full_like, np.array, np.copy, np.eye, np.identity, np.arange,
               np.linspace, P.zeros, P.ones, P.full, P.empty, P.arange, P.array}
# nd functions that make a new array (MXNet's float32 unless dtype= says otherwise): no
# gradient flows out of them; in compiled code their result is the raw numpy array
# (``support.raw``), as every other array there, so the next operation accepts it
CONSTRUCTORS = {P.array, P.zeros, P.ones, P.full, P.empty, P.arange, rng.normal,
                rng.uniform, rng.randint}
# predicates of numbers and arrays: a bool (array) has no gradient to lose, so a
# differentiated value may flow into them (``if math.isnan(x):``, ``x * np.isfinite(x)``)
PREDICATES = {math.isnan, math.isinf, math.isfinite, math.isclose, np.isnan, np.isinf,
              np.isfinite, np.isclose, np.allclose, np.signbit, np.isposinf, np.isneginf,
              np.array_equal, np.isreal, np.iscomplex}
# nd functions that are thin wrappers choosing one primitive's parameters
WRAPPERS = {P.reshape: "reshape", P.getitem: "getitem"}


@dataclass
class Operation:
    kind: str
    prim: object = None
    args: list = field(default_factory=list)      # atoms (array operands, in order)
    params: list = field(default_factory=list)    # gast.keyword with atom values
    callee: object = None                         # user function object
    label: str = ""                               # what to call it in messages
    numpy: bool = False   # spelled as a numpy function: numpy's 0-d results, not (1,)
    math: bool = False    # a math-module function: computes in double (``support.mathops``)
    cut: list = field(default_factory=list)       # nodes read on purpose, no gradient
    mutates: list = field(default_factory=list)   # atoms the call may change in place
    fresh: bool = False   # an unknown call whose result is a new array (FRESH_CALLS)
    # a primitive whose result may be its operand itself (numpy's ``np.asarray(y)``,
    # ``y.astype(y.dtype, copy=False)``) although the primitive copies: an alias for the
    # aliasing rule (analysis._VIEWS lists the primitives that are views whatever they read)
    view: bool = False

    @property
    def elementwise(self) -> bool:
        """A differentiable elementwise primitive the fuser and the inline adjoint can
        express in the scalar language (a formula and a derivative per operand)."""
        prim = self.prim
        return (self.kind == "prim" and prim.scalar is not None and prim.vjps is not None
                and not self.params and len(prim.scalar_vjps) == len(self.args))


def _resolve(parsed, expr):
    """The object a global name or attribute chain refers to (None if unknown)."""
    if isinstance(expr, gast.Name):
        try:
            return parsed.resolve(expr.id)
        except KeyError:
            return None
    if isinstance(expr, gast.Attribute):
        base = _resolve(parsed, expr.value)
        return getattr(base, expr.attr, None) if base is not None else None
    return None


def _dotted(expr) -> str:
    if isinstance(expr, gast.Name):
        return expr.id
    if isinstance(expr, gast.Attribute):
        return f"{_dotted(expr.value)}.{expr.attr}"
    return type(expr).__name__


def _split_arguments(prim, args, keywords, owner=None):
    """Array operands and parameters of a primitive call, by the forward's signature: a
    keyword naming one of the forward's array parameters (``nd.Convolution(data=X,
    weight=W)``) is that operand (a missing one before it takes its default)."""
    operands = ([owner] if owner is not None else []) + list(args)
    n_arrays = len(prim.vjps) if prim.vjps is not None else None
    array_names, defaults = [], {}
    if prim.params:
        try:
            sig = inspect.signature(prim.forward)
            positional = [p for p in sig.parameters.values()
                          if p.kind == p.POSITIONAL_OR_KEYWORD and p.name not in prim.params]
            array_names = [p.name for p in positional]
            defaults = {p.name: p.default for p in positional if p.default is not p.empty}
            n_arrays = len(array_names)
        except (TypeError, ValueError):
            pass
    if n_arrays is None:
        n_arrays = len(operands)
    arrays, extra = operands[:n_arrays], operands[n_arrays:]
    by_name = {k.arg: k.value for k in keywords if k.arg in array_names[len(arrays):]}
    if by_name:
        last = max(array_names.index(name) for name in by_name)
        for name in array_names[len(arrays):last + 1]:
            arrays.append(by_name[name] if name in by_name
                          else gast.Constant(value=defaults.get(name), kind=None))
    params = [gast.keyword(arg=NUMPY_KEYWORDS.get(k.arg, k.arg), value=k.value)
              for k in keywords if k.arg not in by_name]
    for pname, value in zip(prim.params, extra, strict=False):
        params.append(gast.keyword(arg=pname, value=value))
    return arrays, params


def _reshape(parsed, call, operand, dims, label, numpy) -> Operation:
    """``x.reshape(...)``, ``nd.reshape(x, ...)``, ``np.reshape(x, ...)``: the reshape
    primitive, its shape given by position (one tuple or several ints) or by keyword
    (``shape=``, numpy's ``newshape=``), MXNet's ``reverse=`` passed on; any other
    parameter (numpy's ``order=``) is refused rather than ignored."""
    keywords = {k.arg: k.value for k in call.keywords}
    named = [keywords.pop(name) for name in ("shape", "newshape") if name in keywords]
    reverse = keywords.pop("reverse", None)
    if keywords or (named and dims) or len(named) > 1 or (reverse is not None and numpy):
        extra = sorted(keywords) or ["reverse" if numpy else "shape"]
        raise error_at(parsed, call, f"{label}: pullback does not support the parameter "
                       f"{extra[0]!r} here",
                       "What to do: give the shape once (by position or as shape=), "
                       "in C order.")
    dims = dims or named
    if not dims:
        raise error_at(parsed, call, f"{label} needs a shape")
    shape = dims[0] if len(dims) == 1 else gast.Tuple(elts=list(dims), ctx=gast.Load())
    params = [gast.keyword(arg="shape", value=shape)]
    if reverse is not None:
        params.append(gast.keyword(arg="reverse", value=reverse))
    return Operation("prim", P.REGISTRY["reshape"], [operand], params, label=label)


# the support calls of a with block (normalize.rewrite_scopes): no gradient flows through
_SCOPE_SUPPORT = {"scope_enter": "with", "scope_exit": "with",
                  "stop_gradient": "a value computed inside ag.pause()"}


def describe(parsed, value, locals_=frozenset()) -> Operation:
    """The operation a normalized right-hand side performs (``locals_``: local names)."""
    if isinstance(value, gast.Name):
        return Operation("copy", args=[value])
    if isinstance(value, gast.Constant):
        return Operation("const")
    if isinstance(value, gast.BinOp):
        prim_name = BINARY.get(type(value.op))
        if prim_name is None:   # a // b, bit operations: piecewise constant
            return Operation("inert", cut=[value.left, value.right])
        # numpy's `@` of two vectors is a 0-d number, not MXNet's (1,)
        return Operation("prim", P.REGISTRY[prim_name], [value.left, value.right],
                         numpy=prim_name == "matmul")
    if isinstance(value, gast.UnaryOp):
        if isinstance(value.op, gast.UAdd):
            return Operation("copy", args=[value.operand])   # +x is x
        prim_name = UNARY.get(type(value.op))
        if prim_name is None:   # not a, ~a
            return Operation("inert", cut=[value.operand])
        return Operation("prim", P.REGISTRY[prim_name], [value.operand])
    if isinstance(value, gast.Compare):
        return Operation("inert", cut=[value])
    if isinstance(value, gast.Attribute):
        if value.attr == "grad":
            spelled = ast.unparse(gast.gast_to_ast(value))
            raise error_at(parsed, value, f"{spelled} inside a compiled function: compiled "
                           "code holds arrays' values (numpy), not their gradient buffers",
                           f"pass {spelled} as an argument of its own, or do the update "
                           "outside the compiled function")
        return _describe_attribute(value)
    if isinstance(value, gast.Subscript):
        return Operation("index", args=[value.value], params=[value.slice],
                         cut=[value.slice])
    if isinstance(value, (gast.Tuple, gast.List)):
        return Operation("pack", args=list(value.elts))
    if isinstance(value, gast.Dict):   # constant keys (normalize)
        return Operation("dict", args=list(value.values), params=list(value.keys))
    if isinstance(value, gast.Call):
        return _describe_call(parsed, value, locals_)
    raise error_at(parsed, value, f"unexpected {type(value).__name__} after normalization")


def _describe_attribute(value) -> Operation:
    if isinstance(value.value, gast.Name) and value.attr in ATTRIBUTES:
        return Operation("prim", P.REGISTRY[ATTRIBUTES[value.attr]], [value.value],
                         label=f".{value.attr}")
    if value.attr in INERT_ATTRIBUTES:
        return Operation("inert", cut=[value.value], label=f".{value.attr}")
    return Operation("unknown", label=f".{value.attr}")


def _describe_call(parsed, call, locals_) -> Operation:
    func = call.func
    kernel = getattr(call, "pb_kernel", None)
    if kernel is not None:
        return Operation("kernel", args=list(call.args), callee=kernel, label=kernel.name)
    if (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
            and func.value.id == "support" and func.attr == "append"):
        return Operation("append", args=list(call.args))
    if (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
            and func.value.id == "support" and func.attr == "assertion_failed"):
        return Operation("inert", cut=[call], label="assert")   # raises: no gradient
    if (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
            and func.value.id == "support" and func.attr in _SCOPE_SUPPORT):
        return Operation("inert", cut=list(call.args), label=_SCOPE_SUPPORT[func.attr])
    if (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
            and func.value.id == "support" and func.attr == "extend"):
        return Operation("extend", args=list(call.args), label=".extend()")
    if (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
            and func.value.id == "support" and func.attr == "without"):
        container, key = call.args
        return Operation("without", args=[container], params=[key], cut=[key],
                         label=".pop()")
    if (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
            and func.value.id == "support" and func.attr == "setitem"):
        container, key, item = call.args
        return Operation("setitem", args=[container, item], params=[key], cut=[key],
                         label="item assignment")
    label = _dotted(func)
    if any(k.arg == "out" for k in call.keywords):
        raise error_at(parsed, call, f"{label}(..., out=...) writes into an existing array, "
                       "which pullback does not follow",
                       "What to do: use the returned value (y = f(x)) instead of out=.")
    if (isinstance(func, gast.Attribute) and isinstance(func.value, gast.Name)
            and func.value.id in locals_):
        return _describe_method(parsed, call, func)
    target = _resolve(parsed, func)
    if target is np.einsum or target is P.einsum:
        return _einsum(parsed, call, label)
    prim = getattr(target, "prim", None)
    if prim is not None and P.REGISTRY.get(prim.name) is prim:
        arrays, params = _split_arguments(prim, call.args, call.keywords)
        return Operation("prim", prim, arrays, params, label=label)
    if target is P.reshape or target is np.reshape:
        return _reshape(parsed, call, call.args[0], call.args[1:], label,
                        numpy=target is np.reshape)
    if target in (P.concat, P.stack) and call.args and isinstance(call.args[0], gast.Starred):
        return _starred_join(parsed, call, label, stack=target is P.stack)
    if target is P.concatenate:
        return _numpy_join(parsed, call, label, stack=False)
    if target in (P.concat, P.stack):
        prim = P.REGISTRY["concat" if target is P.concat else "stack"]
        return Operation("prim", prim, list(call.args), list(call.keywords), label=label)
    if target is np.linalg.norm:
        return _numpy_norm(parsed, call, label)
    if target is np.concatenate or target is np.stack:
        return _numpy_join(parsed, call, label, stack=target is np.stack)
    if _hashable(target) and target in NUMPY_LINALG:
        prim = P.REGISTRY[NUMPY_LINALG[target]]
        _check_numpy_parameters(parsed, call, prim, label, call.args)
        return Operation("prim", prim, list(call.args), [], label=label, numpy=True)
    numpy_name = _numpy_name(target)
    if numpy_name is not None:
        prim = P.REGISTRY[NUMPY[numpy_name]]
        call = _operands_by_name(target, call, prim)
        _check_numpy_parameters(parsed, call, prim, label, call.args)
        arrays, params = _split_arguments(prim, call.args, call.keywords)
        if prim is P.REGISTRY["pad"]:
            _check_pad_mode(parsed, call, params)
        if prim is P.REGISTRY["dot"]:   # numpy's semantics for 3+ axes, not MXNet's
            params = [*params, gast.keyword(arg="numpy", value=gast.Constant(True, None))]
        return Operation("prim", prim, arrays, params, label=label, numpy=True,
                         view=numpy_name == "asarray")
    if _hashable(target) and target in PREDICATES:
        return Operation("inert", cut=[call], label=label)
    if _is_math(target):
        return _describe_math(target, call, label)
    if target is builtins.abs and len(call.args) == 1 and not call.keywords:
        return Operation("prim", P.REGISTRY["abs"], list(call.args), label=label)
    if target in INERT_CALLABLES:
        return Operation("inert", cut=[call], label=label)
    if _hashable(target) and target in CONSTRUCTORS:
        # nothing cut: a differentiated value passed in (nd.array(x), nd.full(s, x)) would
        # lose its gradient, which analysis refuses
        return Operation("inert", label=label)
    if target is builtins.float:
        return Operation("severs", args=list(call.args), label=label)
    made_by = getattr(target, "pullback_derivative", None)
    nested = getattr(target, "pullback_gradient_of", None) or \
        getattr(target, "pullback_jacfwd_of", None)
    if made_by is not None and nested is not None:
        # pb.grad / pb.jacfwd of a user function: the forward runs it as it is; forward
        # mode over it calls its tangent rule (forward_api.derivative_tangent)
        inner = getattr(nested[0], "pullback_function", nested[0])
        return Operation("derivative", args=_positional(parsed, call, inner), callee=target,
                         label=label)
    if made_by is not None:
        raise error_at(parsed, call, f"{label}() is a derivative made by {made_by}(); "
                       "compiled code does not differentiate or run derivatives inside "
                       "(nested differentiation is not supported yet)",
                       "What to do: compute the derivative outside the compiled function and "
                       "pass it in, or use the tape (autograd.grad(..., create_graph=True)).")
    if target is builtins.dict and not call.args and call.keywords:   # dict(x=a, y=b)
        return Operation("dict", args=[k.value for k in call.keywords],
                         params=[gast.Constant(value=k.arg, kind=None) for k in call.keywords],
                         label=label)
    user_fn = getattr(target, "pullback_function", target)   # a CompiledFunction's own
    if isinstance(user_fn, types.FunctionType) and _is_user_function(user_fn):
        args = _positional(parsed, call, user_fn) + implicit.call_arguments(parsed, user_fn)
        return Operation("user", args=args, callee=target, label=label)
    fresh = any(target is f for f in FRESH_CALLS) \
        and not any(k.arg == "copy" for k in call.keywords)
    return Operation("unknown", label=label, mutates=_mutated_arguments(target, call),
                     fresh=fresh)


def _mutated_arguments(target, call) -> list:
    """The atoms a call pullback has no rule for may change in place: none for builtins,
    the math module and numpy (but for its writing functions' first argument); every
    argument of anything else (a C extension, a method of an object)."""
    if target in NUMPY_MUTATING:
        return list(call.args[:1])
    module = getattr(target, "__module__", None) or ""
    if target in PURE_BUILTINS or module == "math" or module.startswith(("numpy", "pullback")) \
            or isinstance(target, np.ufunc):
        return []
    return list(call.args) + [k.value for k in call.keywords]


# numpy functions whose parameters after the arrays are not ours in the same order
# (``np.sum(a, axis, dtype, out, keepdims)``, ``np.dot(a, b, out)``): how many of them
# may be passed by position
_NUMPY_POSITIONAL = {"sum": 1, "mean": 1, "max": 1, "min": 1, "prod": 1, "dot": 0,
                     "cumsum": 1, "cumprod": 1, "pad": 2}


# ----- numpy coverage (issue 11 item 5): einsum and pad -------------------------------------

def _einsum(parsed, call, label) -> Operation:
    """``np.einsum('ij,jk->ik', a, b, optimize=...)``: the einsum primitive, its subscripts
    a parameter.  The subscripts must be a string literal (numpy's interleaved form,
    ``einsum(a, [0, 1], b, [1, 2])``, is refused)."""
    if not call.args or not (isinstance(call.args[0], gast.Constant)
                             and isinstance(call.args[0].value, str)):
        raise error_at(parsed, call, f"{label}(): pullback reads einsum's subscripts from a "
                       "string literal as its first argument",
                       "What to do: write the subscripts as a string, e.g. "
                       "np.einsum('ij,jk->ik', a, b) (the interleaved sublist form is not "
                       "supported).")
    operands = list(call.args[1:])
    if len(operands) > P._EINSUM_MAX:
        raise error_at(parsed, call, f"{label}(): at most {P._EINSUM_MAX} operands")
    for k in call.keywords:
        if k.arg != "optimize":
            raise error_at(parsed, call, f"{label}(): pullback does not support the "
                           f"parameter {k.arg!r}", "What to do: pass optimize= only.")
    params = [gast.keyword(arg="subscripts", value=call.args[0]), *call.keywords]
    return Operation("prim", P.REGISTRY["einsum"], operands, params, label=label, numpy=True)


def _check_pad_mode(parsed, call, params) -> None:
    """np.pad's ``mode``: a constant that pullback differentiates (or a CompileError)."""
    for k in params:
        if k.arg == "mode" and not (isinstance(k.value, gast.Constant)
                                    and k.value.value in P.PAD_MODES):
            shown = repr(k.value.value) if isinstance(k.value, gast.Constant) else "computed"
            raise error_at(parsed, call, f"np.pad(..., mode={shown}): pullback differentiates "
                           f"the modes {', '.join(map(repr, P.PAD_MODES))} only",
                           "What to do: pad with one of them (a literal string), or compute "
                           "the border outside the differentiated function.")


def _check_numpy_parameters(parsed, call, prim, label, args, owner=None) -> None:
    """A CompileError for parameters of a numpy function or array method that pullback
    would misread (numpy's positional order) or does not support: never silently
    computing something else."""
    operands = len(args) + (owner is not None)
    arrays = len(prim.vjps) if prim.vjps is not None else operands
    allowed = _NUMPY_POSITIONAL.get(prim.name, len(prim.params))
    if operands > arrays + allowed and not prim.params:
        raise error_at(parsed, call, f"{label}(): pullback takes {arrays} array operand(s) "
                       f"here, not {operands}",
                       f"What to do: call {label}() once per array.")
    if operands > arrays + allowed:
        raise error_at(parsed, call, f"{label}(): pullback reads only "
                       f"{', '.join(prim.params[:allowed]) or 'no parameters'} by position here",
                       f"What to do: pass the others by keyword ({', '.join(prim.params)} "
                       "are supported).")
    for k in call.keywords:
        if NUMPY_KEYWORDS.get(k.arg, k.arg) not in prim.params:
            raise error_at(parsed, call, f"{label}(): pullback does not support the "
                           f"parameter {k.arg!r}",
                           f"What to do: it supports {', '.join(prim.params) or 'none'}; "
                           "compute the rest outside the differentiated function.")


def _operands_by_name(target, call, prim):
    """``call`` with the array operands numpy lets one pass by keyword (``np.sinc(x=a)``,
    ``np.cumsum(a=x)``) moved to their positions, by the numpy function's signature (ufuncs
    take operands by position only: no signature, nothing moved)."""
    if prim.vjps is None or not call.keywords:
        return call
    try:
        names = [p.name for p in inspect.signature(target).parameters.values()
                 if p.kind == p.POSITIONAL_OR_KEYWORD][:len(prim.vjps)]
    except (TypeError, ValueError):
        return call
    by_name = {k.arg: k.value for k in call.keywords}
    args = list(call.args)
    for name in names[len(args):]:
        if name not in by_name:
            break
        args.append(by_name.pop(name))
    if len(args) == len(call.args):
        return call
    keywords = [k for k in call.keywords if k.arg in by_name]
    return gast.copy_location(gast.Call(func=call.func, args=args, keywords=keywords), call)


def _numpy_norm_signature(x, ord=None, axis=None, keepdims=False):   # noqa: A002
    """np.linalg.norm's parameters, to bind a call's arguments by name."""


def _numpy_norm(parsed, call, label) -> Operation:
    """``np.linalg.norm(x, ord=None, axis=None, keepdims=False)`` as the norm primitive.

    Without ``ord`` it is the 2-norm of the flattened array (numpy's Frobenius norm of a
    matrix), or of each vector along ``axis``: the primitive's own semantics. With an
    explicit ``ord`` numpy means a *matrix* norm for a matrix (``ord=2``: the largest
    singular value), which the primitive does not compute: ``vector=True`` makes it
    refuse anything but vector norms at run time.
    """
    try:
        bound = inspect.signature(_numpy_norm_signature).bind(
            *call.args, **{k.arg: k.value for k in call.keywords})
    except TypeError as exc:
        raise error_at(parsed, call, f"cannot call {label}() like this: {exc}")
    params = [gast.keyword(arg=name, value=bound.arguments[name])
              for name in ("axis", "keepdims") if name in bound.arguments]
    order = bound.arguments.get("ord")
    if order is not None and not (isinstance(order, gast.Constant) and order.value is None):
        params += [gast.keyword(arg="ord", value=order),
                   gast.keyword(arg="vector", value=gast.Constant(value=True, kind=None))]
    return Operation("prim", P.REGISTRY["norm"], [bound.arguments["x"]], params, label=label,
                     numpy=True)


def _numpy_join_signature(arrays, axis=0):
    """np.concatenate's and np.stack's parameters that pullback supports."""


def _numpy_join(parsed, call, label, stack) -> Operation:
    """``np.concatenate(seq, axis=0)`` / ``np.stack(seq, axis=0)`` of a list or tuple
    (a literal, or one built with ``append``): a ``join``, whose gradient is the list of
    the pieces' gradients (``support.join_grad``)."""
    try:
        bound = inspect.signature(_numpy_join_signature).bind(
            *call.args, **{k.arg: k.value for k in call.keywords})
    except TypeError as exc:
        raise error_at(parsed, call, f"{label}(): pullback supports (arrays, axis=) only: "
                       f"{exc}", "What to do: compute the rest outside the function.")
    axis = bound.arguments.get("axis", gast.Constant(value=0, kind=None))
    return Operation("join", args=[bound.arguments["arrays"]],
                     params=[gast.keyword(arg="axis", value=axis),
                             gast.keyword(arg="stack", value=gast.Constant(value=stack,
                                                                           kind=None))],
                     label=label)


def _starred_join(parsed, call, label, stack) -> Operation:
    """``nd.concat(*seq, dim=1)`` / ``nd.stack(*seq, axis=0)`` (the fence lets ``*seq``
    through only as their one positional argument): a ``join`` of the list ``seq``, with
    MXNet's defaults."""
    keyword = "axis" if stack else "dim"
    axis = gast.Constant(value=0 if stack else 1, kind=None)
    for k in call.keywords:
        if k.arg != keyword:
            raise error_at(parsed, call, f"{label}(): pullback does not support the "
                           f"parameter {k.arg!r} here", f"What to do: pass {keyword}= only.")
        axis = k.value
    return Operation("join", args=[call.args[0].value],
                     params=[gast.keyword(arg="axis", value=axis),
                             gast.keyword(arg="stack", value=gast.Constant(value=stack,
                                                                           kind=None))],
                     label=label)


def _positional(parsed, call, callee) -> list:
    """The call's arguments as one atom per parameter of ``callee`` (keywords placed,
    defaults filled in as constants)."""
    if signature_function(callee).__code__.co_flags & (inspect.CO_VARARGS
                                                       | inspect.CO_VARKEYWORDS):
        raise error_at(parsed, call, f"{callee.__name__}() takes *args or **kwargs: compiled "
                       "code calls only functions with named parameters",
                       "give it named parameters (keyword-only ones are fine), or pass a "
                       "tuple")
    try:
        bound = inspect.signature(callee).bind(*call.args, **{k.arg: k.value
                                                               for k in call.keywords})
    except TypeError as exc:
        raise error_at(parsed, call, f"cannot call {callee.__name__}() like this: {exc}")
    bound.apply_defaults()
    atoms = []
    for name, value in bound.arguments.items():
        if isinstance(value, gast.AST):
            atoms.append(value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            atoms.append(gast.Constant(value=value, kind=None))
        else:
            raise error_at(parsed, call, f"the default value of {callee.__name__}()'s "
                           f"parameter {name!r} is not a number",
                           "pass the argument explicitly")
    return atoms


def _describe_method(parsed, call, func) -> Operation:
    method = func.attr
    container = CONTAINER_METHODS.get(method)
    if container is not None and len(call.args) <= (2 if method == "get" else 0) \
            and not call.keywords:
        if method == "get":   # d.get(key[, default])
            default = call.args[1] if len(call.args) > 1 else gast.Constant(value=None,
                                                                            kind=None)
            return Operation("get", args=[func.value, default], params=call.args[:1],
                             cut=call.args[:1], label=".get()")
        if method == "keys":
            return Operation("inert", cut=[call], label=".keys()")
        return Operation(container, args=[func.value], label=f".{method}()")
    if method in INERT_METHODS:
        return Operation("inert", cut=[call], label=f".{method}()")
    if method in SEVERING_METHODS:
        return Operation("severs", args=[func.value], cut=list(call.args), label=f".{method}()")
    if method == "flatten":
        raise error_at(parsed, call, "x.flatten() is numpy's (size,) for a numpy array but "
                       "MXNet's (n, rest) for an NDArray, and compiled code cannot tell "
                       "which x is", "What to do: write x.reshape(-1) (numpy's) or "
                       "nd.flatten(x) (MXNet's).")
    if method == "ravel" and not call.args and not call.keywords:   # a view, as reshape's
        return _reshape(parsed, call, func.value, [gast.Constant(value=-1, kind=None)],
                        ".ravel()", numpy=True)
    prim_name = METHODS.get(method)
    if prim_name is None:
        mutates = [] if method in PURE_METHODS else [func.value]
        return Operation("unknown", label=f".{method}()", mutates=mutates)
    if method == "reshape":
        return _reshape(parsed, call, func.value, call.args, ".reshape()", numpy=False)
    if method == "astype":   # copy=False: numpy's result is the array itself for its dtype
        copy = [k.value for k in call.keywords if k.arg == "copy"] + list(call.args[4:5])
        view = not (copy and isinstance(copy[0], gast.Constant) and copy[0].value is True)
        return Operation("prim", P.REGISTRY["astype"], [func.value],
                         [gast.keyword(arg="dtype", value=call.args[0])], label=".astype()",
                         view=view and bool(copy))
    prim = P.REGISTRY[prim_name]
    _check_numpy_parameters(parsed, call, prim, f".{method}", call.args, owner=func.value)
    arrays, params = _split_arguments(prim, call.args, call.keywords, owner=func.value)
    return Operation("prim", prim, arrays, params, label=f".{method}()")


def _hashable(target) -> bool:
    try:
        hash(target)
    except TypeError:
        return False
    return True


def _numpy_name(target):
    if target is None:
        return None
    name = getattr(target, "__name__", None)
    module = getattr(target, "__module__", None) or ""
    is_numpy = isinstance(target, np.ufunc) or module.startswith("numpy")
    if is_numpy and name in NUMPY and getattr(np, name, None) is target:
        return name
    return None


def _describe_math(target, call, label) -> Operation:
    """``math.sin(x)`` is the sin primitive; a math function pullback has no rule for
    (or called with other arguments than the primitive takes, ``math.log(x, 2)``)
    computes as written but must not receive a differentiated value."""
    prim = P.REGISTRY.get(MATH.get(target.__name__, ""))
    if prim is not None and not call.keywords and prim.vjps is not None \
            and len(call.args) == len(prim.vjps):
        return Operation("prim", prim, list(call.args), [], label=label, math=True)
    return Operation("unknown", label=label)


def _is_math(target) -> bool:
    """A function of the math module: it works on Python numbers, never on gradients."""
    return getattr(target, "__module__", None) == "math"


def _is_user_function(fn) -> bool:
    module = getattr(fn, "__module__", "") or ""
    return not (module.startswith("pullback") or module.startswith("numpy"))
