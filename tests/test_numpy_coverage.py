"""numpy coverage (issue 11, item 5): elementwise math and structural ops.

Every case is a numpy function of float64 arrays (compiled by pullback) and, where the tape
has the op, the same function written with ``nd``.  At a random point inside the op's
domain (away from branch points), with a random head ``u`` and direction ``v``:

- compiled ``J^T u`` (``pb.vjp``) = the tape's (``backward(u)``) = central differences
  of the plain numpy function along ``v`` (through ``<J^T u, v>``);
- ``pb.jvp`` = central differences along ``v``, and the transpose identity
  ``<u, J v> = <J^T u, v>`` to rounding;
- the compiled value = numpy's.

Then: numbers on the native whole-function road, fused native kernels of the new
elementwise ops against numpy, cumprod's gradient at zeros, and the forms that are refused
(a CompileError at the user's line).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import pullback as pb
import pullback.ndarray as nd
from pullback import CompileError
from pullback import autograd as ag

_RNG = np.random.default_rng(20261207)


def uniform(*shape, low=-1.0, high=1.0):
    return _RNG.uniform(low, high, shape)


# ----- the cases: (name, numpy function, nd function or None, arguments) --------------------

def c_sinh(x):
    return np.sinh(x)


def c_cosh(x):
    return np.cosh(x)


def c_arcsin(x):
    return np.arcsin(x)


def c_arccos(x):
    return np.arccos(x)


def c_arctan(x):
    return np.arctan(x)


def c_arcsinh(x):
    return np.arcsinh(x)


def c_arccosh(x):
    return np.arccosh(x)


def c_arctanh(x):
    return np.arctanh(x)


def c_log2(x):
    return np.log2(x)


def c_log10(x):
    return np.log10(x)


def c_exp2(x):
    return np.exp2(x)


def c_cbrt(x):
    return np.cbrt(x)


def c_sinc(x):
    return np.sinc(x)


def c_arctan2(x, y):
    return np.arctan2(x, y)


def c_hypot(x, y):
    return np.hypot(x, y)


def c_logaddexp(x, y):
    return np.logaddexp(x, y)


def c_chain(x, y):
    # a fused run of the new ops (a native kernel on the compiled road)
    return np.sinh(x) * np.arctan2(x, y) + np.hypot(x, y) * np.cbrt(y) \
        + np.logaddexp(x, y) - np.arcsinh(x) * np.log2(y) + np.exp2(x) * np.log10(y)


def c_broadcast(x, y):
    return np.hypot(x, y) + np.arctan2(y, x)


def c_cumsum(x):
    return np.cumsum(x, axis=1)


def c_cumsum_flat(x):
    return np.cumsum(x)


def c_cumprod(x):
    return np.cumprod(x, axis=0)


def c_cumprod_last(x):
    return np.cumprod(x, -1)


def c_cumprod_flat(x):
    return np.cumprod(x)


def c_atleast(x):
    return np.atleast_2d(x) * 2.0 + np.sum(np.atleast_3d(x)) + np.atleast_1d(x)


def c_flip(x):
    return np.flip(x, axis=0) * x


def c_flip_all(x):
    return np.flip(x) * x


def c_roll(x):
    return np.roll(x, 2, axis=1) * x + np.roll(x, (1, -1), axis=(0, 1))


def c_roll_flat(x):
    return np.roll(x, 5) * x


def c_diag_extract(x):
    return np.diag(x, k=1) ** 2


def c_diag_build(v):
    return np.diag(v, -1)[:4, 1:] * 3.0 + np.diag(v * v)


def c_trace(x):
    return np.trace(x * x, offset=1)


def c_trace_axes(x):
    return np.trace(x, 0, 2, 0) * np.trace(x, axis1=1, axis2=2)


def c_triu(x):
    return np.triu(x, 1) * x + np.tril(x * x)


def c_pad_constant(x):
    return np.pad(x, ((1, 2), (0, 1)), constant_values=0.5) ** 2


def c_pad_modes(x):
    return (np.pad(x, 2, mode="reflect") + np.pad(x, 2, "wrap") * np.pad(x, 2, mode="edge")
            + np.pad(x * x, ((2, 2), (2, 2)), mode="symmetric"))


ALONG = np.array([[0, 2, 1, 1], [2, 2, 0, 1]])
ALONG_ROWS = np.array([[0, 3], [2, 2], [1, 0]])


def c_take_along(x):
    return np.take_along_axis(x, ALONG, axis=0) ** 2 + np.sum(np.take_along_axis(x, ALONG_ROWS, 1))


def c_outer(a, b):
    return np.outer(a, b * b)


def c_inner(a, b):
    return np.inner(a, b) ** 2


def c_inner_vectors(a, b):
    return np.inner(a[0], b) * a


def c_tensordot(a, b):
    return np.tensordot(a, b, axes=([1, 2], [0, 2]))


def c_tensordot_int(a, b):
    return np.tensordot(a, b, 1) + np.tensordot(a, b, axes=1)


def c_einsum_matmul(a, b):
    return np.einsum("ij,jk->ik", a, b)


def c_einsum_implicit(a, b):
    return np.einsum("ij,jk", a, b * b)


def c_einsum_batched(a, b):
    return np.einsum("...ij,...jk->...ik", a, b)


def c_einsum_diagonal(a):
    return np.einsum("ii->i", a) * np.einsum("ii", a)


def c_einsum_three(a, b, c):
    return np.einsum("ij,jk,k->i", a, b, c, optimize=True)


def c_einsum_lonely(a, b):
    return np.einsum("bij,k->bk", a, b)


def c_array_of_list(x, y):
    m = np.array([[x[0], x[1] * y[0]], [2.0, y[1]]])
    return np.asarray([m[0] * x[1], m[1]]) ** 2


def c_array_of_numbers(a):
    v = np.array([a, a * a, 2.0])
    return np.sum(v * v)


CASES = [
    ("sinh", c_sinh, nd.sinh, [uniform(2, 3, low=-2, high=2)]),
    ("cosh", c_cosh, lambda x: x.cosh(), [uniform(2, 3, low=-2, high=2)]),
    ("arcsin", c_arcsin, nd.arcsin, [uniform(5, low=-0.9, high=0.9)]),
    ("arccos", c_arccos, lambda x: x.arccos(), [uniform(5, low=-0.9, high=0.9)]),
    ("arctan", c_arctan, nd.arctan, [uniform(5, low=-3, high=3)]),
    ("arcsinh", c_arcsinh, nd.arcsinh, [uniform(5, low=-3, high=3)]),
    ("arccosh", c_arccosh, nd.arccosh, [uniform(5, low=1.1, high=3)]),
    ("arctanh", c_arctanh, nd.arctanh, [uniform(5, low=-0.9, high=0.9)]),
    ("log2", c_log2, nd.log2, [uniform(5, low=0.2, high=3)]),
    ("log10", c_log10, lambda x: x.log10(), [uniform(5, low=0.2, high=3)]),
    ("exp2", c_exp2, nd.exp2, [uniform(5, low=-2, high=2)]),
    ("cbrt", c_cbrt, nd.cbrt, [np.concatenate([uniform(3, low=0.2, high=2),
                                                uniform(3, low=-2, high=-0.2)])]),
    ("sinc", c_sinc, nd.sinc, [np.array([0.0, 0.3, -1.7, 2.4, -0.05])]),
    ("arctan2", c_arctan2, nd.arctan2, [uniform(4, low=-2, high=2),
                                        uniform(4, low=0.3, high=2)]),
    ("hypot", c_hypot, nd.hypot, [uniform(4, low=0.2, high=2), uniform(4, low=-2, high=-0.2)]),
    ("logaddexp", c_logaddexp, nd.logaddexp, [uniform(4, low=-3, high=3),
                                              uniform(4, low=-3, high=3)]),
    ("chain", c_chain, None, [uniform(64, low=0.2, high=1.0), uniform(64, low=0.5, high=2.0)]),
    ("broadcast", c_broadcast, None, [uniform(3, 1, low=0.3, high=1), uniform(4, low=0.3, high=1)]),
    ("cumsum", c_cumsum, lambda x: nd.cumsum(x, axis=1), [uniform(3, 4)]),
    ("cumsum-flat", c_cumsum_flat, nd.cumsum, [uniform(3, 4)]),
    ("cumprod", c_cumprod, lambda x: nd.cumprod(x, axis=0), [uniform(3, 4)]),
    ("cumprod-last", c_cumprod_last, lambda x: nd.cumprod(x, -1), [uniform(2, 3, 4)]),
    ("cumprod-flat", c_cumprod_flat, nd.cumprod, [uniform(3, 4)]),
    ("atleast", c_atleast, None, [uniform(4)]),
    ("flip", c_flip, lambda x: nd.flip(x, axis=0) * x, [uniform(3, 4)]),
    ("flip-all", c_flip_all, lambda x: nd.flip(x) * x, [uniform(3, 4)]),
    ("roll", c_roll, lambda x: nd.roll(x, 2, axis=1) * x + nd.roll(x, (1, -1), axis=(0, 1)),
     [uniform(3, 4)]),
    ("roll-flat", c_roll_flat, lambda x: nd.roll(x, 5) * x, [uniform(3, 4)]),
    ("diag-extract", c_diag_extract, lambda x: nd.diag(x, k=1) ** 2, [uniform(3, 4)]),
    ("diag-build", c_diag_build, lambda v: nd.diag(v, -1)[:4, 1:] * 3.0 + nd.diag(v * v),
     [uniform(4)]),
    ("trace", c_trace, lambda x: nd.trace(x * x, offset=1), [uniform(3, 4)]),
    ("trace-axes", c_trace_axes, lambda x: nd.trace(x, 0, 2, 0) * nd.trace(x, axis1=1, axis2=2),
     [uniform(3, 3, 3)]),
    ("triu", c_triu, lambda x: nd.triu(x, 1) * x + nd.tril(x * x), [uniform(2, 3, 4)]),
    ("pad-constant", c_pad_constant,
     lambda x: nd.pad(x, ((1, 2), (0, 1)), constant_values=0.5) ** 2, [uniform(3, 4)]),
    ("pad-modes", c_pad_modes, None, [uniform(3, 4)]),
    ("take_along_axis", c_take_along,
     lambda x: (nd.take_along_axis(x, ALONG, axis=0) ** 2
                + nd.sum(nd.take_along_axis(x, ALONG_ROWS, 1))),
     [uniform(3, 4)]),
    ("outer", c_outer, lambda a, b: nd.outer(a, b * b), [uniform(2, 3), uniform(4)]),
    ("inner", c_inner, lambda a, b: nd.inner(a, b) ** 2, [uniform(2, 3), uniform(4, 3)]),
    ("inner-vectors", c_inner_vectors, None, [uniform(2, 3), uniform(3)]),
    ("tensordot", c_tensordot, lambda a, b: nd.tensordot(a, b, axes=([1, 2], [0, 2])),
     [uniform(2, 3, 4), uniform(3, 5, 4)]),
    ("tensordot-int", c_tensordot_int, None, [uniform(2, 3), uniform(3, 4)]),
    ("einsum-matmul", c_einsum_matmul, lambda a, b: nd.einsum("ij,jk->ik", a, b),
     [uniform(2, 3), uniform(3, 4)]),
    ("einsum-implicit", c_einsum_implicit, None, [uniform(2, 3), uniform(3, 4)]),
    ("einsum-batched", c_einsum_batched, lambda a, b: nd.einsum("...ij,...jk->...ik", a, b),
     [uniform(2, 3, 4), uniform(1, 4, 2)]),
    ("einsum-diagonal", c_einsum_diagonal,
     lambda a: nd.einsum("ii->i", a) * nd.einsum("ii", a), [uniform(3, 3)]),
    ("einsum-three", c_einsum_three, None, [uniform(2, 3), uniform(3, 4), uniform(4)]),
    ("einsum-lonely", c_einsum_lonely, lambda a, b: nd.einsum("bij,k->bk", a, b),
     [uniform(2, 3, 4), uniform(5)]),
    ("array-of-lists", c_array_of_list, None, [uniform(2), uniform(2)]),
]
IDS = [c[0] for c in CASES]


def _flat(value) -> np.ndarray:
    if isinstance(value, pb.NDArray):
        value = value.asnumpy()
    return np.asarray(value, dtype=np.float64).reshape(-1)


def _central(fn, args, directions, eps=1e-6):
    up = fn(*[a + eps * d for a, d in zip(args, directions, strict=True)])
    down = fn(*[a - eps * d for a, d in zip(args, directions, strict=True)])
    return (_flat(up) - _flat(down)) / (2 * eps)


@pytest.mark.parametrize("name, fn, nd_fn, args", CASES, ids=IDS)
def test_compiled_equals_tape_equals_differences_and_jvp(name, fn, nd_fn, args):
    rng = np.random.default_rng(len(name))
    args = [a.copy() for a in args]
    directions = [rng.standard_normal(a.shape) for a in args]
    expected = fn(*args)
    compiled = pb.compile(fn)
    np.testing.assert_allclose(_flat(compiled(*args)), _flat(expected), rtol=1e-13, atol=1e-15)

    value, pullback = pb.vjp(fn, *args)
    np.testing.assert_allclose(_flat(value), _flat(expected), rtol=1e-13, atol=1e-15)
    u = rng.standard_normal(np.shape(expected))
    grads = pullback(u if np.ndim(expected) else float(u))
    grads = grads if isinstance(grads, tuple) else (grads,)
    numeric = _central(fn, args, directions)
    reverse = sum(float(np.dot(_flat(g), d.reshape(-1))) for g, d in zip(grads, directions,
                                                                       strict=True))
    assert reverse == pytest.approx(float(np.dot(_flat(u), numeric)), rel=1e-6, abs=1e-8)

    out, out_dot = pb.jvp(fn, tuple(args), tuple(directions))
    np.testing.assert_allclose(_flat(out), _flat(expected), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(_flat(out_dot), numeric, rtol=1e-6, atol=1e-7)
    # the transpose identity <u, J v> = <J^T u, v>, to rounding
    assert float(np.dot(_flat(u), _flat(out_dot))) == pytest.approx(reverse, rel=1e-10,
                                                                     abs=1e-12)

    if nd_fn is None:
        return
    xs = [nd.array(a) for a in args]
    for x in xs:
        x.attach_grad()
    with ag.record():
        y = nd_fn(*xs)
    np.testing.assert_allclose(_flat(y), _flat(expected), rtol=1e-13, atol=1e-15)
    y.backward(nd.array(np.reshape(u, y.shape)))
    for x, g in zip(xs, grads, strict=True):
        np.testing.assert_allclose(x.grad.asnumpy(), np.asarray(g), rtol=1e-10, atol=1e-12)


def test_array_of_numbers_is_differentiated():
    # np.array of a list holding differentiated numbers: d/da sum([a, a^2, 2]^2)
    a = 0.7
    assert pb.grad(c_array_of_numbers)(a) == pytest.approx(2 * a + 4 * a ** 3, rel=1e-12)


# ----- numbers: the native whole-function road ------------------------------------------------

def s_math(a, b):
    return (math.asinh(a) * math.atan2(a, b) + math.hypot(a, b) + math.cbrt(b)
            + math.log2(b) * math.exp2(a) - math.acos(a * 0.5) + np.logaddexp(a, b)
            + np.sinh(a) * np.arctanh(a * 0.5) + math.log10(b) + math.acosh(b + 1.0))


def test_numbers_take_the_native_road_and_agree_with_the_python_road():
    a, b = 0.6, 1.3
    native = pb.value_and_grad(s_math, argnums=(0, 1))(a, b)
    python = pb.value_and_grad(pb.compile(s_math, native=False), argnums=(0, 1))(a, b)
    assert "native" in pb.explain(s_math, a, b)
    assert float(native[0]) == pytest.approx(float(python[0]), rel=1e-14)
    for n, p in zip(native[1], python[1], strict=True):
        assert n == pytest.approx(p, rel=1e-13)
    eps = 1e-6
    numeric = [(s_math(a + eps, b) - s_math(a - eps, b)) / (2 * eps),
               (s_math(a, b + eps) - s_math(a, b - eps)) / (2 * eps)]
    np.testing.assert_allclose(native[1], numeric, rtol=1e-7)


# ----- native kernels ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_kernel_of_the_new_ops_is_numpys(dtype):
    """The chain runs as one native kernel (value and gradient); it matches the unfused numpy
    road within the kernels' documented ulp bounds (tests/test_native.py checks each
    function alone over wide inputs)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 1.0, 5000).astype(dtype)
    y = rng.uniform(0.5, 2.0, 5000).astype(dtype)
    native_grad = pb.grad(pb.compile(c_chain), argnums=(0, 1))(x, y)
    python_grad = pb.grad(pb.compile(c_chain, native=False), argnums=(0, 1))(x, y)
    rtol = 1e-13 if dtype == np.float64 else 2e-6
    np.testing.assert_allclose(pb.compile(c_chain)(x, y), c_chain(x, y), rtol=rtol)
    for n, p in zip(native_grad, python_grad, strict=True):
        assert n.dtype == dtype
        np.testing.assert_allclose(n, p, rtol=rtol, atol=rtol)


# ----- cumprod's gradient at zeros -------------------------------------------------------------

def _cumprod_jacobian_exact(x):
    """d cumprod(x)_k / d x_i = prod_{j <= k, j != i} x_j (1-d), by the definition."""
    n = len(x)
    jac = np.zeros((n, n))
    for k in range(n):
        for i in range(k + 1):
            jac[k, i] = np.prod([x[j] for j in range(k + 1) if j != i])
    return jac


@pytest.mark.parametrize("zeros", [[], [2], [0], [1, 4], [2, 3], [0, 5]])
def test_cumprod_gradient_is_exact_at_zeros(zeros):
    x = np.array([0.7, -1.3, 0.4, 1.1, -0.8, 0.9])
    x[zeros] = 0.0
    u = np.random.default_rng(1).standard_normal(6)
    expected = _cumprod_jacobian_exact(x).T @ u
    _, pullback = pb.vjp(c_cumprod_flat, x)
    (grad,) = pullback(u)
    np.testing.assert_allclose(grad, expected, rtol=1e-13, atol=1e-15)
    xs = nd.array(x)
    xs.attach_grad()
    with ag.record():
        y = nd.cumprod(xs)
    y.backward(nd.array(u))
    np.testing.assert_allclose(xs.grad.asnumpy(), expected, rtol=1e-13, atol=1e-15)
    _, tangent = pb.jvp(c_cumprod_flat, (x,), (u,))
    np.testing.assert_allclose(tangent, _cumprod_jacobian_exact(x) @ u, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("zeros", [[2], [1, 4], [0, 5]])
def test_cumprod_second_derivative_at_zeros(zeros):
    from pullback.testing import check_grads

    x = np.array([[0.7, -1.3, 0.4, 1.1, -0.8, 0.9], [0.5, 0.6, -0.7, 0.8, 1.2, -0.4]])
    x[0, zeros] = 0.0
    check_grads(lambda a: nd.cumprod(a, axis=1), [x], order=2)


def test_cumprod_long_axis_with_a_zero_refuses_second_order_only():
    from pullback.runtime import primitives as P

    n = P.CUMPROD_TRIANGLE_MAX + 1
    x = np.full(n, 1.0)
    x[3] = 0.0
    xs = nd.array(x)
    xs.attach_grad()
    with ag.record():
        y = nd.sum(nd.cumprod(xs))
    y.backward()
    grad = xs.grad.asnumpy()   # d/dx_i sum_k prod_{j<=k} x_j, counted by hand (ones, a zero)
    np.testing.assert_array_equal(grad[:3], [3.0, 2.0, 1.0])
    assert grad[3] == n - 3 and np.all(grad[4:] == 0)
    with ag.record():
        y = nd.sum(nd.cumprod(xs))
    with pytest.raises(NotImplementedError, match="second derivative of cumprod"):
        ag.grad([y], [xs], create_graph=True)


# ----- what is refused --------------------------------------------------------------------------

def r_pad_mean(x):
    return np.pad(x, 1, mode="mean")


def r_einsum_sublists(a, b):
    return np.einsum(a, [0, 1], b, [1, 2])


def r_einsum_out_keyword(a, b):
    return np.einsum("ij,jk->ik", a, b, dtype=np.float32)


def r_cumsum_dtype(x):
    return np.cumsum(x, 0, np.float32)


def r_atleast_two(x):
    return np.atleast_2d(x, x)[0]


@pytest.mark.parametrize("fn, message", [
    (r_atleast_two, "takes 1 array operand"),
    (r_pad_mean, "pullback differentiates the modes"),
    (r_einsum_sublists, "subscripts from a string literal"),
    (r_einsum_out_keyword, "does not support the parameter 'dtype'"),
    (r_cumsum_dtype, "reads only axis by position"),
], ids=["atleast-two", "pad-mean", "einsum-sublists", "einsum-dtype", "cumsum-dtype"])
def test_unsupported_forms_are_compile_errors_at_the_line(fn, message):
    a = np.ones((2, 2))
    with pytest.raises(CompileError, match=message) as info:
        pb.grad(fn)(*([a] * fn.__code__.co_argcount))
    assert f"line {fn.__code__.co_firstlineno + 1}" in str(info.value)


def test_pad_refuses_other_modes_on_the_tape_too():
    x = nd.array(np.ones((2, 2)))
    x.attach_grad()
    with pytest.raises(ValueError, match="pullback differentiates mode="):
        with ag.record():
            nd.pad(x, 1, mode="maximum")


def test_einsum_subscripts_must_match_the_operands():
    with pytest.raises(ValueError, match="subscripts"):
        nd.einsum("ijk->i", nd.array(np.ones((2, 2))))


def test_sinc_slope_is_accurate_near_zero_and_exact_at_zero():
    """The series branch (|x| < 0.01): no cancellation near 0, and 0 with the right second
    derivative at 0 (-pi^2 / 3, the tape differentiating the rule)."""
    x = np.array([0.0, 1e-9, -3e-6, 2e-3, 0.0099, 0.0101, 0.5])
    (grad,) = pb.vjp(c_sinc, x)[1](np.ones_like(x))
    px = np.pi * x
    with np.errstate(all="ignore"):   # the exact slope, in float64 where it does not cancel
        direct = (np.cos(px) - np.sin(px) / px) / x
    series = x * (-np.pi ** 2 / 3 + np.pi ** 4 / 30 * x ** 2 - np.pi ** 6 / 840 * x ** 4
                  + np.pi ** 8 / 45360 * x ** 6)
    reference = np.where(np.abs(x) < 0.05, series, direct)
    np.testing.assert_allclose(grad, reference, rtol=1e-12, atol=0)
    xs = nd.array(np.array([0.0]))
    xs.attach_grad()
    with ag.record():
        y = nd.sinc(xs)
    (slope,) = ag.grad([y], [xs], create_graph=True)
    slope.backward()
    assert xs.grad.asnumpy()[0] == pytest.approx(-np.pi ** 2 / 3, rel=1e-14)


def k_keywords(a, x):
    return np.sinc(x=a) + np.sum(np.cumsum(a=x, axis=0)) * np.arctan2(a, 2.0)


def test_operands_passed_by_numpys_names_are_followed_on_both_roads():
    a, x = 0.3, np.array([0.5, -0.2, 0.9])
    grads = pb.grad(k_keywords, argnums=(0, 1))(a, x)
    eps = 1e-6
    assert grads[0] == pytest.approx((k_keywords(a + eps, x) - k_keywords(a - eps, x))
                                     / (2 * eps), rel=1e-7)
    np.testing.assert_allclose(grads[1], np.array([3.0, 2.0, 1.0]) * np.arctan2(a, 2.0),
                               rtol=1e-12)
    xs = nd.array(np.array([a]))
    xs.attach_grad()
    with ag.record():
        y = nd.sinc(x=xs)   # on the tape too: an NDArray operand by name is recorded
    y.backward()
    assert xs.grad.asnumpy()[0] == pytest.approx(-0.9020281301388888, rel=1e-12)
