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
from .tape import apply, is_recording


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
    #: one rule for every tracked input at once, ``vjp_all(g, ans, tracked, *args,
    #: **params) -> [gradient per position in tracked]``, for a node whose inputs' gradients
    #: come from one computation (a compiled call's adjoint); the tape then ignores ``vjps``
    vjp_all: Callable | None = None

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
                if _dual.evaluating and _Dual in map(type, args):   # a constant beside a Dual
                    return _dual.apply(prim, args, kwargs)
                break
            if type(a) is _Dual:   # a VJP rule evaluated for its tangent (runtime/dual.py)
                return _dual.apply(prim, args, kwargs)
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


def primal_values(x):
    """``x``'s numbers as a numpy array, for a rule's piecewise-constant decisions (which
    positions a max pool or topk picks, where zeros are): an NDArray's buffer, a value
    with a tangent's value (forward-over-reverse, runtime/dual.py), else ``np.asarray``."""
    while True:
        if type(x) is NDArray:
            return x._data
        inner = getattr(x, "value", None)
        if inner is None or not hasattr(x, "tangent"):
            return np.asarray(x)
        x = inner


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
        if isinstance(t, (list, tuple)):   # np.array([x * y, 2.0]): a constant's tangent
            t = _zeros_for_none(t, x)      # is None, and None is no number
        return globals()[name](t, *positional_params, **params)

    rule.__name__ = f"{name}_jvp"
    return rule


def _zeros_for_none(t, x):
    """A container tangent ``t`` of the value ``x`` with zeros where an item has none."""
    if t is None:
        data = np.asarray(x)
        return np.zeros(data.shape, data.dtype if data.dtype.kind in "fc" else np.float64)
    if isinstance(t, (list, tuple)):
        return type(t)(_zeros_for_none(d, v) for d, v in zip(t, x, strict=True))
    return t


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
    if lead == 1 and shape and g.shape[1:] == shape:   # a bias's gradient: the sum over the rows
        return np.add.reduce(g, axis=0)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and g.shape[lead + i] != 1)
    # np.add.reduce is np.sum without its Python-level dispatch
    return np.add.reduce(g, axis=axes, keepdims=True).reshape(shape) if axes \
        else g.reshape(shape)


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
    if type(x) is np.ndarray and type(y) is np.ndarray and type(g) is np.ndarray \
            and x.ndim == 2 and y.ndim == 2 and not (transpose_a or transpose_b):
        return np.dot(g.reshape(x.shape[0], y.shape[1]), y.T)   # matrices (compiled code)
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
    if type(x) is np.ndarray and type(y) is np.ndarray and type(g) is np.ndarray \
            and x.ndim == 2 and y.ndim == 2 and not (transpose_a or transpose_b):
        return np.dot(x.T, g.reshape(x.shape[0], y.shape[1]))   # matrices (compiled code)
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

def _reshape_forward(x, shape, reverse=False):
    # compiled code cannot tell an NDArray's x.reshape (MXNet's codes) from a numpy
    # array's: the codes are read where numpy would fail (any 0 or a code below -1 in the
    # shape of a non-empty array; numpy's 0 of an empty array stays numpy's)
    if _has_mxnet_codes(shape) and (x.size or reverse):
        shape = _mxnet_shape(x.shape, shape, reverse)
    return x.reshape(shape)


def _has_mxnet_codes(shape) -> bool:
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    return any(d == 0 or d < -1 for d in dims)


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
                        params=("shape", "reverse"), jvps=[_linear_jvp("reshape_raw")])
transpose = primitive("transpose", _transpose_forward, [_transpose_vjp], params=("axes",),
                      jvps=[_linear_jvp("transpose")])
expand_dims = primitive("expand_dims", _expand_dims_forward, [_restore_shape_vjp],
                        params=("axis",), jvps=[_linear_jvp("expand_dims")])
squeeze = primitive("squeeze", _squeeze_forward, [_restore_shape_vjp], params=("axis",),
                    jvps=[_linear_jvp("squeeze")])
flatten = primitive("flatten", _flatten_forward, [_restore_shape_vjp],
                    jvps=[_linear_jvp("flatten")])
Flatten = flatten


def _mxnet_shape(in_shape, shape, reverse=False):
    """The numpy shape (at most one -1 left) that MXNet's reshape codes mean for an input
    of shape ``in_shape``: 0 copies the input's next dimension, -1 is inferred (and takes
    one input dimension's place), -2 copies all the remaining ones, -3 merges the next
    two, -4 splits the next one into the two given after it (one may be -1); ``reverse``
    reads both shapes from the right.  A shape MXNet refuses is a ValueError naming it."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
    src, codes = (tuple(in_shape)[::-1], shape[::-1]) if reverse else (tuple(in_shape), shape)
    if reverse and -4 in shape:
        raise ValueError(f"reshape {shape} with reverse=True: pullback does not read the "
                         "code -4 from the right")
    out, k, i = [], 0, 0
    try:
        while i < len(codes):
            d = codes[i]
            if d == 0:
                out.append(src[k])
                k += 1
            elif d == -2:
                out.extend(src[k:])
                k = len(src)
            elif d == -3:
                out.append(src[k] * src[k + 1])
                k += 2
            elif d == -4:
                d1, d2 = codes[i + 1], codes[i + 2]
                if d1 == -1 and d2 == -1:
                    raise ValueError("the two dimensions after -4 cannot both be -1")
                d1 = src[k] // d2 if d1 == -1 else d1
                d2 = src[k] // d1 if d2 == -1 else d2
                if d1 * d2 != src[k]:
                    raise ValueError(f"-4 splits dimension {src[k]} into {d1} x {d2}")
                out += [d1, d2]
                k += 1
                i += 2
            elif d >= -1:
                out.append(d)
                k += 1
            else:
                raise ValueError(f"unknown reshape code {d}")
            i += 1
    except IndexError:
        raise ValueError(f"cannot reshape an array of shape {tuple(in_shape)} with MXNet's "
                         f"codes {shape}: the codes read more dimensions than it has") from None
    except ValueError as exc:
        raise ValueError(f"cannot reshape an array of shape {tuple(in_shape)} into {shape}: "
                         f"{exc}") from None
    return tuple(out[::-1]) if reverse else tuple(out)


def reshape(x, shape=None, reverse=False, out=None, **kwargs):
    """``x`` with a new shape (MXNet's codes: 0 copies a dimension, -1 is inferred, -2
    copies the rest, -3 merges two, -4 splits one; ``reverse`` reads them from the
    right)."""
    if shape is None:
        shape = kwargs.pop("newshape")
    return reshape_raw(x, shape=_mxnet_shape(shape_of(x), shape, reverse), out=out)


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
    return primal_values(indices).astype(np.int64)


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
    (clipped) index there, an open grid over the other axes.  Each position names a
    different element (the grid tells them apart), so the key never repeats one."""
    axis = axis % len(shape)
    idx = (index if type(index) is np.ndarray else primal_values(index)).astype(np.int64)
    np.maximum(idx, 0, out=idx)   # astype made a new array: clipped in place
    np.minimum(idx, shape[axis] - 1, out=idx)
    rest = shape[:axis] + shape[axis + 1:]
    grid = _open_grid(rest)
    return grid[:axis] + (idx.reshape(rest),) + grid[axis:], axis


_GRIDS = {}


def _open_grid(shape) -> tuple:
    """``np.ogrid`` over ``shape`` (one ``arange`` per axis, each shaped to broadcast
    along its own axis), made once per shape: read-only, shared by every key."""
    found = _GRIDS.get(shape)
    if found is None:
        found = tuple(np.ogrid[tuple(builtins.slice(0, n) for n in shape)]) if shape else ()
        for grid in found:
            grid.flags.writeable = False
        if len(_GRIDS) > 1024:
            _GRIDS.clear()
        _GRIDS[shape] = found
    return found


def _pick_forward(data, index, axis=-1, keepdims=False):
    key, axis = _pick_key(data.shape, index, axis)
    result = data[key]
    return np.expand_dims(result, axis) if keepdims else result


def _pick_vjp(g, ans, data, index, axis=-1, keepdims=False):
    key, axis = _pick_key(data.shape, index, axis)
    if type(g) is np.ndarray:
        # numpy operands (compiled code): index_add's result without its op call; the key
        # names every element at most once, so assigning is adding to zeros
        out = np.zeros(data.shape, dtype=g.dtype)
        out[key] = g.reshape(key[axis].shape)
        return out
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
    # np.maximum.reduce / np.add.reduce are np.max / np.sum without their Python dispatch
    shifted = np.exp(x - np.maximum.reduce(x, axis=axis, keepdims=True))
    return shifted / np.add.reduce(shifted, axis=axis, keepdims=True)


def _softmax_vjp(g, ans, x, axis=-1):
    if type(g) is np.ndarray and type(ans) is np.ndarray and g.ndim and ans.ndim:
        # numpy operands (compiled code): the same operations without their op calls
        return ans * (g - np.add.reduce(g * ans, axis=_numpy_axis(axis), keepdims=True))
    return multiply(ans, subtract(g, sum(multiply(g, ans), axis=axis, keepdims=True)))


def _log_softmax_forward(x, axis=-1):
    shifted = x - np.maximum.reduce(x, axis=axis, keepdims=True)
    return shifted - np.log(np.add.reduce(np.exp(shifted), axis=axis, keepdims=True))


def _log_softmax_vjp(g, ans, x, axis=-1):
    if type(g) is np.ndarray and type(ans) is np.ndarray and g.ndim and ans.ndim:
        # numpy operands (compiled code): the same operations without their op calls
        return g - np.exp(ans) * np.add.reduce(g, axis=_numpy_axis(axis), keepdims=True)
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
    if on_value == 1 and off_value == 0:   # the default: the mask itself, as numbers
        return hits.astype(_dtype(dtype))
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
    if not np.any(primal_values(flat) == 0):
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
    return np.result_type(primal_values(x).dtype, 1.0)


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
        if name in ("outer", "vdot"):
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


def _vdot_subscripts(a_shape, b_shape):
    return "z,z->"


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


def _vdot_forward(a, b):
    return np.vdot(a, b)


outer = _contraction("outer", _outer_forward, _outer_subscripts,
                     "numpy's outer: a and b flattened, every product a[i] * b[j].")
inner = _contraction("inner", _inner_forward, _inner_subscripts,
                     "numpy's inner: a sum over the last axes of a and b.")
vdot = _contraction("vdot", _vdot_forward, _vdot_subscripts,
                    "numpy's vdot of real arrays: a and b flattened, the sum of a[i] * b[i].")


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
# ===== linear algebra: det, slogdet, inverse, solve, cholesky, gemm2, sumlogdiag ==========
# (issue 11 item 5).  Every op takes stacks of matrices (leading axes are a batch, as numpy
# and MXNet's linalg accept); every rule is written with ops of this table, so second
# derivatives come from differentiating the rules.

def _matrix_transpose(a):
    """The last two axes swapped (a stack of matrices, each transposed)."""
    return swapaxes(a, -1, -2)


def _per_matrix(g, a):
    """A per-matrix value (one number per matrix of the stack ``a``: det's result, its
    gradient) with two trailing axes of one, so it broadcasts against the matrices."""
    return reshape_raw(g, shape=tuple(shape_of(a)[:-2]) + (1, 1))


def _adjugate_forward(a):
    # adj(A) from the SVD A = U S V^T: adj(A) = det(U) det(V) V diag(p) U^T with p_i the
    # product of the singular values other than s_i (prefix times suffix products, no
    # division), so it is exact at singular matrices too (rank n-1: nonzero; lower: zero)
    u, s, vt = np.linalg.svd(a)
    sign = np.linalg.det(u) * np.linalg.det(vt)
    scaled = np.swapaxes(vt, -1, -2) * _exclusive_products(s)[..., None, :]
    return (sign[..., None, None] * np.matmul(scaled, np.swapaxes(u, -1, -2))).astype(a.dtype)


def _exclusive_products(s):
    """``p[..., i]``: the product of ``s[..., k]`` over ``k != i`` (prefix times suffix
    products: no division, exact where some ``s`` are zero)."""
    ones = np.ones(s.shape[:-1] + (1,), dtype=s.dtype)
    prefix = np.cumprod(np.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    suffix = np.flip(np.cumprod(np.concatenate([ones, np.flip(s, -1)[..., :-1]], axis=-1),
                                axis=-1), -1)
    return prefix * suffix


def _adjugate_derivative_at(a, e_of, back):
    """The derivative of the adjugate at ``a`` from its SVD ``A = U S V^T``, exact at
    singular matrices (where the inverse-based rules below are not finite).

    ``adj(A + H) = det(U) det(V) V adj(S + E) U^T`` with ``E = U^T H V``, and at a diagonal
    ``S`` the derivative of ``adj`` along ``E`` is ``D(E)``: ``-E_ij q_ij`` off the
    diagonal and ``sum_k q_ik E_kk`` on it, ``q_ij`` the product of the singular values
    other than ``s_i`` and ``s_j`` (``q_ii = 0``).  ``D`` is self-adjoint, so the tangent
    (``e_of = U^T H V``, back ``V D U^T``) and the cotangent (``e_of = V^T G U``, back
    ``U D V^T``) are the same map in the two bases: ``e_of(u, vt)`` and ``back(u, vt, d)``
    say which."""
    u, s, vt = np.linalg.svd(a)
    n = s.shape[-1]
    diagonal = np.eye(n, dtype=bool)
    q = np.where(diagonal, 0.0, _exclusive_products(
        np.where(diagonal, 1.0, s[..., None, :])))
    e = e_of(u, vt)
    d = -e * q + diagonal * np.sum(q * np.diagonal(e, axis1=-2, axis2=-1)[..., None, :],
                                   axis=-1)[..., :, None]
    sign = np.linalg.det(u) * np.linalg.det(vt)
    return (sign[..., None, None] * back(u, vt, d)).astype(np.result_type(a, e), copy=False)


def _raw_operands(*values):
    """The numpy data of ``values`` when none is differentiated further (no Dual, no
    NDArray while recording: a rule may then compute with numpy), else None."""
    if is_recording() and any(isinstance(v, NDArray) for v in values):
        return None
    data = [v._data if isinstance(v, NDArray) else v for v in values]
    if not all(isinstance(v, (np.ndarray, np.generic)) for v in data):
        return None
    return data


def _as_operands(result, values):
    return NDArray(as_data(result)) if any(isinstance(v, NDArray) for v in values) else result


def _adjugate_vjp(g, ans, a):
    raw = _raw_operands(g, a)
    if raw is not None:   # exact everywhere, singular matrices too
        g_raw, a_raw = raw
        return _as_operands(_adjugate_derivative_at(
            a_raw, lambda u, vt: vt @ g_raw @ u, lambda u, vt, d: u @ d @ vt), (g, a))
    # differentiated again (a tape with create_graph, a Dual): the table's ops, so the
    # rule has derivatives of its own; adj(A) = det(A) A^{-1} where A is invertible:
    # d adj = tr(adj dA) A^{-1} - det A^{-1} dA A^{-1} (not finite at a singular A)
    a_inv = linalg_inverse(a)
    inner = sum(multiply(g, a_inv), axis=(-2, -1), keepdims=True)
    first = multiply(inner, _matrix_transpose(ans))
    second = matmul(_matrix_transpose(a_inv), matmul(g, _matrix_transpose(a_inv)))
    return subtract(first, multiply(_per_matrix(linalg_det(a), a), second))


def _adjugate_jvp(t, ans, a):
    raw = _raw_operands(t, a)
    if raw is not None:
        t_raw, a_raw = raw
        return _as_operands(_adjugate_derivative_at(
            a_raw, lambda u, vt: _swap(u) @ t_raw @ _swap(vt),
            lambda u, vt, d: _swap(vt) @ d @ _swap(u)), (t, a))
    a_inv = linalg_inverse(a)
    trace = sum(multiply(_matrix_transpose(ans), t), axis=(-2, -1), keepdims=True)
    return subtract(multiply(trace, a_inv),
                    multiply(_per_matrix(linalg_det(a), a), matmul(a_inv, matmul(t, a_inv))))


def _swap(a):
    return np.swapaxes(a, -1, -2)


def _det_vjp(g, ans, a):
    # d det(A) / dA = adj(A)^T (the cofactor matrix): finite at singular matrices too
    return multiply(_per_matrix(g, a), _matrix_transpose(adjugate(a)))


def _det_jvp(t, ans, a):
    return sum(multiply(_matrix_transpose(adjugate(a)), t), axis=(-2, -1))


def _slogdet_forward(a):
    sign, logabsdet = np.linalg.slogdet(a)
    return np.stack([sign, logabsdet]).astype(a.dtype)


def _slogdet_vjp(g, ans, a):
    # only the log |det| row carries a gradient (the sign is piecewise constant)
    return multiply(_per_matrix(getitem(g, key=1), a), _matrix_transpose(linalg_inverse(a)))


def _slogdet_jvp(t, ans, a):
    logabsdet = sum(multiply(_matrix_transpose(linalg_inverse(a)), t), axis=(-2, -1))
    return _stack_prim(zeros_like(logabsdet), logabsdet, axis=0)


def _inverse_vjp(g, ans, a):
    ans_t = _matrix_transpose(ans)
    return negative(matmul(ans_t, matmul(g, ans_t)))


def _inverse_jvp(t, ans, a):
    return negative(matmul(ans, matmul(t, ans)))


def _is_vector_rhs(b) -> bool:
    """numpy 2's rule for ``solve(a, b)``: ``b`` is one vector only if it is 1-d; otherwise
    it is a stack of matrices (columns are right-hand sides)."""
    return len(shape_of(b)) == 1


def _as_columns(v, b):
    """A vector right-hand side (or its solution/gradient) as a one-column matrix."""
    return expand_dims(v, axis=-1) if _is_vector_rhs(b) else v


def _summed_to(g, shape):
    """``g`` summed over the batch axes it was broadcast along, to ``shape``."""
    return g if shape_of(g) == tuple(shape) else sum_to(g, shape=tuple(shape))


def _solve_vjp_a(g, ans, a, b):
    gb = linalg_solve(_matrix_transpose(a), _as_columns(g, b))
    ga = negative(matmul(gb, _matrix_transpose(_as_columns(ans, b))))
    return _summed_to(ga, shape_of(a))


def _solve_vjp_b(g, ans, a, b):
    gb = linalg_solve(_matrix_transpose(a), _as_columns(g, b))
    if _is_vector_rhs(b):
        return reshape_raw(_summed_to(gb, (shape_of(b)[0], 1)), shape=shape_of(b))
    return _summed_to(gb, shape_of(b))


def _solve_jvp_a(t, ans, a, b):
    x = linalg_solve(a, negative(matmul(t, _as_columns(ans, b))))
    return reshape_raw(x, shape=shape_of(ans)) if _is_vector_rhs(b) else x


def _solve_jvp_b(t, ans, a, b):
    return linalg_solve(a, t)


def _cholesky_forward(a):
    return np.linalg.cholesky(a)


def _phi_mask(n, dtype):
    """The lower triangle with the diagonal halved, as a mask (the map Phi of the
    Cholesky derivative)."""
    return (np.tril(np.ones((n, n))) - 0.5 * np.eye(n)).astype(dtype)


def _cholesky_vjp(g, ans, a):
    # numpy's cholesky reads the lower triangle of A only (A_ij, i >= j, stands for A_ji
    # too), so the gradient is exact for that forward: Phi(S + S^T) with
    # S = L^{-T} Phi(L^T G) L^{-1} -- every entry above the diagonal gets 0.  Along a
    # symmetric direction it gives the same derivative as the symmetric rule.
    n = shape_of(a)[-1]
    phi = _phi_mask(n, ans.dtype)
    l_inv = linalg_inverse(ans)
    inner = multiply(matmul(_matrix_transpose(ans), g), phi)
    s = matmul(_matrix_transpose(l_inv), matmul(inner, l_inv))
    return multiply(add(s, _matrix_transpose(s)), phi)


def _cholesky_jvp(t, ans, a):
    n = shape_of(a)[-1]
    lower = np.tril(np.ones((n, n))).astype(ans.dtype)
    strictly_lower = np.tril(np.ones((n, n)), -1).astype(ans.dtype)
    symmetric = add(multiply(t, lower), _matrix_transpose(multiply(t, strictly_lower)))
    l_inv = linalg_inverse(ans)
    inner = matmul(l_inv, matmul(symmetric, _matrix_transpose(l_inv)))
    return matmul(ans, multiply(inner, _phi_mask(n, ans.dtype)))


def _gemm2_operands(a, b, transpose_a, transpose_b):
    return (_matrix_transpose(a) if transpose_a else a,
            _matrix_transpose(b) if transpose_b else b)


def _gemm2_forward(a, b, transpose_a=False, transpose_b=False, alpha=1.0, axis=-3):
    if axis != -3:
        raise ValueError("linalg.gemm2: only axis=-3 (the default) is supported")
    if transpose_a:
        a = np.swapaxes(a, -1, -2)
    if transpose_b:
        b = np.swapaxes(b, -1, -2)
    return alpha * np.matmul(a, b)


def _gemm2_vjp_a(g, ans, a, b, transpose_a=False, transpose_b=False, alpha=1.0, axis=-3):
    _, op_b = _gemm2_operands(a, b, transpose_a, transpose_b)
    grad = multiply(matmul(g, _matrix_transpose(op_b)), alpha)
    return _matrix_transpose(grad) if transpose_a else grad


def _gemm2_vjp_b(g, ans, a, b, transpose_a=False, transpose_b=False, alpha=1.0, axis=-3):
    op_a, _ = _gemm2_operands(a, b, transpose_a, transpose_b)
    grad = multiply(matmul(_matrix_transpose(op_a), g), alpha)
    return _matrix_transpose(grad) if transpose_b else grad


def _diagonal_key(n):
    index = np.arange(n)
    return (Ellipsis, index, index)


def _sumlogdiag_forward(a):
    return np.sum(np.log(np.diagonal(a, axis1=-2, axis2=-1)), axis=-1)


def _sumlogdiag_vjp(g, ans, a):
    n = shape_of(a)[-1]
    diagonal = getitem(a, key=_diagonal_key(n))
    per_element = divide(expand_dims(g, axis=-1), diagonal)
    return index_add(per_element, key=_diagonal_key(n), shape=shape_of(a))


def _sumlogdiag_jvp(t, ans, a):
    key = _diagonal_key(shape_of(a)[-1])
    return sum(divide(getitem(t, key=key), getitem(a, key=key)), axis=-1)


def _triangle(n, lower, dtype):
    """The mask of the triangle (diagonal included) that a triangular routine reads."""
    ones = np.ones((n, n))
    return (np.tril(ones) if lower else np.triu(ones)).astype(dtype)


def _trsm_forward(a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    # MXNet's trsm reads only A's triangle: op(T) X = alpha B, or X op(T) = alpha B
    t = np.tril(a) if lower else np.triu(a)
    m = np.swapaxes(t, -1, -2) if transpose else t
    if rightside:   # X M = alpha B  <=>  M^T X^T = alpha B^T
        return alpha * np.swapaxes(np.linalg.solve(np.swapaxes(m, -1, -2),
                                                   np.swapaxes(b, -1, -2)), -1, -2)
    return alpha * np.linalg.solve(m, b)


def _trsm_unit_gradient(g, a, transpose, rightside, lower):
    """M^{-T} g (left side) or g M^{-T} (right side): the solve with the other op."""
    return linalg_trsm(a, g, transpose=not transpose, rightside=rightside, lower=lower,
                       alpha=1.0)


def _trsm_vjp_a(g, ans, a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    unit = _trsm_unit_gradient(g, a, transpose, rightside, lower)
    m_grad = negative(matmul(_matrix_transpose(ans), unit) if rightside
                      else matmul(unit, _matrix_transpose(ans)))
    t_grad = _matrix_transpose(m_grad) if transpose else m_grad
    return _summed_to(multiply(t_grad, _triangle(shape_of(a)[-1], lower, ans.dtype)),
                      shape_of(a))


def _trsm_vjp_b(g, ans, a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    return _summed_to(multiply(_trsm_unit_gradient(g, a, transpose, rightside, lower), alpha),
                      shape_of(b))


def _trsm_jvp_a(t, ans, a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    t_dot = multiply(t, _triangle(shape_of(a)[-1], lower, ans.dtype))
    m_dot = _matrix_transpose(t_dot) if transpose else t_dot
    rhs = negative(matmul(ans, m_dot) if rightside else matmul(m_dot, ans))
    return linalg_trsm(a, rhs, transpose=transpose, rightside=rightside, lower=lower,
                       alpha=1.0)


def _trsm_jvp_b(t, ans, a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    return linalg_trsm(a, t, transpose=transpose, rightside=rightside, lower=lower,
                       alpha=alpha)


def _potri_forward(a):
    # MXNet's potri: (L L^T)^{-1} from the lower triangle L of A (a Cholesky factor)
    l_inv = np.linalg.inv(np.tril(a))
    return np.matmul(np.swapaxes(l_inv, -1, -2), l_inv)


def _potri_vjp(g, ans, a):
    # C = (L L^T)^{-1}: dC = -C (dL L^T + L dL^T) C, so L_bar = -C (G + G^T) C L
    lower = _triangle(shape_of(a)[-1], True, ans.dtype)
    factor = multiply(a, lower)
    inner = matmul(ans, matmul(add(g, _matrix_transpose(g)), ans))
    return multiply(negative(matmul(inner, factor)), lower)


def _potri_jvp(t, ans, a):
    lower = _triangle(shape_of(a)[-1], True, ans.dtype)
    factor, factor_dot = multiply(a, lower), multiply(t, lower)
    middle = add(matmul(factor_dot, _matrix_transpose(factor)),
                 matmul(factor, _matrix_transpose(factor_dot)))
    return negative(matmul(ans, matmul(middle, ans)))


linalg_trsm = primitive("trsm", _trsm_forward, [_trsm_vjp_a, _trsm_vjp_b],
                        params=("transpose", "rightside", "lower", "alpha"),
                        jvps=[_trsm_jvp_a, _trsm_jvp_b])
linalg_potri = primitive("potri", _potri_forward, [_potri_vjp], jvps=[_potri_jvp])
def _gemm_forward(a, b, c, transpose_a=False, transpose_b=False, alpha=1.0, beta=1.0,
                  axis=-3):
    return _gemm2_forward(a, b, transpose_a, transpose_b, alpha, axis) + beta * c


def _gemm_vjp_a(g, ans, a, b, c, transpose_a=False, transpose_b=False, alpha=1.0, beta=1.0,
                axis=-3):
    return _gemm2_vjp_a(g, None, a, b, transpose_a, transpose_b, alpha)


def _gemm_vjp_b(g, ans, a, b, c, transpose_a=False, transpose_b=False, alpha=1.0, beta=1.0,
                axis=-3):
    return _gemm2_vjp_b(g, None, a, b, transpose_a, transpose_b, alpha)


def _gemm_vjp_c(g, ans, a, b, c, transpose_a=False, transpose_b=False, alpha=1.0, beta=1.0,
                axis=-3):
    return _summed_to(multiply(g, beta), shape_of(c))


def _gemm_jvp_a(t, ans, a, b, c, transpose_a=False, transpose_b=False, alpha=1.0, beta=1.0,
                axis=-3):
    return linalg_gemm2(t, b, transpose_a=transpose_a, transpose_b=transpose_b, alpha=alpha)


def _gemm_jvp_b(t, ans, a, b, c, transpose_a=False, transpose_b=False, alpha=1.0, beta=1.0,
                axis=-3):
    return linalg_gemm2(a, t, transpose_a=transpose_a, transpose_b=transpose_b, alpha=alpha)


def _gemm_jvp_c(t, ans, a, b, c, transpose_a=False, transpose_b=False, alpha=1.0, beta=1.0,
                axis=-3):
    return multiply(t, beta)


def _syrk_forward(a, transpose=False, alpha=1.0):
    a_t = np.swapaxes(a, -1, -2)
    return alpha * (np.matmul(a_t, a) if transpose else np.matmul(a, a_t))


def _syrk_vjp(g, ans, a, transpose=False, alpha=1.0):
    both = multiply(add(g, _matrix_transpose(g)), alpha)
    return matmul(a, both) if transpose else matmul(both, a)


def _syrk_jvp(t, ans, a, transpose=False, alpha=1.0):
    product = matmul(_matrix_transpose(t), a) if transpose else matmul(t, _matrix_transpose(a))
    return multiply(add(product, _matrix_transpose(product)), alpha)


def _trmm_forward(a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    # MXNet's trmm reads only A's triangle: alpha op(T) B, or alpha B op(T)
    t = np.tril(a) if lower else np.triu(a)
    m = np.swapaxes(t, -1, -2) if transpose else t
    return alpha * (np.matmul(b, m) if rightside else np.matmul(m, b))


def _trmm_vjp_a(g, ans, a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    m_grad = multiply(matmul(_matrix_transpose(b), g) if rightside
                      else matmul(g, _matrix_transpose(b)), alpha)
    t_grad = _matrix_transpose(m_grad) if transpose else m_grad
    return _summed_to(multiply(t_grad, _triangle(shape_of(a)[-1], lower, t_grad.dtype)),
                      shape_of(a))


def _trmm_vjp_b(g, ans, a, b, transpose=False, rightside=False, lower=True, alpha=1.0):
    return _summed_to(linalg_trmm(a, g, transpose=not transpose, rightside=rightside,
                                  lower=lower, alpha=alpha), shape_of(b))


def _diagonal_at(shape, offset):
    """The key of the ``offset`` diagonal of the matrices of ``shape`` (above: > 0)."""
    n = builtins.min(shape[-2] - builtins.max(-offset, 0), shape[-1] - builtins.max(offset, 0))
    index = np.arange(builtins.max(n, 0))
    return (Ellipsis, index + builtins.max(-offset, 0), index + builtins.max(offset, 0))


def _extractdiag_forward(a, offset=0):
    return a[_diagonal_at(a.shape, offset)]


def _extractdiag_vjp(g, ans, a, offset=0):
    return index_add(g, key=_diagonal_at(shape_of(a), offset), shape=shape_of(a))


def _made_shape(shape, offset):
    n = shape[-1] + builtins.abs(offset)
    return tuple(shape[:-1]) + (n, n)


def _makediag_forward(a, offset=0):
    out = np.zeros(_made_shape(a.shape, offset), dtype=a.dtype)
    out[_diagonal_at(out.shape, offset)] = a
    return out


def _makediag_vjp(g, ans, a, offset=0):
    return getitem(g, key=_diagonal_at(_made_shape(shape_of(a), offset), offset))


adjugate = primitive("adjugate", _adjugate_forward, [_adjugate_vjp], jvps=[_adjugate_jvp])
linalg_det = primitive("det", np.linalg.det, [_det_vjp], jvps=[_det_jvp])
linalg_inverse = primitive("inverse", np.linalg.inv, [_inverse_vjp], jvps=[_inverse_jvp])
linalg_solve = primitive("solve", np.linalg.solve, [_solve_vjp_a, _solve_vjp_b],
                         jvps=[_solve_jvp_a, _solve_jvp_b])
linalg_potrf = primitive("cholesky", _cholesky_forward, [_cholesky_vjp], jvps=[_cholesky_jvp])
linalg_gemm2 = primitive("gemm2", _gemm2_forward, [_gemm2_vjp_a, _gemm2_vjp_b],
                         params=("transpose_a", "transpose_b", "alpha", "axis"),
                         jvps=_bilinear_jvps("linalg_gemm2"))
linalg_gemm = primitive("gemm", _gemm_forward, [_gemm_vjp_a, _gemm_vjp_b, _gemm_vjp_c],
                        params=("transpose_a", "transpose_b", "alpha", "beta", "axis"),
                        jvps=[_gemm_jvp_a, _gemm_jvp_b, _gemm_jvp_c])
linalg_syrk = primitive("syrk", _syrk_forward, [_syrk_vjp], params=("transpose", "alpha"),
                        jvps=[_syrk_jvp])
linalg_trmm = primitive("trmm", _trmm_forward, [_trmm_vjp_a, _trmm_vjp_b],
                        params=("transpose", "rightside", "lower", "alpha"),
                        jvps=_bilinear_jvps("linalg_trmm"))
linalg_extractdiag = primitive("extractdiag", _extractdiag_forward, [_extractdiag_vjp],
                               params=("offset",), jvps=[_linear_jvp("linalg_extractdiag")])
linalg_makediag = primitive("makediag", _makediag_forward, [_makediag_vjp],
                            params=("offset",), jvps=[_linear_jvp("linalg_makediag")])
linalg_sumlogdiag = primitive("sumlogdiag", _sumlogdiag_forward, [_sumlogdiag_vjp],
                              jvps=[_sumlogdiag_jvp])
# the sign and log |det| stacked on a new first axis: one primitive, one result (compiled
# code unpacks it by index, ``sign, logdet = np.linalg.slogdet(a)``)
_slogdet_prim = primitive("slogdet", _slogdet_forward, [_slogdet_vjp], jvps=[_slogdet_jvp])


def linalg_slogdet(a):
    """``(sign, log |det|)`` of each matrix of ``a``; the gradient flows through the log
    (the sign has none).  MXNet's and numpy's slogdet."""
    both = _slogdet_prim(a)
    return getitem(both, key=0), getitem(both, key=1)


linalg_slogdet.prim = _slogdet_prim.prim   # compiled code reads the call as the primitive


# ===== 2-d convolution and pooling (MXNet's nd.Convolution, nd.Pooling; NCHW) =============
# Forward: an im2col formulation (a strided window view of the padded input and one
# tensordot per group).  Gradients: the transposed formulation (one strided add per
# kernel offset).  The three convolution primitives (the op, its data gradient, its
# weight gradient) are each linear in each argument and each one's VJPs are the other
# two, so derivatives of any order stay in the table.

def _pair(value, default, name):
    """An MXNet ``Shape(tuple)`` parameter of a 2-d op: None or an empty one (MXNet's
    ``[]``) is the default; an int is used for both axes."""
    if value is None or (isinstance(value, (tuple, list)) and not value):
        return default
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must have two entries (2-d ops only), got {value!r}")
    return pair


def _padded(x, before, after, fill=0.0):
    widths = ((0, 0), (0, 0), (before[0], after[0]), (before[1], after[1]))
    return np.pad(x, widths, constant_values=fill) if builtins.any(before + after) else x


def _windows(xp, kernel, stride, dilate, out_hw):
    """(N, C, OH, OW, KH, KW): every window of ``xp`` as a strided view (no copy)."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, shape=(n, c) + tuple(out_hw) + tuple(kernel),
        strides=(sn, sc, sh * stride[0], sw * stride[1], sh * dilate[0], sw * dilate[1]),
        writeable=False)


def _scatter_windows(cols, in_hw, kernel, stride, pad, dilate, after=None):
    """The transpose of ``_windows``: add each window's values (N, C, OH, OW, KH, KW) back
    to its input positions, padding cropped."""
    n, c, oh, ow = cols.shape[:4]
    after = pad if after is None else after
    out = np.zeros((n, c, in_hw[0] + pad[0] + after[0], in_hw[1] + pad[1] + after[1]),
                   dtype=cols.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            top, left = i * dilate[0], j * dilate[1]
            out[:, :, top:top + stride[0] * (oh - 1) + 1:stride[0],
                left:left + stride[1] * (ow - 1) + 1:stride[1]] += cols[:, :, :, :, i, j]
    return out[:, :, pad[0]:pad[0] + in_hw[0], pad[1]:pad[1] + in_hw[1]]


@dataclass(frozen=True)
class _ConvGeometry:
    stride: tuple
    pad: tuple
    dilate: tuple
    groups: int

    def out_hw(self, in_hw, kernel):
        return tuple((in_hw[i] + 2 * self.pad[i] - self.dilate[i] * (kernel[i] - 1) - 1)
                     // self.stride[i] + 1 for i in range(2))


def _conv_geometry(weight_shape, kernel=None, stride=None, dilate=None, pad=None,
                   num_filter=None, num_group=1, workspace=1024, no_bias=False,
                   cudnn_tune=None, cudnn_off=False, layout=None):
    """MXNet's Convolution parameters, checked against the weight, as one geometry."""
    if len(weight_shape) != 4:
        raise ValueError(f"Convolution: 2-d only (weight of shape (num_filter, channels/"
                         f"num_group, kh, kw)), got a weight of shape {tuple(weight_shape)}")
    if layout not in (None, "NCHW"):
        raise ValueError(f"Convolution: only the NCHW layout is supported, got {layout!r}")
    if kernel is not None and _pair(kernel, None, "kernel") != tuple(weight_shape[2:]):
        raise ValueError(f"Convolution: kernel={kernel!r} but the weight's kernel is "
                         f"{tuple(weight_shape[2:])}")
    if num_filter is not None and int(num_filter) != weight_shape[0]:
        raise ValueError(f"Convolution: num_filter={num_filter} but the weight has "
                         f"{weight_shape[0]} filters")
    return _ConvGeometry(_pair(stride, (1, 1), "stride"), _pair(pad, (0, 0), "pad"),
                         _pair(dilate, (1, 1), "dilate"), int(num_group))


def _im2col(x, kernel, geo, out_hw):
    """The windows of the padded ``x`` as one matrix, a row per output position and a
    column per (channel, kernel offset): (N * OH * OW, C * KH * KW), contiguous."""
    cols = _windows(_padded(x, geo.pad, geo.pad), kernel, geo.stride, geo.dilate, out_hw)
    n, c, oh, ow, kh, kw = cols.shape
    return np.ascontiguousarray(cols.transpose(0, 2, 3, 1, 4, 5)).reshape(n * oh * ow,
                                                                         c * kh * kw)


def _check_groups(x_channels, w_shape, groups):
    group_in = x_channels // groups
    if group_in * groups != x_channels or group_in != w_shape[1] or w_shape[0] % groups:
        raise ValueError(f"Convolution: data of {x_channels} channels and num_group="
                         f"{groups} need a weight of shape (F, {group_in}, kh, kw) with "
                         f"F divisible by {groups}, got {tuple(w_shape)}")


def _by_groups(matrix, groups, axis):
    """``matrix`` split into ``groups`` equal blocks along ``axis``."""
    return np.split(matrix, groups, axis=axis) if groups > 1 else [matrix]


def _conv_raw(x, w, geo):
    """y[n, f] = sum_c x[n, c] (cross-correlation) w[f, c], by groups: one matrix product
    of the im2col matrix per group."""
    kernel = w.shape[2:]
    out_hw = geo.out_hw(x.shape[2:], kernel)
    if builtins.min(out_hw) < 1:
        raise ValueError(f"Convolution: the kernel {tuple(kernel)} (dilated, with padding "
                         f"{geo.pad}) is larger than the input {tuple(x.shape[2:])}")
    _check_groups(x.shape[1], w.shape, geo.groups)
    cols = _im2col(x, kernel, geo, out_hw)
    weights = w.reshape(w.shape[0], -1)
    parts = [c @ k.T for c, k in zip(_by_groups(cols, geo.groups, 1),
                                     _by_groups(weights, geo.groups, 0), strict=True)]
    y = parts[0] if geo.groups == 1 else np.concatenate(parts, axis=1)   # (N*OH*OW, F)
    y = y.reshape(x.shape[0], out_hw[0], out_hw[1], w.shape[0])
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _output_rows(g):
    """The output gradient (N, F, OH, OW) as a matrix (N * OH * OW, F)."""
    return np.ascontiguousarray(g.transpose(0, 2, 3, 1)).reshape(-1, g.shape[1])


def _conv_data_grad_raw(g, w, in_shape, geo):
    kernel = w.shape[2:]
    n, _, oh, ow = g.shape
    weights = w.reshape(w.shape[0], -1)
    parts = [r @ k for r, k in zip(_by_groups(_output_rows(g), geo.groups, 1),
                                   _by_groups(weights, geo.groups, 0), strict=True)]
    cols = parts[0] if geo.groups == 1 else np.concatenate(parts, axis=1)
    cols = cols.reshape(n, oh, ow, in_shape[1], kernel[0], kernel[1]).transpose(0, 3, 1, 2, 4, 5)
    return _scatter_windows(cols, in_shape[2:], kernel, geo.stride, geo.pad, geo.dilate)


def _conv_weight_grad_raw(x, g, w_shape, geo):
    cols = _im2col(x, w_shape[2:], geo, g.shape[2:])
    parts = [r.T @ c for r, c in zip(_by_groups(_output_rows(g), geo.groups, 1),
                                     _by_groups(cols, geo.groups, 1), strict=True)]
    grad = parts[0] if geo.groups == 1 else np.concatenate(parts, axis=0)
    return grad.reshape(w_shape)


_GEOMETRY_PARAMS = ("stride", "pad", "dilate", "num_group")


def _geometry_params(geo):
    return dict(stride=geo.stride, pad=geo.pad, dilate=geo.dilate, num_group=geo.groups)


def _convolution_forward(data, weight, bias=None, kernel=None, stride=None, dilate=None,
                         pad=None, num_filter=None, num_group=1, workspace=1024,
                         no_bias=False, cudnn_tune=None, cudnn_off=False, layout=None):
    geo = _conv_geometry(weight.shape, kernel, stride, dilate, pad, num_filter, num_group,
                         layout=layout)
    y = _conv_raw(data, weight, geo)
    if bias is not None and not no_bias:
        y += np.reshape(bias, (1, -1, 1, 1))
    return y


def _convolution_vjp_data(g, ans, data, weight, bias=None, **params):
    geo = _conv_geometry(shape_of(weight), **params)
    return convolution_data_grad(g, weight, shape=shape_of(data), **_geometry_params(geo))


def _convolution_vjp_weight(g, ans, data, weight, bias=None, **params):
    geo = _conv_geometry(shape_of(weight), **params)
    return convolution_weight_grad(data, g, shape=shape_of(weight), **_geometry_params(geo))


def _convolution_vjp_bias(g, ans, data, weight, bias=None, **params):
    if params.get("no_bias"):
        return zeros_like(bias)   # MXNet ignores the bias: its gradient is zero
    return sum(g, axis=(0, 2, 3))


def _convolution_jvp_data(t, ans, data, weight, bias=None, **params):
    return _convolution_prim(t, weight, None, **params)


def _convolution_jvp_weight(t, ans, data, weight, bias=None, **params):
    return _convolution_prim(data, t, None, **params)


def _convolution_jvp_bias(t, ans, data, weight, bias=None, **params):
    if params.get("no_bias"):
        return zeros_like(ans)
    return reshape_raw(t, shape=(1, -1, 1, 1))


def _convolution_of(weight, geometry):
    """The parameters under which the convolution primitive computes ``geometry``."""
    return dict(kernel=tuple(shape_of(weight)[2:]), num_filter=shape_of(weight)[0],
                **geometry)


def _data_grad_forward(g, weight, shape, stride, pad, dilate, num_group):
    geo = _ConvGeometry(stride, pad, dilate, num_group)
    return _conv_data_grad_raw(g, weight, shape, geo)


def _data_grad_vjp_g(h, ans, g, weight, shape, **geometry):
    return _convolution_prim(h, weight, None, **_convolution_of(weight, geometry))


def _data_grad_vjp_weight(h, ans, g, weight, shape, **geometry):
    return convolution_weight_grad(h, g, shape=shape_of(weight), **geometry)


def _weight_grad_forward(data, g, shape, stride, pad, dilate, num_group):
    geo = _ConvGeometry(stride, pad, dilate, num_group)
    return _conv_weight_grad_raw(data, g, shape, geo)


def _weight_grad_vjp_data(k, ans, data, g, shape, **geometry):
    return convolution_data_grad(g, k, shape=shape_of(data), **geometry)


def _weight_grad_vjp_g(k, ans, data, g, shape, **geometry):
    return _convolution_prim(data, k, None, **_convolution_of(k, geometry))


_CONVOLUTION_PARAMS = ("kernel", "stride", "dilate", "pad", "num_filter", "num_group",
                       "workspace", "no_bias", "cudnn_tune", "cudnn_off", "layout")
_convolution_prim = primitive(
    "convolution", _convolution_forward,
    [_convolution_vjp_data, _convolution_vjp_weight, _convolution_vjp_bias],
    params=_CONVOLUTION_PARAMS,
    jvps=[_convolution_jvp_data, _convolution_jvp_weight, _convolution_jvp_bias])
convolution_data_grad = primitive(
    "convolution_data_grad", _data_grad_forward, [_data_grad_vjp_g, _data_grad_vjp_weight],
    params=("shape",) + _GEOMETRY_PARAMS, jvps=_bilinear_jvps("convolution_data_grad"))
convolution_weight_grad = primitive(
    "convolution_weight_grad", _weight_grad_forward,
    [_weight_grad_vjp_data, _weight_grad_vjp_g], params=("shape",) + _GEOMETRY_PARAMS,
    jvps=_bilinear_jvps("convolution_weight_grad"))


def Convolution(data=None, weight=None, bias=None, kernel=None, stride=None, dilate=None,
                pad=None, num_filter=None, num_group=1, workspace=1024, no_bias=False,
                cudnn_tune=None, cudnn_off=False, layout=None, out=None, name=None):
    """MXNet's 2-d ``Convolution`` (NCHW data, (num_filter, channels/num_group, kh, kw)
    weight, (num_filter,) bias): a cross-correlation; ``stride``/``dilate`` default (1, 1),
    ``pad`` (0, 0); ``no_bias=True`` (or ``bias=None``) adds no bias.  ``workspace``,
    ``cudnn_tune`` and ``cudnn_off`` are accepted and have no effect."""
    return _convolution_prim(data, weight, bias, kernel=kernel, stride=stride, dilate=dilate,
                             pad=pad, num_filter=num_filter, num_group=num_group,
                             workspace=workspace, no_bias=no_bias, cudnn_tune=cudnn_tune,
                             cudnn_off=cudnn_off, layout=layout, out=out)


Convolution.prim = _convolution_prim.prim   # compiled code reads the call as the primitive


@dataclass(frozen=True)
class _PoolGeometry:
    kernel: tuple
    stride: tuple
    pad: tuple
    after: tuple     # padding after the input (the full convention may need more)
    out_hw: tuple
    pool_type: str
    count_include_pad: bool


def _pool_geometry(in_shape, kernel=None, pool_type="max", global_pool=False,
                   cudnn_off=False, pooling_convention="valid", stride=None, pad=None,
                   p_value=None, count_include_pad=None, layout=None):
    """MXNet's Pooling parameters as one geometry: output size by the convention
    (valid: floor((x + 2p - k) / s) + 1; full: ceil(...) + 1); global_pool pools the
    whole image (kernel = (H, W), no padding, stride 1)."""
    if len(in_shape) != 4:
        raise ValueError(f"Pooling: 2-d only (NCHW data), got data of shape {in_shape}")
    if layout not in (None, "NCHW"):
        raise ValueError(f"Pooling: only the NCHW layout is supported, got {layout!r}")
    if pool_type not in ("max", "avg", "sum"):
        raise ValueError(f"Pooling: pool_type must be 'max', 'avg' or 'sum', got "
                         f"{pool_type!r} (lp pooling is not supported)")
    if pooling_convention not in ("valid", "full"):
        raise ValueError(f"Pooling: pooling_convention must be 'valid' or 'full', got "
                         f"{pooling_convention!r}")
    in_hw = tuple(in_shape[2:])
    if global_pool:
        kernel, stride, pad = in_hw, (1, 1), (0, 0)
    elif kernel is None or (isinstance(kernel, (tuple, list)) and not kernel):
        raise ValueError("Pooling: kernel is required unless global_pool=True")
    kernel = _pair(kernel, None, "kernel")
    stride, pad = _pair(stride, (1, 1), "stride"), _pair(pad, (0, 0), "pad")
    rounding = math.floor if pooling_convention == "valid" else math.ceil
    out_hw = tuple(int(rounding((in_hw[i] + 2 * pad[i] - kernel[i]) / stride[i])) + 1
                   for i in range(2))
    if builtins.min(out_hw) < 1:
        raise ValueError(f"Pooling: the kernel {kernel} is larger than the padded input "
                         f"{tuple(n + 2 * p for n, p in zip(in_hw, pad, strict=True))}")
    after = tuple(builtins.max(pad[i], (out_hw[i] - 1) * stride[i] + kernel[i] - in_hw[i]
                               - pad[i]) for i in range(2))
    return _PoolGeometry(kernel, stride, pad, after, out_hw, pool_type,
                         True if count_include_pad is None else bool(count_include_pad))


def _pool_divisor(in_hw, geo):
    """avg pooling's divisor per output position, as MXNet (and Caffe) count it: the
    window clipped to the padded input (count_include_pad) or to the input itself."""
    sizes = []
    for i in range(2):
        start = np.arange(geo.out_hw[i]) * geo.stride[i] - geo.pad[i]
        end = np.minimum(start + geo.kernel[i], in_hw[i] + geo.pad[i])
        if not geo.count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, in_hw[i])
        sizes.append(end - start)
    return np.outer(sizes[0], sizes[1])


def _pool_windows(x, geo, fill):
    xp = _padded(x, geo.pad, geo.after, fill)
    return _windows(xp, geo.kernel, geo.stride, (1, 1), geo.out_hw)


def _lowest(dtype):
    """The value a max pool's padding holds (MXNet's MinValue: the dtype's lowest)."""
    return np.finfo(dtype).min if dtype.kind == "f" else np.iinfo(dtype).min


def _max_pool_positions(x, geo):
    """For each output, the flat index into ``x`` of its window's first maximum (in the
    window's row-major order, as MXNet's backward takes it), or ``x.size`` where the
    window holds padding only."""
    windows = _pool_windows(x, geo, _lowest(x.dtype))
    n, c, oh, ow, kh, kw = windows.shape
    best = np.argmax(windows.reshape(n, c, oh, ow, kh * kw), axis=-1)
    rows = (np.arange(oh) * geo.stride[0] - geo.pad[0])[:, None] + best // kw
    cols = (np.arange(ow) * geo.stride[1] - geo.pad[1])[None, :] + best % kw
    height, width = x.shape[2:]
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    planes = (np.arange(n)[:, None] * c + np.arange(c)[None, :])[:, :, None, None]
    flat = (planes * height + rows) * width + cols
    return np.where(inside, flat, x.size)


def _pooling_forward(data, kernel=None, pool_type="max", global_pool=False, cudnn_off=False,
                     pooling_convention="valid", stride=None, pad=None, p_value=None,
                     count_include_pad=None, layout=None):
    geo = _pool_geometry(data.shape, kernel, pool_type, global_pool, cudnn_off,
                         pooling_convention, stride, pad, p_value, count_include_pad, layout)
    if pool_type == "max":
        positions = _max_pool_positions(data, geo)
        return np.append(data.reshape(-1), np.array(_lowest(data.dtype), data.dtype))[positions]
    total = _pool_windows(data, geo, 0.0).sum(axis=(-2, -1))
    if pool_type == "avg":
        total = (total / _pool_divisor(data.shape[2:], geo)).astype(data.dtype)
    return total


def _pooling_transpose_forward(g, shape, **params):
    """The transpose of avg/sum pooling (linear in its input): each output's gradient
    spread over its window (divided by avg's divisor)."""
    geo = _pool_geometry(tuple(shape), **params)
    if geo.pool_type == "avg":
        g = (g / _pool_divisor(shape[2:], geo)).astype(g.dtype)
    cols = np.broadcast_to(g[..., None, None], g.shape + geo.kernel)
    return _scatter_windows(cols, shape[2:], geo.kernel, geo.stride, geo.pad, (1, 1),
                            after=geo.after)


def _max_positions_of(data, params):
    values = primal_values(data)
    return _max_pool_positions(values, _pool_geometry(values.shape, **params))


def _pooling_vjp(g, ans, data, **params):
    if params.get("pool_type", "max") != "max":
        return pooling_transpose(g, shape=shape_of(data), **params)
    size = int(np.prod(shape_of(data)))
    scattered = index_add(g, key=(_max_positions_of(data, params),), shape=(size + 1,))
    return reshape_raw(getitem(scattered, key=builtins.slice(0, size)), shape=shape_of(data))


def _pooling_jvp(t, ans, data, **params):
    if params.get("pool_type", "max") != "max":
        return _pooling_prim(t, **params)
    flat = reshape_raw(t, shape=(-1,))
    padded = _concat_prim(flat, np.zeros(1, dtype=flat.dtype), dim=0)
    return getitem(padded, key=_max_positions_of(data, params))


def _pooling_transpose_vjp(h, ans, g, shape, **params):
    return _pooling_prim(h, **params)


def _pooling_transpose_jvp(t, ans, g, shape, **params):
    return pooling_transpose(t, shape=shape, **params)


_POOLING_PARAMS = ("kernel", "pool_type", "global_pool", "cudnn_off", "pooling_convention",
                   "stride", "pad", "p_value", "count_include_pad", "layout")
_pooling_prim = primitive("pooling", _pooling_forward, [_pooling_vjp],
                          params=_POOLING_PARAMS, jvps=[_pooling_jvp])
pooling_transpose = primitive("pooling_transpose", _pooling_transpose_forward,
                              [_pooling_transpose_vjp], params=("shape",) + _POOLING_PARAMS,
                              jvps=[_pooling_transpose_jvp])


def Pooling(data=None, kernel=None, pool_type="max", global_pool=False, cudnn_off=False,
            pooling_convention="valid", stride=None, pad=None, p_value=None,
            count_include_pad=None, layout=None, out=None, name=None):
    """MXNet's 2-d ``Pooling`` of NCHW data: ``pool_type`` 'max', 'avg' or 'sum';
    ``stride`` defaults to (1, 1), ``pad`` to (0, 0); ``pooling_convention`` 'valid' or
    'full' (ceil); ``global_pool=True`` pools each whole image; avg divides by the window
    clipped to the padded input (``count_include_pad``, the default) or to the input.
    Max pooling's gradient goes to the first maximum of each window (row-major), as in
    MXNet; padding never wins a window that holds an input element."""
    return _pooling_prim(data, kernel=kernel, pool_type=pool_type, global_pool=global_pool,
                         cudnn_off=cudnn_off, pooling_convention=pooling_convention,
                         stride=stride, pad=pad, p_value=p_value,
                         count_include_pad=count_include_pad, layout=layout, out=out)


Pooling.prim = _pooling_prim.prim   # compiled code reads the call as the primitive


# ===== topk (MXNet's nd.topk) =============================================================

def _topk_order(data, axis, k, is_ascend):
    """The positions (along ``axis``; of the flattened array for axis=None) of the k
    largest (smallest: is_ascend) elements, best first; among equal values the earlier
    position comes first (a stable sort).  k < 1 sorts the whole axis."""
    values = data.reshape(-1) if axis is None else data
    axis = -1 if axis is None else axis % data.ndim
    n = values.shape[axis]
    k = n if k < 1 else builtins.min(int(k), n)
    keys = values if is_ascend else -values
    order = np.argsort(keys, axis=axis, kind="stable")
    return values, axis, np.take(order, np.arange(k), axis=axis)


def _topk_key(values, axis, order):
    """The integer-array key that reads ``values`` at ``order`` along ``axis``."""
    grid = list(np.ogrid[tuple(builtins.slice(0, n) for n in order.shape)])
    grid[axis] = order
    return tuple(grid)


def _topk_forward(data, axis=-1, k=1, ret_typ="indices", is_ascend=False, dtype="float32"):
    values, axis_, order = _topk_order(data, axis, k, is_ascend)
    if ret_typ == "indices":
        return order.astype(_dtype(dtype))
    if ret_typ == "value":
        return values[_topk_key(values, axis_, order)]
    if ret_typ == "mask":
        mask = np.zeros(values.shape, dtype=data.dtype)
        mask[_topk_key(values, axis_, order)] = 1
        return mask.reshape(data.shape)
    if ret_typ == "both":   # one array (compiled code unpacks it by index): values' dtype
        picked = values[_topk_key(values, axis_, order)]
        return np.stack([picked, order.astype(picked.dtype)])
    raise ValueError(f"topk: ret_typ must be 'indices', 'value', 'both' or 'mask', got "
                     f"{ret_typ!r}")


def _topk_vjp(g, ans, data, axis=-1, k=1, ret_typ="indices", is_ascend=False,
              dtype="float32"):
    # indices and the mask are piecewise constant in the data: gradient zero; the values
    # are the data's elements at the chosen positions
    if ret_typ in ("indices", "mask"):
        return zeros_like(data)
    raw = primal_values(data)
    values, axis_, order = _topk_order(raw, axis, k, is_ascend)
    if ret_typ == "both":
        g = getitem(g, key=0)
    scattered = index_add(g, key=_topk_key(values, axis_, order), shape=values.shape)
    return reshape_raw(scattered, shape=shape_of(data))


def _topk_jvp(t, ans, data, axis=-1, k=1, ret_typ="indices", is_ascend=False,
              dtype="float32"):
    if ret_typ in ("indices", "mask"):
        return zeros_like(ans)
    raw = primal_values(data)
    values, axis_, order = _topk_order(raw, axis, k, is_ascend)
    flat = t if axis is not None else reshape_raw(t, shape=(-1,))
    picked = getitem(flat, key=_topk_key(values, axis_, order))
    if ret_typ == "both":
        return _stack_prim(picked, zeros_like(picked), axis=0)
    return picked


_topk_prim = primitive("topk", _topk_forward, [_topk_vjp],
                       params=("axis", "k", "ret_typ", "is_ascend", "dtype"), jvps=[_topk_jvp])


def topk(data, axis=-1, k=1, ret_typ="indices", is_ascend=False, dtype="float32"):
    """MXNet's ``topk``: the k largest (``is_ascend``: smallest) elements along ``axis``
    (None: of the flattened array), best first, earlier positions first among ties.
    ``ret_typ``: 'indices' (as ``dtype``, float32 by default, like MXNet), 'value',
    'both' (``[values, indices]``) or 'mask' (1 at the chosen positions).  The values
    carry the data's gradient; indices and masks are piecewise constant (gradient 0)."""
    if ret_typ == "both":
        both = _topk_prim(data, axis=axis, k=k, ret_typ="both", is_ascend=is_ascend,
                          dtype=dtype)
        return [getitem(both, key=0),
                astype(getitem(both, key=1), dtype=_dtype(dtype))]
    return _topk_prim(data, axis=axis, k=k, ret_typ=ret_typ, is_ascend=is_ascend, dtype=dtype)


topk.prim = _topk_prim.prim   # compiled code reads the call as the primitive
# forward-over-reverse evaluates VJP rules on values with tangents (runtime/dual.py)
from . import dual as _dual  # noqa: E402
_Dual = _dual.Dual


# ----- batched forward rules (pb.jacfwd) ---------------------------------------------------
# pb.jacfwd pushes a batch of tangents through one pass: a leading axis of directions.  A
# JVP rule of the table is written for one direction, so support.batched_rule runs it once
# per direction; for the structural ops a batched Jacobian goes through (matmul, reshape,
# transpose, sum, mean, indexing), the batched rule here computes the same stack in one numpy
# call.  Each returns None where its case is not covered (then per direction again).

def _is_raw(*values) -> bool:
    return builtins.all(type(v) is np.ndarray for v in values)


def _batched_reshape(t, ans, x, *params, **named):
    return t.reshape(t.shape[:1] + shape_of(ans))


def _batched_transpose(t, ans, x, axes=None):
    n = np.ndim(x)
    if axes is None:
        return np.transpose(t, (0,) + tuple(range(n, 0, -1)))
    return np.transpose(t, (0,) + tuple(int(a) % n + 1 for a in axes))


def _batched_reduction(reduce):
    def rule(t, ans, x, axis=None, keepdims=False, exclude=False):
        n = np.ndim(x)
        if exclude or n == 0:
            return None
        if axis is None:
            axes = tuple(range(1, n + 1))
        else:
            axes = tuple(int(a) % n + 1 for a in (axis if isinstance(axis, tuple) else (axis,)))
        return reduce(t, axis=axes, keepdims=keepdims)
    return rule


def batched_axis(key) -> int:
    """Where the directions' axis of a batched ``t`` lands in ``t[(:,) + key]``: numpy puts
    the axes of advanced indices (arrays, lists, and the integers beside them) where they
    stand when they are adjacent, and first when something separates them; the batch axis
    then comes after them."""
    parts = key if isinstance(key, tuple) else (key,)
    advanced = [i for i, k in enumerate(parts) if isinstance(k, (np.ndarray, list))]
    if not advanced:
        return 0
    scalars = [i for i, k in enumerate(parts) if isinstance(k, (int, np.integer))]
    where = sorted(advanced + scalars)
    if where[-1] - where[0] + 1 == len(where):   # adjacent: in place, after the batch axis
        return 0
    shapes = [np.shape(np.flatnonzero(k)) if np.asarray(k).dtype == bool else np.shape(k)
              for k in (parts[i] for i in advanced)]
    return len(np.broadcast_shapes(*shapes))


def batched_getitem(t, key):
    """``x[key]`` for every direction of the batched ``t`` (shape ``(batch,) +
    x.shape``) at once: the key shifted past the batch axis, the batch axis kept first."""
    parts = key if isinstance(key, tuple) else (key,)
    result = t[(builtins.slice(None),) + parts]
    axis = batched_axis(parts)
    return result if axis == 0 else np.moveaxis(result, axis, 0)


def _batched_getitem(t, ans, x, key):
    return batched_getitem(t, key)


def _batched_matmul_x(t, ans, x, y):
    # the directions' axis leads t; numpy broadcasts it as a stack axis of t as long as y
    # has no more stack axes than x (else it would pair with one of y's)
    if _is_raw(x, y) and (x.ndim >= 2 and y.ndim <= x.ndim or x.ndim == 1 and y.ndim <= 2):
        return np.matmul(t, y)
    return None


def _batched_matmul_y(t, ans, x, y):
    if _is_raw(x, y) and y.ndim >= 2 and x.ndim <= y.ndim:
        return np.matmul(x, t)
    return None


#: a JVP rule -> (the argument its tangent belongs to, its batched form)
BATCHED_JVPS = {
    REGISTRY["reshape"].jvps[0]: (0, _batched_reshape),
    REGISTRY["transpose"].jvps[0]: (0, _batched_transpose),
    REGISTRY["sum"].jvps[0]: (0, _batched_reduction(np.sum)),
    REGISTRY["mean"].jvps[0]: (0, _batched_reduction(np.mean)),
    REGISTRY["getitem"].jvps[0]: (0, _batched_getitem),
    REGISTRY["matmul"].jvps[0]: (0, _batched_matmul_x),
    REGISTRY["matmul"].jvps[1]: (1, _batched_matmul_y),
}


def _batched_pieces(tangents, arrays):
    batch = next(len(t) for t in tangents if t is not None)
    pieces = [np.zeros((batch,) + shape_of(a), np.asarray(a).dtype) if t is None else t
              for t, a in zip(tangents, arrays, strict=True)]
    ok = builtins.all(type(p) is np.ndarray and p.shape[1:] == shape_of(a)
                      for p, a in zip(pieces, arrays))
    return pieces if ok else None


def _batched_concat(tangents, ans, *arrays, dim=1):
    pieces = _batched_pieces(tangents, arrays)
    return None if pieces is None else np.concatenate(pieces, axis=dim % np.ndim(ans) + 1)


def _batched_stack(tangents, ans, *arrays, axis=0):
    pieces = _batched_pieces(tangents, arrays)
    return None if pieces is None else np.stack(pieces, axis=axis % np.ndim(ans) + 1)


#: a whole-primitive JVP rule -> its batched form (all tangents at once)
BATCHED_JOINT_JVPS = {_concat_jvp: _batched_concat, _stack_jvp: _batched_stack}
