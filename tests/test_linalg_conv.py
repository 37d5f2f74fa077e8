"""Linear algebra (det, slogdet, inv, solve, cholesky; MXNet's nd.linalg), nd.Convolution,
nd.Pooling and nd.topk: values against numpy or naive loop references, gradients compiled
= tape = central differences in float64, forward mode = central differences and the
transpose identity with the VJP."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.testing import check_grads

_RNG = np.random.default_rng(20261207)


@pytest.fixture(autouse=True)
def fixed_inputs(request):
    """Each test draws its inputs from its own seed (the same points however the tests
    are selected or ordered)."""
    global _RNG
    _RNG = np.random.default_rng(sum(request.node.name.encode()))


# ----- inputs ------------------------------------------------------------------------------

def well_conditioned(n, batch=()):
    """A general (non-symmetric) matrix whose singular values stay in [1, 4] or so."""
    q1 = np.linalg.qr(_RNG.standard_normal(batch + (n, n)))[0]
    q2 = np.linalg.qr(_RNG.standard_normal(batch + (n, n)))[0]
    return (q1 * _RNG.uniform(1.0, 3.0, batch + (1, n))) @ q2 + 0.1 * np.eye(n)


def spd(n, batch=()):
    """Q diag Q^T + n I: symmetric positive definite, well conditioned."""
    q = np.linalg.qr(_RNG.standard_normal(batch + (n, n)))[0]
    return (q * _RNG.uniform(1.0, 2.0, batch + (1, n))) @ np.swapaxes(q, -1, -2) + n * np.eye(n)


def normal(*shape):
    return _RNG.standard_normal(shape)


# ----- linear algebra: the same function spelled with numpy and with nd -------------------

def det_np(a):
    return np.linalg.det(a) * 2.0


def det_nd(a):
    return nd.linalg.det(a) * 2.0


def slogdet_np(a):
    sign, logdet = np.linalg.slogdet(a)
    return sign * logdet + logdet * logdet


def slogdet_nd(a):
    sign, logdet = nd.linalg.slogdet(a)
    return sign * logdet + logdet * logdet


def inv_np(a):
    return np.linalg.inv(a) * a


def inv_nd(a):
    return nd.linalg.inverse(a) * a


def solve_np(a, b):
    x = np.linalg.solve(a, b)
    return x * x


def solve_nd(a, b):
    x = nd.linalg_solve(a, b)
    return x * x


def cholesky_np(a):
    return np.linalg.cholesky(a) * 3.0


def cholesky_nd(a):
    return nd.linalg.potrf(a) * 3.0


def chained_np(a, b):
    """Several ops in a row, over a shared matrix."""
    inverse = np.linalg.inv(a)
    x = np.linalg.solve(a, b)
    return np.sum(inverse @ x) * np.linalg.det(a) + np.sum(np.linalg.cholesky(a @ a.T))


def chained_nd(a, b):
    inverse = nd.linalg.inverse(a)
    x = nd.linalg_solve(a, b)
    return (nd.sum(nd.linalg.gemm2(inverse, x)) * nd.linalg.det(a)
            + nd.sum(nd.linalg.potrf(nd.linalg.gemm2(a, a, transpose_b=True))))


LINALG = [
    ("det", det_np, det_nd, lambda: [well_conditioned(3)]),
    ("det-batched", det_np, det_nd, lambda: [well_conditioned(3, (2,))]),
    ("det-1x1", det_np, det_nd, lambda: [well_conditioned(1)]),
    ("slogdet", slogdet_np, slogdet_nd, lambda: [well_conditioned(4)]),
    ("slogdet-negative-det", slogdet_np, slogdet_nd,
     lambda: [well_conditioned(3) @ np.diag([-1.0, 1.0, 1.0])]),
    ("slogdet-batched", slogdet_np, slogdet_nd, lambda: [well_conditioned(3, (2, 2))]),
    ("inv", inv_np, inv_nd, lambda: [well_conditioned(3)]),
    ("inv-batched", inv_np, inv_nd, lambda: [well_conditioned(2, (3,))]),
    ("solve-vector", solve_np, solve_nd, lambda: [well_conditioned(3), normal(3)]),
    ("solve-matrix", solve_np, solve_nd, lambda: [well_conditioned(3), normal(3, 2)]),
    ("solve-batched-a-vector-b", solve_np, solve_nd,
     lambda: [well_conditioned(3, (2,)), normal(3)]),
    ("solve-batched-both", solve_np, solve_nd,
     lambda: [well_conditioned(3, (2,)), normal(2, 3, 4)]),
    ("solve-broadcast-b", solve_np, solve_nd, lambda: [well_conditioned(3), normal(2, 3, 2)]),
    ("cholesky", cholesky_np, cholesky_nd, lambda: [spd(3)]),
    ("cholesky-batched", cholesky_np, cholesky_nd, lambda: [spd(4, (2,))]),
    ("chained", chained_np, chained_nd, lambda: [well_conditioned(3), normal(3, 2)]),
]
LINALG_IDS = [name for name, *_ in LINALG]


def _flat(value) -> np.ndarray:
    if isinstance(value, (tuple, list)):
        return np.concatenate([_flat(v) for v in value])
    if isinstance(value, pb.NDArray):
        value = value.asnumpy()
    return np.asarray(value, dtype=np.float64).reshape(-1)


def _weights(fn, arrays):
    out = _flat(fn(*arrays))
    return np.random.default_rng(out.size).uniform(0.5, 1.5, out.size)


def _central_gradient(fn, arrays, weights, eps=1e-6):
    """Central differences of sum(weights * fn(arrays)) with respect to every entry."""
    grads = []
    for i, a in enumerate(arrays):
        g = np.zeros_like(a)
        for index in np.ndindex(a.shape):
            up = [x.copy() for x in arrays]
            down = [x.copy() for x in arrays]
            up[i][index] += eps
            down[i][index] -= eps
            g[index] = (weights @ _flat(fn(*up)) - weights @ _flat(fn(*down))) / (2 * eps)
        grads.append(g)
    return grads


def _tape_gradient(fn, arrays, weights):
    """The tape's gradient of sum(weights * fn(arrays))."""
    xs = [nd.array(a) for a in arrays]
    for x in xs:
        x.attach_grad()
    with ag.record():
        out = fn(*xs)
    out.backward(nd.array(weights.reshape(out.shape)))
    return [x.grad.asnumpy() for x in xs]


def _head(value, weights, wrap):
    """``weights`` as the head gradient of ``value`` (its shape and kind)."""
    if isinstance(value, pb.NDArray):
        return nd.array(weights.reshape(value.shape))
    return weights.reshape(np.shape(value)) if np.ndim(value) else float(weights[0])


def _compiled_gradient(fn, arrays, weights, wrap):
    """Compiled code's gradient of sum(weights * fn(arrays)) (``pb.vjp``)."""
    value, pullback = pb.vjp(fn, *[wrap(a) for a in arrays])
    grads = pullback(_head(value, weights, wrap))
    grads = grads if isinstance(grads, tuple) else (grads,)
    return [_flat(g).reshape(a.shape) for g, a in zip(grads, arrays, strict=True)]


@pytest.mark.parametrize("name, np_fn, nd_fn, inputs", LINALG, ids=LINALG_IDS)
def test_linalg_compiled_equals_tape_equals_central_differences(name, np_fn, nd_fn, inputs):
    arrays = inputs()
    weights = _weights(np_fn, arrays)
    numeric = _central_gradient(np_fn, arrays, weights)
    compiled_np = _compiled_gradient(np_fn, arrays, weights, lambda a: a)
    compiled_nd = _compiled_gradient(nd_fn, arrays, weights, nd.array)
    tape = _tape_gradient(nd_fn, arrays, weights)
    for n, c1, c2, t in zip(numeric, compiled_np, compiled_nd, tape, strict=True):
        np.testing.assert_allclose(c1, n, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c2, c1, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(t, c1, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name, np_fn, nd_fn, inputs", LINALG, ids=LINALG_IDS)
def test_linalg_values_are_numpys(name, np_fn, nd_fn, inputs):
    arrays = inputs()
    expected = _flat(np_fn(*arrays))
    np.testing.assert_allclose(_flat(pb.compile(np_fn)(*arrays)), expected, rtol=1e-12)
    np.testing.assert_allclose(_flat(nd_fn(*[nd.array(a) for a in arrays])), expected,
                               rtol=1e-12)


@pytest.mark.parametrize("name, np_fn, nd_fn, inputs", LINALG, ids=LINALG_IDS)
def test_linalg_jvp_matches_central_differences_and_vjp(name, np_fn, nd_fn, inputs):
    arrays = inputs()
    directions = [normal(*a.shape) for a in arrays]
    eps = 1e-6
    up = [a + eps * d for a, d in zip(arrays, directions, strict=True)]
    down = [a - eps * d for a, d in zip(arrays, directions, strict=True)]
    numeric = (_flat(np_fn(*up)) - _flat(np_fn(*down))) / (2 * eps)
    for fn, wrap in ((np_fn, lambda a: a), (nd_fn, nd.array)):
        out, out_dot = pb.jvp(fn, [wrap(a) for a in arrays], [wrap(d) for d in directions])
        np.testing.assert_allclose(_flat(out_dot), numeric, rtol=1e-5, atol=1e-7)
        u = np.random.default_rng(7).uniform(0.5, 1.5, numeric.size)
        grads = _compiled_gradient(fn, arrays, u, wrap)
        left = float(u @ _flat(out_dot))
        right = float(sum(_flat(g) @ _flat(d) for g, d in zip(grads, directions, strict=True)))
        assert abs(left - right) <= 1e-9 * max(1.0, abs(left))


SECOND_ORDER = [c for c in LINALG if c[0] in ("det", "slogdet", "inv", "solve-matrix",
                                               "cholesky", "chained")]


@pytest.mark.parametrize("name, np_fn, nd_fn, inputs", SECOND_ORDER,
                         ids=[c[0] for c in SECOND_ORDER])
def test_linalg_second_order_on_the_tape(name, np_fn, nd_fn, inputs):
    check_grads(lambda *xs: nd.square(nd_fn(*xs)), inputs(), order=2)


def test_linalg_compiled_call_under_record_fills_the_tape_gradients():
    arrays = [well_conditioned(3), normal(3, 2)]
    weights = _weights(chained_np, arrays)
    tape = _tape_gradient(chained_nd, arrays, weights)
    xs = [nd.array(a) for a in arrays]
    for x in xs:
        x.attach_grad()
    compiled = pb.compile(chained_nd)
    with ag.record():
        out = compiled(*xs)
    out.backward(nd.array(weights.reshape(out.shape)))
    for x, t in zip(xs, tape, strict=True):
        np.testing.assert_allclose(x.grad.asnumpy(), t, rtol=1e-10)


def test_det_gradient_at_a_singular_matrix_is_the_cofactor_matrix():
    """det's gradient is the cofactor matrix (the adjugate transposed), computed from the
    SVD: finite and exact at singular matrices (here rank 2 of 3); so is its second
    derivative (the adjugate's rules from the SVD too), on the tape and forward-over-reverse."""
    a = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.5], [1.0, 0.0, 1.0]])
    a[1] = 2 * a[0]   # rank 2
    cofactors = np.array([[np.linalg.det(np.delete(np.delete(a, i, 0), j, 1)) * (-1) ** (i + j)
                           for j in range(3)] for i in range(3)])
    assert np.abs(cofactors).max() > 1.0   # rank n-1: a nonzero gradient
    grad = pb.grad(det_np)(a) / 2.0
    np.testing.assert_allclose(grad, cofactors, atol=1e-12)
    np.testing.assert_allclose(_tape_gradient(det_nd, [a], np.ones(1))[0] / 2.0, cofactors,
                               atol=1e-12)
    np.testing.assert_allclose(_central_gradient(det_np, [a], np.ones(1))[0] / 2.0, cofactors,
                               atol=1e-7)
    rank_one = np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0])   # rank n-2: the gradient is 0
    np.testing.assert_allclose(pb.grad(det_np)(rank_one), 0.0, atol=1e-12)
    check_grads(lambda x: nd.square(det_nd(x)), [a], order=2)
    check_grads(lambda x: nd.square(det_nd(x)), [rank_one], order=2)
    for point in (a, rank_one):
        v = np.arange(9.0).reshape(3, 3) / 10.0 - 0.3
        h = 1e-5
        central = (pb.grad(det_np)(point + h * v) - pb.grad(det_np)(point - h * v)) / (2 * h)
        np.testing.assert_allclose(pb.hvp(det_np, (point,), (v,))[1], central, atol=1e-6)


def test_cholesky_gradient_reads_the_lower_triangle_as_numpy_does():
    """numpy's cholesky reads only the lower triangle: the gradient of the upper one is 0,
    and a symmetric direction gets the derivative of the symmetric function."""
    a = spd(3)
    garbage = a + np.triu(normal(3, 3), 1)
    np.testing.assert_array_equal(np.linalg.cholesky(garbage), np.linalg.cholesky(a))
    grad = pb.grad(lambda m: np.sum(np.linalg.cholesky(m) ** 2 * np.arange(9.0).reshape(3, 3)))(a)
    np.testing.assert_array_equal(np.triu(grad, 1), 0.0)


def test_slogdet_sign_and_gemm2_sumlogdiag_values():
    a = well_conditioned(3, (2,)) @ np.diag([-1.0, 1.0, 1.0])
    sign, logdet = nd.linalg.slogdet(nd.array(a))
    expected_sign, expected_logdet = np.linalg.slogdet(a)
    np.testing.assert_array_equal(sign.asnumpy(), expected_sign)
    np.testing.assert_allclose(logdet.asnumpy(), expected_logdet, rtol=1e-12)
    x, y = normal(2, 3, 4), normal(2, 5, 4)
    np.testing.assert_allclose(
        nd.linalg.gemm2(nd.array(x), nd.array(y), transpose_b=True, alpha=0.5).asnumpy(),
        0.5 * x @ np.swapaxes(y, -1, -2), rtol=1e-12)
    m = spd(3, (2,))
    np.testing.assert_allclose(nd.linalg.sumlogdiag(nd.array(m)).asnumpy(),
                               np.log(np.diagonal(m, axis1=-2, axis2=-1)).sum(-1), rtol=1e-12)
    for fn, args in ((lambda p, q: nd.linalg.gemm2(p, q, transpose_a=True, alpha=2.0),
                      [normal(2, 4, 3), normal(2, 4, 2)]),
                     (nd.linalg.sumlogdiag, [spd(3, (2,))])):
        check_grads(fn, args, order=2)


@pytest.mark.parametrize("transpose, rightside, lower",
                         list(itertools.product([False, True], repeat=3)))
def test_trsm_solves_with_the_triangle_and_its_gradients_agree(transpose, rightside, lower):
    """MXNet's trsm: op(T) X = alpha B (or X op(T) = alpha B), T the triangle of A it
    reads; compiled = tape = central differences (the other triangle's gradient is 0)."""
    a = well_conditioned(3, (2,)) + 2 * np.eye(3)
    b = normal(2, 4, 3) if rightside else normal(2, 3, 4)

    def fn(p, q):
        return nd.linalg.trsm(p, q, transpose=transpose, rightside=rightside, lower=lower,
                              alpha=1.5)
    x = fn(nd.array(a), nd.array(b)).asnumpy()
    t = np.tril(a) if lower else np.triu(a)
    m = np.swapaxes(t, -1, -2) if transpose else t
    np.testing.assert_allclose(x @ m if rightside else m @ x, 1.5 * b, atol=1e-12)
    weights = _weights(lambda *v: fn(*[nd.array(u) for u in v]), [a, b])
    numeric = _central_gradient(lambda *v: fn(*[nd.array(u) for u in v]).asnumpy(), [a, b],
                                weights)
    tape = _tape_gradient(fn, [a, b], weights)
    compiled = _compiled_gradient(fn, [a, b], weights, nd.array)
    for n, t_, c in zip(numeric, tape, compiled, strict=True):
        np.testing.assert_allclose(t_, n, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c, t_, rtol=1e-12, atol=1e-12)
    assert not np.any((np.triu(tape[0], 1) if lower else np.tril(tape[0], -1)))


def potri_twice(f):
    return nd.linalg.potri(f) * 2.0


def test_potri_inverts_from_the_cholesky_factor():
    a = spd(3, (2,))
    factor = np.linalg.cholesky(a)
    np.testing.assert_allclose(nd.linalg.potri(nd.array(factor)).asnumpy(), np.linalg.inv(a),
                               rtol=1e-10)
    check_grads(nd.linalg.potri, [factor], order=2)
    weights = _weights(lambda f: potri_twice(nd.array(f)), [factor])
    np.testing.assert_allclose(_compiled_gradient(potri_twice, [factor], weights, nd.array)[0],
                               _tape_gradient(potri_twice, [factor], weights)[0], rtol=1e-12)


def test_blas_like_routines_follow_mxnet_examples():
    a = nd.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_array_equal(nd.linalg.trmm(a, nd.ones((2, 3)), alpha=2.0).asnumpy(),
                                  [[2.0, 2.0, 2.0], [4.0, 4.0, 4.0]])
    np.testing.assert_array_equal(nd.linalg.syrk(nd.array([[1.0, 0.0], [0.0, 1.0]]),
                                                 alpha=2.0).asnumpy(), 2 * np.eye(2))
    m = nd.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(nd.linalg.extractdiag(m).asnumpy(), [1.0, 4.0])
    np.testing.assert_array_equal(nd.linalg.extractdiag(m, offset=1).asnumpy(), [2.0])
    np.testing.assert_array_equal(nd.linalg.makediag(nd.array([1.0, 2.0]), offset=1).asnumpy(),
                                  [[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    x, y, z = normal(2, 4, 3), normal(2, 5, 4), normal(2, 3, 5)
    np.testing.assert_allclose(
        nd.linalg.gemm(nd.array(x), nd.array(y), nd.array(z), transpose_a=True,
                       transpose_b=True, alpha=2.0, beta=0.5).asnumpy(),
        2.0 * np.swapaxes(x, -1, -2) @ np.swapaxes(y, -1, -2) + 0.5 * z, rtol=1e-12)


def gemm_call(a, b, c):
    return nd.linalg.gemm(a, b, c, transpose_b=True, alpha=1.5, beta=-0.5)


def syrk_call(a):
    return nd.linalg.syrk(a, alpha=0.5) + nd.linalg.syrk(a, transpose=True)[..., :3, :3]


def trmm_call(a, b):
    return nd.linalg.trmm(a, b, transpose=True, lower=False, alpha=2.0)


def diagonal_calls(a):
    return nd.linalg.makediag(nd.linalg.extractdiag(a, offset=-1), offset=1) * a[..., :3, :3]


@pytest.mark.parametrize("fn, shapes", [
    (gemm_call, [(2, 3, 4), (2, 5, 4), (2, 3, 5)]), (syrk_call, [(2, 3, 4)]),
    (trmm_call, [(2, 3, 3), (2, 3, 4)]), (diagonal_calls, [(2, 3, 3)])],
    ids=["gemm", "syrk", "trmm", "extractdiag-makediag"])
def test_blas_like_routines_compiled_equal_tape_equal_central_differences(fn, shapes):
    arrays = [normal(*shape) for shape in shapes]
    weights = _weights(lambda *v: fn(*[nd.array(u) for u in v]), arrays)
    numeric = _central_gradient(lambda *v: fn(*[nd.array(u) for u in v]).asnumpy(), arrays,
                                weights)
    tape = _tape_gradient(fn, arrays, weights)
    compiled = _compiled_gradient(fn, arrays, weights, nd.array)
    for n, t, c in zip(numeric, tape, compiled, strict=True):
        np.testing.assert_allclose(t, n, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c, t, rtol=1e-12, atol=1e-12)


# ----- Convolution and Pooling against naive loops ----------------------------------------

def naive_convolution(x, w, b, stride, pad, dilate, groups):
    n, c, h, width = x.shape
    f, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - dilate[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (width + 2 * pad[1] - dilate[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, f, oh, ow))
    per_group = f // groups
    for i, o, p, q in itertools.product(range(n), range(f), range(oh), range(ow)):
        g = o // per_group
        total = 0.0 if b is None else b[o]
        for ch, u, v in itertools.product(range(cg), range(kh), range(kw)):
            total += (xp[i, g * cg + ch, p * stride[0] + u * dilate[0],
                         q * stride[1] + v * dilate[1]] * w[o, ch, u, v])
        y[i, o, p, q] = total
    return y


def naive_pooling(x, kernel, stride, pad, pool_type, convention, count_include_pad):
    """MXNet's definition, element by element: windows clipped to the input; avg divides
    by the window clipped to the padded input (or to the input)."""
    n, c, h, w = x.shape
    rounding = np.floor if convention == "valid" else np.ceil
    oh = int(rounding((h + 2 * pad[0] - kernel[0]) / stride[0])) + 1
    ow = int(rounding((w + 2 * pad[1] - kernel[1]) / stride[1])) + 1
    y = np.zeros((n, c, oh, ow))
    for i, ch, p, q in itertools.product(range(n), range(c), range(oh), range(ow)):
        top, left = p * stride[0] - pad[0], q * stride[1] - pad[1]
        bottom, right = min(top + kernel[0], h + pad[0]), min(left + kernel[1], w + pad[1])
        size = (bottom - top) * (right - left)
        window = x[i, ch, max(top, 0):min(bottom, h), max(left, 0):min(right, w)]
        if not count_include_pad:
            size = window.size
        y[i, ch, p, q] = {"max": window.max() if window.size else 0.0, "sum": window.sum(),
                          "avg": window.sum() / size}[pool_type]
    return y


# (stride, pad, dilate, num_group) with 6 input channels and 6 filters
CONV_GEOMETRIES = [((1, 1), (0, 0), (1, 1), 1), ((2, 1), (1, 2), (1, 1), 1),
                   ((1, 2), (1, 0), (2, 1), 2), ((2, 2), (2, 2), (2, 2), 3),
                   ((1, 1), (1, 1), (1, 1), 6)]


def _conv_fn(stride, pad, dilate, groups):
    def conv(x, w, b):
        return nd.Convolution(data=x, weight=w, bias=b, kernel=(3, 2), stride=stride, pad=pad,
                              dilate=dilate, num_filter=6, num_group=groups)
    return conv


@pytest.mark.parametrize("stride, pad, dilate, groups", CONV_GEOMETRIES)
def test_convolution_forward_matches_loops(stride, pad, dilate, groups):
    x, w, b = normal(2, 6, 7, 8), normal(6, 6 // groups, 3, 2), normal(6)
    y = _conv_fn(stride, pad, dilate, groups)(nd.array(x), nd.array(w), nd.array(b))
    np.testing.assert_allclose(y.asnumpy(), naive_convolution(x, w, b, stride, pad, dilate,
                                                              groups), rtol=1e-12, atol=1e-12)


def conv_net(x, w, b):
    h = nd.Convolution(data=x, weight=w, bias=b, kernel=(3, 2), stride=(2, 1), pad=(1, 1),
                       dilate=(1, 2), num_filter=6, num_group=2)
    return nd.tanh(h) * h


@pytest.mark.parametrize("stride, pad, dilate, groups", CONV_GEOMETRIES)
def test_convolution_gradients_compiled_equal_tape_equal_central_differences(
        stride, pad, dilate, groups):
    arrays = [normal(2, 6, 6, 5), normal(6, 6 // groups, 3, 2), normal(6)]
    fn = _conv_fn(stride, pad, dilate, groups)
    check_grads(fn, arrays, order=1)
    weights = _weights(lambda *xs: fn(*[nd.array(a) for a in xs]), arrays)
    tape = _tape_gradient(fn, arrays, weights)
    compiled = _compiled_gradient(fn, arrays, weights, nd.array)
    for t, c in zip(tape, compiled, strict=True):
        np.testing.assert_allclose(c, t, rtol=1e-10, atol=1e-12)


def test_convolution_second_order_and_jvp():
    arrays = [normal(1, 6, 5, 6), normal(6, 3, 3, 2), normal(6)]
    check_grads(conv_net, arrays, order=2)
    directions = [normal(*a.shape) for a in arrays]
    eps = 1e-6
    numeric = (conv_net(*[nd.array(a + eps * d) for a, d in zip(arrays, directions)]).asnumpy()
               - conv_net(*[nd.array(a - eps * d) for a, d in zip(arrays, directions)]).asnumpy()
               ) / (2 * eps)
    _, tangent = pb.jvp(conv_net, [nd.array(a) for a in arrays],
                        [nd.array(d) for d in directions])
    np.testing.assert_allclose(tangent.asnumpy(), numeric, rtol=1e-5, atol=1e-7)


def test_convolution_without_bias_and_positional_parameters():
    x, w = normal(2, 2, 5, 5), normal(3, 2, 2, 2)
    expected = naive_convolution(x, w, None, (1, 1), (0, 0), (1, 1), 1)
    for fn in (lambda p, q: nd.Convolution(p, q, kernel=(2, 2), num_filter=3, no_bias=True),
               lambda p, q: nd.Convolution(p, q, None, (2, 2), num_filter=3)):
        np.testing.assert_allclose(fn(nd.array(x), nd.array(w)).asnumpy(), expected,
                                   rtol=1e-12)
        check_grads(fn, [x, w], order=1)


def test_convolution_refuses_inconsistent_parameters():
    x, w = nd.array(normal(1, 2, 5, 5)), nd.array(normal(3, 2, 2, 2))
    with pytest.raises(ValueError, match="num_filter"):
        nd.Convolution(x, w, kernel=(2, 2), num_filter=4, no_bias=True)
    with pytest.raises(ValueError, match="kernel"):
        nd.Convolution(x, w, kernel=(3, 3), num_filter=3, no_bias=True)
    with pytest.raises(ValueError, match="NCHW"):
        nd.Convolution(x, w, kernel=(2, 2), num_filter=3, no_bias=True, layout="NHWC")


# (kernel, stride, pad, convention, count_include_pad)
POOL_GEOMETRIES = [((2, 2), (2, 2), (0, 0), "valid", True),
                   ((3, 3), (2, 2), (1, 1), "full", True),
                   ((3, 2), (1, 2), (1, 1), "valid", False),
                   ((3, 3), (2, 2), (1, 1), "full", False),
                   ((2, 3), None, None, "valid", True)]
POOL_CASES = [(t, *g) for t in ("max", "avg", "sum") for g in POOL_GEOMETRIES]


def _pool_fn(pool_type, kernel, stride, pad, convention, include):
    def pool(x):
        return nd.Pooling(data=x, kernel=kernel, pool_type=pool_type, stride=stride, pad=pad,
                          pooling_convention=convention, count_include_pad=include)
    return pool


@pytest.mark.parametrize("pool_type, kernel, stride, pad, convention, include", POOL_CASES)
def test_pooling_forward_matches_loops(pool_type, kernel, stride, pad, convention, include):
    x = normal(2, 3, 7, 6)
    y = _pool_fn(pool_type, kernel, stride, pad, convention, include)(nd.array(x))
    expected = naive_pooling(x, kernel, stride or (1, 1), pad or (0, 0), pool_type, convention,
                             include)
    np.testing.assert_allclose(y.asnumpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool_type, kernel, stride, pad, convention, include", POOL_CASES)
def test_pooling_gradients_compiled_equal_tape_equal_central_differences(
        pool_type, kernel, stride, pad, convention, include):
    x = normal(2, 3, 7, 6)   # continuous values: no ties within a window
    fn = _pool_fn(pool_type, kernel, stride, pad, convention, include)
    check_grads(fn, [x], order=2)
    weights = _weights(lambda a: fn(nd.array(a)), [x])
    tape = _tape_gradient(fn, [x], weights)[0]
    compiled = _compiled_gradient(fn, [x], weights, nd.array)[0]
    np.testing.assert_allclose(compiled, tape, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tape, _central_gradient(lambda a: fn(nd.array(a)).asnumpy(),
                                                       [x], weights)[0], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("pool_type", ["max", "avg", "sum"])
def test_global_pooling_and_jvp(pool_type):
    x = normal(2, 3, 5, 4)
    fn = lambda a: nd.Pooling(a, kernel=(1, 1), pool_type=pool_type, global_pool=True)  # noqa
    np.testing.assert_allclose(fn(nd.array(x)).asnumpy(),
                               naive_pooling(x, (5, 4), (1, 1), (0, 0), pool_type, "valid", True),
                               rtol=1e-12)
    direction = normal(*x.shape)
    eps = 1e-6
    numeric = (fn(nd.array(x + eps * direction)).asnumpy()
               - fn(nd.array(x - eps * direction)).asnumpy()) / (2 * eps)
    _, tangent = pb.jvp(fn, [nd.array(x)], [nd.array(direction)])
    np.testing.assert_allclose(tangent.asnumpy(), numeric, rtol=1e-6, atol=1e-8)


def test_max_pooling_ties_send_the_gradient_to_the_first_maximum():
    """MXNet's backward gives each window's gradient to its first maximum in row-major
    order (its CPU loop stops at the first element equal to the output)."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 0] = x[0, 0, 1, 1] = 5.0   # a tie in the first window (row 1)
    x[0, 0, 0, 3] = x[0, 0, 1, 2] = 7.0   # a tie in the second window (rows 0 and 1)
    fn = _pool_fn("max", (2, 2), (2, 2), None, "valid", True)
    expected = np.zeros_like(x)
    expected[0, 0, 1, 0] = expected[0, 0, 0, 3] = 1.0
    expected[0, 0, 2, 2] = expected[0, 0, 2, 0] = 1.0   # all-zero windows: their first element
    tape = _tape_gradient(fn, [x], np.ones(4))[0]
    np.testing.assert_array_equal(tape, expected)
    compiled = pb.grad(lambda a: nd.sum(fn(a)))(nd.array(x))
    np.testing.assert_array_equal(compiled.asnumpy(), expected)


def test_pooling_refuses_unsupported_modes():
    x = nd.array(normal(1, 1, 4, 4))
    with pytest.raises(ValueError, match="lp pooling"):
        nd.Pooling(x, kernel=(2, 2), pool_type="lp")
    with pytest.raises(ValueError, match="kernel is required"):
        nd.Pooling(x)


# ----- a small CNN, compiled as written (keywords, globals) -------------------------------

W1 = nd.array(_RNG.standard_normal((4, 1, 3, 3)) * 0.5)
B1 = nd.array(_RNG.standard_normal(4) * 0.1)
W2 = nd.array(_RNG.standard_normal((8, 64)) * 0.1)


def lenet_like(X):
    h = nd.relu(nd.Convolution(data=X, weight=W1, bias=B1, kernel=(3, 3), num_filter=4,
                               pad=(1, 1)))
    h = nd.Pooling(data=h, pool_type="max", kernel=(2, 2), stride=(2, 2))
    h = nd.flatten(h)
    return nd.dot(h, W2.T)


def test_cnn_with_global_parameters_compiled_equals_tape():
    x = nd.array(_RNG.standard_normal((3, 1, 8, 8)))
    grads = {}
    for road, fn in (("tape", lenet_like), ("compiled", pb.compile(lenet_like))):
        for p in (W1, B1, W2):
            p.attach_grad()
        with ag.record():
            loss = nd.sum(nd.square(fn(x)))
        loss.backward()
        grads[road] = [p.grad.asnumpy().copy() for p in (W1, B1, W2)]
    for t, c in zip(grads["tape"], grads["compiled"], strict=True):
        assert np.abs(t).max() > 0
        np.testing.assert_allclose(c, t, rtol=1e-5, atol=1e-6)


# ----- topk and batch_dot -----------------------------------------------------------------

def test_topk_follows_mxnet_examples():
    x = nd.array([[0.3, 0.2, 0.4], [0.1, 0.3, 0.2]])
    np.testing.assert_array_equal(nd.topk(x).asnumpy(), [[2.0], [1.0]])
    assert nd.topk(x).dtype == np.float32
    np.testing.assert_allclose(nd.topk(x, ret_typ="value", k=2).asnumpy(),
                               [[0.4, 0.3], [0.3, 0.2]])
    np.testing.assert_allclose(nd.topk(x, ret_typ="value", k=2, is_ascend=1).asnumpy(),
                               [[0.2, 0.3], [0.1, 0.2]])
    np.testing.assert_allclose(nd.topk(x, axis=0, ret_typ="value", k=2).asnumpy(),
                               [[0.3, 0.3, 0.4], [0.1, 0.2, 0.2]])
    values, indices = nd.topk(x, ret_typ="both", k=2)
    np.testing.assert_allclose(values.asnumpy(), [[0.4, 0.3], [0.3, 0.2]])
    np.testing.assert_array_equal(indices.asnumpy(), [[2.0, 0.0], [1.0, 2.0]])
    np.testing.assert_array_equal(nd.topk(x, ret_typ="mask", k=2).asnumpy(),
                                  [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(nd.topk(x, axis=None, k=3).asnumpy(), [2.0, 0.0, 4.0])
    assert nd.topk(x, dtype="int64").dtype == np.int64
    np.testing.assert_array_equal(nd.topk(x, k=0, ret_typ="indices").asnumpy(),
                                  [[2.0, 0.0, 1.0], [1.0, 2.0, 0.0]])


def test_topk_ties_take_the_earlier_position_first():
    x = nd.array([1.0, 3.0, 3.0, 2.0, 3.0])
    np.testing.assert_array_equal(nd.topk(x, k=3).asnumpy(), [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(nd.topk(x, k=2, is_ascend=True).asnumpy(), [0.0, 3.0])


@pytest.mark.parametrize("k, axis, ascending", [(2, -1, False), (2, 0, False), (3, None, False),
                                                (2, -1, True)])
def test_topk_values_gradient_compiled_equals_tape_equals_central_differences(k, axis,
                                                                              ascending):
    x = normal(3, 4)

    def fn(a):
        return nd.topk(a, ret_typ="value", k=k, axis=axis, is_ascend=ascending)
    check_grads(fn, [x], order=2)
    weights = _weights(lambda a: fn(nd.array(a)), [x])
    tape = _tape_gradient(fn, [x], weights)[0]
    np.testing.assert_array_equal(_compiled_gradient(fn, [x], weights, nd.array)[0], tape)


def test_topk_indices_and_mask_carry_a_zero_gradient():
    """d(mask * a)/da is the mask itself; d(sum(indices) + a)/da is one."""
    x = normal(3, 4)
    grad = _tape_gradient(lambda a: nd.sum(nd.topk(a, ret_typ="indices", k=2)) + a, [x],
                          np.ones(x.size))[0]
    np.testing.assert_array_equal(grad, np.ones_like(x))
    mask = nd.topk(nd.array(x), ret_typ="mask", k=2).asnumpy()
    grad = _tape_gradient(lambda a: nd.topk(a, ret_typ="mask", k=2) * a, [x], np.ones(x.size))[0]
    np.testing.assert_array_equal(grad, mask)


def both_topk(a):
    values, indices = nd.topk(a, ret_typ="both", k=2)
    return values * values + indices


def test_topk_both_in_compiled_code():
    x = normal(3, 4)
    weights = _weights(lambda a: both_topk(nd.array(a)), [x])
    tape = _tape_gradient(both_topk, [x], weights)[0]
    compiled = _compiled_gradient(both_topk, [x], weights, nd.array)[0]
    np.testing.assert_allclose(compiled, tape, rtol=1e-12)
    np.testing.assert_allclose(pb.compile(both_topk)(nd.array(x)).asnumpy(),
                               both_topk(nd.array(x)).asnumpy())


@pytest.mark.parametrize("transpose_a, transpose_b",
                         list(itertools.product([False, True], repeat=2)))
def test_batch_dot_transposes_compiled_equal_tape(transpose_a, transpose_b):
    x = normal(2, 4, 3) if transpose_a else normal(2, 3, 4)
    y = normal(2, 5, 4) if transpose_b else normal(2, 4, 5)

    def fn(p, q):
        return nd.batch_dot(p, q, transpose_a=transpose_a, transpose_b=transpose_b)
    ref = np.matmul(np.swapaxes(x, 1, 2) if transpose_a else x,
                    np.swapaxes(y, 1, 2) if transpose_b else y)
    np.testing.assert_allclose(fn(nd.array(x), nd.array(y)).asnumpy(), ref, rtol=1e-12)
    weights = _weights(lambda *a: fn(*[nd.array(v) for v in a]), [x, y])
    tape = _tape_gradient(fn, [x, y], weights)
    compiled = _compiled_gradient(fn, [x, y], weights, nd.array)
    for t, c in zip(tape, compiled, strict=True):
        np.testing.assert_allclose(c, t, rtol=1e-12)
    check_grads(fn, [x, y], order=1)


def cholesky_upper(a):
    return np.linalg.cholesky(a, upper=True)


def slogdet_pair(a):
    return np.linalg.slogdet(a)


def test_unsupported_numpy_linalg_parameters_are_refused():
    with pytest.raises(pb.CompileError, match="upper"):
        pb.grad(cholesky_upper)(spd(3))


def test_slogdet_result_in_compiled_code_is_sign_and_logdet_stacked():
    """A compiled slogdet is one array (sign, log|det|) stacked on a new first axis
    (documented): unpacking and indexing it read what numpy's pair holds."""
    a = well_conditioned(3, (2,))
    sign, logdet = np.linalg.slogdet(a)
    np.testing.assert_allclose(pb.compile(slogdet_pair)(a), np.stack([sign, logdet]))


def logdet_only(a):
    return np.linalg.slogdet(a)[1]


def test_singular_matrices_give_numpys_values_and_raise_where_the_gradient_is_infinite():
    singular = np.array([[1.0, 2.0], [2.0, 4.0]])
    sign, logdet = nd.linalg.slogdet(nd.array(singular))
    assert sign.asnumpy()[0] == 0.0 and logdet.asnumpy()[0] == -np.inf
    with pytest.raises(np.linalg.LinAlgError):
        pb.grad(logdet_only)(singular)
    with pytest.raises(np.linalg.LinAlgError):
        pb.grad(inv_np)(singular)


def det_times_inverse(a):
    return np.linalg.det(a) * np.linalg.inv(a)


def conv_then_avg_pool(x, w):
    h = nd.Convolution(x, w, kernel=(2, 2), num_filter=2, no_bias=True)
    return nd.Pooling(h, kernel=(2, 2), pool_type="avg")


def test_jacfwd_equals_jacrev_through_linalg_and_convolution():
    """Batched forward mode (one table rule per direction) against reverse mode."""
    a = well_conditioned(3)
    np.testing.assert_allclose(pb.jacfwd(det_times_inverse)(a),
                               pb.jacrev(det_times_inverse)(a), rtol=1e-10, atol=1e-12)
    x, w = nd.array(normal(1, 1, 5, 5)), nd.array(normal(2, 1, 2, 2))
    forward = pb.jacfwd(conv_then_avg_pool, argnums=1)(x, w)
    reverse = pb.jacrev(conv_then_avg_pool, argnums=1)(x, w)
    np.testing.assert_allclose(_flat(forward), _flat(reverse), rtol=1e-10, atol=1e-12)
    assert np.abs(_flat(forward)).max() > 0


def test_float32_values_and_gradients_stay_float32():
    a = well_conditioned(3).astype(np.float32)
    s = spd(3).astype(np.float32)
    rhs = normal(3, 2).astype(np.float32)
    images = normal(1, 2, 4, 4).astype(np.float32)
    cases = [
        (nd.linalg.det, [a]), (lambda m: nd.linalg.slogdet(m)[1], [a]),
        (nd.linalg.inverse, [a]), (nd.linalg_solve, [a, rhs]), (nd.linalg.potrf, [s]),
        (nd.linalg.potri, [a]), (lambda m, b: nd.linalg.trsm(m, b, alpha=2.0), [a, rhs]),
        (nd.linalg.sumlogdiag, [s]),
        (lambda x, w, b: nd.Convolution(x, w, b, kernel=(2, 2), num_filter=2),
         [images, normal(2, 2, 2, 2).astype(np.float32), normal(2).astype(np.float32)]),
        (lambda x: nd.Pooling(x, kernel=(2, 2), pool_type="avg"), [images]),
        (lambda x: nd.Pooling(x, kernel=(2, 2)), [images]),
        (lambda x: nd.topk(x, ret_typ="value", k=2), [normal(3, 4).astype(np.float32)]),
    ]
    for fn, arrays in cases:
        xs = [nd.array(v) for v in arrays]
        for x in xs:
            x.attach_grad()
        with ag.record():
            out = fn(*xs)
        out.backward()
        assert out.dtype == np.float32
        assert all(x.grad.dtype == np.float32 for x in xs)


def test_full_convention_window_of_padding_only_holds_the_lowest_value():
    """Pooling 4 rows with kernel 2, stride 3, pad 1, 'full': the last window of each axis
    (rows 5-6) lies past the padded input; max pooling gives it the dtype's lowest value
    (MXNet's MinValue) and it sends no gradient."""
    x = normal(1, 1, 4, 4)
    fn = _pool_fn("max", (2, 2), (3, 3), (1, 1), "full", True)
    y = fn(nd.array(x)).asnumpy()
    assert y.shape == (1, 1, 3, 3)
    lowest = np.finfo(np.float64).min
    assert np.all(y[0, 0, 2, :] == lowest) and np.all(y[0, 0, :, 2] == lowest)
    assert np.all(y[0, 0, :2, :2] > lowest)
    weights = (y.reshape(-1) > lowest).astype(float)   # the lowest would overflow the sums
    tape = _tape_gradient(fn, [x], weights)[0]
    np.testing.assert_allclose(tape, _central_gradient(lambda a: fn(nd.array(a)).asnumpy(),
                                                       [x], weights)[0], atol=1e-8)
    assert np.all(_tape_gradient(fn, [x], np.eye(9)[7])[0] == 0.0)
