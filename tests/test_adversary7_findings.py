"""Findings of the seventh adversary (adv7): inputs where the compiled road (MXNet API calls
under ``autograd.record()``, the native and Python roads of ``pb.grad``, second order) and
the eager tape or central differences disagree.  Each test asserts the CORRECT behaviour
(what the eager function gives under the same autograd state, central differences in
float64) and is ``xfail(strict=True)`` while the finding is open (an XPASS fails the suite,
so a fix must remove the marker).  Details: /work/briefs/adv7-report.md."""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd


# ----- 1: ag.is_recording() inside a compiled function called under record() is False -----
# The compiled call's forward runs with the tape's recording switched off (its operations
# are numpy), so a function that branches on ag.is_recording() takes the not-recording
# branch under record(): value and gradients differ from the eager call.
# W = [1.62, -0.61, -0.53], x = [-1.07, 0.87, -2.30]: loss expected 2 * x.W = 4.21 and
# W.grad = 2 x, got x.W = 2.10 and W.grad = x.

W_REC = nd.array([1.6243453636632417, -0.6117564136500754, -0.5281717522634557],
                 dtype="float64")


def scaled_when_recording(x):
    if ag.is_recording():
        return (x * W_REC * 2).sum()
    return (x * W_REC).sum()


def _loss_and_grads(fn, x_tracked):
    W_REC.attach_grad()
    x = nd.array([-1.0729686221561705, 0.8654076293246785, -2.3015386968802827],
                 dtype="float64")
    if x_tracked:
        x.attach_grad()
    with ag.record():
        loss = fn(x)
    loss.backward()
    return loss.asnumpy(), W_REC.grad.asnumpy().copy(), x.asnumpy()


# fixed: tape._State.caller_recording (family tests: tests/test_adversary7_fixes.py)
@pytest.mark.parametrize("x_tracked", [False, True])
def test_is_recording_inside_a_recorded_compiled_call(x_tracked):
    eager_loss, eager_grad, x = _loss_and_grads(scaled_when_recording, x_tracked)
    np.testing.assert_allclose(eager_loss, [2 * np.dot(x, W_REC.asnumpy())])
    np.testing.assert_allclose(eager_grad, 2 * x)
    loss, grad, _ = _loss_and_grads(pb.compile(scaled_when_recording), x_tracked)
    np.testing.assert_allclose(loss, eager_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, eager_grad, rtol=1e-12)


# ----- 2: create_graph through a compiled call that draws nd.random numbers ---------------
# The gradient node's VJP (compiler/nested.py) re-runs the compiled forward (forward-over-
# reverse), which draws new random numbers: the second derivative is that of another
# function.  x = [1.62, -0.61, -0.53], seed 3: x.grad of sum(grad(l)**2) expected (eager
# tape = central differences) [0.2349, 0.0090, 2.0136], got [0.0329, 0.0048, 0.7709].

W_RANDOM = nd.array([1.764052345967664, 0.4001572083672233, 0.9787379841057392],
                    dtype="float64")


def sin_of_random_scaling(x):
    r = nd.random.uniform(0.5, 1.5, shape=(3,), dtype="float64")
    return nd.sin(x * W_RANDOM * r).sum()


def _squared_gradient_and_its_gradient(fn, x0):
    x = nd.array(x0, dtype="float64")
    x.attach_grad()
    nd.random.seed(3)
    with ag.record():
        loss = fn(x)
        gx = ag.grad(loss, [x], create_graph=True)[0]
        s = (gx * gx).sum()
    s.backward()
    return float(s.asnumpy()[0]), x.grad.asnumpy().copy()


# fixed: the call keeps nd.random's state before its first draw and replays it
# (family tests: tests/test_adversary7_fixes.py)
def test_create_graph_through_a_compiled_call_drawing_random_numbers():
    x0 = np.array([1.6243453636632417, -0.6117564136500754, -0.5281717522634557])
    _, eager = _squared_gradient_and_its_gradient(sin_of_random_scaling, x0)
    eps = 1e-6
    numeric = np.array([
        (_squared_gradient_and_its_gradient(sin_of_random_scaling, x0 + e)[0]
         - _squared_gradient_and_its_gradient(sin_of_random_scaling, x0 - e)[0]) / (2 * eps)
        for e in np.eye(3) * eps])
    np.testing.assert_allclose(eager, numeric, rtol=1e-5, atol=1e-7)
    _, compiled = _squared_gradient_and_its_gradient(pb.compile(sin_of_random_scaling), x0)
    np.testing.assert_allclose(compiled, eager, rtol=1e-10)


# ----- 3: .grad read inside compiled code is an AttributeError from numpy -----------------
# A compiled SGD step (``p - lr * p.grad``, MXNet's pattern) fails at run time with
# "'numpy.ndarray' object has no attribute 'grad'" (compiled code sees the argument's, or
# the global's, numpy buffer): expected the eager value [0.8, 1.6, 2.4] or a CompileError
# at the user's line.

P_GLOBAL = nd.array([1.0, 2.0, 3.0], dtype="float64")


def sgd_step(p, lr):
    return p - lr * p.grad


def sgd_step_of_a_global(lr):
    return P_GLOBAL - lr * P_GLOBAL.grad


def _with_gradient(p):
    p.attach_grad()
    with ag.record():
        (p * p).sum().backward()
    return p


# fixed: a CompileError at the line (calls.describe); .context/.ctx work (support.context);
# family tests: tests/test_adversary7_fixes.py
@pytest.mark.parametrize("fn", [sgd_step, sgd_step_of_a_global])
def test_reading_grad_in_compiled_code(fn):
    p = _with_gradient(P_GLOBAL)
    args = (p, 0.1) if fn is sgd_step else (0.1,)
    expected = fn(*args).asnumpy()
    np.testing.assert_allclose(expected, [0.8, 1.6, 2.4])
    try:
        got = pb.compile(fn)(*args)
    except pb.CompileError as error:
        assert "grad" in str(error) and "line" in str(error)
        return
    np.testing.assert_allclose(np.asarray(got.asnumpy()), expected)


# ----- 4: pb.compile of a bound method fails at its first call with a misleading error ----
# pb.grad(obj.method) is refused with "... is a bound method: pass its function and the
# object ..." (adv2 finding 4's fix), but pb.compile(obj.method)(x) raises
# "TypeError: forward() takes 2 arguments, got 1" at the call: expected the same clear
# refusal (or the method's value).

class TwoLayer:
    def __init__(self):
        self.scale = 3.0

    def forward(self, x):
        return nd.tanh(x) * self.scale


# fixed (family tests: tests/test_adversary7_fixes.py)
def test_compile_of_a_bound_method_is_refused_clearly_or_works():
    model = TwoLayer()
    x = nd.array([0.5, -1.0], dtype="float64")
    try:
        compiled = pb.compile(model.forward)
        got = compiled(x)
    except TypeError as error:
        assert "bound method" in str(error)
        return
    np.testing.assert_allclose(got.asnumpy(), model.forward(x).asnumpy())


# ----- 5: pb.hessian of a float32 input is float64 (and computed with float64 vectors) ----
# pb.grad, pb.hvp, pb.jvp(pb.grad), pb.jacfwd and pb.jacrev keep a float32 numpy input's
# dtype, pb.hessian returns float64 (hessian_fn converts a numpy argument with
# np.asarray(x, dtype=np.float64) before taking its dtype); an np.float32 number gets a
# Python float.  Expected float32 as the other derivatives (and as for NDArray inputs).

def cubic_sum(x):
    return np.sum(np.sin(x) * x * x)


# fixed (family tests: tests/test_adversary7_fixes.py)
def test_hessian_keeps_a_float32_input_dtype():
    x = np.array([0.3, -0.7, 1.1], dtype=np.float32)
    hessian = np.asarray(pb.hessian(cubic_sum)(x))
    assert pb.grad(cubic_sum)(x).dtype == np.float32
    assert hessian.dtype == np.float32
    products = np.stack([pb.hvp(cubic_sum, (x,), (e,))[1]
                         for e in np.eye(3, dtype=np.float32)])
    np.testing.assert_array_equal(hessian, products)
    assert isinstance(pb.hessian(lambda a: a * a * a)(np.float32(2.0)), np.float32)


# ----- 6: a compiled call's result that views an argument hides writes from the tape ------
# x.reshape(...) and x[0] are views (as in MXNet); on the tape the view shares its owner's
# version counter, so writing into it after x was recorded makes backward an InPlaceError.
# A compiled call returns a plain NDArray over the same buffer: the write changes x
# silently and the earlier recorded op's gradient uses the new values.  x = [[0.5, -1, 2]],
# W = [1, 2, 3], l = sum(x * x * W), then y[:] = 5: expected InPlaceError (the tape's
# answer) or 2 x W = [[1, -4, 12]], got [[10, 20, 30]].

W_VIEW = nd.array([1.0, 2.0, 3.0], dtype="float64")


def flat_view(x):
    return x.reshape((3,))


def first_row(x):
    return x[0]


# fixed: api._result_array links such a result to the argument's owner (family tests:
# tests/test_adversary7_fixes.py)
@pytest.mark.parametrize("recorded", [False, True])
@pytest.mark.parametrize("fn", [flat_view, first_row])
def test_write_into_a_compiled_view_of_an_argument(fn, recorded):
    compiled = pb.compile(fn)
    x = nd.array([[0.5, -1.0, 2.0]], dtype="float64")
    x.attach_grad()
    if recorded:
        with ag.record():
            y = compiled(x)
    else:
        y = compiled(x)
    with ag.record():
        loss = (x * x * W_VIEW).sum()
    y[:] = 5.0
    try:
        loss.backward()
    except pb.InPlaceError:
        return
    np.testing.assert_allclose(x.grad.asnumpy(), [[1.0, -4.0, 12.0]])


# ----- 7: a compiled call with a container of NDArrays, outside record(), crashes ---------
# net(params, X) with params = {'w': w} works under record() (the node's inputs are the
# leaves) but outside record() -- evaluating a model between training steps -- the plain
# call passed the dict's NDArrays into numpy code: "TypeError: operand 'NDArray' does not
# support ufuncs".  Expected the eager value sum(tanh(x * w)) = 1.3985.
# fixed: CompiledFunction._plain unwraps containers (family tests: test_adversary7_fixes.py)

def dict_model(params, x):
    return nd.tanh(x * params["w"]).sum()


@pytest.mark.parametrize("attached", [False, True])
def test_compiled_call_of_a_dict_of_ndarrays_outside_record(attached):
    w = nd.array([0.7, -1.3, 0.4], dtype="float64")
    if attached:
        w.attach_grad()
    x = nd.array([0.3, -0.8, 1.1], dtype="float64")
    got = pb.compile(dict_model)({"w": w}, x)
    np.testing.assert_allclose(got.asnumpy(), dict_model({"w": w}, x).asnumpy(), rtol=1e-12)


# ----- 8: ag.grad(..., create_graph=True) of a gradient through a compiled call, when the
# call's head gradient depends on the variables ---------------------------------------------
# gx = grad(sum(f(x)**2)) with create_graph, then gxx = grad(sum(gx**2), create_graph=True):
# recording, the gradient node's VJP takes the eager road (nested._SecondOrderState._eager),
# whose x part followed x's path through the head gradient g = 2 f(x) as well, which g's
# own input slot adds again (counted twice).  f = sin(x * [0.7, 1.2, 0.9]) at
# x = [1.62, -0.61, -0.53]: expected (tape = central differences) [-0.675, -0.733, -1.376],
# got [-0.487, -4.535, -3.253].  With create_graph=False, or a constant head (sum(f(x))),
# it was right.
# fixed: tape.grad(held=) takes g as a constant for x's part (family tests:
# tests/test_adversary7_fixes.py)

R_HEAD = nd.array([0.7, 1.2, 0.9], dtype="float64")


def sine_layer(x):
    return nd.sin(x * R_HEAD)


def _gradient_of_squared_gradient(fn, x0):
    x = nd.array(x0, dtype="float64")
    x.attach_grad()
    with ag.record():
        out = fn(x)
        gx = ag.grad((out * out).sum(), [x], create_graph=True)[0]
        s = (gx * gx).sum()
        gxx = ag.grad(s, [x], create_graph=True)[0]
    return float(s.asnumpy()[0]), gxx.asnumpy()


def test_recorded_second_derivative_with_a_head_depending_on_x():
    x0 = np.array([1.62, -0.61, -0.53])
    _, eager = _gradient_of_squared_gradient(sine_layer, x0)
    eps = 1e-6
    numeric = np.array([(_gradient_of_squared_gradient(sine_layer, x0 + e)[0]
                         - _gradient_of_squared_gradient(sine_layer, x0 - e)[0]) / (2 * eps)
                        for e in np.eye(3) * eps])
    np.testing.assert_allclose(eager, numeric, rtol=1e-5, atol=1e-7)
    _, compiled = _gradient_of_squared_gradient(pb.compile(sine_layer), x0)
    np.testing.assert_allclose(compiled, eager, rtol=1e-10)
