"""The fast roads of a compiled call (issue 15 item 6): each must give what the general
road gives where it is taken, and must not be taken where it does not apply.

- ``CompiledFunction.__call__``: arguments that are arrays and numbers, a built variant,
  no container read from outside -> ``_record`` / ``_plain`` (no hidden-array walk);
  containers, objects or an unbuilt variant -> ``_call_slowly``.
- ``FusedKernel.vjp``: a call that can only be the numpy adjoint -> ``_vjp`` directly.
- ``pick``'s key (the open grid cached per shape), ``dot``'s VJP of two numpy matrices,
  ``support.unbroadcast`` of numpy arrays: direct computations of what the general code
  computes.

Every gradient is checked against the eager tape and central differences in float64."""

import numpy as np
import pytest

import pullback as pb
from pullback import CompileError
from pullback import autograd as ag
from pullback import nd
from pullback.compiler import api
from pullback.runtime import fused, support
from pullback.runtime import primitives as P
from tape_helpers import central_gradient

RNG = np.random.default_rng(156)
W_VALUES, B_VALUES = RNG.normal(size=(3, 2)), RNG.normal(size=2)
W = b = None
PARAMS = []   # a global list: the slow road


@pytest.fixture(autouse=True)
def fresh_globals():
    """Each test starts from the same (3, 2) W, b and an unattached list item."""
    global W, b
    W = nd.array(W_VALUES, dtype="float64")
    b = nd.array(B_VALUES, dtype="float64")
    PARAMS[:] = [nd.array(B_VALUES, dtype="float64")]


def net(X):
    return nd.tanh(nd.dot(X, W) + b) * 2.0


def net_of_list(X):
    return nd.dot(X, W) + PARAMS[0]


def identity(X):
    return X


def numpy_net(X, W, b):
    return np.tanh(X @ W + b) * 2.0


def tape_and_compiled(fn, X):
    """``(tape's W.grad, b.grad, X.grad; compiled's)`` of sum(fn(X)) (X attached)."""
    results = []
    for road in (fn, pb.compile(fn)):
        for p in (W, b, X):
            p.attach_grad()
        with ag.record():
            out = road(X)
        out.backward()
        results.append([p.grad.asnumpy() for p in (W, b, X)])
    return results


def check_net(X, compiled):
    """The compiled call's gradients equal the tape's and central differences."""
    for p in (W, b, X):
        p.attach_grad()
    with ag.record():
        out = compiled(X)
    out.backward()
    got = [p.grad.asnumpy() for p in (W, b, X)]
    tape, _ = tape_and_compiled(net, X)
    values = [X.asnumpy().astype(np.float64), W.asnumpy().astype(np.float64),
              b.asnumpy().astype(np.float64)]
    expected = [central_gradient(numpy_net, values, k) for k in (1, 2, 0)]
    for g, t, e in zip(got, tape, expected, strict=True):
        np.testing.assert_allclose(g, t, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)


def counting(monkeypatch, name, compiled):
    """The list of calls of ``compiled``'s method ``name`` from now on."""
    calls = []
    original = getattr(api.CompiledFunction, name)

    def counted(self, *args, **kwargs):
        if self is compiled:
            calls.append(name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(api.CompiledFunction, name, counted)
    return calls


def test_fast_road_is_taken_and_agrees_with_tape_and_differences(monkeypatch):
    global W, b
    compiled = pb.compile(net)
    X = nd.array(RNG.normal(size=(4, 3)), dtype="float64")
    check_net(X, compiled)                  # first call: the slow road builds the variant
    slow = counting(monkeypatch, "_call_slowly", compiled)
    fast = counting(monkeypatch, "_record", compiled)
    check_net(X, compiled)
    assert fast and not slow
    # what the fast road must follow without a new look: a global of another shape ...
    W = nd.array(RNG.normal(size=(3, 5)), dtype="float64")
    b = nd.array(RNG.normal(size=5), dtype="float64")
    check_net(X, compiled)
    # ... of another dtype (float32 in: float32 gradients, as on the tape) ...
    W, b = W.astype("float32"), b.astype("float32")
    Xf = X.astype("float32")
    for p in (W, b, Xf):
        p.attach_grad()
    with ag.record():
        out = compiled(Xf)
    out.backward()
    got = [p.grad for p in (W, b, Xf)]
    assert all(g.dtype == np.float32 for g in got)
    tape, _ = tape_and_compiled(net, Xf)
    for g, t in zip(got, tape, strict=True):
        np.testing.assert_allclose(g.asnumpy(), t, rtol=1e-5, atol=1e-6)
    # ... and an argument that is a view of another array
    W, b = W.astype("float64"), b.astype("float64")
    whole = nd.array(RNG.normal(size=(6, 3)), dtype="float64")
    view = whole[1:5]
    check_net(view, compiled)
    assert not slow


def test_new_tracking_pattern_takes_the_slow_road_once(monkeypatch):
    compiled = pb.compile(net)
    X = nd.array(RNG.normal(size=(4, 3)), dtype="float64")
    check_net(X, compiled)
    slow = counting(monkeypatch, "_call_slowly", compiled)
    W.attach_grad()
    b.attach_grad()
    X2 = nd.array(X.asnumpy())                 # no gradient: another mask, another variant
    with ag.record():
        out = compiled(X2)
    out.backward()
    assert len(slow) == 1
    np.testing.assert_allclose(W.grad.asnumpy(), tape_and_compiled(net, X)[0][0], rtol=1e-6)


def test_plain_call_outside_record_is_the_function():
    compiled = pb.compile(net)
    X = nd.array(RNG.normal(size=(4, 3)), dtype="float64")
    expected = numpy_net(X.asnumpy(), W.asnumpy(), b.asnumpy())
    for _ in range(2):   # the slow road, then the fast one
        np.testing.assert_allclose(compiled(X).asnumpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(compiled(X.asnumpy())), expected, rtol=1e-12)


def test_global_container_is_checked_at_every_call():
    """A function that reads a global list never takes the fast road: an NDArray with a
    gradient put into that list later is refused, not read as a constant."""
    compiled = pb.compile(net_of_list)
    X = nd.array(RNG.normal(size=(4, 3)), dtype="float64")
    X.attach_grad()
    for _ in range(2):
        with ag.record():
            out = compiled(X)
        out.backward()
    PARAMS[0].attach_grad()
    with pytest.raises(CompileError, match="PARAMS"):
        with ag.record():
            compiled(X)


def test_container_argument_takes_the_slow_road(monkeypatch):
    def total(params, X):
        return nd.sum(nd.dot(X, params[0]) + params[1])

    compiled = pb.compile(total)
    Wc = nd.array(RNG.normal(size=(3, 2)), dtype="float64")
    bc = nd.array(RNG.normal(size=2), dtype="float64")
    X = nd.array(RNG.normal(size=(4, 3)), dtype="float64")
    for _ in range(2):
        slow = counting(monkeypatch, "_call_slowly", compiled)
        for p in (Wc, bc):
            p.attach_grad()
        with ag.record():
            out = compiled([Wc, bc], X)
        out.backward()
        assert slow
        np.testing.assert_allclose(Wc.grad.asnumpy(), X.asnumpy().sum(0)[:, None] * np.ones(2))
        np.testing.assert_allclose(bc.grad.asnumpy(), np.full(2, 4.0))
        monkeypatch.undo()


def test_output_that_is_an_input_is_a_new_array():
    compiled = pb.compile(identity)
    X = nd.array(RNG.normal(size=3), dtype="float64")
    X.attach_grad()
    for _ in range(2):
        with ag.record():
            out = compiled(X)
        assert out._data is not X._data
        out.backward(nd.array([1.0, 2.0, 3.0], dtype="float64"))
        np.testing.assert_array_equal(X.grad.asnumpy(), [1.0, 2.0, 3.0])


def test_freed_history_argument_is_a_constant_on_the_fast_road():
    """An argument whose history a backward freed is untracked (truncated BPTT): the
    fast road's mask says so, as the tape's does."""
    compiled = pb.compile(net)
    X = nd.array(RNG.normal(size=(4, 3)), dtype="float64")
    X.attach_grad()
    W.attach_grad()
    for road in (net, compiled, compiled):
        with ag.record():
            H = X * 1.0
        H.backward()
        with ag.record():
            out = road(H)
        out.backward()
        np.testing.assert_allclose(W.grad.asnumpy(), tape_and_compiled(net, X)[0][0],
                                   rtol=1e-6)


# ----- fused kernels ------------------------------------------------------------------


def tanh_layer(a, c, d):
    return nd.tanh(a + c * d)


def kernel_of(fn, *args):
    compiled = pb.compile(fn)
    pb.grad(compiled, argnums=(0, 1, 2))(*args)
    variant = next(v for m, v in compiled._variants.items() if any(m))
    return next(value for value in variant._forward.__globals__.values()
                if isinstance(value, fused.FusedKernel))


@pytest.mark.parametrize("shapes, fast", [
    (((4, 3), (4, 3), (4, 3)), True),
    (((4, 3), (3,), (4, 3)), True),         # inputs broadcast, every statement (4, 3)
    (((4, 3), (3,), (3,)), False),          # c * d is (3,): statement by statement
    (((32, 32), (32, 32), (32, 32)), False),   # native size (or numpy, if no llvmlite)
])
def test_fused_vjp_fast_road_equals_statement_by_statement(shapes, fast):
    by_name = dict(zip("acd", (RNG.normal(size=s) for s in shapes), strict=True))
    kernel = kernel_of(tanh_layer, *by_name.values())
    names = kernel.forward_program[0]   # the kernel's own order of its inputs
    arrays = [by_name[n] for n in names]
    outputs = kernel(*arrays)
    g = RNG.normal(size=outputs[0].shape)
    assert kernel._plain_numpy_vjp([g], outputs, arrays) is fast
    got = kernel.vjp([g], outputs, *arrays)
    reference = kernel._vjp_by_steps([g], arrays, outputs)
    for x, r, value in zip(got, reference, arrays, strict=True):
        np.testing.assert_allclose(support.unbroadcast(np.asarray(x), value),
                                   support.unbroadcast(np.asarray(r), value),
                                   rtol=1e-12, atol=1e-14)
    # and both are the derivative
    def layer(*values):
        v = dict(zip(names, values, strict=True))
        return np.tanh(v["a"] + v["c"] * v["d"]) * g

    for k, value in enumerate(arrays):
        expected = central_gradient(layer, arrays, k)
        summed = support.unbroadcast(np.asarray(got[k]), value)
        np.testing.assert_allclose(summed, expected, rtol=1e-5, atol=1e-7)


def test_fused_vjp_fast_road_not_taken_for_absent_gradient_or_list_input():
    arrays = [RNG.normal(size=(4, 3)) for _ in range(3)]
    kernel = kernel_of(tanh_layer, *arrays)
    outputs = kernel(*arrays)
    assert not kernel._plain_numpy_vjp([None], outputs, arrays)
    assert kernel.vjp([None], outputs, *arrays) == (None, None, None)
    listed = [arrays[0], arrays[1].tolist(), arrays[2]]
    assert not kernel._plain_numpy_vjp([np.ones((4, 3))], outputs, listed)
    got = kernel.vjp([np.ones((4, 3))], outputs, *listed)
    reference = kernel.vjp([np.ones((4, 3))], outputs, *arrays)
    for x, r in zip(got, reference, strict=True):
        np.testing.assert_allclose(x, r, rtol=1e-12)


# ----- primitives' direct computations ----------------------------------------------


@pytest.mark.parametrize("shape, axis", [((5,), 0), ((4, 3), -1), ((4, 3), 0),
                                         ((2, 3, 4), 1), ((2, 3, 4), -1)])
def test_pick_matches_numpy_and_differences(shape, axis):
    data = RNG.normal(size=shape)
    rest = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    index = RNG.integers(-2, shape[axis] + 2, rest).astype(np.float32)   # clipped
    clipped = np.clip(index.astype(np.int64), 0, shape[axis] - 1)
    expected = np.take_along_axis(data, np.expand_dims(clipped, axis), axis).squeeze(axis)
    for _ in range(2):   # the grid made, then reused
        x = nd.array(data, dtype="float64")
        x.attach_grad()
        with ag.record():
            y = nd.pick(x, nd.array(index), axis=axis)
        np.testing.assert_array_equal(y.asnumpy(), expected)
        y.backward()
        numeric = central_gradient(
            lambda d: np.take_along_axis(d, np.expand_dims(clipped, axis), axis), [data])
        np.testing.assert_allclose(x.grad.asnumpy(), numeric, rtol=1e-6, atol=1e-8)
    compiled = pb.grad(lambda d: nd.pick(d, nd.array(index), axis=axis))
    np.testing.assert_allclose(compiled(nd.array(data, dtype="float64")).asnumpy(),
                               x.grad.asnumpy(), rtol=1e-12)


@pytest.mark.parametrize("xs, ys", [((4, 3), (3, 2)), ((1, 3), (3, 1)), ((3,), (3, 2)),
                                    ((4, 3), (3,))])
def test_dot_vjp_of_numpy_operands_equals_ndarray_rules(xs, ys):
    x, y = RNG.normal(size=xs), RNG.normal(size=ys)
    g = RNG.normal(size=np.dot(x, y).shape)
    for rule in (P._dot_vjp_x, P._dot_vjp_y):
        raw = rule(g, None, x, y)
        general = rule(nd.array(g, dtype="float64"), None, nd.array(x, dtype="float64"),
                       nd.array(y, dtype="float64"))
        assert type(raw) is np.ndarray
        np.testing.assert_allclose(raw, general.asnumpy(), rtol=1e-12)
    k_x = central_gradient(lambda a: np.dot(a, y) * g, [x])
    np.testing.assert_allclose(P._dot_vjp_x(g, None, x, y), k_x, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("g_shape, shape", [((3, 4), (4,)), ((3, 4), (1, 4)), ((3, 4), (3, 1)),
                                             ((2, 3, 4), (3, 1)), ((3, 4), (3, 4)),
                                             ((3, 4), ())])
def test_unbroadcast_of_numpy_arrays_equals_sum_to(g_shape, shape):
    g = RNG.normal(size=g_shape).astype(np.float32)
    value = np.zeros(shape, np.float32)
    got = support.unbroadcast(g, value)
    if shape == ():
        expected = np.sum(g)
    elif g_shape == shape:
        expected = g
    else:
        expected = P.sum_to(nd.array(g), shape=shape).asnumpy()
    assert np.shape(got) == shape and np.asarray(got).dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


# ----- one rule for all inputs (Primitive.vjp_all) -------------------------------------


def two_slots(x, y):
    return nd.tanh(x) * y + nd.sum(nd.dot(W.T, x))


def two_outputs(x):
    return nd.tanh(x * b), nd.exp(x) * 2.0


def test_an_array_in_two_argument_slots_gets_both_gradients():
    x = nd.array(RNG.normal(size=(3, 2)), dtype="float64")
    values = x.asnumpy()

    def numpy_two_slots(v, w):
        return np.tanh(v) * w + np.sum(W.asnumpy().T @ v)

    expected = (central_gradient(numpy_two_slots, [values, values], 0)
                + central_gradient(numpy_two_slots, [values, values], 1))
    for road in (two_slots, pb.compile(two_slots), pb.compile(two_slots)):
        x.attach_grad()
        W.attach_grad()
        with ag.record():
            out = road(x, x)
        out.backward()
        np.testing.assert_allclose(x.grad.asnumpy(), expected, rtol=1e-6, atol=1e-8)


def test_two_outputs_both_used_and_retain_graph():
    """Each output's node runs the adjoint for its own head; a second pass with
    ``retain_graph`` gives the same gradients again."""
    x = nd.array(RNG.normal(size=2), dtype="float64")

    def numpy_loss(v, c):
        return np.sum(np.tanh(v * c) * 3.0) + np.sum(np.exp(v) * 2.0)

    expected = [central_gradient(numpy_loss, [x.asnumpy(), b.asnumpy()], k) for k in (0, 1)]
    for road in (two_outputs, pb.compile(two_outputs), pb.compile(two_outputs)):
        x.attach_grad()
        b.attach_grad()
        with ag.record():
            u, v = road(x)
            total = nd.sum(u * 3.0) + nd.sum(v)
        for _ in range(2):
            total.backward(retain_graph=True)
            for got, e in zip((x.grad, b.grad), expected, strict=True):
                np.testing.assert_allclose(got.asnumpy(), e, rtol=1e-6, atol=1e-8)


def pass_through(x, s):
    return x * 2.0, s


def test_a_returned_numpy_argument_is_copied_into_the_output():
    """A 0-d (or any) numpy argument returned as it is becomes a new buffer: changing
    the output never changes the argument."""
    compiled = pb.compile(pass_through)
    x = nd.array([1.0, 2.0], dtype="float64")
    x.attach_grad()
    for s in (np.array(3.0), np.array([4.0, 5.0])):
        for _ in range(2):
            before = s.copy()
            with ag.record():
                _, t = compiled(x, s)
            t[:] = 7.0
            np.testing.assert_array_equal(s, before)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((4, 3), -1), ((4, 3), 0), ((2, 3, 4), 1), ((5,), 0)])
def test_softmax_vjps_of_numpy_operands_equal_the_ndarray_rules(name, shape, axis):
    prim = P.REGISTRY[name]
    x = RNG.normal(size=shape)
    ans = prim.forward(x, axis=axis)
    g = RNG.normal(size=shape)
    raw = prim.vjps[0](g, ans, x, axis=axis)
    general = prim.vjps[0](nd.array(g, dtype="float64"), nd.array(ans, dtype="float64"),
                           nd.array(x, dtype="float64"), axis=axis)
    assert type(raw) is np.ndarray
    np.testing.assert_array_equal(raw, general.asnumpy())   # the same operations
    expected = central_gradient(lambda v: prim.forward(v, axis=axis) * g, [x])
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape, axis, keepdims", [((4, 3), -1, False), ((4, 3), 0, True),
                                                   ((2, 3, 4), 1, False),
                                                   ((2, 3, 4), -1, True), ((5,), 0, False)])
def test_pick_vjp_of_numpy_operands_equals_the_ndarray_rule(shape, axis, keepdims):
    """The raw rule assigns into zeros where the NDArray rule adds with index_add: the
    same result, since the key names every element at most once (indices clipped)."""
    data = RNG.normal(size=shape)
    rest = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    index = RNG.integers(-2, shape[axis] + 2, rest).astype(np.float32)
    prim = P.REGISTRY["pick"]
    ans = prim.forward(data, index=index, axis=axis, keepdims=keepdims)
    g = RNG.normal(size=ans.shape)
    raw = prim.vjps[0](g, ans, data, index=index, axis=axis, keepdims=keepdims)
    general = prim.vjps[0](nd.array(g, dtype="float64"), nd.array(ans, dtype="float64"),
                           nd.array(data, dtype="float64"), index=nd.array(index),
                           axis=axis, keepdims=keepdims)
    assert type(raw) is np.ndarray and raw.dtype == np.float64
    np.testing.assert_array_equal(raw, general.asnumpy())
    expected = central_gradient(
        lambda d: prim.forward(d, index=index, axis=axis, keepdims=keepdims) * g, [data])
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-8)


def chapter_net(X):
    return nd.dot(nd.maximum(nd.dot(X, W) + b, 0), W.T)


def chapter_loss(y_hat, y):
    return -nd.pick(nd.log_softmax(y_hat), y)


def numpy_chapter_loss(X, W, b, y):
    o = np.maximum(X @ W + b, 0) @ W.T
    z = o - o.max(axis=1, keepdims=True)
    ls = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -ls[np.arange(len(y)), y.astype(np.int64)]


def test_chapter_step_of_two_compiled_calls_agrees_with_tape_and_differences():
    """The MLP chapter's step shape (net reading global parameters, then the softmax
    cross-entropy, each compiled, one recorded array result each: the fast road's own
    node): W.grad and b.grad equal the tape's and central differences, for a mask with
    and one without X attached (two variants, each with its own tracked positions)."""
    y = nd.array([0, 2, 1, 2, 0])
    compiled = (pb.compile(chapter_net), pb.compile(chapter_loss))
    values = [RNG.normal(size=(5, 3)), W.asnumpy(), b.asnumpy(), y.asnumpy()]
    expected = [central_gradient(numpy_chapter_loss, values, k) for k in (1, 2, 0)]
    for attach_x in (False, True, False):
        grads = {}
        for road, (net_fn, loss_fn) in {"tape": (chapter_net, chapter_loss),
                                        "compiled": compiled}.items():
            W.attach_grad()
            b.attach_grad()
            X = nd.array(values[0], dtype="float64")
            if attach_x:
                X.attach_grad()
            with ag.record():
                loss = loss_fn(net_fn(X), y)
            loss.backward()
            grads[road] = [W.grad.asnumpy(), b.grad.asnumpy()] + (
                [X.grad.asnumpy()] if attach_x else [])
        for t, c, e in zip(grads["tape"], grads["compiled"], expected, strict=False):
            np.testing.assert_allclose(c, t, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(c, e, rtol=1e-6, atol=1e-8)
