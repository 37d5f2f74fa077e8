"""Second order of every elementwise numpy function pullback differentiates: pb.hvp
(forward over reverse through the fused kernels' derivative formulas) against central
differences of pb.grad, in float64.  adv5 finding 4 was hvp of cosh, arcsinh and sinc
failing because a derivative formula called a function (sinh, hypot, fabs) with no
tangent; this runs them all so a new op's formula cannot miss one."""

import numpy as np
import pytest

import pullback as pb

X = np.array([0.21, 0.37, 0.55, 0.73])
V = np.array([1.0, -0.5, 0.25, 2.0])

UNARY = ["exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "log1p", "expm1", "sinh",
         "cosh", "arcsin", "arccos", "arctan", "arcsinh", "arctanh", "log2", "log10",
         "exp2", "cbrt", "sinc", "square", "reciprocal", "abs", "negative"]


def _fd_hvp(fn, x, v, h=1e-5):
    return (pb.grad(fn)(x + h * v) - pb.grad(fn)(x - h * v)) / (2 * h)


def _weighted(name):
    f = getattr(np, name)

    def weighted(x):
        return np.sum(f(x) * x * x)
    return weighted


def weighted_arccosh(x):
    return np.sum(np.arccosh(x + 1.5) * x * x)


def weighted_binary(x):
    return np.sum(np.hypot(x, 1.0 - x) * np.arctan2(x, 0.9) + np.logaddexp(x, x * x)
                  + np.power(x, 2.5) + np.maximum(x, 0.5) * x)


@pytest.mark.parametrize("name", UNARY)
def test_hvp_of_elementwise_matches_differences_of_gradients(name, monkeypatch):
    fn = _weighted(name)
    fn.__name__ = fn.__qualname__ = "weighted"
    # each function its own module-level source: pullback reads the source of ``weighted``
    # through the closure variable f, the numpy function
    _, hv = pb.hvp(fn, (X,), (V,))
    np.testing.assert_allclose(hv, _fd_hvp(fn, X, V), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn", [weighted_arccosh, weighted_binary])
def test_hvp_of_the_other_elementwise_functions(fn):
    _, hv = pb.hvp(fn, (X,), (V,))
    np.testing.assert_allclose(hv, _fd_hvp(fn, X, V), rtol=1e-5, atol=1e-6)
