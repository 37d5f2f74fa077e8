"""Reverse-over-reverse through a compiled call runs compiled code (forward-over-reverse,
compiler/nested.py), never the user's function eagerly: numpy code, which the tape cannot
run, gets second derivatives too.  Checked against central differences in float64."""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.compiler import api


@pytest.fixture
def no_eager_rerun(monkeypatch):
    def refuse(self, out_index, g):
        raise AssertionError("the compiled call was re-run eagerly")

    monkeypatch.setattr(api._CompiledCall, "_eager_gradients", refuse)


@pb.compile
def numpy_layer(x, w):
    return np.sum(np.tanh(x @ w) ** 2) + np.sum(x * x * x)


@pb.compile
def numpy_rows(x):
    return np.sin(x) * x + x * x


def _numpy_gradient(x, w):
    return pb.grad(numpy_layer.fn, argnums=(0, 1))(x, w)


def test_second_derivatives_of_numpy_code_through_a_compiled_call(no_eager_rerun):
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    u, v = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    x, w = nd.array(x0, dtype="float64"), nd.array(w0, dtype="float64")
    x.attach_grad()
    w.attach_grad()
    with ag.record():
        y = numpy_layer(x, w)
        gx, gw = ag.grad([y], [x, w], create_graph=True)
        z = nd.sum(gx * nd.array(u)) + nd.sum(gw * nd.array(v))
    z.backward()
    expected = _numpy_gradient(x0, w0)
    np.testing.assert_allclose(gx.asnumpy(), expected[0], rtol=1e-12)
    eps = 1e-6
    up = _numpy_gradient(x0 + eps * u, w0 + eps * v)
    down = _numpy_gradient(x0 - eps * u, w0 - eps * v)
    np.testing.assert_allclose(x.grad.asnumpy(), (up[0] - down[0]) / (2 * eps), rtol=1e-6,
                               atol=1e-8)   # H is symmetric: H (u, v) is z's gradient
    np.testing.assert_allclose(w.grad.asnumpy(), (up[1] - down[1]) / (2 * eps), rtol=1e-6,
                               atol=1e-8)


def test_a_head_gradient_that_depends_on_the_input_gets_its_part(no_eager_rerun):
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, 5)

    def gradient_norm(values):
        """sum((J^T h)^2) with h = cos(x): J^T h by pb.vjp of the plain function."""
        _, pullback = pb.vjp(numpy_rows.fn, values)
        g = pullback(np.cos(values))[0]
        return float(np.sum(g * g))

    x = nd.array(x0, dtype="float64")
    x.attach_grad()
    with ag.record():
        y = numpy_rows(x)
        (gx,) = ag.grad([y], [x], head_grads=[nd.cos(x)], create_graph=True)
        z = nd.sum(gx * gx)
    z.backward()
    eps = 1e-6
    numeric = np.array([(gradient_norm(x0 + eps * e) - gradient_norm(x0 - eps * e)) / (2 * eps)
                        for e in np.eye(5)])
    np.testing.assert_allclose(x.grad.asnumpy(), numeric, rtol=1e-6, atol=1e-8)


@pb.compile
def quartic(x):
    return nd.sum(x * x * x * x)


def test_a_third_derivative_takes_the_eager_road_and_stays_exact():
    x = nd.array([0.5, -1.5], dtype="float64")
    x.attach_grad()
    with ag.record():
        y = quartic(x)
        (g1,) = ag.grad([y], [x], create_graph=True)
        (g2,) = ag.grad([nd.sum(g1)], [x], create_graph=True)
        z = nd.sum(g2)
    z.backward()
    np.testing.assert_allclose(g1.asnumpy(), 4 * x.asnumpy() ** 3, rtol=1e-12)
    np.testing.assert_allclose(g2.asnumpy(), 12 * x.asnumpy() ** 2, rtol=1e-12)
    np.testing.assert_allclose(x.grad.asnumpy(), 24 * x.asnumpy(), rtol=1e-12)
