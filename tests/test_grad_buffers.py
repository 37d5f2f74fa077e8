"""backward() writing 'write' gradient buffers (issue 15 item 6): a fresh gradient array
that nothing else holds becomes the buffer's array (``tape._adoptable``: no 800 kB copy
of W1's gradient per step); any other gradient is copied into the buffer as before.
Whichever road is taken, ``W.grad`` stays the same NDArray, holds the tape's gradient
(and central differences'), and nobody else's array changes.

Also the implicit inputs' reader (``implicit.reader``): globals of one module read by
one call, anything else one by one, always the values bound now."""

import types

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.compiler.implicit import ImplicitInput, reader
from pullback.runtime import tape
from tape_helpers import central_gradient

RNG = np.random.default_rng(1515)
W1_VALUES, W2_VALUES = RNG.normal(size=(5, 4)), RNG.normal(size=(4, 3))
X_VALUES = RNG.normal(size=(6, 5))
W1 = W2 = None


@pytest.fixture(autouse=True)
def fresh_params():
    global W1, W2
    W1 = nd.array(W1_VALUES, dtype="float64")
    W2 = nd.array(W2_VALUES, dtype="float64")
    W1.attach_grad()
    W2.attach_grad()


def mlp(X):
    return nd.dot(nd.tanh(nd.dot(X, W1)), W2)


def numpy_mlp(X, W1, W2):
    return np.tanh(X @ W1) @ W2


def step(road, X):
    with ag.record():
        out = road(X)
    out.backward()


def expected():
    return [central_gradient(numpy_mlp, [X_VALUES, W1_VALUES, W2_VALUES], k) for k in (1, 2)]


@pytest.mark.parametrize("road", ["tape", "compiled"])
def test_gradients_and_buffers_survive_adoption(road):
    """Three steps: the same buffer NDArrays, the tape's and central differences'
    gradients each time, and (compiled: np.dot's fresh products) adopted arrays."""
    fn = mlp if road == "tape" else pb.compile(mlp)
    X = nd.array(X_VALUES, dtype="float64")
    buffers = [W1.grad, W2.grad]
    arrays = set()
    for _ in range(3):
        step(fn, X)
        assert [W1.grad, W2.grad] == buffers and all(
            a is b for a, b in zip([W1.grad, W2.grad], buffers, strict=True))
        for p, want in zip((W1, W2), expected(), strict=True):
            np.testing.assert_allclose(p.grad.asnumpy(), want, rtol=1e-6, atol=1e-8)
        arrays.add(id(W1.grad._data))
    if road == "compiled":   # a new product each step became the buffer's array
        assert len(arrays) > 1


def test_adoption_is_taken_only_for_a_sole_fresh_gradient():
    """The conditions, one by one, on arrays held as backward() holds them (each made by
    a factory, so that only its NDArray holds it, unless the test keeps a reference)."""
    def case(make_g, make_buffer):
        buffer = nd.array(np.zeros(3))
        buffer._data = make_buffer()
        g = nd.array(np.zeros(3))
        g._data = make_g()
        return tape._adoptable(buffer, g) == tape._ADOPTABLE

    def zeros():
        return np.zeros(3)

    assert case(lambda: np.ones(3), zeros)
    held = np.ones(3)
    assert not case(lambda: held, zeros)                   # someone else holds the gradient
    old = np.zeros(3)
    view = old[:]
    assert not case(lambda: np.ones(3), lambda: old)       # the old array is held (a view)
    del view
    assert not case(lambda: np.ones(6)[::2], zeros)        # a view, not its own memory
    assert not case(lambda: np.ones(3, np.float32), zeros)   # another dtype
    assert not case(lambda: np.ones((3, 1)), zeros)        # another shape

    def read_only():
        a = np.ones(3)
        a.flags.writeable = False
        return a

    assert not case(read_only, zeros)


@pytest.mark.parametrize("road", ["tape", "compiled"])
def test_a_held_view_of_the_buffer_sees_the_new_gradient(road):
    """np.asarray(W.grad) is a view of the buffer: the gradient is copied into it."""
    fn = mlp if road == "tape" else pb.compile(mlp)
    X = nd.array(X_VALUES, dtype="float64")
    step(fn, X)
    view = np.asarray(W1.grad)
    W1._data[...] = W1_VALUES * 2   # another gradient next step
    step(fn, X)
    want = central_gradient(numpy_mlp, [X_VALUES, W1_VALUES * 2, W2_VALUES], 1)
    np.testing.assert_allclose(view, want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(W1.grad.asnumpy(), want, rtol=1e-6, atol=1e-8)


def test_a_head_gradient_of_the_users_is_copied_never_adopted():
    """x.backward(G) of a variable: G reaches x.grad as it is; it is the user's, so it is
    copied, and a later backward does not change G."""
    x = nd.array(np.ones(3))
    x.attach_grad()
    G = nd.array(np.array([1.0, 2.0, 3.0]))
    with ag.record():
        y = x * 1.0
    y.backward(G)
    assert x.grad._data is not G._data
    with ag.record():
        y = x * 3.0
    y.backward()
    np.testing.assert_array_equal(G.asnumpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(x.grad.asnumpy(), [3.0, 3.0, 3.0])


def test_grad_req_add_accumulates_on_both_roads():
    X = nd.array(X_VALUES, dtype="float64")
    for fn in (mlp, pb.compile(mlp)):
        W1.attach_grad(grad_req="add")
        step(fn, X)
        step(fn, X)
        np.testing.assert_allclose(W1.grad.asnumpy(), 2 * expected()[0], rtol=1e-6,
                                   atol=1e-8)


SCALE = 2.0
holder = types.SimpleNamespace(scale=3.0)


def test_reader_reads_the_values_bound_now():
    """One module's globals (one itemgetter call) and an attribute chain (one by one)."""
    g = globals()
    one = reader([ImplicitInput(g, ("SCALE",), "SCALE")])
    two = reader([ImplicitInput(g, ("SCALE",), "SCALE"),
                  ImplicitInput(g, ("W1_VALUES",), "W1_VALUES")])
    chain = reader([ImplicitInput(g, ("holder", "scale"), "holder_scale"),
                    ImplicitInput(g, ("SCALE",), "SCALE")])
    assert one() == (2.0,) and two()[0] == 2.0 and two()[1] is W1_VALUES
    assert chain() == (3.0, 2.0)
    global SCALE
    SCALE, holder.scale = 5.0, 7.0
    try:
        assert one() == (5.0,) and chain() == (7.0, 5.0)
    finally:
        SCALE, holder.scale = 2.0, 3.0


def scaled(X):
    return nd.sum(nd.dot(X, W1)) * SCALE


def test_compiled_call_reads_a_rebound_global_number():
    """A global number (an implicit input) rebound between calls: the compiled call's
    value and gradient follow it, as the tape's do."""
    global SCALE
    f = pb.compile(scaled)
    X = nd.array(X_VALUES, dtype="float64")
    try:
        for value in (2.0, -1.5):
            SCALE = value
            step(f, X)
            want = central_gradient(lambda X, W: np.sum(X @ W) * value,
                                    [X_VALUES, W1_VALUES], 1)
            np.testing.assert_allclose(W1.grad.asnumpy(), want, rtol=1e-6, atol=1e-8)
    finally:
        SCALE = 2.0


# ----- a fused run with a broadcast bias, at least NATIVE_MIN_SIZE elements --------------
B_VALUES = RNG.normal(size=64)
WIDE_VALUES = RNG.normal(size=(5, 64))
X_WIDE = RNG.normal(size=(16, 5))   # (16, 64) = 1024 elements >= NATIVE_MIN_SIZE
OUT_VALUES = RNG.normal(size=(64, 3))
WIDE = BIAS = OUT = None


def biased_relu(X):
    return nd.dot(nd.maximum(nd.dot(X, WIDE) + BIAS, 0.0), OUT)


def numpy_biased_relu(X, W, b, V):
    return np.maximum(X @ W + b, 0.0) @ V


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_large_fused_run_with_a_bias_takes_numpy_and_matches(monkeypatch, dtype):
    """`dot + b` then `maximum` fuse; with a (64,) bias beside (16, 64) values no native
    kernel applies, so forward and VJP take the numpy functions directly (no native
    kernel is even looked up) and give the tape's gradients and central differences'."""
    from pullback.runtime import fused

    global WIDE, BIAS, OUT
    assert X_WIDE.shape[0] * WIDE_VALUES.shape[1] >= fused.NATIVE_MIN_SIZE
    looked_up, plain = [], []
    native_kernel = fused.FusedKernel._native_kernel
    plain_vjp = fused.FusedKernel._plain_numpy_vjp

    def spy_native(self, *args):
        looked_up.append(args)
        return native_kernel(self, *args)

    def spy_plain(self, *args):
        plain.append(plain_vjp(self, *args))
        return plain[-1]

    monkeypatch.setattr(fused.FusedKernel, "_native_kernel", spy_native)
    monkeypatch.setattr(fused.FusedKernel, "_plain_numpy_vjp", spy_plain)
    grads = {}
    for road in ("tape", "compiled"):
        WIDE = nd.array(WIDE_VALUES, dtype=dtype)
        BIAS = nd.array(B_VALUES, dtype=dtype)
        OUT = nd.array(OUT_VALUES, dtype=dtype)
        for p in (WIDE, BIAS):
            p.attach_grad()
        fn = biased_relu if road == "tape" else pb.compile(biased_relu)
        step(fn, nd.array(X_WIDE, dtype=dtype))
        grads[road] = [WIDE.grad.asnumpy(), BIAS.grad.asnumpy()]
    compiled = pb.compile(biased_relu)
    assert "kernel_1(" in pb.adjoint_source(compiled)   # the run is fused
    assert looked_up == [] and plain == [True]   # the VJP's one-pass decision: numpy
    want = [central_gradient(numpy_biased_relu, [X_WIDE, WIDE_VALUES, B_VALUES, OUT_VALUES], k)
            for k in (1, 2)]
    tol = dict(rtol=1e-6, atol=1e-8) if dtype == "float64" else dict(rtol=1e-4, atol=1e-4)
    for t, c, w in zip(grads["tape"], grads["compiled"], want, strict=True):
        np.testing.assert_allclose(c, t, **tol)
        np.testing.assert_allclose(c, w, **tol)
