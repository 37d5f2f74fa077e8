"""Shapes of forward-mode and reverse-mode Jacobians at the edges: 0-d results of the
contractions (``@``, np.dot, np.matmul, np.inner, np.vdot, np.einsum of two vectors) and
empty arguments or results, across pb.jacfwd, pb.jacrev, pb.hessian and pb.jvp.  Every
Jacobian is compared with central differences in float64 and jacfwd with jacrev."""

import numpy as np
import pytest

import pullback as pb


def _central_jacobian(fn, x, eps=1e-6):
    y0 = np.asarray(fn(x))
    jac = np.zeros(y0.shape + x.shape)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        jac[(Ellipsis,) + i] = (np.asarray(fn(xp)) - np.asarray(fn(xm))) / (2 * eps)
    return jac


def _central_hessian(fn, x):
    """Central differences of the reverse-mode gradient."""
    return _central_jacobian(lambda z: np.asarray(pb.grad(fn)(z)), x)


# ----- 0-d results of contractions of two vectors ------------------------------------------

def matmul_operator(x):
    return x @ (x * 2.0 + 1.0)


def matmul_function(x):
    return np.matmul(np.sin(x), x)


def dot_function(x):
    return np.dot(x, np.cos(x))


def inner_function(x):
    return np.inner(x * x, x)


def vdot_function(x):
    return np.vdot(x, np.exp(x))


def einsum_function(x):
    return np.einsum("i,i->", x, x * x)


def matmul_then_scaled(x):
    s = x @ x
    return s * x   # a 0-d value broadcasts against x: shape (n,), as in numpy


CONTRACTIONS = [matmul_operator, matmul_function, dot_function, inner_function,
                vdot_function, einsum_function]


@pytest.mark.parametrize("fn", CONTRACTIONS + [matmul_then_scaled])
@pytest.mark.parametrize("mode", ["jacfwd", "jacrev"])
def test_jacobian_of_a_vector_contraction(fn, mode):
    x = np.array([0.3, -1.1, 0.8])
    jac = np.asarray(getattr(pb, mode)(fn)(x))
    expected = _central_jacobian(fn, x)
    assert jac.shape == expected.shape == np.shape(fn(x)) + x.shape
    np.testing.assert_allclose(jac, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fn", CONTRACTIONS)
def test_value_of_a_vector_contraction_is_a_number(fn):
    x = np.array([0.3, -1.1, 0.8])
    assert np.shape(pb.compile(fn)(x)) == np.shape(fn(x)) == ()
    value, tangent = pb.jvp(fn, (x,), (np.array([1.0, 0.5, -2.0]),))
    assert np.shape(value) == np.shape(tangent) == ()
    np.testing.assert_allclose(value, fn(x), rtol=1e-12)
    expected = _central_jacobian(fn, x) @ np.array([1.0, 0.5, -2.0])
    np.testing.assert_allclose(tangent, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("fn", CONTRACTIONS)
def test_hessian_of_a_vector_contraction(fn):
    x = np.array([0.3, -1.1, 0.8])
    hess = np.asarray(pb.hessian(fn)(x))
    assert hess.shape == (3, 3)
    np.testing.assert_allclose(hess, _central_hessian(fn, x), rtol=1e-5, atol=1e-6)


def vdot_of_matrices(x):
    return np.vdot(x, np.ones((2, 2)) @ (x * x))


def test_vdot_flattens_its_operands():
    x = np.array([[0.5, -1.0, 2.0], [0.25, 1.5, -0.75]])
    for mode in ("jacfwd", "jacrev"):
        jac = np.asarray(getattr(pb, mode)(vdot_of_matrices)(x))
        assert jac.shape == (2, 3)
        np.testing.assert_allclose(jac, _central_jacobian(vdot_of_matrices, x),
                                   rtol=1e-6, atol=1e-8)


# ----- empty arguments and results ----------------------------------------------------------

def column_sums(x):
    return np.sum(x * x, axis=0)


def total_plus_one(x):
    return np.sum(np.exp(x)) + 1.0


def empty_slice(x):
    return x[:0] * 2.0


def empty_matmul(x):
    return x @ np.ones((3, 2))


EMPTY_CASES = [(column_sums, (0, 3)), (total_plus_one, (0, 3)), (empty_slice, (3,)),
               (empty_matmul, (0, 3))]


@pytest.mark.parametrize(("fn", "shape"), EMPTY_CASES)
def test_jacobians_with_an_empty_side(fn, shape):
    x = np.linspace(0.1, 0.9, int(np.prod(shape))).reshape(shape)
    expected_shape = np.shape(fn(x)) + x.shape
    forward = np.asarray(pb.jacfwd(fn)(x))
    reverse = np.asarray(pb.jacrev(fn)(x))
    assert forward.shape == reverse.shape == expected_shape
    np.testing.assert_allclose(forward, _central_jacobian(fn, x), atol=1e-8)
    np.testing.assert_array_equal(forward, reverse)


@pytest.mark.parametrize(("fn", "shape"), EMPTY_CASES)
def test_hessian_and_jvp_with_an_empty_side(fn, shape):
    x = np.linspace(0.1, 0.9, int(np.prod(shape))).reshape(shape)
    hess = np.asarray(pb.hessian(fn)(x))
    assert hess.shape == x.shape + x.shape
    np.testing.assert_allclose(hess, _central_hessian(fn, x), atol=1e-6)
    value, tangent = pb.jvp(fn, (x,), (np.ones(shape),))
    np.testing.assert_allclose(value, fn(x), rtol=1e-12)
    assert np.shape(tangent) == np.shape(value)
    jac = _central_jacobian(fn, x).reshape(np.shape(value) + (x.size,))
    np.testing.assert_allclose(tangent, jac @ np.ones(x.size), atol=1e-8)
