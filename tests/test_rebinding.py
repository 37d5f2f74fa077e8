"""A name a compiled function reads, rebound between calls, changes what it computes.

Python looks every name up again at each call; compiled code binds the objects names
referred to when it was built (compiler/bindings.py checks them at each call and builds
again).  Each case: value and gradient after the rebinding equal numpy's and central
differences, on pb.grad objects made before the rebinding, @pb.compile functions called
before it, and forward mode."""

import types

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd

X = np.array([0.3, -0.5, 1.2])


def central(f, x, h=1e-6):
    x = np.asarray(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


ACT = np.tanh


def uses_act(x):
    return np.sum(ACT(x) * 2.0)


def test_a_global_function_rebound():
    global ACT
    grad, vg, compiled = pb.grad(uses_act), pb.value_and_grad(uses_act), pb.compile(uses_act)
    np.testing.assert_allclose(grad(X), central(uses_act, X), rtol=1e-7)
    compiled(X)
    try:
        ACT = np.sin
        np.testing.assert_allclose(grad(X), 2 * np.cos(X), rtol=1e-12)
        value, g = vg(X)
        np.testing.assert_allclose(value, np.sum(2 * np.sin(X)), rtol=1e-12)
        np.testing.assert_allclose(g, central(uses_act, X), rtol=1e-7)
        np.testing.assert_allclose(compiled(X), np.sum(2 * np.sin(X)), rtol=1e-12)
        _, tangent = pb.jvp(uses_act, (X,), (np.ones(3),))
        np.testing.assert_allclose(tangent, np.sum(2 * np.cos(X)), rtol=1e-12)
        ACT = np.tanh   # and back again
        np.testing.assert_allclose(grad(X), 2 / np.cosh(X) ** 2, rtol=1e-12)
    finally:
        ACT = np.tanh


def helper(x):
    return x * 2.0


def calls_helper(x):
    return np.sum(helper(x) * x)


def test_a_helper_redefined():
    global helper
    grad = pb.grad(calls_helper)
    np.testing.assert_allclose(grad(X), 4 * X, rtol=1e-12)
    old = helper
    try:
        def helper(x):   # noqa: F811 -- redefined, as in a notebook cell run again
            return np.sin(x)
        np.testing.assert_allclose(grad(X), central(calls_helper, X), rtol=1e-7)
    finally:
        helper = old


class Config:
    pass


cfg = Config()
cfg.act = np.tanh
settings = types.ModuleType("settings_for_test")   # a user module (no library file)
settings.scale = np.exp


def uses_attributes(x):
    return np.sum(cfg.act(x) + settings.scale(x))


def test_attributes_of_an_object_and_a_module_rebound():
    grad = pb.grad(uses_attributes)
    np.testing.assert_allclose(grad(X), central(uses_attributes, X), rtol=1e-7)
    try:
        cfg.act = np.sin
        np.testing.assert_allclose(grad(X), np.cos(X) + np.exp(X), rtol=1e-12)
        settings.scale = np.square
        np.testing.assert_allclose(grad(X), np.cos(X) + 2 * X, rtol=1e-12)
    finally:
        cfg.act, settings.scale = np.tanh, np.exp


def make_closure():
    act = np.tanh

    def f(x):
        return np.sum(act(x) * x)

    def rebind(new):
        nonlocal act
        act = new
    return f, rebind


def test_a_closure_cell_rebound():
    f, rebind = make_closure()
    grad = pb.grad(f)
    np.testing.assert_allclose(grad(X), central(f, X), rtol=1e-7)
    rebind(np.sin)
    np.testing.assert_allclose(grad(X), np.cos(X) * X + np.sin(X), rtol=1e-12)


SCALE_FN = abs


def uses_builtin_name(x):
    return SCALE_FN(x) * 3.0


def test_a_global_bound_to_a_builtin_then_rebound():
    global SCALE_FN
    grad = pb.grad(uses_builtin_name)
    assert grad(-2.0) == pytest.approx(-3.0)
    try:
        SCALE_FN = np.sin
        assert grad(-2.0) == pytest.approx(3.0 * np.cos(-2.0), rel=1e-12)
    finally:
        SCALE_FN = abs


params = {"w": np.array([1.0, 2.0, -1.0]), "b": 0.5}


def loss(x):
    return np.sum(np.tanh(x * params["w"]) + params["b"])


def test_a_functional_training_loop_rebinding_a_global_dict():
    global params
    vg = pb.value_and_grad(loss)
    start = params
    try:
        for _ in range(3):
            value, g = vg(X)
            w, b = params["w"], params["b"]
            np.testing.assert_allclose(value, np.sum(np.tanh(X * w) + b), rtol=1e-12)
            np.testing.assert_allclose(g, w / np.cosh(X * w) ** 2, rtol=1e-12)
            params = {"w": params["w"] * 2.0, "b": params["b"] + 1.0}
    finally:
        params = start


SHIFT = 1.5


def uses_shift(x):
    return np.sum(x * SHIFT)


def test_a_number_that_becomes_a_function_and_back():
    global SHIFT
    grad = pb.grad(uses_shift)
    np.testing.assert_allclose(grad(X), np.full(3, 1.5))
    try:
        SHIFT = 2.5   # data: read at each call, no rebuild needed
        np.testing.assert_allclose(grad(X), np.full(3, 2.5))
        SHIFT = np.ones(3) * 4.0
        np.testing.assert_allclose(grad(X), np.full(3, 4.0))
    finally:
        SHIFT = 1.5


W = nd.array([[1.0, 2.0], [3.0, 4.0]])
LAYER = nd.tanh


def net(x):
    return nd.sum(LAYER(nd.dot(x, W)))


def test_the_tape_node_of_a_compiled_call_after_a_rebinding():
    global LAYER
    compiled = pb.compile(net)
    x = nd.array([[0.5, -0.25]])
    x.attach_grad()

    def gradient():
        with ag.record():
            y = compiled(x)
        y.backward()
        return x.grad.asnumpy().copy()

    def reference():
        with ag.record():
            y = net(x)
        y.backward()
        return x.grad.asnumpy().copy()

    np.testing.assert_allclose(gradient(), reference(), rtol=1e-6)
    try:
        LAYER = nd.sigmoid
        np.testing.assert_allclose(gradient(), reference(), rtol=1e-6)
    finally:
        LAYER = nd.tanh


TRAINING = True
MODE = "tanh"


def flagged(x):
    if TRAINING:
        x = x * 2.0
    if MODE == "tanh":
        return np.sum(np.tanh(x))
    return np.sum(np.sin(x))


def test_flags_a_branch_reads_rebound():
    global TRAINING, MODE
    grad = pb.grad(flagged)
    np.testing.assert_allclose(grad(X), central(flagged, X), rtol=1e-7)
    try:
        TRAINING = False
        np.testing.assert_allclose(grad(X), 1 / np.cosh(X) ** 2, rtol=1e-12)
        MODE = "".join(["s", "in"])   # another str object
        np.testing.assert_allclose(grad(X), np.cos(X), rtol=1e-12)
    finally:
        TRAINING, MODE = True, "tanh"
