"""Every primitive of the table against central differences, first and second order.

Each differentiable primitive of ``runtime/primitives.py``, and each public
wrapper built on them, appears in ``CASES``: a function of float64 arrays, the
point to check it at, and the primitive names it exercises.  Inputs come from
domains where the op is smooth: positive for log and sqrt, away from the kinks
of abs, relu and clip, away from ties for max/min/maximum/minimum, away from
zero for prod, away from the jumps of floor, ceil and round.

Second order is checked on ``square(fn(x))``.  Its Hessian, ``2 Jᵀ W J + 2 Σ w f H_f``,
still contains the op's own second derivative ``H_f``, and computing it means
differentiating the op's VJP rule applied to a *recorded* cotangent.  The plain
Hessian of a linear op (reshape, getitem, sum, ...) or of a piecewise-constant
one (sign, floor, ...) is identically zero: nothing would be recorded for
``check_grads`` to differentiate, so those VJP rules would go unchecked.

``COVERED`` lists the differentiable primitives by name.
``test_every_differentiable_primitive_is_covered`` fails when a primitive with
VJP rules is missing from it, and ``test_cases_record_what_they_claim`` walks
the recorded graphs to keep each case's claims honest.  The primitives without
VJP rules are listed in ``NOT_DIFFERENTIABLE`` and tested for values, dtypes and
for blocking the gradient.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import pullback.ndarray as nd
from pullback import NotRecordedError
from pullback import autograd as ag
from pullback.runtime import primitives as P
from pullback.runtime.ndarray import NDArray
from pullback.runtime.primitives import REGISTRY
from pullback.testing import check_grads

_RNG = np.random.default_rng(20240607)

COVERED = (
    "sum_to", "broadcast_to",
    "add", "subtract", "multiply", "divide", "power", "maximum", "minimum", "mod",
    "negative", "exp", "log", "sqrt", "square", "abs", "sign", "sin", "cos", "tan", "tanh",
    "sigmoid", "relu", "log1p", "expm1", "reciprocal", "floor", "ceil", "round",
    "copy", "astype", "where", "clip",
    "sum", "mean", "max", "min", "prod", "norm", "nansum", "nanprod",
    "dot", "batch_dot", "matmul",
    "reshape", "transpose", "expand_dims", "squeeze", "flatten", "getitem", "index_add", "pick",
    "take", "slice", "slice_axis",
    "concat", "stack", "tile", "repeat",
    "softmax", "log_softmax",
    # linear algebra, convolution, pooling, topk (tests/test_linalg_conv.py tests them more)
    "det", "adjugate", "slogdet", "inverse", "solve", "cholesky", "gemm2", "sumlogdiag",
    "trsm", "potri", "gemm", "syrk", "trmm", "extractdiag", "makediag",
    "convolution", "convolution_data_grad", "convolution_weight_grad", "pooling",
    "pooling_transpose", "topk",
)

# numpy coverage (issue 11 item 5): numpy_coverage_cases()
COVERED += (
    "sinh", "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arccosh", "arctanh", "log2",
    "log10", "exp2", "cbrt", "sinc", "arctan2", "hypot", "logaddexp",
    "cumsum", "cumprod", "atleast_1d", "atleast_2d", "atleast_3d", "flip", "roll", "diag",
    "trace", "triu", "tril", "pad", "take_along_axis", "outer", "inner", "tensordot", "einsum",
    "asarray", "vdot",
)

NOT_DIFFERENTIABLE = (
    "equal", "not_equal", "lesser", "lesser_equal", "greater", "greater_equal",
    "zeros_like", "ones_like", "stop_gradient", "argmax", "argmin", "one_hot",
)


# ----- input domains ----------------------------------------------------------------------

def uniform(shape, low=-1.5, high=1.5):
    return _RNG.uniform(low, high, shape)


def positive(shape):
    return _RNG.uniform(0.5, 2.0, shape)


def away_from_zero(shape, low=0.3, high=1.5):
    return _RNG.choice([-1.0, 1.0], size=shape) * _RNG.uniform(low, high, shape)


def between_integers(shape):
    """Fractional parts in [0.2, 0.8]: floor and ceil are locally constant."""
    return _RNG.integers(-2, 3, shape) + _RNG.uniform(0.2, 0.8, shape)


def near_integers(shape):
    """Within 0.3 of an integer: round is locally constant."""
    return _RNG.integers(-2, 3, shape) + _RNG.uniform(-0.3, 0.3, shape)


def avoiding(shape, points, gap=0.05):
    """Uniform values at least ``gap`` away from every value in ``points`` (kinks)."""
    values = uniform(shape)
    while any(np.min(np.abs(values - p)) < gap for p in points):
        values = uniform(shape)
    return values


def separated(x_shape, y_shape, gap=0.02):
    """``x, y`` whose broadcast pairs all differ by at least ``gap`` (no ties)."""
    while True:
        x, y = uniform(x_shape), uniform(y_shape)
        if np.min(np.abs(x - y)) >= gap:
            return x, y


def shape_id(shape) -> str:
    return "x".join(str(n) for n in shape)


# ----- cases ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable
    args: tuple
    covers: tuple


def case(name, fn, *args, covers: str) -> Case:
    """A check of ``fn`` at ``args``; ``covers`` names the primitives it exercises."""
    return Case(name, fn, tuple(args), tuple(covers.split()))


SHAPES = [(5,), (2, 3), (2, 3, 4)]

UNARY = [
    ("negative", nd.negative, uniform),
    ("exp", nd.exp, uniform),
    ("log", nd.log, positive),
    ("sqrt", nd.sqrt, positive),
    ("square", nd.square, uniform),
    ("abs", nd.abs, away_from_zero),
    ("sin", nd.sin, uniform),
    ("cos", nd.cos, uniform),
    ("tan", nd.tan, lambda shape: uniform(shape, -1.0, 1.0)),
    ("tanh", nd.tanh, uniform),
    ("sigmoid", nd.sigmoid, lambda shape: uniform(shape, -4.0, 4.0)),
    ("relu", nd.relu, away_from_zero),
    ("log1p", nd.log1p, lambda shape: uniform(shape, -0.5, 2.0)),
    ("expm1", nd.expm1, uniform),
    ("reciprocal", nd.reciprocal, lambda shape: away_from_zero(shape, 0.5, 2.0)),
    ("copy", nd.copy, uniform),
]

# Zero-gradient ops, multiplied by their input: the gradient is then op(x), and any
# gradient leaking through the op itself would show up.
PIECEWISE_CONSTANT = [
    ("sign", nd.sign, away_from_zero),
    ("floor", nd.floor, between_integers),
    ("ceil", nd.ceil, between_integers),
    ("round", nd.round, near_integers),
]


def times_input(op):
    def fn(x):
        return op(x) * x

    return fn


def unary_cases():
    cases = []
    for shape in SHAPES:
        for name, op, domain in UNARY:
            cases.append(case(f"{name}-{shape_id(shape)}", op, domain(shape), covers=name))
        for name, op, domain in PIECEWISE_CONSTANT:
            cases.append(case(f"{name}-times-x-{shape_id(shape)}", times_input(op),
                              domain(shape), covers=f"{name} multiply"))
    cases += [
        case("method-exp", lambda x: x.exp(), uniform((2, 3)), covers="exp"),
        case("method-relu", lambda x: x.relu(), away_from_zero((2, 3)), covers="relu"),
        case("method-sigmoid", lambda x: x.sigmoid(), uniform((2, 3)), covers="sigmoid"),
        case("method-copy", lambda x: x.copy(), uniform((2, 3)), covers="copy"),
        case("operator-neg", lambda x: -x, uniform((2, 3)), covers="negative"),
        case("builtin-abs", lambda x: abs(x), away_from_zero((2, 3)), covers="abs"),
        case("identity", nd.identity, uniform((3,)), covers="copy"),
        case("astype-float64", lambda x: nd.astype(x, dtype=np.float64), uniform((2, 3)),
             covers="astype"),
        case("method-astype", lambda x: x.astype("float64") * x, uniform((2, 3)),
             covers="astype multiply"),
    ]
    return cases


BINARY = [
    ("add", nd.add, uniform, uniform),
    ("subtract", nd.subtract, uniform, uniform),
    ("multiply", nd.multiply, uniform, uniform),
    ("divide", nd.divide, uniform, lambda shape: away_from_zero(shape, 0.5, 2.0)),
    ("power", nd.power, positive, uniform),
    ("maximum", nd.maximum, None, None),
    ("minimum", nd.minimum, None, None),
]

BROADCAST_PAIRS = [
    ((2, 3), (2, 3)),
    ((3, 1), (1, 4)),
    ((1, 4), (3, 1)),
    ((2, 3), (3,)),
    ((3,), (2, 3)),
    ((1,), (2, 3)),
    ((2, 3), (1,)),
    ((2, 3, 4), (3, 1)),
    ((2, 1, 4), (3, 1)),
]


def binary_cases():
    cases = []
    for x_shape, y_shape in BROADCAST_PAIRS:
        shapes = f"{shape_id(x_shape)}-{shape_id(y_shape)}"
        covers_sum_to = " sum_to" if x_shape != y_shape else ""
        for name, op, x_domain, y_domain in BINARY:
            if x_domain is None:
                x, y = separated(x_shape, y_shape)
            else:
                x, y = x_domain(x_shape), y_domain(y_shape)
            cases.append(case(f"{name}-{shapes}", op, x, y, covers=name + covers_sum_to))
    near_02 = 0.2 + away_from_zero((2, 3), 0.05, 1.0)
    cases += [
        case("operator-add", operator.add, uniform((2, 3)), uniform((3,)), covers="add sum_to"),
        case("operator-sub", operator.sub, uniform((3, 1)), uniform((1, 4)),
             covers="subtract sum_to"),
        case("operator-mul", operator.mul, uniform((2, 3)), uniform((2, 3)), covers="multiply"),
        case("operator-truediv", operator.truediv, uniform((2, 3)), positive((2, 1)),
             covers="divide sum_to"),
        case("operator-pow", operator.pow, positive((2, 3)), uniform((3,)),
             covers="power sum_to"),
        case("add-scalar-right", lambda x: nd.add(x, 0.7), uniform((2, 3)), covers="add"),
        case("add-scalar-left", lambda x: 0.7 + x, uniform((2, 3)), covers="add"),
        case("subtract-scalar-right", lambda x: x - 0.7, uniform((2, 3)), covers="subtract"),
        case("subtract-scalar-left", lambda x: 0.7 - x, uniform((2, 3)), covers="subtract"),
        case("subtract-scalar-left-op", lambda x: nd.subtract(0.7, x), uniform((2, 3)),
             covers="subtract"),
        # x/y kept between two integers (floor(x / y) locally constant): 2.11..2.8 and
        # -0.55..-0.1 (floor -1); mod's gradient is 1 for x and -floor(x / y) for y
        case("mod", lambda x, y: nd.mod(x, y), _RNG.uniform(2.2, 2.8, (2, 3)),
             _RNG.uniform(1.0, 1.04, (2, 3)), covers="mod"),
        case("mod-negative-operator", lambda x, y: x % y, _RNG.uniform(-1.0, -0.2, (2, 3)),
             _RNG.uniform(1.8, 2.0, (3,)), covers="mod"),
        case("mod-scalar", lambda x: x % 0.75, _RNG.uniform(0.1, 0.7, (5,)), covers="mod"),
        case("multiply-scalar-right", lambda x: x * 3, uniform((2, 3)), covers="multiply"),
        case("multiply-scalar-left", lambda x: nd.multiply(-2.5, x), uniform((2, 3)),
             covers="multiply"),
        case("divide-scalar-right", lambda x: x / 3.0, uniform((2, 3)), covers="divide"),
        case("divide-scalar-left", lambda x: 2.0 / x, away_from_zero((2, 3), 0.5, 2.0),
             covers="divide"),
        case("divide-scalar-left-op", lambda x: nd.divide(2.0, x), positive((3,)),
             covers="divide"),
        case("power-exponent-3.0", lambda x: x ** 3.0, uniform((2, 3)), covers="power"),
        case("power-exponent-int-2", lambda x: nd.power(x, 2), uniform((2, 3)), covers="power"),
        case("power-exponent-0.5", lambda x: x ** 0.5, positive((2, 3)), covers="power"),
        case("power-exponent--1.5", lambda x: nd.power(x, -1.5), positive((5,)),
             covers="power"),
        case("power-scalar-base", lambda y: 2.0 ** y, uniform((2, 3)), covers="power"),
        case("power-scalar-base-op", lambda y: nd.power(0.5, y), uniform((5,)),
             covers="power"),
        case("power-same-array", lambda x: x ** x, positive((2, 3)), covers="power"),
        case("maximum-scalar-right", lambda x: nd.maximum(x, 0.2), near_02, covers="maximum"),
        case("maximum-scalar-left", lambda x: nd.maximum(0.2, x), near_02, covers="maximum"),
        case("minimum-scalar-right", lambda x: nd.minimum(x, 0.2), near_02, covers="minimum"),
        case("minimum-scalar-left", lambda x: nd.minimum(0.2, x), near_02, covers="minimum"),
        case("broadcast-add-alias", nd.broadcast_add, uniform((3, 1)), uniform((1, 4)),
             covers="add sum_to"),
        case("elemwise-mul-alias", nd.elemwise_mul, uniform((2, 3)), uniform((2, 3)),
             covers="multiply"),
    ]
    return cases


REDUCTIONS = [
    ("sum", nd.sum, uniform),
    ("mean", nd.mean, uniform),
    ("max", nd.max, uniform),
    ("min", nd.min, uniform),
    ("prod", nd.prod, lambda shape: away_from_zero(shape, 0.5, 1.5)),
    ("norm", nd.norm, uniform),
]

AXES = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2), [2, 1]]
# with exclude=True: (0, 1, 2) lists every axis, so nothing is reduced
EXCLUDE_AXES = [None, 0, -1, (0, 2), [2, 1], (0, 1, 2)]


def with_nans(shape, domain=None):
    """Values from ``domain`` (uniform by default) with about a third of them NaN."""
    values = (domain or uniform)(shape)
    flat = values.reshape(-1)
    flat[::3] = np.nan
    return values


NAN_REDUCTIONS = [
    ("nansum", nd.nansum, with_nans),
    ("nanprod", nd.nanprod, lambda shape: with_nans(shape, lambda s: away_from_zero(s, 0.5,
                                                                                    1.5))),
]


def reduction_cases():
    cases = []
    for name, op, domain in REDUCTIONS:
        for axis in AXES:
            for keepdims in (False, True):
                cases.append(case(f"{name}-2x3x4-axis={axis}-keepdims={keepdims}",
                                  reduction(op, axis=axis, keepdims=keepdims),
                                  domain((2, 3, 4)), covers=name))
        for axis in (None, 0, -1):
            cases.append(case(f"{name}-5-axis={axis}", reduction(op, axis=axis),
                              domain((5,)), covers=name))
    for axis in (None, 1, (0, 2)):
        for keepdims in (False, True):
            cases.append(case(f"norm-ord=1-axis={axis}-keepdims={keepdims}",
                              reduction(nd.norm, ord=1, axis=axis, keepdims=keepdims),
                              away_from_zero((2, 3, 4)), covers="norm"))
    cases += [
        case("sum-axis=()-means-all", reduction(nd.sum, axis=()), uniform((2, 3)),
             covers="sum"),
        case("method-sum", lambda x: x.sum(axis=1), uniform((2, 3)), covers="sum"),
        case("method-max", lambda x: x.max(axis=0, keepdims=True), uniform((2, 3)),
             covers="max"),
        case("method-prod", lambda x: x.prod(), positive((2, 3)), covers="prod"),
        case("method-norm", lambda x: x.norm(), uniform((2, 3)), covers="norm"),
        case("sum-axis-alias", lambda x: nd.sum_axis(x, axis=1), uniform((2, 3)),
             covers="sum"),
    ]
    # MXNet's exclude=True: reduce over the axes NOT listed
    for name, op, domain in REDUCTIONS[:5] + NAN_REDUCTIONS:
        for axis in EXCLUDE_AXES:
            for keepdims in (False, True):
                cases.append(case(f"{name}-2x3x4-exclude-axis={axis}-keepdims={keepdims}",
                                  reduction(op, axis=axis, keepdims=keepdims, exclude=True),
                                  domain((2, 3, 4)), covers=name))
    for name, op, domain in NAN_REDUCTIONS:
        for axis in (None, 1, (0, 2)):
            for keepdims in (False, True):
                cases.append(case(f"{name}-2x3x4-axis={axis}-keepdims={keepdims}",
                                  reduction(op, axis=axis, keepdims=keepdims),
                                  domain((2, 3, 4)), covers=name))
    cases += [
        case("method-sum-exclude", lambda x: x.sum(axis=0, exclude=True), uniform((2, 3)),
             covers="sum"),
        case("method-nansum", lambda x: x.nansum(axis=1), with_nans((2, 3)), covers="nansum"),
        case("method-nanprod", lambda x: x.nanprod(), with_nans((2, 3), positive),
             covers="nanprod"),
        case("nansum-no-nan-is-sum", nd.nansum, uniform((5,)), covers="nansum"),
    ]
    return cases


def reduction(op, **params):
    def fn(x):
        return op(x, **params)

    return fn


DOT_SHAPES = [
    ((4,), (4,), {}),
    ((3, 4), (4,), {}),
    ((3,), (3, 4), {}),
    ((2, 3), (3, 4), {}),
    ((2, 3, 4), (4, 5), {}),
    ((2, 3), (3, 4, 2), {}),
    ((2, 3, 4), (4, 2, 2), {}),
    ((3, 2), (3, 4), {"transpose_a": True}),
    ((2, 3), (4, 3), {"transpose_b": True}),
    ((3, 2), (4, 3), {"transpose_a": True, "transpose_b": True}),
    ((4, 2, 3), (4, 5), {"transpose_a": True}),
    ((2, 3), (4, 2, 3), {"transpose_b": True}),
    ((4, 2, 3), (5, 2, 4), {"transpose_a": True, "transpose_b": True}),
    ((3,), (4, 3), {"transpose_b": True}),
    ((4, 3), (4,), {"transpose_a": True}),
]

BATCH_DOT_SHAPES = [
    ((2, 3, 4), (2, 4, 5), {}),
    ((2, 4, 3), (2, 4, 5), {"transpose_a": True}),
    ((2, 3, 4), (2, 5, 4), {"transpose_b": True}),
    ((2, 4, 3), (2, 5, 4), {"transpose_a": True, "transpose_b": True}),
]


# numpy's matmul (the @ operator): 1-d promotion and broadcast stacks of matrices
MATMUL_SHAPES = [((2, 3), (3, 2)), ((3,), (3, 4)), ((2, 3), (3,)), ((3,), (3,)),
                 ((4, 2, 3), (3, 2)), ((2, 3), (4, 3, 2)), ((4, 2, 3), (4, 3, 2)),
                 ((1, 2, 3), (4, 3, 2)), ((4, 2, 3), (3,))]


def with_params(op, **params):
    def fn(*xs):
        return op(*xs, **params)

    return fn


def linalg_cases():
    cases = []
    for x_shape, y_shape, flags in DOT_SHAPES:
        flag_id = "".join(f"-{k}" for k in flags)
        cases.append(case(f"dot-{shape_id(x_shape)}-{shape_id(y_shape)}{flag_id}",
                          with_params(nd.dot, **flags), uniform(x_shape), uniform(y_shape),
                          covers="dot"))
    for x_shape, y_shape, flags in BATCH_DOT_SHAPES:
        flag_id = "".join(f"-{k}" for k in flags)
        cases.append(case(f"batch_dot-{shape_id(x_shape)}-{shape_id(y_shape)}{flag_id}",
                          with_params(nd.batch_dot, **flags), uniform(x_shape),
                          uniform(y_shape), covers="batch_dot"))
    for x_shape, y_shape in MATMUL_SHAPES:
        cases.append(case(f"matmul-{shape_id(x_shape)}-{shape_id(y_shape)}", operator.matmul,
                          uniform(x_shape), uniform(y_shape), covers="matmul"))
    cases += [
        case("dot-same-array", lambda x: nd.dot(x, x, transpose_b=True), uniform((2, 3)),
             covers="dot"),
    ]
    return cases


def shape_cases():
    x234, x43 = uniform((2, 3, 4)), uniform((4, 3))
    cond = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    between_clips = avoiding((3, 4), (-0.5, 0.5))
    return [
        # reshape, with MXNet's 0 (keep) and -1 (infer) codes
        case("reshape-0,-1", lambda x: nd.reshape(x, shape=(0, -1)), x234, covers="reshape"),
        case("reshape-4,0,2", lambda x: nd.reshape(x, shape=(4, 0, 2)), x234,
             covers="reshape"),
        case("reshape-method-tuple", lambda x: x.reshape((4, 6)), x234, covers="reshape"),
        case("reshape-method-args", lambda x: x.reshape(3, -1), x234, covers="reshape"),
        case("reshape-flat", lambda x: x.reshape(-1), x43, covers="reshape"),
        case("transpose-default", nd.transpose, x234, covers="transpose"),
        case("transpose-axes", lambda x: nd.transpose(x, axes=(1, 2, 0)), x234,
             covers="transpose"),
        case("transpose-negative-axes", lambda x: nd.transpose(x, axes=(-1, 0, 1)), x234,
             covers="transpose"),
        case("transpose-T", lambda x: x.T, x43, covers="transpose"),
        case("swapaxes", lambda x: nd.swapaxes(x, 0, 2), x234, covers="transpose"),
        case("swapaxes-method-negative", lambda x: x.swapaxes(1, -1), x234,
             covers="transpose"),
        case("expand_dims-0", lambda x: nd.expand_dims(x, axis=0), x43, covers="expand_dims"),
        case("expand_dims--1", lambda x: x.expand_dims(axis=-1), x43, covers="expand_dims"),
        case("squeeze-all", nd.squeeze, uniform((2, 1, 3, 1)), covers="squeeze"),
        case("squeeze-axis", lambda x: nd.squeeze(x, axis=1), uniform((2, 1, 3)),
             covers="squeeze"),
        case("squeeze-axes", lambda x: x.squeeze(axis=(0, 2)), uniform((1, 3, 1)),
             covers="squeeze"),
        case("flatten-3d", nd.flatten, x234, covers="flatten"),
        case("flatten-1d", nd.Flatten, uniform((5,)), covers="flatten"),
        # indexing
        case("getitem-int", lambda x: x[1], x43, covers="getitem index_add"),
        case("getitem-int-1d", lambda x: x[2], uniform((5,)), covers="getitem index_add"),
        case("getitem-slice", lambda x: x[1:3], x43, covers="getitem index_add"),
        case("getitem-step", lambda x: x[:, ::2], x43, covers="getitem index_add"),
        case("getitem-negative", lambda x: x[-1, 1:], x43, covers="getitem index_add"),
        case("getitem-reverse", lambda x: x[::-1], x43, covers="getitem index_add"),
        case("getitem-int-array-dup", lambda x: x[np.array([0, 2, 0])], x43,
             covers="getitem index_add"),
        case("getitem-2d-int-array", lambda x: x[np.array([[0, 1], [3, 3]])], x43,
             covers="getitem index_add"),
        case("getitem-ndarray-index", lambda x: x[nd.array([2, 0, 2])], x43,
             covers="getitem index_add"),
        case("getitem-mixed", lambda x: x[1, [0, 2, 2]], x43, covers="getitem index_add"),
        case("getitem-newaxis", lambda x: x[None, 1], x43, covers="getitem index_add"),
        case("getitem-ellipsis", lambda x: x[..., 1], x234, covers="getitem index_add"),
        case("getitem-3d", lambda x: x[:, 1, ::2], x234, covers="getitem index_add"),
        case("getitem-chained", lambda x: x[1][2], x234, covers="getitem index_add"),
        case("getitem-function", lambda x: nd.getitem(x, (slice(0, 2), 1)), x43,
             covers="getitem index_add"),
        case("index_add-direct",
             lambda g: nd.index_add(g, key=(slice(None), np.array([0, 2, 0])), shape=(2, 4)),
             uniform((2, 3)), covers="index_add getitem"),
        case("slice", lambda x: nd.slice(x, begin=(0, 1), end=(2, 3)), x43,
             covers="slice index_add"),
        case("slice-step", lambda x: nd.slice(x, begin=(None, None), end=(None, None),
                                              step=(2, -1)), x43,
             covers="slice index_add"),
        case("slice-3d", lambda x: nd.slice(x, begin=(1, None, 0), end=(2, None, 3)), x234,
             covers="slice index_add"),
        case("slice_axis", lambda x: nd.slice_axis(x, axis=1, begin=1, end=3), x43,
             covers="slice_axis index_add"),
        case("slice_axis-negative", lambda x: x.slice_axis(axis=-1, begin=0, end=None), x234,
             covers="slice_axis index_add"),
        case("take-axis0", lambda x: nd.take(x, nd.array([0, 2, 2])), x43,
             covers="take index_add"),
        case("take-axis1-2d-indices", lambda x: nd.take(x, nd.array([[0, 1], [2, 2]]), axis=1),
             x43, covers="take index_add"),
        case("take-clip", lambda x: x.take(nd.array([5, -3]), axis=0), x43,
             covers="take index_add"),
        case("take-wrap", lambda x: nd.take(x, nd.array([-1, 4]), axis=0, mode="wrap"), x43,
             covers="take index_add"),
        case("take-raise-in-range", lambda x: nd.take(x, nd.array([3, 0]), mode="raise"), x43,
             covers="take index_add"),
        case("pick-last-axis", lambda x: nd.pick(x, nd.array([0, 2, 1, 1])), x43,
             covers="pick index_add"),
        case("pick-axis0-keepdims", lambda x: x.pick(nd.array([3, 0, 1]), axis=0,
                                                       keepdims=True), x43,
             covers="pick index_add squeeze"),
        case("pick-3d", lambda x: nd.pick(x, nd.array([[0, 1, 2, 2], [1, 1, 0, 2]]), axis=1),
             x234, covers="pick index_add"),
        # joining and splitting
        case("split-reorder", lambda x: nd.concat(*reversed(nd.split(x, 3, axis=1)), dim=1),
             uniform((2, 6)), covers="slice_axis index_add concat"),
        case("split-squeeze", lambda x: nd.stack(*x.split(num_outputs=3, axis=1,
                                                          squeeze_axis=True), axis=-1),
             x234, covers="slice_axis index_add squeeze stack"),
        case("split-axis0-weighted", lambda x: nd.split(x, 2, axis=0)[1] * 2.0, x43,
             covers="slice_axis index_add"),
        case("concat-dim1", lambda a, b, c: nd.concat(a, b, c), uniform((2, 1)),
             uniform((2, 3)), uniform((2, 2)), covers="concat"),
        case("concat-dim0", lambda a, b: nd.concat(a, b, dim=0), uniform((1, 3)),
             uniform((2, 3)), covers="concat"),
        case("concat-dim-1-3d", lambda a, b: nd.concat(a, b, dim=-1), uniform((2, 3, 1)),
             uniform((2, 3, 2)), covers="concat"),
        case("concatenate", lambda a, b: nd.concatenate([a, b], axis=0), uniform((2, 3)),
             uniform((1, 3)), covers="concat"),
        case("concat-same-array", lambda a: nd.concat(a, a * a, dim=0), uniform((2, 3)),
             covers="concat multiply"),
        case("stack-axis0", lambda a, b, c: nd.stack(a, b, c), uniform((2, 3)),
             uniform((2, 3)), uniform((2, 3)), covers="stack"),
        case("stack-axis1", lambda a, b: nd.stack(a, b, axis=1), uniform((2, 3)),
             uniform((2, 3)), covers="stack"),
        case("stack-axis-1", lambda a, b: nd.stack(a, b, axis=-1), uniform((2, 3)),
             uniform((2, 3)), covers="stack"),
        # tile, repeat, broadcasting
        case("tile-same-ndim", lambda x: nd.tile(x, reps=(2, 3)), uniform((2, 3)),
             covers="tile"),
        case("tile-more-ndim", lambda x: nd.tile(x, reps=(2, 1, 3)), uniform((2, 3)),
             covers="tile"),
        case("tile-fewer-reps", lambda x: x.tile((2,)), uniform((2, 3)), covers="tile"),
        case("tile-int", lambda x: nd.tile(x, reps=2), uniform((3,)), covers="tile"),
        case("repeat-flat", lambda x: nd.repeat(x, repeats=2), uniform((2, 3)),
             covers="repeat"),
        case("repeat-axis0", lambda x: nd.repeat(x, repeats=3, axis=0), uniform((2, 3)),
             covers="repeat"),
        case("repeat-axis-1", lambda x: x.repeat(2, axis=-1), x234, covers="repeat"),
        case("broadcast_to", lambda x: nd.broadcast_to(x, shape=(3, 4)), uniform((3, 1)),
             covers="broadcast_to"),
        case("broadcast_to-new-axes", lambda x: nd.broadcast_to(x, shape=(2, 3, 4)),
             uniform((1, 4)), covers="broadcast_to"),
        case("broadcast_to-method", lambda x: x.broadcast_to((2, 3, 4)), uniform((2, 1, 4)),
             covers="broadcast_to"),
        case("sum_to", lambda x: nd.sum_to(x, shape=(3, 1)), uniform((3, 4)),
             covers="sum_to"),
        case("sum_to-fewer-axes", lambda x: nd.sum_to(x, shape=(1, 4)), x234,
             covers="sum_to"),
        # where and clip
        case("where", lambda x, y: nd.where(nd.array(cond), x, y), uniform((2, 3)),
             uniform((2, 3)), covers="where"),
        case("where-broadcast-y", lambda x, y: nd.where(nd.array(cond), x, y),
             uniform((2, 3)), uniform((3,)), covers="where sum_to"),
        case("where-broadcast-cond", lambda x, y: nd.where(nd.array(cond[0]), x, y),
             uniform((2, 3)), uniform((2, 3)), covers="where"),
        case("where-scalar-array-x", lambda x, y: nd.where(nd.array(cond), x, y),
             uniform((1,)), uniform((2, 3)), covers="where sum_to"),
        case("where-python-scalar", lambda x: nd.where(nd.array(cond), x, 0.0),
             uniform((2, 3)), covers="where"),
        case("where-computed-cond", lambda x: nd.where(x > 0, x * x, -x),
             away_from_zero((2, 3)), covers="where multiply negative"),
        case("clip", lambda x: nd.clip(x, -0.5, 0.5), between_clips, covers="clip"),
        case("clip-method", lambda x: x.clip(-0.5, 0.5), between_clips, covers="clip"),
        case("clip-keywords", lambda x: nd.clip(x, a_min=-0.5, a_max=0.5), between_clips,
             covers="clip"),
        case("clip-lower-only", lambda x: nd.clip(x, -0.5, None), between_clips,
             covers="clip"),
        case("clip-upper-only", lambda x: nd.clip(x, a_min=None, a_max=0.5), between_clips,
             covers="clip"),
        # softmax
        *[case(f"{name}-2x3x4-axis={axis}", with_params(op, axis=axis), x234, covers=name)
          for name, op in (("softmax", nd.softmax), ("log_softmax", nd.log_softmax))
          for axis in (-1, 0, 1)],
        case("softmax-1d", nd.softmax, uniform((5,)), covers="softmax"),
        case("log_softmax-1d", nd.log_softmax, uniform((5,)), covers="log_softmax"),
        case("softmax-method", lambda x: x.softmax(), x43, covers="softmax"),
        case("log_softmax-method", lambda x: x.log_softmax(axis=0), x43,
             covers="log_softmax"),
    ]


def numpy_coverage_cases():
    """numpy coverage (issue 11 item 5); compiled-road checks: tests/test_numpy_coverage.py."""
    x34, x234, v4 = uniform((3, 4)), uniform((2, 3, 4)), uniform((4,))
    with_zeros = uniform((3, 4))
    with_zeros[1, 1] = with_zeros[2, 0] = with_zeros[2, 2] = 0.0
    inside = lambda shape: uniform(shape, -0.9, 0.9)   # noqa: E731  arcsin's domain
    elementwise = [
        ("sinh", nd.sinh, uniform), ("cosh", nd.cosh, uniform), ("arcsin", nd.arcsin, inside),
        ("arccos", nd.arccos, inside), ("arctan", nd.arctan, uniform),
        ("arcsinh", nd.arcsinh, uniform), ("arccosh", nd.arccosh,
                                           lambda shape: uniform(shape, 1.1, 3.0)),
        ("arctanh", nd.arctanh, inside), ("log2", nd.log2, positive),
        ("log10", nd.log10, positive), ("exp2", nd.exp2, uniform),
        ("cbrt", nd.cbrt, away_from_zero), ("sinc", nd.sinc, uniform),
    ]
    cases = [case(f"{name}-{shape_id(shape)}", op, domain(shape), covers=name)
             for name, op, domain in elementwise for shape in ((5,), (2, 3))]
    cases += [
        case("sinc-at-0", nd.sinc, np.array([0.0, 0.4, -1.3]), covers="sinc"),
        case("arctan2", nd.arctan2, uniform((2, 3)), positive((2, 3)), covers="arctan2"),
        case("arctan2-broadcast", nd.arctan2, uniform((2, 1)), positive((3,)), covers="arctan2"),
        case("hypot", nd.hypot, away_from_zero((2, 3)), uniform((2, 3)), covers="hypot"),
        case("logaddexp", nd.logaddexp, uniform((2, 3)), uniform((3,)), covers="logaddexp"),
        *[case(f"{name}-axis={axis}", with_params(op, axis=axis), x, covers=name)
          for name, op in (("cumsum", nd.cumsum), ("cumprod", nd.cumprod))
          for axis in (None, 0, -1) for x in (x34,)],
        case("cumprod-zeros", with_params(nd.cumprod, axis=1), with_zeros, covers="cumprod"),
        case("cumprod-zeros-flat", nd.cumprod, with_zeros, covers="cumprod"),
        case("atleast_1d", nd.atleast_1d, v4, covers="atleast_1d"),
        case("atleast_2d", nd.atleast_2d, v4, covers="atleast_2d"),
        case("atleast_3d", nd.atleast_3d, x34, covers="atleast_3d"),
        case("flip-axis", with_params(nd.flip, axis=1), x234, covers="flip"),
        case("flip-all", nd.flip, x34, covers="flip"),
        case("roll", lambda x: nd.roll(x, 2, axis=1), x34, covers="roll"),
        case("roll-tuple", lambda x: nd.roll(x, (1, -2), axis=(0, 2)), x234, covers="roll"),
        case("roll-flat", lambda x: nd.roll(x, 5), x34, covers="roll"),
        case("diag-extract", lambda x: nd.diag(x, k=1), x34, covers="diag"),
        case("diag-build", lambda v: nd.diag(v, -1), v4, covers="diag"),
        case("trace", lambda x: nd.trace(x, 1), x34, covers="trace"),
        case("trace-axes", lambda x: nd.trace(x, axis1=2, axis2=0), x234, covers="trace"),
        case("triu", lambda x: nd.triu(x, 1), x234, covers="triu"),
        case("tril", lambda x: nd.tril(x, -1), x34, covers="tril"),
        case("pad-constant", lambda x: nd.pad(x, ((1, 2), (0, 1)), constant_values=2.0), x34,
             covers="pad"),
        *[case(f"pad-{mode}", lambda x, mode=mode: nd.pad(x, 2, mode=mode), x34, covers="pad")
          for mode in ("edge", "reflect", "symmetric", "wrap")],
        case("take_along_axis", lambda x: nd.take_along_axis(
            x, indices=np.array([[0, 2, 1, 1], [2, 2, 0, 1]]), axis=0), x34,
            covers="take_along_axis"),
        case("take_along_axis-flat", lambda x: nd.take_along_axis(
            x, np.array([3, 0, 3, 11]), None), x34, covers="take_along_axis"),
        case("outer", nd.outer, x34, uniform((2,)), covers="outer"),
        case("inner", nd.inner, x34, uniform((2, 4)), covers="inner"),
        case("vdot", nd.vdot, x34, uniform((4, 3)), covers="vdot"),
        case("tensordot", lambda a, b: nd.tensordot(a, b, axes=([1, 2], [0, 2])), x234,
             uniform((3, 2, 4)), covers="tensordot"),
        case("tensordot-1", lambda a, b: nd.tensordot(a, b, 1), x34, v4, covers="tensordot"),
        case("einsum-matmul", lambda a, b: nd.einsum("ij,jk->ik", a, b), x34, uniform((4, 2)),
             covers="einsum"),
        case("einsum-diagonal", lambda a: nd.einsum("ii->i", a), uniform((3, 3)),
             covers="einsum"),
        case("einsum-repeated", lambda a: nd.einsum("iji->j", a), uniform((3, 2, 3)),
             covers="einsum"),
        case("einsum-ellipsis-broadcast", lambda a, b: nd.einsum("...ij,...jk->...ik", a, b),
             x234, uniform((1, 4, 2)), covers="einsum"),
        case("einsum-lonely", lambda a, b: nd.einsum("bij,k->bk", a, b), x234, v4,
             covers="einsum"),
        case("asarray", nd.asarray, x34, covers="asarray"),
    ]
    return cases


# ----- linear algebra (det, inverse, ...), convolution, pooling, topk ---------------------

def _well_conditioned(n, batch=()):
    q = np.linalg.qr(_RNG.standard_normal(batch + (n, n)))[0]
    return q * _RNG.uniform(1.0, 2.0, batch + (1, n)) + 0.1 * np.eye(n)


def _spd(n, batch=()):
    b = _RNG.standard_normal(batch + (n, n))
    return b @ np.swapaxes(b, -1, -2) + n * np.eye(n)


def matrix_and_nn_cases():
    a3, a23 = _well_conditioned(3), _well_conditioned(3, (2,))
    images = uniform((2, 4, 5, 5))
    return [
        case("linalg-det", nd.linalg.det, a3, covers="det adjugate"),
        case("linalg-det-batched", nd.linalg.det, a23, covers="det adjugate"),
        case("linalg-slogdet", lambda a: nd.linalg.slogdet(a)[1], a23,
             covers="slogdet getitem inverse"),
        case("linalg-inverse", nd.linalg.inverse, a23, covers="inverse"),
        case("linalg-solve", nd.linalg_solve, a3, uniform((3, 2)), covers="solve"),
        case("linalg-solve-vector", nd.linalg_solve, a23, uniform((3,)), covers="solve"),
        case("linalg-potrf", nd.linalg.potrf, _spd(3, (2,)), covers="cholesky"),
        case("linalg-gemm2", lambda a, b: nd.linalg.gemm2(a, b, transpose_b=True, alpha=2.0),
             uniform((2, 3, 4)), uniform((2, 5, 4)), covers="gemm2"),
        case("linalg-sumlogdiag", nd.linalg.sumlogdiag, _spd(3, (2,)), covers="sumlogdiag"),
        case("linalg-trsm", lambda a, b: nd.linalg.trsm(a, b, transpose=True, alpha=2.0),
             a23, uniform((2, 3, 4)), covers="trsm"),
        case("linalg-trsm-right-upper", lambda a, b: nd.linalg.trsm(a, b, rightside=True,
                                                                    lower=False),
             a23, uniform((2, 4, 3)), covers="trsm"),
        case("linalg-potri", nd.linalg.potri, a23 + 2 * np.eye(3), covers="potri"),
        case("linalg-gemm", lambda a, b, c: nd.linalg.gemm(a, b, c, transpose_a=True,
                                                           alpha=2.0, beta=0.5),
             uniform((2, 4, 3)), uniform((2, 4, 5)), uniform((2, 3, 5)), covers="gemm"),
        case("linalg-syrk", lambda a: nd.linalg.syrk(a, transpose=True, alpha=0.5),
             uniform((2, 3, 4)), covers="syrk"),
        case("linalg-trmm", lambda a, b: nd.linalg.trmm(a, b, rightside=True, lower=False),
             uniform((2, 3, 3)), uniform((2, 4, 3)), covers="trmm"),
        case("linalg-extractdiag", lambda a: nd.linalg.extractdiag(a, offset=1),
             uniform((2, 3, 4)), covers="extractdiag"),
        case("linalg-makediag", lambda a: nd.linalg.makediag(a, offset=-1), uniform((2, 3)),
             covers="makediag"),
        case("convolution", lambda x, w, b: nd.Convolution(
            data=x, weight=w, bias=b, kernel=(3, 3), num_filter=6, num_group=2, stride=(2, 1),
            pad=(1, 1), dilate=(1, 2)), images, uniform((6, 2, 3, 3)), uniform((6,)),
             covers="convolution convolution_data_grad convolution_weight_grad"),
        case("pooling-max", lambda x: nd.Pooling(x, kernel=(2, 2), stride=(2, 2)), images,
             covers="pooling index_add getitem reshape"),
        case("pooling-avg", lambda x: nd.Pooling(x, kernel=(3, 3), pool_type="avg", pad=(1, 1),
                                                 pooling_convention="full", stride=(2, 2)),
             images, covers="pooling pooling_transpose"),
        case("topk-value", lambda x: nd.topk(x, ret_typ="value", k=2), uniform((3, 4)),
             covers="topk index_add"),
    ]


CASES = (unary_cases() + binary_cases() + reduction_cases() + linalg_cases() + shape_cases()
         + numpy_coverage_cases() + matrix_and_nn_cases())
CASE_IDS = [c.name for c in CASES]


def squared(fn):
    """``square(fn(x))``: its gradient is recorded even when ``fn`` is linear."""

    def fn_squared(*xs):
        return nd.square(fn(*xs))

    return fn_squared


def as_variables(fn):
    """``fn``, after giving a gradient buffer to each input that has none.

    ``check_grads(order=2)`` differentiates its gradient at perturbed points that it
    builds as fresh arrays without gradient buffers, which ``autograd.grad`` refuses
    (NotRecordedError).  Here they become variables; at the point being checked the
    inputs are variables already and are left alone.
    """

    def fn_of_variables(*xs):
        for x in xs:
            if x.grad is None and x._node is None:
                x.attach_grad()
        return fn(*xs)

    return fn_of_variables


def test_case_names_are_unique():
    assert len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_first_order(case):
    check_grads(case.fn, case.args, order=1)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_second_order(case):
    check_grads(as_variables(squared(case.fn)), case.args, order=2)


# ----- coverage ---------------------------------------------------------------------------

def test_every_differentiable_primitive_is_covered():
    differentiable = {name for name, prim in REGISTRY.items() if prim.vjps is not None}
    missing = differentiable - set(COVERED)
    assert not missing, f"differentiable primitives with no gradient-check case: {missing}"
    stale = set(COVERED) - differentiable
    assert not stale, f"COVERED names that are not differentiable primitives: {stale}"


def test_every_non_differentiable_primitive_is_tested():
    without_rules = {name for name, prim in REGISTRY.items() if prim.vjps is None}
    assert without_rules == set(NOT_DIFFERENTIABLE)


def test_covered_names_are_exactly_the_cases_claims():
    claimed = {name for c in CASES for name in c.covers}
    assert claimed == set(COVERED)


def recorded_primitives(heads) -> set:
    """Names of the primitives on the tape behind ``heads``."""
    names, seen, todo = set(), set(), list(heads)
    while todo:
        arr = todo.pop()
        if id(arr) in seen or arr._node is None:
            continue
        seen.add(id(arr))
        names.add(arr._node.prim.name)
        todo.extend(a for a in arr._node.args if isinstance(a, NDArray))
    return names


def test_cases_record_what_they_claim():
    wrong = {}
    for c in CASES:
        xs = [nd.array(a) for a in c.args]
        for x in xs:
            x.attach_grad()
        with ag.record():
            out = nd.sum(squared(c.fn)(*xs))
        grads = ag.grad([out], xs, create_graph=True)
        unrecorded = set(c.covers) - recorded_primitives([out, *grads])
        if unrecorded:
            wrong[c.name] = unrecorded
    assert not wrong, f"cases that do not record the primitives they claim: {wrong}"


# ----- forward semantics that the gradient checks rely on ---------------------------------

@pytest.mark.parametrize("x_shape, y_shape, flags", DOT_SHAPES,
                         ids=[f"{shape_id(a)}-{shape_id(b)}-{sorted(f)}"
                              for a, b, f in DOT_SHAPES])
def test_dot_values_follow_mxnet(x_shape, y_shape, flags):
    """MXNet's dot: transpose_a contracts x's first axis, transpose_b y's last axis;
    the remaining axes keep their order."""
    x, y = uniform(x_shape), uniform(y_shape)
    x_axis = 0 if flags.get("transpose_a") else x.ndim - 1
    y_axis = y.ndim - 1 if flags.get("transpose_b") else 0
    expected = np.tensordot(x, y, axes=([x_axis], [y_axis]))
    out = nd.dot(nd.array(x), nd.array(y), **flags)
    assert out.shape == (expected.shape or (1,))
    np.testing.assert_allclose(out.asnumpy(), expected.reshape(out.shape), rtol=1e-12)


@pytest.mark.parametrize("x_shape, y_shape, flags", DOT_SHAPES,
                         ids=[f"{shape_id(a)}-{shape_id(b)}-{sorted(f)}"
                              for a, b, f in DOT_SHAPES])
def test_dot_rules_on_numpy_equal_the_rules_on_ndarrays(x_shape, y_shape, flags):
    """Compiled code calls the rules with numpy arrays (a shortcut for at most two axes
    and no transposes); they must give what the NDArray road gives."""
    x, y = uniform(x_shape), uniform(y_shape)
    ans = P.dot(x, y, **flags)
    g = uniform(ans.shape)
    for rule in P.dot.prim.vjps:
        expected = rule(nd.array(g), nd.array(ans), nd.array(x), nd.array(y), **flags)
        got = rule(g, ans, x, y, **flags)
        assert type(got) is np.ndarray and got.shape == expected.shape
        np.testing.assert_allclose(got, expected.asnumpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("x_shape, y_shape, flags", BATCH_DOT_SHAPES,
                         ids=[str(sorted(f)) for _, _, f in BATCH_DOT_SHAPES])
def test_batch_dot_values(x_shape, y_shape, flags):
    x, y = uniform(x_shape), uniform(y_shape)
    a = np.swapaxes(x, 1, 2) if flags.get("transpose_a") else x
    b = np.swapaxes(y, 1, 2) if flags.get("transpose_b") else y
    out = nd.batch_dot(nd.array(x), nd.array(y), **flags)
    np.testing.assert_allclose(out.asnumpy(), a @ b, rtol=1e-12)


@pytest.mark.parametrize("name, op", [(n, op) for n, op, _ in REDUCTIONS if n != "norm"])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_values(name, op, axis, keepdims):
    x = uniform((2, 3, 4))
    numpy_axis = tuple(axis) if isinstance(axis, list) else axis
    expected = getattr(np, name)(x, axis=numpy_axis, keepdims=keepdims)
    out = op(nd.array(x), axis=axis, keepdims=keepdims)
    assert out.shape == (expected.shape or (1,))
    np.testing.assert_allclose(out.asnumpy(), expected.reshape(out.shape), rtol=1e-12)


EXCLUDE_OPS = [("sum", nd.sum, np.sum), ("mean", nd.mean, np.mean), ("max", nd.max, np.max),
               ("min", nd.min, np.min), ("prod", nd.prod, np.prod),
               ("nansum", nd.nansum, np.nansum), ("nanprod", nd.nanprod, np.nanprod)]


@pytest.mark.parametrize("name, op, reference", EXCLUDE_OPS, ids=[n for n, _, _ in EXCLUDE_OPS])
@pytest.mark.parametrize("axis, reduced", [
    (1, (0, 2)), (-1, (0, 1)), ((0, 2), (1,)), ([2, 0], (1,)), ((0, 1, 2), ()),
], ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_exclude_reduces_the_axes_not_listed(name, op, reference, axis, reduced, keepdims):
    """MXNet 1.x: ``exclude=True`` reduces over every axis not in ``axis``; listing every
    axis reduces none (shape kept)."""
    x = with_nans((2, 3, 4)) if name.startswith("nan") else uniform((2, 3, 4))
    expected = reference(x, axis=reduced, keepdims=keepdims)
    for out in (op(nd.array(x), axis=axis, keepdims=keepdims, exclude=True),
                getattr(nd.array(x), name)(axis=axis, keepdims=keepdims, exclude=True)):
        assert out.shape == expected.shape
        np.testing.assert_allclose(out.asnumpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("op", [nd.sum, nd.mean, nd.max, nd.min, nd.prod, nd.nansum])
@pytest.mark.parametrize("axis", [None, ()], ids=str)
def test_exclude_without_axis_still_reduces_everything(op, axis):
    """MXNet: with no axis given, exclude changes nothing (every axis is reduced)."""
    x = nd.array(positive((2, 3)))
    out = op(x, axis=axis, exclude=True)
    assert out.shape == (1,)
    np.testing.assert_allclose(out.asnumpy(), op(x).asnumpy(), rtol=1e-6)


@pytest.mark.parametrize("op, reference, dtype", [
    (nd.nansum, np.nansum, np.float32), (nd.nansum, np.nansum, np.float64),
    (nd.nanprod, np.nanprod, np.float32), (nd.nanprod, np.nanprod, np.float64),
], ids=["nansum-float32", "nansum-float64", "nanprod-float32", "nanprod-float64"])
def test_nan_reductions_skip_nans(op, reference, dtype):
    x = np.array([[1.5, np.nan, -2.0], [np.nan, np.nan, 4.0]], dtype=dtype)
    for axis in (None, 0, 1):
        out = op(nd.array(x), axis=axis)
        expected = reference(x, axis=axis)
        assert out.dtype == dtype and not np.isnan(out.asnumpy()).any()
        np.testing.assert_allclose(out.asnumpy(), np.reshape(expected, out.shape), rtol=1e-6)
    # a row of NaNs only: the sum of nothing (0), the product of nothing (1)
    assert op(nd.array(x), axis=0).asnumpy()[1] == (0.0 if op is nd.nansum else 1.0)


def test_nan_reductions_send_no_gradient_to_nans():
    x = nd.array([[2.0, np.nan, 3.0], [np.nan, 5.0, 0.5]])
    x.attach_grad()
    with ag.record():
        total = nd.nansum(x, axis=1) * nd.nanprod(x, axis=1)
    total.backward()
    # d/dx (s * p) = p + s * p / x on the numbers; 0 on the NaNs
    s, p = np.array([5.0, 5.5]), np.array([6.0, 2.5])
    data = x.asnumpy()
    expected = np.where(np.isnan(data), 0.0, p[:, None] + s[:, None] * p[:, None] / data)
    np.testing.assert_allclose(x.grad.asnumpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("op", [nd.sum, nd.mean, nd.max, nd.min, nd.prod, nd.norm])
def test_empty_axis_tuple_reduces_everything(op):
    """MXNet: "The default, axis=(), will compute over all elements"."""
    x = nd.array(positive((2, 3)))
    np.testing.assert_allclose(op(x, axis=()).asnumpy(), op(x).asnumpy(), rtol=1e-6)


@pytest.mark.parametrize("axis", [None, 1, (0, 2), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_norm_values(axis, keepdims):
    x = uniform((2, 3, 4))
    l2 = np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims))
    l1 = np.sum(np.abs(x), axis=axis, keepdims=keepdims)
    for ord, expected in ((2, l2), (1, l1)):
        out = nd.norm(nd.array(x), ord=ord, axis=axis, keepdims=keepdims)
        assert out.shape == (expected.shape or (1,))
        np.testing.assert_allclose(out.asnumpy(), expected.reshape(out.shape), rtol=1e-12)


def test_norm_rejects_unsupported_order():
    with pytest.raises(ValueError, match="ord"):
        nd.norm(nd.array([1.0, 2.0]), ord=3)


def test_shape_wrappers_values():
    x = np.arange(24.0).reshape(2, 3, 4)
    a = nd.array(x)
    np.testing.assert_array_equal(nd.reshape(a, shape=(0, -1)).asnumpy(), x.reshape(2, 12))
    np.testing.assert_array_equal(nd.swapaxes(a, 0, 2).asnumpy(), np.swapaxes(x, 0, 2))
    np.testing.assert_array_equal(nd.slice(a, begin=(1, None, 0), end=(2, None, 3)).asnumpy(),
                                  x[1:2, :, 0:3])
    np.testing.assert_array_equal(nd.slice_axis(a, axis=-1, begin=1, end=3).asnumpy(),
                                  x[..., 1:3])
    np.testing.assert_array_equal(nd.take(a, nd.array([5, -1]), axis=1).asnumpy(),
                                  x[:, [2, 0]])
    np.testing.assert_array_equal(nd.take(a, nd.array([5, -1]), axis=1, mode="wrap").asnumpy(),
                                  x[:, [2, 2]])
    picked = nd.pick(a, nd.array([[0, 1, 2, 2], [1, 1, 0, 2]]), axis=1).asnumpy()
    np.testing.assert_array_equal(picked, [[0, 5, 10, 11], [16, 17, 14, 23]])
    parts = nd.split(a, 2, axis=2)
    np.testing.assert_array_equal(parts[1].asnumpy(), x[..., 2:])
    np.testing.assert_array_equal(nd.split(a, 3, axis=1, squeeze_axis=True)[2].asnumpy(),
                                  x[:, 2])
    np.testing.assert_array_equal(nd.concat(a, a, dim=1).asnumpy(),
                                  np.concatenate([x, x], axis=1))
    np.testing.assert_array_equal(nd.stack(a, a, axis=-1).asnumpy(), np.stack([x, x], -1))
    np.testing.assert_array_equal(nd.tile(a, reps=(2, 1, 1, 2)).asnumpy(),
                                  np.tile(x, (2, 1, 1, 2)))
    np.testing.assert_array_equal(nd.repeat(a, repeats=2, axis=1).asnumpy(),
                                  np.repeat(x, 2, axis=1))
    np.testing.assert_array_equal(nd.broadcast_to(nd.array(x[:1]), shape=(2, 3, 4)).asnumpy(),
                                  np.broadcast_to(x[:1], (2, 3, 4)))
    np.testing.assert_array_equal(nd.clip(a, 3, 20).asnumpy(), np.clip(x, 3, 20))
    softmax = nd.softmax(a, axis=1).asnumpy()
    np.testing.assert_allclose(softmax.sum(axis=1), 1.0)
    np.testing.assert_allclose(nd.log_softmax(a, axis=1).asnumpy(), np.log(softmax))


@pytest.mark.parametrize("mode, error", [("raise", IndexError), ("nearest", ValueError)])
def test_take_refuses_out_of_range_in_raise_mode_and_unknown_modes(mode, error):
    with pytest.raises(error, match="take"):
        nd.take(nd.array([1.0, 2.0, 3.0]), nd.array([3]), mode=mode)


def test_split_rejects_uneven_parts():
    with pytest.raises(ValueError, match="equal parts"):
        nd.split(nd.zeros((2, 5)), 2, axis=1)


# ----- primitives without gradient rules --------------------------------------------------

COMPARISONS = [
    (nd.equal, np.equal, operator.eq),
    (nd.not_equal, np.not_equal, operator.ne),
    (nd.lesser, np.less, operator.lt),
    (nd.lesser_equal, np.less_equal, operator.le),
    (nd.greater, np.greater, operator.gt),
    (nd.greater_equal, np.greater_equal, operator.ge),
]


@pytest.mark.parametrize("op, reference, python_operator", COMPARISONS,
                         ids=[op.__name__ for op, _, _ in COMPARISONS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32], ids=lambda d: d.__name__)
def test_comparison_gives_zeros_and_ones_of_input_dtype(op, reference, python_operator, dtype):
    a = np.array([[1, 2, 3], [3, 2, 1]], dtype=dtype)
    b = np.array([2, 2, 2], dtype=dtype)
    expected = reference(a, b).astype(dtype)
    a_nd, b_nd = nd.array(a, dtype=dtype), nd.array(b, dtype=dtype)
    for out in (op(a_nd, b_nd), python_operator(a_nd, b_nd), op(a_nd, 2)):
        assert out.dtype == dtype
        np.testing.assert_array_equal(out.asnumpy(), expected)


@pytest.mark.parametrize("op", [nd.argmax, nd.argmin])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_argmax_argmin_values_and_dtype(op, dtype):
    x = np.array([[1.0, 5.0, 3.0], [4.0, 0.0, 6.0]], dtype=dtype)
    reference = np.argmax if op is nd.argmax else np.argmin
    for axis, keepdims in ((0, False), (1, False), (1, True), (-1, False)):
        out = op(nd.array(x), axis=axis, keepdims=keepdims)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out.asnumpy(),
                                      reference(x, axis=axis, keepdims=keepdims))
    flat = op(nd.array(x))
    assert flat.shape == (1,) and flat.asscalar() == reference(x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32], ids=lambda d: d.__name__)
def test_zeros_like_ones_like_stop_gradient_values(dtype):
    x = np.array([[1, -2, 3], [4, 5, -6]], dtype=dtype)
    a = nd.array(x, dtype=dtype)
    for out, expected in ((nd.zeros_like(a), np.zeros_like(x)), (a.zeros_like(), 0 * x),
                          (nd.ones_like(a), np.ones_like(x)), (a.ones_like(), 0 * x + 1),
                          (nd.stop_gradient(a), x), (nd.BlockGrad(a), x)):
        assert out.dtype == dtype
        np.testing.assert_array_equal(out.asnumpy(), expected)


def test_mod_values():
    x = np.array([[5.5, -5.5, 2.0], [-1.25, 7.0, 0.5]], dtype=np.float32)
    for divisor in (2.0, -2.0):
        expected = np.mod(x, np.float32(divisor))
        for out in (nd.mod(nd.array(x), divisor), nd.array(x) % divisor):
            assert out.dtype == np.float32
            np.testing.assert_allclose(out.asnumpy(), expected)
    np.testing.assert_allclose((7.0 % nd.array(x[:, :1])).asnumpy(), np.mod(7.0, x[:, :1]))


def test_one_hot_values_shape_and_dtype():
    out = nd.one_hot(nd.array([0, 2, 1]), 3)
    assert out.shape == (3, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out.asnumpy(), np.eye(3)[[0, 2, 1]])
    # on/off values, dtype, indices of any shape (the depth axis is appended last)
    out = nd.one_hot(nd.array([[1, 0], [3, 2]]), depth=4, on_value=5, off_value=-1,
                     dtype="float64")
    assert out.shape == (2, 2, 4) and out.dtype == np.float64
    np.testing.assert_array_equal(out.asnumpy()[1, 0], [-1, -1, -1, 5])
    np.testing.assert_array_equal(out.asnumpy()[0, 1], [5, -1, -1, -1])
    assert nd.array([2, 0]).one_hot(3).shape == (2, 3)
    assert nd.one_hot(nd.array([1]), 2, dtype="int32").dtype == np.int32


def test_one_hot_out_of_range_rows_are_off_and_indices_truncate():
    """MXNet casts each index toward zero; an index outside [0, depth) sets nothing."""
    out = nd.one_hot(nd.array([-1, 3, 7, 1.7, -0.5]), 3).asnumpy()
    np.testing.assert_array_equal(out, [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0],
                                        [1, 0, 0]])


def test_one_hot_on_the_raw_road_is_numpy():
    out = P.one_hot(np.array([1, 0]), 2)
    assert type(out) is np.ndarray and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 1], [1, 0]])


BLOCKED = [
    ("equal", lambda x: nd.equal(x, 0.25)),
    ("not_equal", lambda x: x != 0.25),
    ("lesser", lambda x: x < 0.25),
    ("lesser_equal", lambda x: nd.lesser_equal(x, 0.25)),
    ("greater", lambda x: nd.greater(0.25, x)),
    ("greater_equal", lambda x: x >= x * 0.5),
    ("argmax", lambda x: nd.argmax(x, axis=1)),
    ("argmin", lambda x: x.argmin(axis=0)),
    ("zeros_like", nd.zeros_like),
    ("ones_like", lambda x: x.ones_like()),
    ("stop_gradient", nd.stop_gradient),
    ("BlockGrad", lambda x: nd.BlockGrad(x * 2.0)),
    ("one_hot", lambda x: nd.one_hot(x * 2.0, 4)),
]


@pytest.mark.parametrize("fn", [fn for _, fn in BLOCKED], ids=[name for name, _ in BLOCKED])
def test_gradient_does_not_flow_through(fn):
    x = nd.array(uniform((2, 3)))
    x.attach_grad()
    with ag.record():
        blocked = fn(x)
        loss = nd.sum(blocked) * nd.sum(x)
    with pytest.raises(NotRecordedError):
        ag.grad([blocked], [x])
    loss.backward()
    # d(sum(blocked) * sum(x))/dx with sum(blocked) held constant
    expected = np.full(x.shape, blocked.asnumpy().sum(), dtype=np.float32)
    np.testing.assert_allclose(x.grad.asnumpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("op", [nd.maximum, nd.minimum], ids=["maximum", "minimum"])
def test_maximum_minimum_tie_sends_the_whole_gradient_to_x(op):
    """The checks above avoid ties; at one the gradient is not doubled (MXNet: x wins)."""
    x, y = nd.array([1.0, 2.0, 3.0]), nd.array([1.0, 0.0, 5.0])
    x.attach_grad()
    y.attach_grad()
    with ag.record():
        out = op(x, y)
    out.backward()
    np.testing.assert_array_equal(x.grad.asnumpy() + y.grad.asnumpy(), [1.0, 1.0, 1.0])
    assert x.grad.asnumpy()[0] == 1.0


# ----- gradient dtypes --------------------------------------------------------------------

FLOAT32_GRADIENTS = [
    ("power-scalar-exponent", lambda x: x ** 2),
    ("power-float-exponent", lambda x: x ** 1.5),
    ("power-scalar-base", lambda x: 2.0 ** x),
    ("power-arrays", lambda x: x ** x),
    ("divide-scalar-left", lambda x: 2.0 / x),
    ("sqrt", nd.sqrt),
    ("tanh", nd.tanh),
    ("maximum-scalar", lambda x: nd.maximum(x, 1.0)),
    ("mean", lambda x: nd.mean(x, axis=0)),
    ("max", lambda x: nd.max(x, axis=1)),
    ("prod", nd.prod),
    ("norm", nd.norm),
    ("norm-ord-1", lambda x: nd.norm(x, ord=1, axis=1) * x.sum()),
    ("dot", lambda x: nd.dot(x, x, transpose_b=True)),
    ("softmax", nd.softmax),
    ("log_softmax", nd.log_softmax),
    ("clip", lambda x: nd.clip(x, 0.7, 1.8) * x),
    ("where", lambda x: nd.where(x > 1.0, x * x, x)),
    ("getitem", lambda x: x[1] * x[0]),
]


@pytest.mark.parametrize("fn", [fn for _, fn in FLOAT32_GRADIENTS],
                         ids=[name for name, _ in FLOAT32_GRADIENTS])
def test_float32_gradients_stay_float32(fn):
    x = nd.array(positive((2, 3)).astype(np.float32))
    x.attach_grad()
    with ag.record():
        value = nd.sum(fn(x))
        (grad,) = ag.grad([value], [x], create_graph=True)
        curvature = nd.sum(grad * grad * x)  # recorded even when grad is constant
    (second,) = ag.grad([curvature], [x])
    assert grad.dtype == np.float32
    assert second.dtype == np.float32


# ----- MXNet conventions ------------------------------------------------------------------

@pytest.mark.parametrize("source", [[1, 2, 3], [[1.5, 2.0]], 7, 2.5, [True, False]],
                         ids=str)
def test_array_of_python_numbers_is_float32(source):
    x = nd.array(source)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.asnumpy(), np.asarray(source, dtype=np.float32)
                                  .reshape(x.shape))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=lambda d: d.__name__)
def test_array_of_floating_numpy_keeps_dtype(dtype):
    """A deliberate difference from MXNet 1.x, which makes these float32 too."""
    source = np.arange(6).reshape(2, 3).astype(dtype)
    x = nd.array(source)
    assert x.dtype == dtype
    np.testing.assert_array_equal(x.asnumpy(), source)
    assert nd.array(x).dtype == dtype


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_],
                         ids=lambda d: d.__name__)
def test_array_of_integer_or_boolean_numpy_is_float32(dtype):
    """MXNet 1.x's ``nd.array``: "the default dtype is source_array.dtype if source_array
    is an NDArray, float32 otherwise"; an explicit dtype (or an NDArray source) decides."""
    source = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    x = nd.array(source)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.asnumpy(), source.astype(np.float32))
    kept = nd.array(source, dtype=dtype)
    assert kept.dtype == dtype and nd.array(kept).dtype == dtype
    assert nd.array([1, 2], dtype=dtype).dtype == dtype


def test_array_copies_its_source():
    source = np.zeros(3, dtype=np.float32)
    x = nd.array(source)
    source[0] = 5
    assert x.asnumpy()[0] == 0


@pytest.mark.parametrize("reduce", [nd.sum, nd.mean, nd.max, nd.min, nd.prod, nd.norm,
                                    nd.argmax, nd.argmin], ids=lambda f: f.__name__)
def test_full_reduction_has_shape_1(reduce):
    x = nd.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert reduce(x).shape == (1,)
    assert reduce(nd.array([3.0])).shape == (1,)


def test_other_scalar_results_have_shape_1():
    x = nd.array([[1.0, 2.0], [3.0, 4.0]])
    assert x.sum().shape == (1,)
    assert nd.sum(x, keepdims=True).shape == (1, 1)
    assert nd.dot(nd.array([1.0, 2.0]), nd.array([3.0, 4.0])).shape == (1,)
    assert nd.array([1.0, 2.0])[1].shape == (1,)
    assert nd.array(5.0).shape == (1,)


def test_asscalar():
    x = nd.array([[1.0, 2.0], [3.0, 4.0]])
    assert x.sum().asscalar() == 10.0
    assert isinstance(x.sum().asscalar(), np.float32)
    for not_scalar in (x, x[0], nd.zeros((3,))):
        with pytest.raises(ValueError):
            not_scalar.asscalar()


MIXED_DTYPES = [
    (np.float32, np.float64), (np.int32, np.float32), (np.int32, np.int64),
    (np.float16, np.float32), (np.int64, np.float64), (np.uint8, np.int32),
]


@pytest.mark.parametrize("a_dtype, b_dtype", MIXED_DTYPES,
                         ids=[f"{a.__name__}-{b.__name__}" for a, b in MIXED_DTYPES])
@pytest.mark.parametrize("op, reference", [
    (operator.add, np.add), (operator.sub, np.subtract), (operator.mul, np.multiply),
    (operator.truediv, np.true_divide), (nd.maximum, np.maximum), (nd.minimum, np.minimum),
], ids=["add", "sub", "mul", "truediv", "maximum", "minimum"])
def test_mixed_dtypes_promote_like_numpy(a_dtype, b_dtype, op, reference):
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=a_dtype)
    b = np.array([3, 2, 1], dtype=b_dtype)
    expected = reference(a, b)
    a_nd, b_nd = nd.array(a, dtype=a_dtype), nd.array(b, dtype=b_dtype)
    for out, want in ((op(a_nd, b_nd), expected), (op(b_nd, a_nd), reference(b, a))):
        assert out.dtype == want.dtype
        np.testing.assert_allclose(out.asnumpy(), want)


def test_python_scalars_do_not_promote():
    assert (nd.array([1.0, 2.0]) * 2.5).dtype == np.float32
    assert (2.5 - nd.array([1.0, 2.0])).dtype == np.float32
    assert (nd.array(np.array([1, 2]), dtype=np.int32) + 2).dtype == np.int32
    assert (nd.array([1.0, 2.0]) ** 2).dtype == np.float32


@pytest.mark.parametrize("value, dims", [
    ([[1, 2], [3, 4]], "2x2"),
    ([1, 2, 3], "3"),
    ([[[1.5, 2]], [[3, 4]]], "2x1x2"),
    (np.array([[1, 2]], dtype=np.int32), "1x2"),
], ids=["2x2", "1-d", "3-d", "int32"])
def test_repr_and_print(value, dims, capsys):
    x = nd.array(value)
    expected = "\n" + str(x.asnumpy()) + f"\n<NDArray {dims} @cpu(0)>"
    assert repr(x) == expected
    assert str(x) == expected
    print(x)
    assert capsys.readouterr().out == expected + "\n"


def test_repr_exact_text():
    assert repr(nd.array([[1, 2], [3, 4]])) == "\n[[1. 2.]\n [3. 4.]]\n<NDArray 2x2 @cpu(0)>"
    assert repr(nd.array([1, 2, 3])) == "\n[1. 2. 3.]\n<NDArray 3 @cpu(0)>"


SAMPLERS = [
    ("random.normal", lambda: nd.random.normal(0, 1, shape=(3, 4))),
    ("random.uniform", lambda: nd.random.uniform(-1, 1, shape=(3, 4))),
    ("random_normal", lambda: nd.random_normal(loc=0, scale=1, shape=(3, 4))),
    ("random_uniform", lambda: nd.random_uniform(low=-1, high=1, shape=(3, 4))),
]


@pytest.mark.parametrize("sample", [s for _, s in SAMPLERS], ids=[n for n, _ in SAMPLERS])
def test_random_seed_reproduces(sample):
    nd.random.seed(42)
    first, second = sample(), sample()
    nd.random.seed(42)
    again_first, again_second = sample(), sample()
    np.testing.assert_array_equal(first.asnumpy(), again_first.asnumpy())
    np.testing.assert_array_equal(second.asnumpy(), again_second.asnumpy())
    assert not np.array_equal(first.asnumpy(), second.asnumpy())
    nd.random.seed(43)
    assert not np.array_equal(sample().asnumpy(), first.asnumpy())
    assert first.shape == (3, 4) and first.dtype == np.float32


def test_random_aliases_share_one_generator():
    nd.random.seed(3)
    a = nd.random.normal(1.0, 2.0, shape=(5,))
    b = nd.random.uniform(0.0, 1.0, shape=(5,))
    nd.random.seed(3)
    np.testing.assert_array_equal(nd.random_normal(1.0, 2.0, shape=(5,)).asnumpy(), a.asnumpy())
    np.testing.assert_array_equal(nd.random_uniform(0.0, 1.0, shape=(5,)).asnumpy(),
                                  b.asnumpy())


def test_random_distributions():
    nd.random.seed(0)
    u = nd.random.uniform(2.0, 3.0, shape=(1000,)).asnumpy()
    assert u.min() >= 2.0 and u.max() < 3.0
    n = nd.random.normal(10.0, 0.5, shape=(4000,)).asnumpy()
    assert abs(n.mean() - 10.0) < 0.05 and abs(n.std() - 0.5) < 0.05
    assert nd.random.normal(shape=(2,), dtype="float64").dtype == np.float64


@pytest.mark.parametrize("make, shape, dtype, fill", [
    (lambda: nd.zeros((2, 3)), (2, 3), np.float32, 0),
    (lambda: nd.zeros(4), (4,), np.float32, 0),
    (lambda: nd.zeros((2,), dtype="int32"), (2,), np.int32, 0),
    (lambda: nd.ones((3, 1)), (3, 1), np.float32, 1),
    (lambda: nd.ones(2, dtype=np.float64), (2,), np.float64, 1),
    (lambda: nd.full((2, 2), 7), (2, 2), np.float32, 7),
    (lambda: nd.full(3, 1.5, dtype=np.float64), (3,), np.float64, 1.5),
    (lambda: nd.empty((2, 3)), (2, 3), np.float32, None),
    (lambda: nd.empty(2, dtype="int32"), (2,), np.int32, None),
], ids=["zeros", "zeros-int", "zeros-int32", "ones", "ones-float64", "full", "full-float64",
        "empty", "empty-int32"])
def test_creation_shape_dtype_and_fill(make, shape, dtype, fill):
    x = make()
    assert x.shape == shape and x.dtype == dtype
    if fill is not None:
        np.testing.assert_array_equal(x.asnumpy(), np.full(shape, fill, dtype=dtype))


def test_arange():
    x = nd.arange(5)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.asnumpy(), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(nd.arange(1, 7, 2).asnumpy(), [1, 3, 5])
    np.testing.assert_array_equal(nd.arange(0, 3, repeat=2).asnumpy(), [0, 0, 1, 1, 2, 2])
    assert nd.arange(3, dtype="int32").dtype == np.int32


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32], ids=lambda d: d.__name__)
def test_zeros_like_ones_like_creation(dtype):
    x = nd.array(np.arange(6).reshape(2, 3), dtype=dtype)
    for out, fill in ((nd.zeros_like(x), 0), (nd.ones_like(x), 1)):
        assert out.shape == (2, 3) and out.dtype == dtype
        np.testing.assert_array_equal(out.asnumpy(), np.full((2, 3), fill, dtype=dtype))


def test_full_writes_into_out():
    out = nd.zeros((2, 2))
    assert nd.full((2, 2), 3.0, out=out) is out
    np.testing.assert_array_equal(out.asnumpy(), np.full((2, 2), 3.0))
