"""Findings of the fourth adversary (adv4): silent wrong values and gradients and crashes in
what landed on 2026-12-07 (native arrays, native calls, forward-over-reverse, new numpy
ops, linalg/conv, rebinding, the compiled call under record()).  Each test asserts the
CORRECT behaviour; all seven are fixed (branch adv4fix), their families covered in
tests/test_adversary4_fixes.py.  Details: /work/briefs/adv4-report.md."""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.compiler.errors import CompileError


def _fd_hvp(fn, x, v, h=1e-5):
    return (pb.grad(fn)(x + h * v) - pb.grad(fn)(x - h * v)) / (2 * h)


# ----- 1: second order of np.trace: the tangent of its VJP ignores the diagonal mask ------

def trace_squared(x):
    return np.trace(x) ** 2


def trace_offset_squared(x):
    return np.trace(x, offset=1) ** 2


def test_trace_hvp():
    x = np.arange(4.0).reshape(2, 2)
    v = np.array([[1.0, 0.0], [0.0, 0.0]])
    _, hv = pb.hvp(trace_squared, (x,), (v,))
    np.testing.assert_allclose(hv, 2.0 * np.eye(2))          # pullback: all 4.0


def test_trace_grad_grad():
    x = np.arange(4.0).reshape(2, 2)
    np.testing.assert_allclose(pb.grad(pb.grad(trace_squared))(x), 4.0 * np.eye(2))  # pb: 8s


def test_trace_offset_hvp():
    x = np.arange(4.0).reshape(2, 2)
    v = np.ones((2, 2))
    _, hv = pb.hvp(trace_offset_squared, (x,), (v,))
    np.testing.assert_allclose(hv, _fd_hvp(trace_offset_squared, x, v), atol=1e-6)


# ----- 2: np.array of a list mixing differentiated values and constants -------------------

def array_of_list(x):
    return np.sum(np.array([x[0] * x[1], x[1], 2.0]) ** 2)


def array_with_constant(x):
    return np.sum(np.array([x[0] * 1.0, 2.0]))


def test_array_of_list_jacfwd():
    x = np.array([0.5, 2.0])
    np.testing.assert_allclose(pb.jacfwd(array_of_list)(x), [4.0, 5.0])


@pytest.mark.parametrize("fn", [array_of_list, array_with_constant])
def test_array_of_list_hvp(fn):
    x = np.array([0.5, 2.0])
    v = np.ones(2)
    _, hv = pb.hvp(fn, (x,), (v,))
    np.testing.assert_allclose(hv, _fd_hvp(fn, x, v), atol=1e-5)


# ----- 3: an old pb.grad object's native gradient entry ignores a rebound callee ----------

def _act3(t):
    return t * 3.0


def _act7(t):
    return t * 7.0


act_f3 = _act3


def calls_rebindable(x):
    return act_f3(x) + 1.0


def test_old_grad_object_sees_rebound_callee(monkeypatch):
    import sys
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "act_f3", _act3)
    old = pb.grad(calls_rebindable)
    assert old(1.5) == 3.0
    monkeypatch.setattr(module, "act_f3", _act7)
    assert pb.grad(calls_rebindable)(1.5) == 7.0
    assert old(1.5) == 7.0                       # pullback: 3.0 (silently stale)


# ----- 4: the native gradient entry differentiates a bool the careful path refuses --------

def poly_for_bool(x, y=2.0):
    return x * x * y + x


def test_gradient_entry_refuses_bool_like_careful_path(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    g = pb.grad(poly_for_bool)
    assert g(1.5) == 7.0
    with pytest.raises(TypeError):
        pb.grad(poly_for_bool)(True)             # the careful path: refused
    with pytest.raises(TypeError):
        g(True)                                  # pullback: 5.0


# ----- 5: second order of det at a singular matrix raises LinAlgError ---------------------

def det_sum(a):
    return np.linalg.det(a)


def test_det_hvp_at_singular_matrix():
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    v = np.array([[0.3, -0.2, 0.1], [0.5, 0.4, -0.6], [0.2, 0.1, 0.7]])
    np.testing.assert_allclose(pb.grad(det_sum)(a), [[-3.0, 6.0, -3.0], [6.0, -12.0, 6.0],
                                                     [-3.0, 6.0, -3.0]], atol=1e-9)  # works
    _, hv = pb.hvp(det_sum, (a,), (v,))
    np.testing.assert_allclose(hv, _fd_hvp(det_sum, a, v), atol=1e-5)


# ----- 6: pb.hvp / jvp(grad) keep a rebound callee's old code (both roads) ----------------

act_f6 = _act3


def calls_rebindable6(x):
    return act_f6(x) + 1.0


@pytest.mark.parametrize("road", ["native", "python"])
def test_hvp_sees_rebound_callee(monkeypatch, road):
    import sys
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1" if road == "native" else "0")
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "act_f6", _act3)
    assert pb.hvp(calls_rebindable6, (1.5,), (1.0,))[0] == 3.0
    monkeypatch.setattr(module, "act_f6", _act7)
    assert pb.grad(calls_rebindable6)(1.5) == 7.0
    assert pb.hvp(calls_rebindable6, (1.5,), (1.0,))[0] == 7.0      # pullback: 3.0
    assert pb.jvp(pb.grad(calls_rebindable6), (1.5,), (1.0,))[0] == 7.0   # pullback: 3.0


# ----- 7: a function held by a types.SimpleNamespace attribute is frozen ------------------

import types  # noqa: E402

cfg7 = types.SimpleNamespace(act=_act3)


def calls_namespace_attr(x):
    return cfg7.act(x) + 1.0


@pytest.mark.parametrize("road", ["native", "python"])
def test_namespace_attribute_function_rebinding(monkeypatch, road):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1" if road == "native" else "0")
    monkeypatch.setattr(cfg7, "act", _act3)
    assert pb.grad(calls_namespace_attr)(1.5) == 3.0
    monkeypatch.setattr(cfg7, "act", _act7)
    assert calls_namespace_attr(1.5) == 11.5
    assert pb.grad(calls_namespace_attr)(1.5) == 7.0                # pullback: 3.0
    out = pb.vjp(calls_namespace_attr, 1.5)[0]
    assert float(np.asarray(getattr(out, "asnumpy", lambda: out)()).reshape(-1)[0]) == 11.5
