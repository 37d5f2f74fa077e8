"""The gradient checker itself: it passes right rules and catches wrong ones."""

import numpy as np
import pytest

from pullback import nd
from pullback.runtime import primitives as P
from pullback.runtime.ndarray import NDArray
from pullback.testing import check_grads


def test_passes_correct_first_and_second_order():
    check_grads(lambda x, y: nd.tanh(x) * y + nd.exp(x * y), [np.array([0.3, -0.2]),
                                                             np.array([0.5, 0.1])], order=2)


def _patched_tanh_rule(monkeypatch, rule):
    prim = P.REGISTRY["tanh"]
    monkeypatch.setattr(prim, "vjps", (rule,))


def test_catches_wrong_first_derivative(monkeypatch):
    def wrong(g, ans, x):
        return P.multiply(g, P.subtract(1.0, ans))   # should be 1 - ans**2

    _patched_tanh_rule(monkeypatch, wrong)
    with pytest.raises(AssertionError, match="first-order.*analytic.*numeric"):
        check_grads(nd.tanh, [np.array([0.3, -0.7])])


def test_catches_wrong_second_derivative(monkeypatch):
    def detached(g, ans, x):
        # right value, but computed off the tape: the second derivative is lost
        return P.multiply(g, NDArray(1.0 - np.tanh(x._data) ** 2))

    _patched_tanh_rule(monkeypatch, detached)
    check_grads(nd.tanh, [np.array([0.3, -0.7])], order=1)
    with pytest.raises(AssertionError, match="second-order"):
        check_grads(nd.tanh, [np.array([0.3, -0.7])], order=2)


def test_rejects_unsupported_order():
    with pytest.raises(ValueError, match="order 1 and 2"):
        check_grads(nd.tanh, [np.array([0.3])], order=3)
