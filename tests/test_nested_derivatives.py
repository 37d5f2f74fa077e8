"""Nested derivatives inside compiled code: a function that calls ``pb.grad(g)`` or
``pb.jacfwd(g)`` (in a data-dependent ``while`` loop, as GradBench's particle and saddle
do) differentiated by ``pb.jvp`` (forward over reverse, forward over forward) and by
``pb.grad`` (the nested derivative's VJP by forward over reverse).  Every derivative is
checked against central differences in float64 of the same function run plainly."""

import numpy as np
import pytest

import pullback as pb

H = 1e-6


def potential(x, c):
    """Cross terms in x and c, so the nested derivative depends on both arguments."""
    d = x - c
    return np.sum(np.sin(x) * c[0] ** 2) + np.sum(1 / np.sqrt(np.sum(d * d, axis=1)))


def _stepper(inner_gradient):
    """An Euler-like loop whose length depends on the values (a while with a break), each
    step calling the nested derivative."""
    def run(w, c0):
        c = c0 + w * np.array([[0.0, -1.0], [0.5, 0.0]])
        x = np.array([0.3, 2.0])
        v = np.array([0.4, -1.0])
        while True:
            g = inner_gradient(x, c)
            x_new = x + 0.1 * v
            if x_new[1] > 0:
                x, v = x_new, v - 0.1 * g
            else:
                break
        return x[0] * x[0] + x[1] * v[0]

    return run


INNER = {"grad": pb.grad(potential), "jacfwd": pb.jacfwd(potential)}
STEPPERS = {name: _stepper(g) for name, g in INNER.items()}
C0 = np.array([[3.0, 2.5], [3.0, -1.0]])


def _central(f, x, direction):
    return (f(x + H * direction) - f(x - H * direction)) / (2 * H)


@pytest.mark.parametrize("inner", ["grad", "jacfwd"])
def test_jvp_through_a_loop_of_nested_derivatives(inner):
    """pb.jvp of the stepper: forward over reverse (pb.grad) or over forward (pb.jacfwd),
    tangents on both the scalar and the array argument."""
    run = STEPPERS[inner]
    w = np.array([0.2])
    rng = np.random.default_rng(1)
    dw, dc = rng.standard_normal(1), rng.standard_normal((2, 2))
    value, tangent = pb.jvp(run, (w, C0), (dw, dc))
    assert value == pytest.approx(run(w, C0), rel=1e-12)
    numeric = (run(w + H * dw, C0 + H * dc) - run(w - H * dw, C0 - H * dc)) / (2 * H)
    assert float(tangent) == pytest.approx(numeric, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("inner", ["grad", "jacfwd"])
def test_grad_through_a_loop_of_nested_derivatives(inner):
    """pb.grad of the stepper: reverse over the nested derivative, both arguments."""
    run = STEPPERS[inner]
    w = np.array([0.2])
    gw, gc = pb.grad(run, argnums=(0, 1))(w, C0)
    assert gw[0] == pytest.approx(_central(lambda v: run(v, C0), w, np.ones(1)), rel=1e-6)
    rng = np.random.default_rng(2)
    direction = rng.standard_normal((2, 2))
    assert np.sum(gc * direction) == pytest.approx(
        _central(lambda c: run(w, c), C0, direction), rel=1e-6, abs=1e-9)


def test_forward_and_reverse_over_nested_derivatives_agree():
    """<grad, v> == jvp along v for every pairing of outer and inner mode."""
    w = np.array([0.2])
    v = np.array([0.7])
    products = [float(pb.jvp(STEPPERS[i], (w, C0), (v, None))[1]) for i in INNER] + \
        [float(pb.grad(STEPPERS[i])(w, C0)[0] * v[0]) for i in INNER]
    np.testing.assert_allclose(products, products[0], rtol=1e-10)


def test_nested_gradient_in_its_second_argument():
    """pb.grad(f, argnums=1) inside, tangents reaching both of its arguments."""
    def cost(p, q):
        return np.sum(p * p * q) - np.sum(q * q)

    q_gradient = pb.grad(cost, argnums=1)

    def ascend(p, q0):
        q = q0
        for _ in range(5):
            q = q + 0.1 * q_gradient(p, q)
        return cost(p, q)

    p, q0 = np.array([0.5, -1.5]), np.array([1.0, 2.0])
    direction = np.array([0.3, 0.8])
    numeric = _central(lambda x: ascend(x, q0), p, direction)
    assert float(pb.jvp(ascend, (p, q0), (direction, None))[1]) == pytest.approx(
        numeric, rel=1e-7)
    assert np.dot(pb.grad(ascend)(p, q0), direction) == pytest.approx(numeric, rel=1e-7)


def test_tangent_source_names_the_nested_rule():
    source = pb.tangent_source(STEPPERS["grad"], argnums=0)
    assert "potential_grad_11.tangent(x, c, x_dot, c_dot)" in source


@pytest.mark.parametrize("inner", ["grad", "jacfwd"])
def test_batched_forward_over_a_nested_derivative(inner):
    """pb.jacfwd of the stepper: the nested rule once per direction of the batch, the
    Jacobian in the data argument against central differences and against pb.jvp."""
    run = STEPPERS[inner]
    w = np.array([0.2])
    jac = np.asarray(pb.jacfwd(run, argnums=1)(w, C0))
    assert jac.shape == C0.shape
    for i in np.ndindex(C0.shape):
        e = np.zeros_like(C0)
        e[i] = 1.0
        assert jac[i] == pytest.approx(_central(lambda c: run(w, c), C0, e), rel=1e-6,
                                       abs=1e-9)
        assert jac[i] == pytest.approx(float(pb.jvp(run, (w, C0), (None, e))[1]),
                                       rel=1e-12, abs=1e-15)
    gw = np.asarray(pb.jacfwd(run)(w, C0))
    assert gw.shape == (1,)
    assert gw[0] == pytest.approx(_central(lambda v: run(v, C0), w, np.ones(1)), rel=1e-6)
