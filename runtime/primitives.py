"""THE primitive table: every differentiable operation pullback knows, defined once.

Each entry is made by ``primitive(name, forward, vjps, ...)``:

- ``forward(*arrays, **params)`` computes the result with numpy;
- ``vjps`` holds one rule per array argument, ``rule(g, ans, *args, **params)``
  returning the gradient for that argument, written with the ops of this very
  module (so a rule's own computation can be recorded and differentiated:
  higher-order derivatives come for free).  ``None`` in place of a rule means
  "no gradient flows into this argument"; ``vjps=None`` means the op is not
  differentiable at all (comparisons, argmax, ...);
- ``scalar`` (elementwise ops) is the op's formula in the names ``x``, ``y``
  for the kernel fuser;
- forward mode: ``jvps`` holds one rule per array argument, ``rule(t, ans, *args,
  **params)`` returning that argument's contribution to the result's tangent (``t`` is
  the argument's tangent, of its shape; the contributions add up to the result's
  tangent, broadcast to its shape), or ``jvp`` one rule for all arguments,
  ``jvp(tangents, ans, *args, **params)`` with ``None`` for an argument without a
  tangent.  An elementwise op needs neither: its JVP is its scalar derivative
  (``scalar_vjps`` with ``g`` read as the tangent; the local Jacobian is diagonal, so
  the two products are the same formula), which the compiler emits inline.  A
  differentiable op with no JVP rule at all is a CompileError in forward mode.

``primitive`` returns the user-facing op function (``nd.exp`` and friends);
the tape, the compiler and the fuser all read the table through ``REGISTRY``.
Adding an op is one entry here.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import InPlaceError
from .ndarray import NDArray, as_data
from .tape import apply


@dataclass(eq=False)
class Primitive:
    name: str
    forward: Callable
    vjps: tuple | None
    scalar: str | None = None
    params: tuple = field(default_factory=tuple)
    scalar_vjps: tuple = field(default_factory=tuple)
    jvps: tuple | None = None
    jvp: Callable | None = None

    @property
    def jvp_from_scalar(self) -> bool:
        """Whether forward mode derives this op's JVP from its scalar derivatives."""
        return (self.jvps is None and self.jvp is None and self.scalar is not None
                and self.vjps is not None and len(self.scalar_vjps) == len(self.vjps))

    @property
    def has_jvp(self) -> bool:
        return self.jvps is not None or self.jvp is not None or self.jvp_from_scalar

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"


REGISTRY: dict[str, Primitive] = {}


def primitive(name, forward, vjps, scalar=None, params=(), scalar_vjps=(), jvps=None,
              jvp=None):
    """Register a primitive; return the op function that applies it.

    ``scalar`` and ``scalar_vjps`` (elementwise ops only) are the op and its
    per-argument derivative in the kernel fuser's scalar language, over the names
    ``x``, ``y`` (operands), ``ans`` (result) and ``g`` (the result's gradient);
    ``None`` marks a zero derivative. They compute exactly what the forward and
    the VJP rules compute, in the same order of operations.  ``jvps`` (per argument)
    or ``jvp`` (all arguments at once): the forward-mode rules (module docstring).
    """
    prim = Primitive(name, forward, None if vjps is None else tuple(vjps), scalar, tuple(params),
                     tuple(scalar_vjps), None if jvps is None else tuple(jvps), jvp)
    REGISTRY[name] = prim

    operand_names = _operand_names(prim)

    def op(*args, out=None, **kwargs):
        if kwargs and len(args) < len(operand_names):
            args, kwargs = _operands_by_name(operand_names, args, kwargs)   # nd.sinc(x=a)
        for a in args:
            if type(a) is NDArray:
                break
        else:
            if out is None:
                # Raw road (compiled code; rules run on numpy arrays): no NDArray, no tape.
                return raw_result(forward(*args, **kwargs), args)
        result = apply(prim, args, kwargs)
        if out is not None:
            if result._node is not None:
                raise InPlaceError(
                    f"{name}(..., out=...) inside autograd.record() would write a recorded "
                    f"result into an existing array and lose its gradient; write "
                    f"`y = {name}(...)` instead")
            out._assign(builtins.slice(None), result._data)
            return out
        return result

    op.__name__ = name
    op.__qualname__ = name
    op.prim = prim
    return op


def _operand_names(prim) -> list:
    """The names of a primitive's array operands, as its forward spells them."""
    import inspect

    if prim.vjps is None:
        return []
    try:
        parameters = inspect.signature(prim.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD][:len(prim.vjps)]


def _operands_by_name(names, args, kwargs):
    """Array operands passed by name moved to their positions, so the tape sees them (an
    NDArray among the parameters would be a constant)."""
    args, kwargs = list(args), dict(kwargs)
    for name in names[len(args):]:
        if name not in kwargs:
            break
        args.append(kwargs.pop(name))
    return tuple(args), kwargs


def raw_result(result, args):
    """A forward's result on the raw road: arrays as they are, a 0-d result of array
    operands as shape (1,) (pullback's convention, MXNet's), and a result of numbers and
    0-d numpy arrays only as a numpy number, as numpy gives it (differentiated Python
    numbers in compiled code; a 0-d argument stays 0-d)."""
    if type(result) is np.ndarray and result.ndim:
        return result
    for a in args:
        if type(a) is np.ndarray and a.ndim:
            return as_data(result)
    return result[()] if type(result) is np.ndarray else result


def _is_array(x) -> bool:
    return type(x) is NDArray or type(x) is np.ndarray


def _linear_jvp(name):
    """The JVP of an op linear in its one array argument: the op applied to the tangent
    (its parameters unchanged).  The op is looked up when the rule runs, so the rule can
    be registered with the op itself."""
    def rule(t, ans, x, *positional_params, **params):   # the tape may pass them by position
        return globals()[name](t, *positional_params, **params)

    rule.__name__ = f"{name}_jvp"
    return rule


def shape_of(x) -> tuple:
    """``np.shape(x)``, without its cost for arrays and Python numbers."""
    kind = type(x)
    if kind is NDArray or kind is np.ndarray:
        return x.shape
    if kind in SCALAR_TYPES:
        return ()
    return np.shape(x)


SCALAR_TYPES = frozenset({float, int, bool, np.float64, np.float32, np.float16, np.int64,
                           np.int32, np.bool_})


def unbroadcast(g, x):
    """``g`` summed down to the shape of ``x`` (undoes numpy broadcasting)."""
    shape = shape_of(x)
    if shape_of(g) == shape:
        return g
    if shape == () and type(g) is not NDArray:
        return np.sum(g)   # a number's gradient (compiled code) is a number
    return sum_to(g, shape=shape)


def _sum_to_forward(g, shape):
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, keepdims=True).reshape(shape) if axes else g.reshape(shape)


def _broadcast_to_forward(x, shape):
    return np.ascontiguousarray(np.broadcast_to(x, shape))


def _sum_to_vjp(g, ans, x, shape):
    return broadcast_to(g, shape=x.shape)


def _broadcast_to_vjp(g, ans, x, shape):
    return unbroadcast(g, x)


sum_to = primitive("sum_to", _sum_to_forward, [_sum_to_vjp], params=("shape",),
                   jvps=[_linear_jvp("sum_to")])
broadcast_to = primitive("broadcast_to", _broadcast_to_forward, [_broadcast_to_vjp],
                         params=("shape",), jvps=[_linear_jvp("broadcast_to")])


# ----- elementwise binary ------------------------------------------------------------------

def _add_vjp_x(g, ans, x, y):
    return unbroadcast(g, x)


def _add_vjp_y(g, ans, x, y):
    return unbroadcast(g, y)


def _sub_vjp_y(g, ans, x, y):
    return unbroadcast(negative(g), y)


def _mul_vjp_x(g, ans, x, y):
    return unbroadcast(multiply(g, y), x)


def _mul_vjp_y(g, ans, x, y):
    return unbroadcast(multiply(g, x), y)


def _div_vjp_x(g, ans, x, y):
    return unbroadcast(divide(g, y), x)


def _div_vjp_y(g, ans, x, y):
    return unbroadcast(negative(divide(multiply(g, ans), y)), y)


def _pow_vjp_x(g, ans, x, y):
    # A Python-number exponent stays a Python number: as a float64 array it would
    # promote a float32 gradient to float64.
    # x ** 0 is 1 everywhere, so its derivative is 0, also at x = 0 (where
    # 0 * 0 ** -1 would be 0 * inf = nan): the exponent y - (y != 0) is y - 1, or 0 for y = 0
    if not _is_array(y):
        return unbroadcast(multiply(g, multiply(y, power(x, y - (y != 0)))), x)
    exponent = subtract(y, not_equal(y, zeros_like(y)))
    return unbroadcast(multiply(g, multiply(y, power(x, exponent))), x)


def _pow_vjp_y(g, ans, x, y):
    if _is_array(x):
        log_x = log(where(greater(x, 0), x, ones_like(x)))
    else:
        log_x = math.log(x) if x > 0 else 0.0
    return unbroadcast(multiply(g, multiply(ans, log_x)), y)


def _maximum_vjp_x(g, ans, x, y):
    return unbroadcast(multiply(g, greater_equal(x, y)), x)


def _maximum_vjp_y(g, ans, x, y):
    return unbroadcast(multiply(g, lesser(x, y)), y)


def _minimum_vjp_x(g, ans, x, y):
    return unbroadcast(multiply(g, lesser_equal(x, y)), x)


def _minimum_vjp_y(g, ans, x, y):
    return unbroadcast(multiply(g, greater(x, y)), y)


add = primitive("add", np.add, [_add_vjp_x, _add_vjp_y], scalar="x + y",
                scalar_vjps=("g", "g"))
subtract = primitive("subtract", np.subtract, [_add_vjp_x, _sub_vjp_y], scalar="x - y",
                     scalar_vjps=("g", "-g"))
multiply = primitive("multiply", np.multiply, [_mul_vjp_x, _mul_vjp_y], scalar="x * y",
                     scalar_vjps=("g * y", "g * x"))
divide = primitive("divide", np.true_divide, [_div_vjp_x, _div_vjp_y], scalar="x / y",
                   scalar_vjps=("g / y", "-((g * ans) / y)"))
power = primitive("power", np.power, [_pow_vjp_x, _pow_vjp_y], scalar="pow(x, y)",
                  scalar_vjps=("g * (y * pow(x, y - (y != 0)))", "g * (ans * log(where(x > 0, x, 1.0)))"))
maximum = primitive("maximum", np.maximum, [_maximum_vjp_x, _maximum_vjp_y],
                    scalar="max(x, y)",
                    scalar_vjps=("g * (x >= y)", "g * (x < y)"))
minimum = primitive("minimum", np.minimum, [_minimum_vjp_x, _minimum_vjp_y],
                    scalar="min(x, y)",
                    scalar_vjps=("g * (x <= y)", "g * (x > y)"))
def _mod_vjp_x(g, ans, x, y):
    return unbroadcast(g, x)   # x mod y = x - floor(x / y) * y


def _mod_vjp_y(g, ans, x, y):
    return unbroadcast(negative(multiply(g, floor(divide(x, y)))), y)


def _mod_jvp_x(t, ans, x, y):
    return t


def _mod_jvp_y(t, ans, x, y):
    return negative(multiply(t, floor(divide(x, y))))


mod = primitive("mod", np.mod, [_mod_vjp_x, _mod_vjp_y], jvps=[_mod_jvp_x, _mod_jvp_y])
broadcast_add, broadcast_sub = add, subtract
broadcast_mul, broadcast_div = multiply, divide
elemwise_add, elemwise_sub, elemwise_mul, elemwise_div = add, subtract, multiply, divide


def _compare(ufunc):
    def forward(x, y):
        return ufunc(x, y).astype(np.result_type(x, y))

    forward.__name__ = ufunc.__name__
    return forward


equal = primitive("equal", _compare(np.equal), None, scalar="x == y")
not_equal = primitive("not_equal", _compare(np.not_equal), None, scalar="x != y")
lesser = primitive("lesser", _compare(np.less), None, scalar="x < y")
lesser_equal = primitive("lesser_equal", _compare(np.less_equal), None, scalar="x <= y")
greater = primitive("greater", _compare(np.greater), None, scalar="x > y")
greater_equal = primitive("greater_equal", _compare(np.greater_equal), None, scalar="x >= y")


# ----- elementwise unary -------------------------------------------------------------------

def _zero_vjp(g, ans, x, **params):
    return zeros_like(g)


def _negative_vjp(g, ans, x):
    return negative(g)


def _exp_vjp(g, ans, x):
    return multiply(g, ans)


def _log_vjp(g, ans, x):
    return divide(g, x)


def _sqrt_vjp(g, ans, x):
    return divide(multiply(g, 0.5), ans)


def _square_vjp(g, ans, x):
    return multiply(g, multiply(x, 2.0))


def _abs_vjp(g, ans, x):
    return multiply(g, sign(x))


def _sin_vjp(g, ans, x):
    return multiply(g, cos(x))


def _cos_vjp(g, ans, x):
    return negative(multiply(g, sin(x)))


def _tan_vjp(g, ans, x):
    return multiply(g, add(1.0, square(ans)))


def _tanh_vjp(g, ans, x):
    return multiply(g, subtract(1.0, square(ans)))


def _sigmoid_vjp(g, ans, x):
    return multiply(g, multiply(ans, subtract(1.0, ans)))


def _relu_vjp(g, ans, x):
    return multiply(g, greater(x, 0.0))


def _log1p_vjp(g, ans, x):
    return divide(g, add(x, 1.0))


def _expm1_vjp(g, ans, x):
    return multiply(g, add(ans, 1.0))


def _reciprocal_vjp(g, ans, x):
    return negative(multiply(g, square(ans)))


def _abs_forward(x):
    """``np.abs``, but Python's ``abs`` for a Python int (``abs(-2**63)`` is positive;
    numpy's int64 would wrap)."""
    return builtins.abs(x) if type(x) is int else np.abs(x)


def _sigmoid_forward(x):
    # exp of a non-positive number only: no overflow for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


def _relu_forward(x):
    return np.maximum(x, 0).astype(np.asarray(x).dtype)


negative = primitive("negative", np.negative, [_negative_vjp], scalar="-x",
                     scalar_vjps=("-g",))
exp = primitive("exp", np.exp, [_exp_vjp], scalar="exp(x)",
                scalar_vjps=("g * ans",))
log = primitive("log", np.log, [_log_vjp], scalar="log(x)",
                scalar_vjps=("g / x",))
sqrt = primitive("sqrt", np.sqrt, [_sqrt_vjp], scalar="sqrt(x)",
                 scalar_vjps=("(g * 0.5) / ans",))
square = primitive("square", np.square, [_square_vjp], scalar="x * x",
                   scalar_vjps=("g * (x * 2.0)",))
abs = primitive("abs", _abs_forward, [_abs_vjp], scalar="fabs(x)",
                scalar_vjps=("g * sign(x)",))
sign = primitive("sign", np.sign, [_zero_vjp], scalar="sign(x)",
                 scalar_vjps=(None,))
sin = primitive("sin", np.sin, [_sin_vjp], scalar="sin(x)",
                scalar_vjps=("g * cos(x)",))
cos = primitive("cos", np.cos, [_cos_vjp], scalar="cos(x)",
                scalar_vjps=("-(g * sin(x))",))
tan = primitive("tan", np.tan, [_tan_vjp], scalar="tan(x)",
                scalar_vjps=("g * (1.0 + ans * ans)",))
tanh = primitive("tanh", np.tanh, [_tanh_vjp], scalar="tanh(x)",
                 scalar_vjps=("g * (1.0 - ans * ans)",))
sigmoid = primitive("sigmoid", _sigmoid_forward, [_sigmoid_vjp], scalar="sigmoid(x)",
                    scalar_vjps=("g * (ans * (1.0 - ans))",))
relu = primitive("relu", _relu_forward, [_relu_vjp], scalar="max(x, 0)",
                 scalar_vjps=("g * (x > 0.0)",))
log1p = primitive("log1p", np.log1p, [_log1p_vjp], scalar="log1p(x)",
                  scalar_vjps=("g / (x + 1.0)",))
expm1 = primitive("expm1", np.expm1, [_expm1_vjp], scalar="expm1(x)",
                  scalar_vjps=("g * (ans + 1.0)",))
reciprocal = primitive("reciprocal", np.reciprocal, [_reciprocal_vjp], scalar="1 / x",
                       scalar_vjps=("-(g * (ans * ans))",))
floor = primitive("floor", np.floor, [_zero_vjp], scalar="floor(x)",
                  scalar_vjps=(None,))
ceil = primitive("ceil", np.ceil, [_zero_vjp], scalar="ceil(x)",
                 scalar_vjps=(None,))
round = primitive("round", np.round, [_zero_vjp], scalar="round(x)",
                  scalar_vjps=(None,))
rint = round


def _identity_vjp(g, ans, x, **params):
    return g


def _astype_vjp(g, ans, x, dtype):
    if not np.issubdtype(np.dtype(dtype), np.inexact):   # to int/bool: piecewise constant
        return zeros_like(astype(g, dtype=np.asarray(x).dtype))
    return astype(g, dtype=np.asarray(x).dtype)


def _astype_jvp(t, ans, x, dtype):
    if not np.issubdtype(np.dtype(dtype), np.inexact):   # to int/bool: no tangent
        return zeros_like(t)
    return astype(t, dtype=dtype)


def _zeros_like_forward(x, **params):
    return np.zeros_like(x)


def _ones_like_forward(x, **params):
    return np.ones_like(x)


def _identity_jvp(t, ans, x, **params):
    return t


copy = primitive("copy", np.copy, [_identity_vjp], jvps=[_identity_jvp])
identity = copy
def _astype_forward(x, dtype):
    return x.astype(dtype)


astype = primitive("astype", _astype_forward, [_astype_vjp], params=("dtype",),
                   jvps=[_astype_jvp])
zeros_like = primitive("zeros_like", _zeros_like_forward, None)
ones_like = primitive("ones_like", _ones_like_forward, None)
stop_gradient = primitive("stop_gradient", np.copy, None)
BlockGrad = stop_gradient


# ----- where and clip ----------------------------------------------------------------------

def _where_forward(cond, x, y):
    return np.where(cond != 0, x, y)


def _where_vjp_x(g, ans, cond, x, y):
    return unbroadcast(where(cond, g, zeros_like(g)), x)


def _where_vjp_y(g, ans, cond, x, y):
    return unbroadcast(where(cond, zeros_like(g), g), y)


def _where_jvp_x(t, ans, cond, x, y):
    return where(cond, t, zeros_like(t))


def _where_jvp_y(t, ans, cond, x, y):
    return where(cond, zeros_like(t), t)


where = primitive("where", _where_forward, [None, _where_vjp_x, _where_vjp_y],
                  jvps=[None, _where_jvp_x, _where_jvp_y])


def _clip_forward(x, a_min, a_max):
    return np.clip(x, a_min, a_max)


def _clip_vjp(g, ans, x, a_min, a_max):
    # A bound of None (numpy's "unbounded") masks nothing.
    if a_min is not None:
        g = multiply(g, greater_equal(x, a_min))
    if a_max is not None:
        g = multiply(g, lesser_equal(x, a_max))
    return g


# clip's Jacobian is a diagonal mask: its VJP rule is its JVP rule
clip = primitive("clip", _clip_forward, [_clip_vjp], params=("a_min", "a_max"),
                 jvps=[_clip_vjp])


# ----- reductions --------------------------------------------------------------------------

def _axes(ndim, axis, exclude=False):
    """The axes a reduction reduces, sorted.  As in MXNet, no axis (``None`` or ``()``)
    means every axis, with or without ``exclude``; ``exclude=True`` means every axis *not*
    listed (none at all if every axis is listed)."""
    if axis is None or axis == () or axis == []:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        listed = tuple(sorted(a % ndim for a in axis))
    else:
        listed = (axis % ndim,)
    return tuple(i for i in range(ndim) if i not in listed) if exclude else listed


def _kept_shape(shape, axis, exclude=False):
    axes = _axes(len(shape), axis, exclude)
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _expand_reduced(g, x, axis, exclude=False):
    """Reshape a reduction's gradient so it broadcasts against ``x``."""
    return reshape_raw(g, shape=_kept_shape(x.shape, axis, exclude))


def _numpy_axis(axis):
    """MXNet's ``axis`` for numpy: a list becomes a tuple, ``()`` means every axis."""
    if isinstance(axis, list):
        axis = tuple(axis)
    return None if axis == () else axis


def _reduction_forward(numpy_fn):
    def forward(x, axis=None, keepdims=False, exclude=False):
        if exclude:   # an explicit tuple of axes; () reduces nothing, as in numpy
            return numpy_fn(x, axis=_axes(x.ndim, axis, exclude), keepdims=keepdims)
        return numpy_fn(x, axis=_numpy_axis(axis), keepdims=keepdims)

    forward.__name__ = numpy_fn.__name__
    return forward


def _of_a_number(x) -> bool:
    """A 0-d operand: a differentiated number in compiled code (NDArrays are >= 1-d)."""
    return type(x) is not NDArray and np.ndim(x) == 0


def _sum_vjp(g, ans, x, axis=None, keepdims=False, exclude=False):
    if _of_a_number(x):
        return g   # the sum (or mean) of a number is the number
    if axis is None and type(g) is np.ndarray and type(x) is np.ndarray and g.size == 1:
        spread = np.empty(x.shape, g.dtype)   # numpy operands (compiled code): one fill
        spread.fill(g.reshape(-1)[0])
        return spread
    return broadcast_to(_expand_reduced(g, x, axis, exclude), shape=x.shape)


def _count(x, axis, exclude=False):
    return int(np.prod([x.shape[a] for a in _axes(x.ndim, axis, exclude)]))


def _mean_vjp(g, ans, x, axis=None, keepdims=False, exclude=False):
    if _of_a_number(x):
        return g
    return broadcast_to(divide(_expand_reduced(g, x, axis, exclude),
                               float(_count(x, axis, exclude))), shape=x.shape)


def _extremum_vjp(g, ans, x, axis=None, keepdims=False, exclude=False):
    mask = equal(x, _expand_reduced(ans, x, axis, exclude))
    share = divide(mask, sum(mask, axis=axis, keepdims=True, exclude=exclude))
    return multiply(_expand_reduced(g, x, axis, exclude), share)


def _product_of_the_others(x, counted, axis, exclude):
    """For each element counted (1; 0 = read as a factor of 1), the product of the other
    counted elements of its reduction: ``ans / x`` where that is defined, and the product
    of the rest beside a single zero (0 beside two), never ``0 * inf``."""
    nonzero = multiply(counted, not_equal(x, zeros_like(x)))
    safe = where(nonzero, x, ones_like(x))   # zeros (and uncounted values) as 1
    others = _expand_reduced(prod(safe, axis=axis, exclude=exclude), x, axis, exclude)
    zeros = _expand_reduced(sum(subtract(counted, nonzero), axis=axis, exclude=exclude),
                            x, axis, exclude)
    zeros_elsewhere = subtract(zeros, subtract(counted, nonzero))
    return multiply(multiply(counted, equal(zeros_elsewhere, zeros_like(zeros_elsewhere))),
                    divide(others, safe))


def _prod_vjp(g, ans, x, axis=None, keepdims=False, exclude=False):
    return multiply(_expand_reduced(g, x, axis, exclude),
                    _product_of_the_others(x, ones_like(x), axis, exclude))


def _nansum_vjp(g, ans, x, axis=None, keepdims=False, exclude=False):
    # a NaN was read as 0: no gradient reaches it (x == x is 0 exactly there)
    return multiply(broadcast_to(_expand_reduced(g, x, axis, exclude), shape=x.shape),
                    equal(x, x))


def _nanprod_vjp(g, ans, x, axis=None, keepdims=False, exclude=False):
    # a NaN was read as 1: the product's gradient elsewhere, none into the NaN
    return multiply(_expand_reduced(g, x, axis, exclude),
                    _product_of_the_others(x, equal(x, x), axis, exclude))


def _norm_forward(x, ord=2, axis=None, keepdims=False, vector=False):
    if ord is None:   # numpy's default: the 2-norm (Frobenius for a matrix)
        ord = 2
    # vector: np.linalg.norm with an explicit ord, which means a matrix norm for matrices
    if vector and ((axis is None and x.ndim != 1)
                   or (isinstance(axis, (tuple, list)) and len(axis) == 2)):
        raise ValueError(
            f"np.linalg.norm(x, ord={ord!r}) of a {x.ndim}-d array is a matrix norm, which "
            "pullback does not differentiate; for the norm of all elements leave out ord, "
            "for vector norms pass axis=")
    if ord == 2 and axis is None and not keepdims and x.dtype.kind == "f":
        flat = x if x.ndim == 1 else x.reshape(-1)
        return np.sqrt(flat.dot(flat))   # the common case, one BLAS call
    axis = _numpy_axis(axis)
    if ord == 1:
        return np.sum(np.abs(x), axis=axis, keepdims=keepdims)
    if ord == 2:
        return np.sqrt(np.add.reduce(np.square(x), axis=axis, keepdims=keepdims))
    raise ValueError(f"norm supports ord=1 and ord=2, got ord={ord!r}")


def _norm_vjp(g, ans, x, ord=2, axis=None, keepdims=False, vector=False):
    if ord == 1:
        return multiply(sign(x), _expand_reduced(g, x, axis))
    return multiply(x, _expand_reduced(divide(g, ans), x, axis))


def _extremum_jvp(t, ans, x, axis=None, keepdims=False, exclude=False):
    mask = equal(x, _expand_reduced(ans, x, axis, exclude))
    share = divide(mask, sum(mask, axis=axis, keepdims=True, exclude=exclude))
    return sum(multiply(t, share), axis=axis, keepdims=keepdims, exclude=exclude)


def _prod_jvp(t, ans, x, axis=None, keepdims=False, exclude=False):
    others = _product_of_the_others(x, ones_like(x), axis, exclude)
    return sum(multiply(t, others), axis=axis, keepdims=keepdims, exclude=exclude)


def _nansum_jvp(t, ans, x, axis=None, keepdims=False, exclude=False):
    return sum(multiply(t, equal(x, x)), axis=axis, keepdims=keepdims, exclude=exclude)


def _nanprod_jvp(t, ans, x, axis=None, keepdims=False, exclude=False):
    others = _product_of_the_others(x, equal(x, x), axis, exclude)
    return sum(multiply(t, others), axis=axis, keepdims=keepdims, exclude=exclude)


def _norm_jvp(t, ans, x, ord=2, axis=None, keepdims=False, vector=False):
    if ord == 1:
        return sum(multiply(sign(x), t), axis=axis, keepdims=keepdims)
    return divide(sum(multiply(x, t), axis=axis, keepdims=keepdims), ans)


def _arg_forward(numpy_fn):
    def forward(x, axis=None, keepdims=False):
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        return numpy_fn(x, axis=axis, keepdims=keepdims).astype(dtype)

    return forward


_REDUCTION_PARAMS = ("axis", "keepdims", "exclude")   # MXNet's order
sum = primitive("sum", _reduction_forward(np.add.reduce), [_sum_vjp], params=_REDUCTION_PARAMS,
                jvps=[_linear_jvp("sum")])
mean = primitive("mean", _reduction_forward(np.mean), [_mean_vjp], params=_REDUCTION_PARAMS,
                 jvps=[_linear_jvp("mean")])
max = primitive("max", _reduction_forward(np.maximum.reduce), [_extremum_vjp],
                params=_REDUCTION_PARAMS, jvps=[_extremum_jvp])
min = primitive("min", _reduction_forward(np.minimum.reduce), [_extremum_vjp],
                params=_REDUCTION_PARAMS, jvps=[_extremum_jvp])
prod = primitive("prod", _reduction_forward(np.prod), [_prod_vjp], params=_REDUCTION_PARAMS,
                 jvps=[_prod_jvp])
nansum = primitive("nansum", _reduction_forward(np.nansum), [_nansum_vjp],
                   params=_REDUCTION_PARAMS, jvps=[_nansum_jvp])
nanprod = primitive("nanprod", _reduction_forward(np.nanprod), [_nanprod_vjp],
                    params=_REDUCTION_PARAMS, jvps=[_nanprod_jvp])
norm = primitive("norm", _norm_forward, [_norm_vjp], params=("ord", "axis", "keepdims",
                                                              "vector"), jvps=[_norm_jvp])
argmax = primitive("argmax", _arg_forward(np.argmax), None, params=("axis", "keepdims"))
argmin = primitive("argmin", _arg_forward(np.argmin), None, params=("axis", "keepdims"))
sum_axis = sum


# ----- linear algebra ----------------------------------------------------------------------

def _numpys_dot(y, numpy) -> bool:
    """``np.dot`` (``numpy``) with ``y`` of 3+ axes contracts y's second-to-last axis,
    where MXNet's ``dot`` contracts its first; for fewer axes they agree."""
    return numpy and np.ndim(y) > 2


def _second_to_last_first(y):
    n = y.ndim
    return transpose(y, axes=(n - 2, *range(n - 2), n - 1))


def _first_to_second_to_last(gy):
    n = gy.ndim
    return transpose(gy, axes=(*range(1, n - 1), 0, n - 1))


def _dot_forward(x, y, transpose_a=False, transpose_b=False, numpy=False):
    if _numpys_dot(y, numpy):
        return np.dot(x, y)
    # MXNet views an N-d operand as a matrix and transposes that: transpose_a
    # contracts x's first axis, transpose_b y's last; other axes keep their order.
    if transpose_a:
        x = np.moveaxis(x, 0, -1)
    if transpose_b:
        y = np.moveaxis(y, -1, 0)
    if x.ndim <= 2 and y.ndim <= 2:
        return np.dot(x, y)
    return np.tensordot(x, y, axes=([x.ndim - 1], [0]))


def _as_matrix(a, rows_first):
    """View an N-d operand of ``dot`` as a matrix (leading or trailing axes merged)."""
    if a.ndim == 2:
        return a
    if a.ndim == 1:
        return reshape_raw(a, shape=(1, -1) if rows_first else (-1, 1))
    return reshape_raw(a, shape=(-1, a.shape[-1]) if rows_first else (a.shape[0], -1))


def _first_axis_last(a):
    return transpose(a, axes=tuple(range(1, a.ndim)) + (0,))


def _last_axis_first(a):
    return transpose(a, axes=(a.ndim - 1,) + tuple(range(a.ndim - 1)))


def _dot_raw_matrices(g, x, y):
    """(g, x, y) as matrices, for numpy operands of at most two axes and no transposes
    (the common case in compiled code: the same math as below, without op calls), or None."""
    if type(g) is not np.ndarray or type(x) is not np.ndarray or type(y) is not np.ndarray \
            or x.ndim > 2 or y.ndim > 2:
        return None
    xm = x if x.ndim == 2 else x.reshape(1, -1)
    ym = y if y.ndim == 2 else y.reshape(-1, 1)
    return g.reshape(xm.shape[0], ym.shape[1]), xm, ym


def _dot_of_a_number(x, y) -> bool:
    """``np.dot`` with a 0-d operand is a product (a number's gradient sums over the other)."""
    return _of_a_number(x) or _of_a_number(y)


def _dot_vjp_x(g, ans, x, y, transpose_a=False, transpose_b=False, numpy=False):
    if _numpys_dot(y, numpy) and not _dot_of_a_number(x, y):
        return _dot_vjp_x(g, None, x, _second_to_last_first(y))   # ans unread: unsaved
    if _dot_of_a_number(x, y):
        return unbroadcast(multiply(g, y), x)
    raw = None if transpose_a or transpose_b else _dot_raw_matrices(g, x, y)
    if raw is not None:
        gm, xm, ym = raw
        return np.dot(gm, ym.T).reshape(x.shape)
    xs = _first_axis_last(x) if transpose_a else x
    ys = _last_axis_first(y) if transpose_b else y
    xm, ym = _as_matrix(xs, True), _as_matrix(ys, False)
    gm = reshape_raw(g, shape=(xm.shape[0], ym.shape[1]))
    gx = reshape_raw(dot(gm, transpose(ym)), shape=xs.shape)
    return _last_axis_first(gx) if transpose_a else gx


def _dot_vjp_y(g, ans, x, y, transpose_a=False, transpose_b=False, numpy=False):
    if _numpys_dot(y, numpy) and not _dot_of_a_number(x, y):
        return _first_to_second_to_last(_dot_vjp_y(g, None, x, _second_to_last_first(y)))
    if _dot_of_a_number(x, y):
        return unbroadcast(multiply(g, x), y)
    raw = None if transpose_a or transpose_b else _dot_raw_matrices(g, x, y)
    if raw is not None:
        gm, xm, ym = raw
        return np.dot(xm.T, gm).reshape(y.shape)
    xs = _first_axis_last(x) if transpose_a else x
    ys = _last_axis_first(y) if transpose_b else y
    xm, ym = _as_matrix(xs, True), _as_matrix(ys, False)
    gm = reshape_raw(g, shape=(xm.shape[0], ym.shape[1]))
    gy = reshape_raw(dot(transpose(xm), gm), shape=ys.shape)
    return _first_axis_last(gy) if transpose_b else gy


def _batch_dot_forward(x, y, transpose_a=False, transpose_b=False):
    if transpose_a:
        x = np.swapaxes(x, -1, -2)
    if transpose_b:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _batch_dot_vjp_x(g, ans, x, y, transpose_a=False, transpose_b=False):
    if transpose_a:
        return batch_dot(y, g, transpose_a=transpose_b, transpose_b=True)
    return batch_dot(g, y, transpose_b=not transpose_b)


def _batch_dot_vjp_y(g, ans, x, y, transpose_a=False, transpose_b=False):
    if transpose_b:
        return batch_dot(g, x, transpose_a=True, transpose_b=transpose_a)
    return batch_dot(x, g, transpose_a=not transpose_a)


def _bilinear_jvps(name):
    """The JVP rules of an op linear in each of its two arguments: the op with the
    argument replaced by its tangent."""
    def rule_x(t, ans, x, y, **params):
        return globals()[name](t, y, **params)

    def rule_y(t, ans, x, y, **params):
        return globals()[name](x, t, **params)

    rule_x.__name__, rule_y.__name__ = f"{name}_jvp_x", f"{name}_jvp_y"
    return [rule_x, rule_y]


dot = primitive("dot", _dot_forward, [_dot_vjp_x, _dot_vjp_y],
                params=("transpose_a", "transpose_b", "numpy"), jvps=_bilinear_jvps("dot"))
batch_dot = primitive("batch_dot", _batch_dot_forward, [_batch_dot_vjp_x, _batch_dot_vjp_y],
                      params=("transpose_a", "transpose_b"), jvps=_bilinear_jvps("batch_dot"))


def _matmul_operands(x, y):
    """``x`` and ``y`` as stacks of matrices (1-d promoted as numpy does) and the shape
    of the result in those terms."""
    x2 = x if x.ndim >= 2 else reshape_raw(x, shape=(1, -1))
    y2 = y if y.ndim >= 2 else reshape_raw(y, shape=(-1, 1))
    batch = np.broadcast_shapes(x2.shape[:-2], y2.shape[:-2])
    return x2, y2, batch + (x2.shape[-2], y2.shape[-1])


def _matmul_vjp_x(g, ans, x, y):
    x2, y2, g_shape = _matmul_operands(x, y)
    gx = matmul(reshape_raw(g, shape=g_shape), swapaxes(y2, -1, -2))
    return reshape_raw(unbroadcast(gx, x2), shape=x.shape)


def _matmul_vjp_y(g, ans, x, y):
    x2, y2, g_shape = _matmul_operands(x, y)
    gy = matmul(swapaxes(x2, -1, -2), reshape_raw(g, shape=g_shape))
    return reshape_raw(unbroadcast(gy, y2), shape=y.shape)


# numpy's matmul (the ``@`` operator): stacks of matrices broadcast, 1-d promoted
matmul = primitive("matmul", np.matmul, [_matmul_vjp_x, _matmul_vjp_y],
                   jvps=_bilinear_jvps("matmul"))


# ----- shape -------------------------------------------------------------------------------

def _reshape_forward(x, shape):
    return x.reshape(shape)


def _restore_shape_vjp(g, ans, x, *params, **named_params):
    return reshape_raw(g, shape=x.shape)


def _transpose_forward(x, axes=None):
    # a view: NDArrays copy it to a contiguous buffer (as_data), while compiled code
    # hands it to BLAS as is (np.dot(X.T, g) needs no copy of X)
    return np.transpose(x, axes)


def _transpose_vjp(g, ans, x, axes=None):
    inverse = None if axes is None else tuple(np.argsort([a % x.ndim for a in axes]).tolist())
    return transpose(g, axes=inverse)


def _expand_dims_forward(x, axis):
    return np.expand_dims(x, axis)


def _squeeze_forward(x, axis=None):
    return np.squeeze(x, axis=axis)


def _flatten_forward(x):
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(x.shape[0], 1)


reshape_raw = primitive("reshape", _reshape_forward, [_restore_shape_vjp],
                        params=("shape",), jvps=[_linear_jvp("reshape_raw")])
transpose = primitive("transpose", _transpose_forward, [_transpose_vjp], params=("axes",),
                      jvps=[_linear_jvp("transpose")])
expand_dims = primitive("expand_dims", _expand_dims_forward, [_restore_shape_vjp],
                        params=("axis",), jvps=[_linear_jvp("expand_dims")])
squeeze = primitive("squeeze", _squeeze_forward, [_restore_shape_vjp], params=("axis",),
                    jvps=[_linear_jvp("squeeze")])
flatten = primitive("flatten", _flatten_forward, [_restore_shape_vjp],
                    jvps=[_linear_jvp("flatten")])
Flatten = flatten


def _mxnet_shape(in_shape, shape):
    """MXNet's reshape codes: 0 copies the input's dimension, -1 is inferred."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return tuple(in_shape[i] if d == 0 and i < len(in_shape) else d for i, d in enumerate(shape))


def reshape(x, shape=None, reverse=False, out=None, **kwargs):
    """``x`` with a new shape (MXNet codes: 0 keeps a dimension, -1 is inferred)."""
    if shape is None:
        shape = kwargs.pop("newshape")
    return reshape_raw(x, shape=_mxnet_shape(shape_of(x), shape), out=out)


def swapaxes(x, dim1=0, dim2=1):
    axes = list(range(x.ndim))
    axes[dim1], axes[dim2] = axes[dim2], axes[dim1]
    return transpose(x, axes=tuple(axes))


def _getitem_forward(x, key):
    return x[key]


def _getitem_vjp(g, ans, x, key):
    return index_add(g, key=key, shape=x.shape)


def _has_array(key) -> bool:
    parts = key if isinstance(key, tuple) else (key,)
    return builtins.any(isinstance(k, (np.ndarray, list)) for k in parts)


def _index_add_forward(g, key, shape):
    out = np.zeros(shape, dtype=g.dtype)
    target_shape = out[key].shape
    values = g.reshape(target_shape)
    if _has_array(key):
        np.add.at(out, key, values)
    else:
        out[key] += values
    return out


def _index_add_vjp(h, ans, g, key, shape):
    return reshape_raw(getitem(h, key=key), shape=g.shape)


getitem_raw = primitive("getitem", _getitem_forward, [_getitem_vjp], params=("key",),
                        jvps=[_linear_jvp("getitem_raw")])
index_add = primitive("index_add", _index_add_forward, [_index_add_vjp],
                      params=("key", "shape"), jvps=[_linear_jvp("index_add")])


def getitem(x, key):
    """``x[key]`` (basic and integer-array indexing)."""
    return getitem_raw(x, key=key)


def _keyed(name, key_of, params, doc):
    """A primitive that reads ``data[key_of(data.shape, **params)]``: MXNet's indexing
    operators (``slice``, ``slice_axis``, ``take``) as primitives of their own, so that
    compiled code has a rule for them; their VJP scatters with ``index_add``."""

    def forward(data, **kw):
        return data[key_of(data.shape, **kw)]

    def vjp(g, ans, data, **kw):
        return index_add(g, key=key_of(data.shape, **kw), shape=data.shape)

    def jvp(t, ans, data, **kw):   # linear: the same elements of the tangent
        return prim_op(t, **kw)

    forward.__name__, vjp.__name__ = f"_{name}_forward", f"_{name}_vjp"
    jvp.__name__ = f"_{name}_jvp"
    prim_op = primitive(name, forward, [vjp], params=params, jvps=[jvp])
    names = ("data",) + params

    def op(*args, **kwargs):
        bound = dict(zip(names, args, strict=False))   # parameters by position or keyword
        bound.update(kwargs)
        return prim_op(bound.pop("data"), **bound)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = doc
    op.prim = prim_op.prim   # compiled code reads the call as the primitive
    return op


def _slice_key(shape, begin, end, step=None):
    step = step or (None,) * len(begin)
    return tuple(builtins.slice(b, e, s) for b, e, s in zip(begin, end, step, strict=True))


def _slice_axis_key(shape, axis, begin, end):
    axis = axis % len(shape)
    return (builtins.slice(None),) * axis + (builtins.slice(begin, end),)


def _int_indices(indices):
    return (indices._data if type(indices) is NDArray else np.asarray(indices)).astype(np.int64)


def _take_key(shape, indices, axis=0, mode="clip"):
    axis = axis % len(shape)
    idx = _int_indices(indices)
    n = shape[axis]
    if mode == "clip":
        idx = np.clip(idx, 0, n - 1)
    elif mode == "wrap":
        idx = np.mod(idx, n)
    elif mode == "raise":
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"take: an index is outside [0, {n}) on axis {axis} "
                             "(mode='raise'); use mode='clip' or mode='wrap' to allow it")
    else:
        raise ValueError(f"take: mode must be 'clip', 'wrap' or 'raise', got {mode!r}")
    return (builtins.slice(None),) * axis + (idx,)


slice = _keyed("slice", _slice_key, ("begin", "end", "step"),
               """MXNet's ``slice``: per-axis begin/end/step tuples (``None`` = whole axis).""")
slice_axis = _keyed("slice_axis", _slice_axis_key, ("axis", "begin", "end"),
                    """Elements ``begin:end`` along one axis.""")
take = _keyed("take", _take_key, ("indices", "axis", "mode"),
              """Elements of ``a`` at ``indices`` along ``axis``.

    ``mode`` says what an index outside ``[0, n)`` means: "clip" (MXNet's default)
    clamps it, "wrap" takes it modulo ``n``, "raise" raises IndexError.
    """)


def _pick_key(shape, index, axis):
    """The integer-array key that takes one element along ``axis`` per position: the
    (clipped) index there, an open grid over the other axes."""
    axis = axis % len(shape)
    idx = np.clip(_int_indices(index), 0, shape[axis] - 1)
    rest = [n for i, n in enumerate(shape) if i != axis]
    key = list(np.ogrid[tuple(builtins.slice(0, n) for n in rest)] if rest else [])
    key.insert(axis, idx.reshape(rest))
    return tuple(key), axis


def _pick_forward(data, index, axis=-1, keepdims=False):
    key, axis = _pick_key(data.shape, index, axis)
    result = data[key]
    return np.expand_dims(result, axis) if keepdims else result


def _pick_vjp(g, ans, data, index, axis=-1, keepdims=False):
    key, axis = _pick_key(data.shape, index, axis)
    if keepdims:
        g = squeeze(g, axis=axis)
    return index_add(g, key=key, shape=data.shape)


# MXNet's pick(data, index, axis=-1, keepdims=False): data[..., index[...], ...], one
# element along ``axis`` per position (indices clipped to the axis).  A primitive, not a
# wrapper around getitem, so that compiled code (``-nd.pick(y_hat, y).log()``) has a
# rule for it; the index is a parameter (integers: no gradient)
def _pick_jvp(t, ans, data, index, axis=-1, keepdims=False):
    return _pick_prim(t, index=index, axis=axis, keepdims=keepdims)   # linear in data


_pick_prim = primitive("pick", _pick_forward, [_pick_vjp],
                       params=("index", "axis", "keepdims"), jvps=[_pick_jvp])


def pick(data, index, axis=-1, keepdims=False):
    """``data[..., index[...], ...]``: one element along ``axis`` per position."""
    return _pick_prim(data, index=index, axis=axis, keepdims=keepdims)


pick.prim = _pick_prim.prim   # compiled code reads the call as the primitive


def _concat_forward(*arrays, dim=1):
    return np.concatenate(arrays, axis=dim)


def _concat_rule(index):
    def rule(g, ans, *arrays, dim=1):
        start = builtins.sum(a.shape[dim] for a in arrays[:index])
        return slice_axis(g, dim, start, start + arrays[index].shape[dim])

    rule.__name__ = f"concat_vjp_{index}"
    return rule


def _stack_forward(*arrays, axis=0):
    return np.stack(arrays, axis=axis)


def _stack_rule(index):
    def rule(g, ans, *arrays, axis=0):
        axis = axis % g.ndim
        return reshape_raw(slice_axis(g, axis, index, index + 1), shape=arrays[index].shape)

    rule.__name__ = f"stack_vjp_{index}"
    return rule


def _tangents_or_zeros(tangents, arrays):
    return [zeros_like(a) if t is None else t for t, a in zip(tangents, arrays, strict=True)]


def _concat_jvp(tangents, ans, *arrays, dim=1):
    return _concat_prim(*_tangents_or_zeros(tangents, arrays), dim=dim)


def _stack_jvp(tangents, ans, *arrays, axis=0):
    return _stack_prim(*_tangents_or_zeros(tangents, arrays), axis=axis)


_VARIADIC_MAX = 64
_concat_prim = primitive("concat", _concat_forward,
                         [_concat_rule(i) for i in range(_VARIADIC_MAX)], params=("dim",),
                         jvp=_concat_jvp)
_stack_prim = primitive("stack", _stack_forward,
                        [_stack_rule(i) for i in range(_VARIADIC_MAX)], params=("axis",),
                        jvp=_stack_jvp)


def _check_variadic(name, arrays):
    if len(arrays) > _VARIADIC_MAX:
        raise ValueError(f"{name} takes at most {_VARIADIC_MAX} arrays, got {len(arrays)}")


def concat(*arrays, dim=1, out=None):
    """Join arrays along axis ``dim`` (MXNet's default: 1)."""
    _check_variadic("concat", arrays)
    return _concat_prim(*arrays, dim=dim, out=out)


def concatenate(arrays, axis=0, out=None):
    return concat(*arrays, dim=axis, out=out)


def stack(*arrays, axis=0, out=None):
    """Stack arrays along a new axis."""
    _check_variadic("stack", arrays)
    return _stack_prim(*arrays, axis=axis, out=out)


def split(data, num_outputs, axis=1, squeeze_axis=False):
    """``num_outputs`` equal parts along ``axis`` (a list, or one array if 1)."""
    n = data.shape[axis]
    if n % num_outputs:
        raise ValueError(f"cannot split an axis of length {n} into {num_outputs} equal parts")
    step = n // num_outputs
    parts = [slice_axis(data, axis, i * step, (i + 1) * step) for i in range(num_outputs)]
    if squeeze_axis and step == 1:
        parts = [squeeze(p, axis=axis) for p in parts]
    return parts[0] if num_outputs == 1 else parts


def _tile_forward(x, reps):
    return np.tile(x, reps)


def _tile_vjp(g, ans, x, reps):
    reps = (reps,) if isinstance(reps, int) else tuple(reps)
    ndim = builtins.max(len(reps), x.ndim)
    reps = (1,) * (ndim - len(reps)) + reps
    base = (1,) * (ndim - x.ndim) + x.shape
    interleaved = tuple(d for pair in zip(reps, base, strict=True) for d in pair)
    summed = sum(reshape_raw(g, shape=interleaved), axis=tuple(range(0, 2 * ndim, 2)))
    return reshape_raw(summed, shape=x.shape)


def _repeat_forward(x, repeats, axis=None):
    return np.repeat(x, repeats, axis=axis)


def _repeat_vjp(g, ans, x, repeats, axis=None):
    if axis is None:
        return reshape_raw(sum(reshape_raw(g, shape=(x.size, repeats)), axis=1), shape=x.shape)
    axis = axis % x.ndim
    split_shape = x.shape[:axis + 1] + (repeats,) + x.shape[axis + 1:]
    return sum(reshape_raw(g, shape=split_shape), axis=axis + 1)


tile = primitive("tile", _tile_forward, [_tile_vjp], params=("reps",),
                 jvps=[_linear_jvp("tile")])
repeat = primitive("repeat", _repeat_forward, [_repeat_vjp], params=("repeats", "axis"),
                   jvps=[_linear_jvp("repeat")])


# ----- neural-network ops ------------------------------------------------------------------

def _softmax_forward(x, axis=-1):
    shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return shifted / np.sum(shifted, axis=axis, keepdims=True)


def _softmax_vjp(g, ans, x, axis=-1):
    return multiply(ans, subtract(g, sum(multiply(g, ans), axis=axis, keepdims=True)))


def _log_softmax_forward(x, axis=-1):
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def _log_softmax_vjp(g, ans, x, axis=-1):
    return subtract(g, multiply(exp(ans), sum(g, axis=axis, keepdims=True)))


def _log_softmax_jvp(t, ans, x, axis=-1):
    return subtract(t, sum(multiply(exp(ans), t), axis=axis, keepdims=True))


# softmax's Jacobian is symmetric: its VJP rule is its JVP rule
softmax = primitive("softmax", _softmax_forward, [_softmax_vjp], params=("axis",),
                    jvps=[_softmax_vjp])
log_softmax = primitive("log_softmax", _log_softmax_forward, [_log_softmax_vjp],
                        params=("axis",), jvps=[_log_softmax_jvp])


def _one_hot_forward(indices, depth, on_value=1.0, off_value=0.0, dtype="float32"):
    # MXNet casts each index to an integer (toward zero); an index outside [0, depth)
    # gives a row of off_value
    index = np.asarray(indices).astype(np.int64)
    hits = index[..., None] == np.arange(depth)
    return np.where(hits, on_value, off_value).astype(_dtype(dtype))


# MXNet's one_hot(indices, depth, on_value=1, off_value=0, dtype='float32'): shape
# indices.shape + (depth,); no gradient (the indices are integers)
one_hot = primitive("one_hot", _one_hot_forward, None,
                    params=("depth", "on_value", "off_value", "dtype"))


# ----- creation (no gradient) --------------------------------------------------------------

def _dtype(dtype, default=np.float32):
    return np.dtype(default if dtype is None else dtype)


def _shape(shape):
    return (shape,) if isinstance(shape, int) else tuple(shape)


def array(source, ctx=None, dtype=None):
    """A new array (a copy) of ``dtype``, by default: an NDArray's own dtype; float32 for
    Python numbers and sequences and for integer and boolean numpy arrays, as in MXNet 1.x.

    A floating-point numpy array keeps its dtype (float16, float32, float64), where MXNet
    1.x makes it float32 too: float64 data and gradient checks stay float64 here.
    """
    if type(source) is NDArray:
        data = source._data
    else:
        data = np.asarray(source)
        if dtype is None and (not isinstance(source, np.ndarray) or data.dtype.kind != "f"):
            dtype = np.float32
    return NDArray(as_data(np.array(data, dtype=dtype, copy=True)))


def zeros(shape, ctx=None, dtype=None, **kwargs):
    return NDArray(as_data(np.zeros(_shape(shape), dtype=_dtype(dtype))))


def ones(shape, ctx=None, dtype=None, **kwargs):
    return NDArray(as_data(np.ones(_shape(shape), dtype=_dtype(dtype))))


def full(shape, val, ctx=None, dtype=None, out=None):
    result = NDArray(as_data(np.full(_shape(shape), val, dtype=_dtype(dtype))))
    if out is not None:
        out._assign(builtins.slice(None), result._data)
        return out
    return result


def empty(shape, ctx=None, dtype=None):
    return zeros(shape, dtype=dtype)


def arange(start, stop=None, step=1.0, repeat=1, ctx=None, dtype=None):
    values = np.arange(start, stop, step, dtype=_dtype(dtype))
    return NDArray(as_data(np.repeat(values, repeat) if repeat != 1 else values))


# ===== numpy coverage (issue 11, item 5): elementwise math ==================================
# Each op's scalar formula calls the libm function of the same meaning (lower.FUNCTIONS);
# the derivatives are written to stay accurate where the textbook form cancels: arccosh's
# 1 / sqrt(x*x - 1) as 1 / (sqrt(x - 1) * sqrt(x + 1)) (x - 1 is exact near 1), arctanh's
# 1 / (1 - x*x) as 1 / ((1 - x) (1 + x)), arcsinh's 1 / sqrt(x*x + 1) as 1 / hypot(x, 1)
# (no overflow of x*x).

_PI = 3.141592653589793
_LN2 = 0.6931471805599453
_LN10 = 2.302585092994046


def _sinh_vjp(g, ans, x):
    return multiply(g, cosh(x))


def _cosh_vjp(g, ans, x):
    return multiply(g, sinh(x))


def _arcsin_vjp(g, ans, x):
    return divide(g, sqrt(subtract(1.0, square(x))))


def _arccos_vjp(g, ans, x):
    return negative(divide(g, sqrt(subtract(1.0, square(x)))))


def _arctan_vjp(g, ans, x):
    return divide(g, add(1.0, square(x)))


def _arcsinh_vjp(g, ans, x):
    return divide(g, hypot(x, 1.0))


def _arccosh_vjp(g, ans, x):
    return divide(g, multiply(sqrt(subtract(x, 1.0)), sqrt(add(x, 1.0))))


def _arctanh_vjp(g, ans, x):
    return divide(g, multiply(subtract(1.0, x), add(1.0, x)))


def _log2_vjp(g, ans, x):
    return divide(g, multiply(x, _LN2))


def _log10_vjp(g, ans, x):
    return divide(g, multiply(x, _LN10))


def _exp2_vjp(g, ans, x):
    return multiply(g, multiply(ans, _LN2))


def _cbrt_vjp(g, ans, x):
    return divide(g, multiply(3.0, square(ans)))


def _sinc_forward(x):
    y = np.multiply(_PI, np.where(np.equal(x, 0.0), 1e-20, x))
    return np.divide(np.sin(y), y)


#: sinc's slope near 0 as its Taylor series -pi^2 x / 3 + pi^4 x^3 / 30 - pi^6 x^5 / 840:
#: for |x| < 0.01 its truncation error is below 5e-14 (relative), where the direct
#: (cos(pi x) - sinc(x)) / x loses digits to cancellation (1e-13 at 0.01, worse nearer 0);
#: it also gives the right second and third derivatives at 0
_SINC_SERIES = (-3.289868133696453, 3.246969701133414, -1.144510944732505)
_SINC_SMALL = 0.01


def _sinc_vjp(g, ans, x):
    # d/dx sin(pi x) / (pi x) = (cos(pi x) - sinc(x)) / x, the series near 0
    c1, c3, c5 = _SINC_SERIES
    small = lesser(abs(x), _SINC_SMALL)
    squared = multiply(x, x)
    series = multiply(x, add(c1, multiply(squared, add(c3, multiply(squared, c5)))))
    slope = divide(subtract(cos(multiply(_PI, x)), ans), where(small, 1.0, x))
    return multiply(g, where(small, series, slope))


def _arctan2_vjp_x(g, ans, x, y):   # numpy's arctan2(x1, x2) = atan(x1 / x2)
    return unbroadcast(multiply(g, divide(y, add(square(x), square(y)))), x)


def _arctan2_vjp_y(g, ans, x, y):
    return unbroadcast(negative(multiply(g, divide(x, add(square(x), square(y))))), y)


def _hypot_vjp_x(g, ans, x, y):
    return unbroadcast(multiply(g, divide(x, ans)), x)


def _hypot_vjp_y(g, ans, x, y):
    return unbroadcast(multiply(g, divide(y, ans)), y)


def _logaddexp_vjp_x(g, ans, x, y):
    return unbroadcast(multiply(g, exp(subtract(x, ans))), x)


def _logaddexp_vjp_y(g, ans, x, y):
    return unbroadcast(multiply(g, exp(subtract(y, ans))), y)


sinh = primitive("sinh", np.sinh, [_sinh_vjp], scalar="sinh(x)", scalar_vjps=("g * cosh(x)",))
cosh = primitive("cosh", np.cosh, [_cosh_vjp], scalar="cosh(x)", scalar_vjps=("g * sinh(x)",))
arcsin = primitive("arcsin", np.arcsin, [_arcsin_vjp], scalar="asin(x)",
                   scalar_vjps=("g / sqrt(1.0 - x * x)",))
arccos = primitive("arccos", np.arccos, [_arccos_vjp], scalar="acos(x)",
                   scalar_vjps=("-(g / sqrt(1.0 - x * x))",))
arctan = primitive("arctan", np.arctan, [_arctan_vjp], scalar="atan(x)",
                   scalar_vjps=("g / (1.0 + x * x)",))
arcsinh = primitive("arcsinh", np.arcsinh, [_arcsinh_vjp], scalar="asinh(x)",
                    scalar_vjps=("g / hypot(x, 1.0)",))
arccosh = primitive("arccosh", np.arccosh, [_arccosh_vjp], scalar="acosh(x)",
                    scalar_vjps=("g / (sqrt(x - 1.0) * sqrt(x + 1.0))",))
arctanh = primitive("arctanh", np.arctanh, [_arctanh_vjp], scalar="atanh(x)",
                    scalar_vjps=("g / ((1.0 - x) * (1.0 + x))",))
log2 = primitive("log2", np.log2, [_log2_vjp], scalar="log2(x)",
                 scalar_vjps=(f"g / (x * {_LN2!r})",))
log10 = primitive("log10", np.log10, [_log10_vjp], scalar="log10(x)",
                  scalar_vjps=(f"g / (x * {_LN10!r})",))
exp2 = primitive("exp2", np.exp2, [_exp2_vjp], scalar="exp2(x)",
                 scalar_vjps=(f"g * (ans * {_LN2!r})",))
cbrt = primitive("cbrt", np.cbrt, [_cbrt_vjp], scalar="cbrt(x)",
                 scalar_vjps=("g / (3.0 * (ans * ans))",))
sinc = primitive(
    "sinc", _sinc_forward, [_sinc_vjp],
    scalar=f"sin({_PI!r} * where(x == 0.0, 1e-20, x)) / ({_PI!r} * where(x == 0.0, 1e-20, x))",
    scalar_vjps=(f"g * where(fabs(x) < {_SINC_SMALL!r}, x * ({_SINC_SERIES[0]!r} + x * x * "
                 f"({_SINC_SERIES[1]!r} + x * x * {_SINC_SERIES[2]!r})), (cos({_PI!r} * x) - ans)"
                 f" / where(fabs(x) < {_SINC_SMALL!r}, 1.0, x))",))
arctan2 = primitive("arctan2", np.arctan2, [_arctan2_vjp_x, _arctan2_vjp_y],
                    scalar="atan2(x, y)",
                    scalar_vjps=("g * (y / (x * x + y * y))", "-(g * (x / (x * x + y * y)))"))
hypot = primitive("hypot", np.hypot, [_hypot_vjp_x, _hypot_vjp_y], scalar="hypot(x, y)",
                  scalar_vjps=("g * (x / ans)", "g * (y / ans)"))
logaddexp = primitive("logaddexp", np.logaddexp, [_logaddexp_vjp_x, _logaddexp_vjp_y],
                      scalar="logaddexp(x, y)",
                      scalar_vjps=("g * exp(x - ans)", "g * exp(y - ans)"))



# ===== numpy coverage (issue 11, item 5): structural ops ===================================

def _flat_axis(x, axis):
    """numpy's ``axis=None`` of cumsum/cumprod/flip-like ops: the flattened array, axis 0."""
    return (reshape_raw(x, shape=(-1,)), 0) if axis is None else (x, axis)


def _reverse_cumsum(g, axis):
    return flip(cumsum(flip(g, axis=axis), axis=axis), axis=axis)


def _cumsum_forward(x, axis=None):
    return np.cumsum(x, axis=axis)


def _cumsum_vjp(g, ans, x, axis=None):
    return reshape_raw(_reverse_cumsum(g, 0 if axis is None else axis), shape=shape_of(x))


def _cumprod_forward(x, axis=None):
    return np.cumprod(x, axis=axis)


def _cumprod_parts(x, axis):
    """Masks of a cumulative product along ``axis``: before the first zero, at it, and the
    products with that zero read as 1 (what each later product is, per unit of it)."""
    nonzero = not_equal(x, 0.0)
    zeros_so_far = cumsum(subtract(1.0, nonzero), axis=axis)
    before = equal(zeros_so_far, 0.0)
    first_zero = multiply(equal(zeros_so_far, 1.0), subtract(1.0, nonzero))
    skipping = cumprod(where(first_zero, 1.0, x), axis=axis)
    return nonzero, before, first_zero, skipping


#: the longest axis whose cumprod gradient at zeros is computed as the n x n triangle of
#: partial products (exact to any order); longer ones use the first-zero masks (exact first
#: order; a second derivative through them is refused)
CUMPROD_TRIANGLE_MAX = 1024


def _cumprod_triangle_vjp(g, x, axis):
    """prod_{j < i} x_j * sum_{k >= i} g_k prod_{i < j <= k} x_j along ``axis``, with no
    division: the suffix products as an n x n triangle of cumulative products."""
    ndim = len(shape_of(x))
    axis = axis % ndim
    order = tuple(i for i in range(ndim) if i != axis) + (axis,)
    xt, gt = transpose(x, axes=order), transpose(g, axes=order)
    n = shape_of(x)[axis]
    later = np.triu(np.ones((n, n)), 1)                     # j > i
    partial = cumprod(where(later, expand_dims(xt, axis=-2), 1.0), axis=-1)
    suffix = sum(multiply(multiply(partial, np.triu(np.ones((n, n)))), expand_dims(gt, axis=-2)),
                 axis=-1)
    shifted = pad(xt, pad_width=((0, 0),) * (ndim - 1) + ((1, 0),), constant_values=1.0)
    prefix = cumprod(slice_axis(shifted, -1, 0, n), axis=-1)
    return transpose(multiply(prefix, suffix), axes=tuple(np.argsort(order).tolist()))


def _cumprod_vjp(g, ans, x, axis=None):
    # d out_k / d x_i = prod_{j <= k, j != i} x_j: out_k / x_i without zeros (exact to any
    # order); with zeros, the triangle above, or for a long axis: before the first zero
    # out_k / x_i, at the first zero the product with it read as 1, after it 0 (every
    # product then holds the zero) -- exact values, but not their derivatives.
    flat, axis_ = _flat_axis(x, axis)
    if not np.any((flat._data if type(flat) is NDArray else np.asarray(flat)) == 0):
        return reshape_raw(divide(_reverse_cumsum(multiply(g, ans), axis_), flat),
                           shape=shape_of(x))
    if shape_of(flat)[axis_] <= CUMPROD_TRIANGLE_MAX:
        return reshape_raw(_cumprod_triangle_vjp(g, flat, axis_), shape=shape_of(x))
    from .tape import is_recording
    if is_recording():
        raise NotImplementedError(
            f"the second derivative of cumprod at zeros along an axis longer than "
            f"{CUMPROD_TRIANGLE_MAX} is not implemented (first derivatives are exact)")
    nonzero, before, first_zero, skipping = _cumprod_parts(flat, axis_)
    regular = divide(_reverse_cumsum(multiply(g, ans), axis_), where(nonzero, flat, 1.0))
    at_zero = _reverse_cumsum(multiply(g, skipping), axis_)
    return reshape_raw(add(multiply(before, regular), multiply(first_zero, at_zero)),
                       shape=shape_of(x))


def _cumprod_jvp(t, ans, x, axis=None):
    flat, axis_ = _flat_axis(x, axis)
    t, _ = _flat_axis(t, axis)
    nonzero, before, first_zero, skipping = _cumprod_parts(flat, axis_)
    regular = multiply(ans, cumsum(divide(t, where(nonzero, flat, 1.0)), axis=axis_))
    t_at_zero = sum(multiply(t, first_zero), axis=axis_, keepdims=True)
    return add(multiply(before, regular),
               multiply(subtract(1.0, before), multiply(t_at_zero, skipping)))


cumsum = primitive("cumsum", _cumsum_forward, [_cumsum_vjp], params=("axis",),
                   jvps=[_linear_jvp("cumsum")])
cumprod = primitive("cumprod", _cumprod_forward, [_cumprod_vjp], params=("axis",),
                    jvps=[_cumprod_jvp])


def _atleast(numpy_fn):
    def forward(x):
        return numpy_fn(x)

    forward.__name__ = numpy_fn.__name__
    return forward


atleast_1d = primitive("atleast_1d", _atleast(np.atleast_1d), [_restore_shape_vjp],
                       jvps=[_linear_jvp("atleast_1d")])
atleast_2d = primitive("atleast_2d", _atleast(np.atleast_2d), [_restore_shape_vjp],
                       jvps=[_linear_jvp("atleast_2d")])
atleast_3d = primitive("atleast_3d", _atleast(np.atleast_3d), [_restore_shape_vjp],
                       jvps=[_linear_jvp("atleast_3d")])


def _flip_forward(x, axis=None):
    return np.flip(x, axis=axis)


def _flip_vjp(g, ans, x, axis=None):
    return flip(g, axis=axis)


def _roll_forward(x, shift, axis=None):
    return np.roll(x, shift, axis=axis)


def _roll_vjp(g, ans, x, shift, axis=None):
    back = tuple(-s for s in shift) if isinstance(shift, (tuple, list)) else -shift
    return roll(g, shift=back, axis=axis)


flip = primitive("flip", _flip_forward, [_flip_vjp], params=("axis",),
                 jvps=[_linear_jvp("flip")])
roll = primitive("roll", _roll_forward, [_roll_vjp], params=("shift", "axis"),
                 jvps=[_linear_jvp("roll")])


def _diag_key(shape, k):
    """The integer-array key of a matrix's ``k``-th diagonal."""
    rows, cols = shape
    n = builtins.max(0, builtins.min(rows + builtins.min(k, 0), cols - builtins.max(k, 0)))
    start_row, start_col = builtins.max(-k, 0), builtins.max(k, 0)
    return np.arange(start_row, start_row + n), np.arange(start_col, start_col + n)


def _diag_forward(v, k=0):
    if np.ndim(v) not in (1, 2):
        raise ValueError(f"diag needs a 1-d or 2-d array, got {np.ndim(v)}-d")
    return np.diag(v, k)


def _diag_vjp(g, ans, v, k=0):
    if len(shape_of(v)) == 1:   # v spread on a diagonal: read the diagonal back
        return diag(g, k=k)
    return index_add(g, key=_diag_key(shape_of(v), k), shape=shape_of(v))


diag = primitive("diag", _diag_forward, [_diag_vjp], params=("k",), jvps=[_linear_jvp("diag")])


def _float_dtype(x):
    """The floating dtype a constant mask multiplying ``x``'s gradient takes (no promotion)."""
    dtype = x._data.dtype if type(x) is NDArray else np.asarray(x).dtype
    return np.result_type(dtype, 1.0)


def _trace_forward(a, offset=0, axis1=0, axis2=1):
    return np.trace(a, offset=offset, axis1=axis1, axis2=axis2)


def _trace_mask(shape, offset, axis1, axis2, dtype):
    """1 on the traced diagonal, broadcastable against an array of ``shape``."""
    ax1, ax2 = axis1 % len(shape), axis2 % len(shape)
    eye = np.eye(shape[ax1], shape[ax2], k=offset, dtype=dtype)
    if ax1 > ax2:
        eye = eye.T
    mask_shape = [1] * len(shape)
    mask_shape[ax1], mask_shape[ax2] = shape[ax1], shape[ax2]
    return eye.reshape(mask_shape), ax1, ax2


def _trace_vjp(g, ans, a, offset=0, axis1=0, axis2=1):
    shape = shape_of(a)
    mask, ax1, ax2 = _trace_mask(shape, offset, axis1, axis2, _float_dtype(a))
    if len(shape) > 2:
        g = reshape_raw(g, shape=tuple(1 if i in (ax1, ax2) else n
                                       for i, n in enumerate(shape)))
    return broadcast_to(multiply(g, mask), shape=shape)


def _trace_jvp(t, ans, a, offset=0, axis1=0, axis2=1):
    return trace(t, offset=offset, axis1=axis1, axis2=axis2)


trace = primitive("trace", _trace_forward, [_trace_vjp], params=("offset", "axis1", "axis2"),
                  jvps=[_trace_jvp])


def _triu_forward(x, k=0):
    return np.triu(x, k)


def _tril_forward(x, k=0):
    return np.tril(x, k)


def _triu_vjp(g, ans, x, k=0):
    return triu(g, k=k)


def _tril_vjp(g, ans, x, k=0):
    return tril(g, k=k)


triu = primitive("triu", _triu_forward, [_triu_vjp], params=("k",), jvps=[_linear_jvp("triu")])
tril = primitive("tril", _tril_forward, [_tril_vjp], params=("k",), jvps=[_linear_jvp("tril")])

#: np.pad modes that only copy elements of the array (a gather: the gradient scatters back)
PAD_GATHER_MODES = ("edge", "reflect", "symmetric", "wrap")
PAD_MODES = ("constant",) + PAD_GATHER_MODES


def _pad_pairs(ndim, pad_width):
    return np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (ndim, 2))


def _check_pad_mode(mode):
    if not isinstance(mode, str) or mode not in PAD_MODES:
        raise ValueError(f"pad: pullback differentiates mode= {', '.join(map(repr, PAD_MODES))}, "
                         f"not {mode!r} (a statistic or a ramp of the border)")


def _pad_forward(x, pad_width, mode="constant", constant_values=0):
    _check_pad_mode(mode)
    if mode == "constant":
        return np.pad(x, pad_width, mode="constant", constant_values=constant_values)
    return np.pad(x, pad_width, mode=mode)


def _pad_vjp(g, ans, x, pad_width, mode="constant", constant_values=0):
    shape = shape_of(x)
    pairs = _pad_pairs(len(shape), pad_width)
    if mode == "constant":   # the padding is constant: the gradient is the middle
        key = tuple(builtins.slice(int(b), int(b) + n) for (b, _), n in zip(pairs, shape,
                                                                           strict=True))
        return getitem(g, key)
    source = np.pad(np.arange(int(np.prod(shape))).reshape(shape), pad_width, mode=mode)
    flat = index_add(reshape_raw(g, shape=(-1,)), key=(source.reshape(-1),),
                     shape=(int(np.prod(shape)),))
    return reshape_raw(flat, shape=shape)


def _pad_jvp(t, ans, x, pad_width, mode="constant", constant_values=0):
    return pad(t, pad_width=pad_width, mode=mode, constant_values=0)


pad = primitive("pad", _pad_forward, [_pad_vjp], params=("pad_width", "mode", "constant_values"),
                jvps=[_pad_jvp])


def _along_axis_key(shape, indices, axis):
    """The integer-array key of ``take_along_axis(a, indices, axis)`` into ``a``."""
    idx = _int_indices(indices)
    axis = axis % len(shape)
    key = []
    for i, n in enumerate(shape):
        if i == axis:
            key.append(idx)
        else:
            grid = [1] * len(shape)
            grid[i] = n
            key.append(np.arange(n).reshape(grid))
    return tuple(key)


def _take_along_axis_forward(arr, indices, axis=-1):
    if axis is None:
        return np.asarray(arr).reshape(-1)[_int_indices(indices)]
    return np.asarray(arr)[_along_axis_key(np.shape(arr), indices, axis)]


def _take_along_axis_vjp(g, ans, arr, indices, axis=-1):
    shape = shape_of(arr)
    if axis is None:
        size = int(np.prod(shape))
        return reshape_raw(index_add(g, key=(_int_indices(indices),), shape=(size,)),
                           shape=shape)
    return index_add(g, key=_along_axis_key(shape, indices, axis), shape=shape)


def _take_along_axis_jvp(t, ans, arr, indices, axis=-1):
    return take_along_axis(t, indices=indices, axis=axis)


take_along_axis = primitive("take_along_axis", _take_along_axis_forward,
                            [_take_along_axis_vjp], params=("indices", "axis"),
                            jvps=[_take_along_axis_jvp])


# ===== numpy coverage (issue 11, item 5): contractions =====================================
# einsum is the general one; outer, inner and tensordot are einsums of subscripts computed
# from their operands' shapes.  The gradient of operand k of an einsum is another einsum,
# of the result's gradient and the other operands, onto operand k's labels, then: labels
# that appear nowhere else broadcast back, a label repeated in operand k (its diagonal)
# gets the gradient on that diagonal only (an identity mask), and a dimension of size 1
# that another operand broadcast is summed back.

_LABELS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _einsum_terms(subscripts, shapes):
    """``subscripts`` for operands of ``shapes`` as (input terms, output term), explicit:
    every '...' replaced by labels of their own, the implicit output made explicit."""
    if not isinstance(subscripts, str):
        raise TypeError("einsum: pullback takes subscripts as a string "
                        "('ij,jk->ik'), not the interleaved operand, sublist form")
    text = subscripts.replace(" ", "")
    inputs, arrow, output = text.partition("->")
    terms = inputs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} operand terms in {subscripts!r} for "
                         f"{len(shapes)} operands")
    spare = [c for c in _LABELS if c not in text]
    broadcast = builtins.max([len(s) - len(t) + 3 for t, s in zip(terms, shapes, strict=True)
                              if "..." in t], default=0)
    ellipsis = "".join(spare[:broadcast])
    explicit = []
    for term, shape in zip(terms, shapes, strict=True):
        if "..." in term:
            own = len(shape) - len(term) + 3
            term = term.replace("...", ellipsis[broadcast - own:] if own else "")
        if len(term) != len(shape):
            raise ValueError(f"einsum: the term {term!r} names {len(term)} axes of an operand "
                             f"with {len(shape)}")
        explicit.append(term)
    if arrow:
        output = output.replace("...", ellipsis)
    else:
        once = [c for c in sorted(set("".join(explicit)) - set(ellipsis))
                if "".join(explicit).count(c) == 1]
        output = ellipsis + "".join(once)
    return explicit, output


def _label_sizes(terms, shapes):
    sizes = {}
    for term, shape in zip(terms, shapes, strict=True):
        for c, n in zip(term, shape, strict=True):
            sizes[c] = builtins.max(sizes.get(c, 1), n)
    return sizes


def _einsum_operand_grad(k, g, terms, output, operands, optimize=False):
    """The gradient of operand ``k`` of ``einsum(terms -> output)`` for the result's ``g``."""
    shapes = [shape_of(o) for o in operands]
    sizes = _label_sizes(terms, shapes)
    term = terms[k]
    others = [j for j in range(len(terms)) if j != k]
    labels = "".join(dict.fromkeys(term))              # first appearances, in order
    reached = set(output).union(*(terms[j] for j in others))
    target = "".join(c for c in labels if c in reached)
    if output:
        h = einsum(",".join([output] + [terms[j] for j in others]) + "->" + target, g,
                   *[operands[j] for j in others], optimize=optimize)
    else:   # a 0-d result: its gradient (shape (1,) on the tape) scales the rest
        h = einsum(",".join(terms[j] for j in others) + "->" + target,
                   *[operands[j] for j in others], optimize=optimize) if others else 1.0
        h = multiply(h, g)
    first = [term.index(c) == p for p, c in enumerate(term)]
    h = reshape_raw(h, shape=tuple(sizes[c] if (c in reached and is_first) else 1
                                   for c, is_first in zip(term, first, strict=True)))
    full = tuple(sizes[c] for c in term)
    if not builtins.all(first):   # repeated labels: the gradient lies on their diagonal
        mask = np.ones((1,) * len(term))
        for p, c in enumerate(term):
            if not first[p]:
                eye_shape = [1] * len(term)
                eye_shape[term.index(c)] = eye_shape[p] = sizes[c]
                mask = mask * np.eye(sizes[c]).reshape(eye_shape)
        h = multiply(h, mask.astype(_float_dtype(operands[k])))
    h = broadcast_to(h, shape=full) if shape_of(h) != full else h
    return sum_to(h, shape=shapes[k]) if full != tuple(shapes[k]) else h


def _einsum_forward(*operands, subscripts, optimize=False):
    return np.einsum(subscripts, *operands, optimize=optimize)


def _einsum_rule(index):
    def rule(g, ans, *operands, subscripts, optimize=False):
        terms, output = _einsum_terms(subscripts, [shape_of(o) for o in operands])
        return _einsum_operand_grad(index, g, terms, output, operands, optimize)

    rule.__name__ = f"einsum_vjp_{index}"
    return rule


def _einsum_jvp(tangents, ans, *operands, subscripts, optimize=False):
    total = None
    for k, t in enumerate(tangents):
        if t is not None:
            part = einsum(subscripts, *operands[:k], t, *operands[k + 1:], optimize=optimize)
            total = part if total is None else add(total, part)
    return total


_EINSUM_MAX = 16
_einsum_prim = primitive("einsum", _einsum_forward, [_einsum_rule(i) for i in range(_EINSUM_MAX)],
                         params=("subscripts", "optimize"), jvp=_einsum_jvp)


def einsum(subscripts, *operands, optimize=False, out=None):
    """numpy's einsum (subscripts as a string, '...' allowed), differentiable in every
    operand."""
    if len(operands) > _EINSUM_MAX:
        raise ValueError(f"einsum takes at most {_EINSUM_MAX} operands, got {len(operands)}")
    return _einsum_prim(*operands, subscripts=subscripts, optimize=optimize, out=out)


einsum.prim = _einsum_prim.prim


def _contraction(name, forward, subscripts_of, doc):
    """A primitive computing ``forward(a, b, **params)``, which is
    ``einsum(subscripts_of(a_shape, b_shape, **params), a, b)`` on its operands' shapes
    (``outer`` flattens them first): its rules are the einsum's."""
    def operands(a, b, params):
        if name == "outer":
            return reshape_raw(a, shape=(-1,)), reshape_raw(b, shape=(-1,))
        return a, b

    def rule(index):
        def vjp(g, ans, a, b, *positional, **params):   # the tape may pass axes by position
            params.update(zip(("axes",), positional, strict=False))
            flat = operands(a, b, params)
            subscripts = subscripts_of(shape_of(flat[0]), shape_of(flat[1]), **params)
            terms, output = _einsum_terms(subscripts, [shape_of(f) for f in flat])
            grad = _einsum_operand_grad(index, g, terms, output, flat)
            return reshape_raw(grad, shape=shape_of((a, b)[index]))

        vjp.__name__ = f"{name}_vjp_{index}"
        return vjp

    def jvp(index):   # bilinear: the op with operand ``index`` replaced by its tangent
        def rule_jvp(t, ans, a, b, *positional, **params):
            params.update(zip(("axes",), positional, strict=False))
            return prim_op(t, b, **params) if index == 0 else prim_op(a, t, **params)

        rule_jvp.__name__ = f"{name}_jvp_{index}"
        return rule_jvp

    prim_op = primitive(name, forward, [rule(0), rule(1)],
                        params=("axes",) if name == "tensordot" else (),
                        jvps=[jvp(0), jvp(1)])
    prim_op.__doc__ = doc
    return prim_op


def _outer_subscripts(a_shape, b_shape):
    return "i,j->ij"


def _inner_subscripts(a_shape, b_shape):
    a_free = _LABELS[:builtins.max(len(a_shape) - 1, 0)]
    b_free = _LABELS[len(a_free):len(a_free) + builtins.max(len(b_shape) - 1, 0)]
    if not a_shape or not b_shape:   # a number: a product
        a, b = _LABELS[:len(a_shape)], _LABELS[len(a_shape):len(a_shape) + len(b_shape)]
        return f"{a},{b}->{a}{b}"
    return f"{a_free}z,{b_free}z->{a_free}{b_free}"


def _tensordot_axes(a_ndim, b_ndim, axes):
    if isinstance(axes, (int, np.integer)):
        return list(range(a_ndim - axes, a_ndim)), list(range(axes))
    a_axes, b_axes = axes
    a_axes = [a_axes] if isinstance(a_axes, (int, np.integer)) else list(a_axes)
    b_axes = [b_axes] if isinstance(b_axes, (int, np.integer)) else list(b_axes)
    return [i % a_ndim for i in a_axes], [i % b_ndim for i in b_axes]


def _tensordot_subscripts(a_shape, b_shape, axes=2):
    a_axes, b_axes = _tensordot_axes(len(a_shape), len(b_shape), axes)
    a = list(_LABELS[:len(a_shape)])
    b = list(_LABELS[len(a_shape):len(a_shape) + len(b_shape)])
    for i, j in zip(a_axes, b_axes, strict=True):
        b[j] = a[i]
    out = [c for i, c in enumerate(a) if i not in a_axes] + \
        [c for j, c in enumerate(b) if j not in b_axes]
    return f"{''.join(a)},{''.join(b)}->{''.join(out)}"


def _outer_forward(a, b):
    return np.outer(a, b)


def _inner_forward(a, b):
    return np.inner(a, b)


outer = _contraction("outer", _outer_forward, _outer_subscripts,
                     "numpy's outer: a and b flattened, every product a[i] * b[j].")
inner = _contraction("inner", _inner_forward, _inner_subscripts,
                     "numpy's inner: a sum over the last axes of a and b.")


def _tensordot_forward(a, b, axes=2):
    return np.tensordot(a, b, axes=axes)


tensordot = _contraction("tensordot", _tensordot_forward, _tensordot_subscripts,
                         "numpy's tensordot(a, b, axes=2).")


# ===== numpy coverage (issue 11, item 5): arrays of (nested) lists =========================

def _asarray_forward(x, dtype=None):
    return np.array(x, dtype=dtype)


def _asarray_vjp(g, ans, x, dtype=None):
    # a list's gradient is an array of its shape (counted by its rows: support.add_grads)
    return reshape_raw(g, shape=shape_of(x))


# np.array(x) / np.asarray(x) of a (nested) list or tuple of arrays and numbers, in compiled
# code (on the tape nd.array copies, as MXNet does, with no gradient)
asarray = primitive("asarray", _asarray_forward, [_asarray_vjp], params=("dtype",),
                    jvps=[_linear_jvp("asarray")])


#: NDArray methods of this section (MXNet's NDArray has the math ones; numpy arrays have
#: cumsum, cumprod and trace with the same parameters, so compiled code reads x.cumsum(...)
#: as the primitive whatever x is): runtime/ndarray.py binds them, compiler/calls.py maps them
COVERAGE_METHODS = ("sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh",
                    "arctanh", "log2", "log10", "cbrt", "cumsum", "cumprod", "trace")
