"""The nested-derivative rules keep what does not depend on the values between calls
(``forward_api.JacobianTangent._plan``, ``_NestedRun``'s second-order functions, the
shared basis directions): the Jacobian's layout for a vector-valued inner function, a
global rebound between calls, and an empty argument, each checked against central
differences in float64 of the same function run plainly, and forward against reverse."""

import numpy as np
import pytest

import pullback as pb

H = 1e-6
SCALE = 2.0


def vector_field(x, c):
    """R^3 -> R^2, reading the global SCALE."""
    return np.array([np.sum(np.sin(x) * c), SCALE * x[0] * x[2] + np.sum(x * x * x)])


FIELD_JACOBIAN = pb.jacfwd(vector_field)
FIELD_GRADIENT = pb.grad(vector_field)


def uses_the_jacobian(x, c):
    jac = FIELD_JACOBIAN(x, c)
    return np.sum(jac * np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])) + np.sum(jac[1] * x)


def uses_the_gradient(x, c):
    return np.sum(FIELD_GRADIENT(x, c) * x * c)


X = np.array([0.3, -0.7, 1.1])
C = np.array([1.5, 0.5, -2.0])


def _central(f, x, direction):
    return (f(x + H * direction) - f(x - H * direction)) / (2 * H)


@pytest.mark.parametrize("fn", [uses_the_jacobian, uses_the_gradient])
def test_jvp_and_grad_over_a_nested_derivative(fn):
    direction = np.array([0.4, -1.2, 0.9])
    numeric = _central(lambda x: fn(x, C), X, direction)
    value, tangent = pb.jvp(fn, (X, C), (direction, None))
    assert value == pytest.approx(fn(X, C), rel=1e-12)
    assert float(tangent) == pytest.approx(numeric, rel=1e-6)
    # reverse mode over a nested derivative of a vector-valued function is refused (a
    # TypeError naming it, never a guess)
    with pytest.raises(TypeError, match="outputs is not supported yet"):
        pb.grad(fn)(X, C)


def scalar_potential(x, c):
    return np.sum(np.sin(x) * c) + SCALE * x[0] * x[2]


POTENTIAL_JACOBIAN = pb.jacfwd(scalar_potential)
POTENTIAL_GRADIENT = pb.grad(scalar_potential)


def uses_both(x, c):
    return np.sum(POTENTIAL_JACOBIAN(x, c) * x) + np.sum(POTENTIAL_GRADIENT(x, c) * c)


def test_forward_and_reverse_over_nested_derivatives_of_a_scalar_function():
    direction = np.array([0.4, -1.2, 0.9])
    numeric = _central(lambda x: uses_both(x, C), X, direction)
    _, tangent = pb.jvp(uses_both, (X, C), (direction, None))
    assert float(tangent) == pytest.approx(numeric, rel=1e-6)
    assert float(np.dot(pb.grad(uses_both)(X, C), direction)) == pytest.approx(numeric,
                                                                                rel=1e-6)


def test_a_rebound_global_is_seen_by_the_cached_rules():
    global SCALE
    direction = np.array([1.0, 0.5, -0.5])
    try:
        for scale in (2.0, -3.0):
            SCALE = scale
            numeric = _central(lambda x: uses_the_jacobian(x, C), X, direction)
            _, tangent = pb.jvp(uses_the_jacobian, (X, C), (direction, None))
            assert float(tangent) == pytest.approx(numeric, rel=1e-6)
    finally:
        SCALE = 2.0


def row_norms(x):
    return np.sum(x * x, axis=1)


ROW_JACOBIAN = pb.jacfwd(row_norms)


def over_an_empty_jacobian(w, x):
    return np.sum(ROW_JACOBIAN(x * w)) + w * w


def test_nested_jacobian_of_an_empty_argument():
    w, x = 0.5, np.zeros((0, 2))
    value, tangent = pb.jvp(over_an_empty_jacobian, (w, x), (1.0, None))
    assert float(value) == pytest.approx(0.25)
    assert float(tangent) == pytest.approx(1.0)
    np.testing.assert_array_equal(np.asarray(ROW_JACOBIAN(x)), np.zeros((0, 0, 2)))


def joined(x, c):
    """np.concatenate's batched tangent (support.batched_joint) has no forward-over-forward
    rule: the nested Jacobian's tangent runs once per direction instead (the fallback)."""
    y = np.concatenate([x * x, c * x])
    return np.sum(np.sin(y) * y)


JOINED_JACOBIAN = pb.jacfwd(joined)


def uses_the_joined_jacobian(x, c):
    return np.sum(JOINED_JACOBIAN(x, c) * c * x)


def indexed(x, c):
    return x[0] * x[1] * c[2] + np.sum(np.cos(x * c)[1:]) * x[2]


INDEXED_JACOBIAN = pb.jacfwd(indexed)


def uses_the_indexed_jacobian(x, c):
    return np.sum(INDEXED_JACOBIAN(x, c) * x)


@pytest.mark.parametrize("fn", [uses_the_joined_jacobian, uses_the_indexed_jacobian])
def test_forward_over_forward_batched_or_per_direction(fn):
    direction = np.array([0.4, -1.2, 0.9])
    numeric = _central(lambda x: fn(x, C), X, direction)
    _, tangent = pb.jvp(fn, (X, C), (direction, None))
    assert float(tangent) == pytest.approx(numeric, rel=1e-6)
    # the outer tangent along the data argument c as well
    dc = np.array([1.0, 0.3, -0.2])
    numeric = (fn(X + H * direction, C + H * dc) - fn(X - H * direction, C - H * dc)) / (2 * H)
    _, tangent = pb.jvp(fn, (X, C), (direction, dc))
    assert float(tangent) == pytest.approx(numeric, rel=1e-6)
