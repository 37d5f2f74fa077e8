"""A compiled call as one tape node: its implicit inputs (globals, closures, attributes),
composition with other compiled functions, histories freed by backward(), repeated
backward passes, and the head gradients of pb.vjp (issues 14, 15, 17)."""

import re
import types

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from tape_helpers import central_gradient

RNG = np.random.default_rng(15)
W_VALUES = RNG.normal(size=(3, 2))
B_VALUES = RNG.normal(size=2)
X_VALUES = RNG.normal(size=(4, 3))

W = nd.array(W_VALUES, dtype="float64")
b = nd.array(B_VALUES, dtype="float64")
PARAMS = types.SimpleNamespace(W=nd.array(W_VALUES, dtype="float64"))


def reset_parameters():
    """Fresh attached globals (each test starts from the same values and zero grads)."""
    global W, b
    W = nd.array(W_VALUES, dtype="float64")
    b = nd.array(B_VALUES, dtype="float64")
    W.attach_grad()
    b.attach_grad()
    PARAMS.W = nd.array(W_VALUES, dtype="float64")
    PARAMS.W.attach_grad()


def numpy_net(X, W, b):
    return np.tanh(X @ W + b) * 2.0


def net(X):   # the d2l chapters' pattern: parameters are attached globals
    return nd.tanh(nd.dot(X, W) + b) * 2.0


def net_params_only():
    return nd.sum(nd.tanh(nd.dot(nd.array(X_VALUES, dtype="float64"), W) + b))


def net_attribute(X):
    return nd.sum(nd.dot(X, PARAMS.W) * 3.0)


def expected_parameter_gradients(head=None):
    head = np.ones((4, 2)) if head is None else head

    def through(k):
        return central_gradient(lambda *a: numpy_net(*a) * head, [X_VALUES, W_VALUES, B_VALUES],
                                k=k)

    return through(0), through(1), through(2)


@pytest.fixture(autouse=True)
def parameters():
    reset_parameters()


def test_attached_globals_are_inputs_of_the_compiled_node():
    x = nd.array(X_VALUES, dtype="float64")
    x.attach_grad()
    with ag.record():
        y = pb.compile(net)(x)
    y.backward()
    gx, gw, gb = expected_parameter_gradients()
    np.testing.assert_allclose(W.grad.asnumpy(), gw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b.grad.asnumpy(), gb, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(x.grad.asnumpy(), gx, rtol=1e-6, atol=1e-8)


def test_compiled_and_tape_agree_on_global_parameters():
    x = nd.array(X_VALUES, dtype="float64")
    compiled = pb.compile(net)
    grads = []
    for fn in (net, compiled):
        reset_parameters()
        with ag.record():
            y = fn(x)
        y.backward(nd.array(np.arange(8.0).reshape(4, 2)))
        grads.append((W.grad.asnumpy(), b.grad.asnumpy()))
    for tape_grad, compiled_grad in zip(*grads, strict=True):
        np.testing.assert_allclose(compiled_grad, tape_grad, rtol=1e-12)


def test_a_function_of_globals_only_records_a_node():
    with ag.record():
        y = pb.compile(net_params_only)()
    y.backward()
    _, gw, gb = (central_gradient(lambda *a: np.sum(np.tanh(a[0] @ a[1] + a[2])),
                                  [X_VALUES, W_VALUES, B_VALUES], k=k) for k in range(3))
    np.testing.assert_allclose(W.grad.asnumpy(), gw, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b.grad.asnumpy(), gb, rtol=1e-6, atol=1e-8)


def test_an_attribute_of_an_object_is_an_input():
    x = nd.array(X_VALUES, dtype="float64")
    with ag.record():
        y = pb.compile(net_attribute)(x)
    y.backward()
    expected = central_gradient(lambda w: np.sum(X_VALUES @ w * 3.0), [W_VALUES])
    np.testing.assert_allclose(PARAMS.W.grad.asnumpy(), expected, rtol=1e-6, atol=1e-8)


def test_closure_arrays_are_inputs_and_work_in_elementwise_code():
    shift = nd.array(B_VALUES, dtype="float64")
    shift.attach_grad()

    @pb.compile
    def f(x):
        return nd.tanh(x * 2 + shift)

    x = nd.array(X_VALUES[:, :2], dtype="float64")
    plain = f(x)   # outside record(): a closure NDArray in an elementwise (fused) run
    np.testing.assert_allclose(plain.asnumpy(), np.tanh(X_VALUES[:, :2] * 2 + B_VALUES))
    with ag.record():
        y = f(x)
    y.backward()
    expected = central_gradient(lambda s: np.tanh(X_VALUES[:, :2] * 2 + s), [B_VALUES])
    np.testing.assert_allclose(shift.grad.asnumpy(), expected, rtol=1e-6, atol=1e-8)


def test_a_rebound_global_is_read_at_call_time():
    global W
    compiled = pb.compile(net)
    x = nd.array(X_VALUES, dtype="float64")
    compiled(x)
    W = nd.array(W_VALUES * 10, dtype="float64")   # SGD written as rebinding
    W.attach_grad()
    np.testing.assert_allclose(compiled(x).asnumpy(), numpy_net(X_VALUES, W_VALUES * 10,
                                                                B_VALUES))
    with ag.record():
        y = compiled(x)
    y.backward()
    expected = central_gradient(numpy_net, [X_VALUES, W_VALUES * 10, B_VALUES], k=1)
    np.testing.assert_allclose(W.grad.asnumpy(), expected, rtol=1e-6, atol=1e-8)


def test_globals_are_data_for_the_functional_api():
    def loss(X):
        return nd.sum(net(X))

    gx = pb.grad(loss)(nd.array(X_VALUES, dtype="float64"))
    np.testing.assert_allclose(gx.asnumpy(), expected_parameter_gradients()[0], rtol=1e-6,
                               atol=1e-8)
    assert not W.grad.asnumpy().any()


compiled_net = pb.compile(net)


def loss_of_compiled_net(X):
    return nd.sum(compiled_net(X) * compiled_net(X))


def test_compiled_functions_compose():
    x = nd.array(X_VALUES, dtype="float64")

    def numpy_loss(X, W, b):
        return np.sum(numpy_net(X, W, b) ** 2)

    gx = pb.grad(loss_of_compiled_net)(x)
    np.testing.assert_allclose(gx.asnumpy(), central_gradient(
        numpy_loss, [X_VALUES, W_VALUES, B_VALUES], k=0), rtol=1e-6, atol=1e-8)
    with ag.record():   # the callee's globals are inputs of the caller's node
        y = pb.compile(loss_of_compiled_net)(x)
    y.backward()
    np.testing.assert_allclose(W.grad.asnumpy(), central_gradient(
        numpy_loss, [X_VALUES, W_VALUES, B_VALUES], k=1), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b.grad.asnumpy(), central_gradient(
        numpy_loss, [X_VALUES, W_VALUES, B_VALUES], k=2), rtol=1e-6, atol=1e-8)


# ----- histories freed by backward(): constants afterwards, as in MXNet 1.x ----------------

U_VALUES = RNG.normal(size=(2, 2)) * 0.5
INPUTS = RNG.normal(size=(2, 3, 4, 3))   # batch, time step, rows, features


def numpy_rnn(h, W, U, xs):
    for x in xs:
        h = np.tanh(x @ W + h @ U)
    return h


def rnn_steps(step, h, U):
    """Two batches of truncated BPTT: the state carried into batch 2 keeps its value, its
    history from batch 1 (freed by backward) is a constant.  Returns W.grad per batch."""
    grads = []
    for batch in INPUTS:
        with ag.record():
            for x in batch:
                h = step(nd.array(x, dtype="float64"), h, U)
            loss = nd.sum(h * h)
        loss.backward()
        grads.append(W.grad.asnumpy().copy())
    return grads, h


def tape_step(x, h, U):
    return nd.tanh(nd.dot(x, W) + nd.dot(h, U))


@pytest.mark.parametrize("road", ["tape", "compiled"])
def test_a_state_carried_past_backward_is_a_constant(road):
    step = tape_step if road == "tape" else pb.compile(tape_step)
    U = nd.array(U_VALUES, dtype="float64")
    U.attach_grad()
    grads, h = rnn_steps(step, nd.zeros((4, 2), dtype="float64"), U)
    h1 = numpy_rnn(np.zeros((4, 2)), W_VALUES, U_VALUES, INPUTS[0])
    for k, h0 in enumerate((np.zeros((4, 2)), h1)):
        expected = central_gradient(lambda w, h0=h0, k=k: numpy_rnn(h0, w, U_VALUES,
                                                                    INPUTS[k]) ** 2,
                                    [W_VALUES])
        np.testing.assert_allclose(grads[k], expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(h.asnumpy(), numpy_rnn(h1, W_VALUES, U_VALUES, INPUTS[1]))


def test_an_array_of_a_freed_graph_alone_is_not_recorded():
    with ag.record():
        h = nd.tanh(W * 2)
    h.backward()
    with ag.record():
        z = h * 3
    with pytest.raises(pb.NotRecordedError, match="history an earlier backward"):
        z.backward()


def test_a_variable_of_a_freed_graph_becomes_a_leaf():
    with ag.record():
        h = W * 2
        h.attach_grad()
        loss = nd.sum(h * h)
    loss.backward()
    with ag.record():
        z = nd.sum(h * 3)
    z.backward()
    np.testing.assert_allclose(h.grad.asnumpy(), np.full((3, 2), 3.0))
    np.testing.assert_allclose(W.grad.asnumpy(), 8 * W_VALUES)   # unchanged by z


def test_backward_twice_through_a_freed_graph_still_raises():
    with ag.record():
        y = nd.tanh(W) * 2
    y.backward()
    with pytest.raises(pb.GraphFreedError):
        y.backward()


def double_tanh(v):
    return nd.tanh(v) * 2


@pytest.mark.parametrize("road", ["tape", "compiled"])
def test_a_node_recorded_before_the_free_still_raises(road):
    """``a`` and ``c`` share ``y``'s history; ``a.backward()`` frees it, so ``c``'s gradient
    can no longer be computed: an error, not a gradient that silently stops at ``y``."""
    f = double_tanh if road == "tape" else pb.compile(double_tanh)
    with ag.record():
        y = f(W)
        a = y + 1
        c = y * 3
    a.backward()
    with pytest.raises(pb.GraphFreedError):
        c.backward()


# ----- repeated backward passes through one compiled node (issue 14 item 4) ---------------

def sines(x):
    return nd.sin(x) * x


def jacobian_rows(fn, values, head_for):
    x = nd.array(values, dtype="float64")
    x.attach_grad()
    with ag.record():
        y = fn(x)
    rows = []
    for i in range(len(values)):
        y.backward(head_for(i), retain_graph=True)
        rows.append(x.grad.asnumpy().copy())
    return np.array(rows)


@pytest.mark.parametrize("road", ["tape", "compiled"])
def test_a_jacobian_row_by_row_with_fresh_heads(road):
    values = np.array([0.3, -1.2, 2.0])
    fn = sines if road == "tape" else pb.compile(sines)
    rows = jacobian_rows(fn, values, lambda i: nd.array(np.eye(3)[i], dtype="float64"))
    np.testing.assert_allclose(rows, np.diag(np.cos(values) * values + np.sin(values)),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("road", ["tape", "compiled"])
def test_one_head_array_changed_in_place_between_passes(road):
    values = np.array([0.3, -1.2, 2.0])
    fn = sines if road == "tape" else pb.compile(sines)
    head = nd.zeros(3, dtype="float64")

    def head_for(i):
        head[:] = np.eye(3)[i]
        return head

    rows = jacobian_rows(fn, values, head_for)
    np.testing.assert_allclose(rows, np.diag(np.cos(values) * values + np.sin(values)),
                               rtol=1e-12, atol=1e-15)


class Scale(ag.Function):
    def forward(self, x, y):
        self.save_for_backward(x, y)
        return x * y

    def backward(self, g):
        x, y = self.saved_tensors
        return g * y, g * x


def test_a_custom_function_with_one_head_changed_in_place_between_passes():
    x = nd.array([2.0, 3.0], dtype="float64")
    y = nd.array([5.0, 7.0], dtype="float64")
    x.attach_grad()
    y.attach_grad()
    with ag.record():
        out = Scale()(x, y)
    head = nd.array([1.0, 1.0], dtype="float64")
    (gx,) = ag.grad(out, [x], head_grads=[head], retain_graph=True)   # y's share unused
    head[:] = np.array([10.0, 100.0])
    (gy,) = ag.grad(out, [y], head_grads=[head])
    np.testing.assert_allclose(gx.asnumpy(), [5.0, 7.0])
    np.testing.assert_allclose(gy.asnumpy(), [20.0, 300.0])


# ----- numpy's shapes: a 0-d argument stays 0-d (issue 14 item 7) --------------------------

def stacked(s, v):
    return np.sum(np.stack([s, s]) * v)


def with_ndim(s, v):
    return np.sum(s * v) * (s.ndim + 1)


def scalar_chain(s):
    return s * 2.0 + np.sin(s) * s


def beside_a_long_array(s, x):
    return np.sum(np.exp(s) * x + s)


ZERO_D_CASES = [
    (stacked, [np.array(0.5), np.array([1.0, 2.0])]),
    (with_ndim, [np.array(0.5), np.array([1.0, 2.0])]),
    (scalar_chain, [np.array(0.7)]),
    (beside_a_long_array, [np.array(-0.3), RNG.normal(size=600)]),
]


@pytest.mark.parametrize(("fn", "args"), ZERO_D_CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_a_0d_argument_keeps_numpys_shapes(fn, args):
    nums = tuple(range(len(args)))
    value, grads = pb.value_and_grad(fn, nums)(*args)
    np.testing.assert_allclose(value, fn(*args), rtol=1e-12)
    assert np.shape(value) == np.shape(fn(*args))
    for k, g in enumerate(grads):
        assert isinstance(g, np.ndarray) and g.shape == args[k].shape
        expected = central_gradient(lambda *a: fn(*map(np.asarray, a)), args, k=k)
        np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-8)


def test_a_0d_float32_argument_gets_a_0d_float32_gradient():
    g = pb.grad(scalar_chain)(np.array(0.7, dtype=np.float32))
    assert g.shape == () and g.dtype == np.float32
    np.testing.assert_allclose(g, central_gradient(scalar_chain, [np.array(0.7)]), rtol=1e-5)


# ----- pb.vjp checks head gradients as backward(head) does (issue 17 item 6) --------------

def three_sines(x):
    return np.sin(x) * 2.0


def sum_of_sines(x):
    return np.sum(np.sin(x))


def sine_and_square(x):
    return np.sin(x), x * x


X3 = np.array([0.1, -0.4, 0.9])


@pytest.mark.parametrize("head", [np.ones(1), np.ones(()), 1.0, np.ones((3, 1)), np.ones(4)],
                         ids=["(1,)", "0-d", "number", "(3, 1)", "(4,)"])
def test_vjp_refuses_a_head_of_another_shape(head):
    _, back = pb.vjp(three_sines, X3)
    with pytest.raises(pb.HeadGradientError, match=r"has shape .* they must match"):
        back(head)


@pytest.mark.parametrize("head", [np.ones(3) * 1j, np.ones(3, np.float32), 1j],
                         ids=["complex array", "float32", "complex number"])
def test_vjp_refuses_a_head_of_another_dtype(head):
    _, back = pb.vjp(three_sines if isinstance(head, np.ndarray) else sum_of_sines, X3)
    with pytest.raises(pb.HeadGradientError, match="dtype"):
        back(head)
    x = nd.array(X3, dtype="float64")
    x.attach_grad()
    with ag.record():   # the tape's rule, same message
        y = nd.sin(x)
    if isinstance(head, np.ndarray):
        with pytest.raises(pb.HeadGradientError, match="dtype"):
            y.backward(head)


@pytest.mark.parametrize("head", [(np.ones(3),), (np.ones(3), np.ones(3), np.ones(3)),
                                  np.ones(3)], ids=["1", "3", "not a tuple"])
def test_vjp_refuses_a_wrong_number_of_heads(head):
    _, back = pb.vjp(sine_and_square, X3)
    with pytest.raises(pb.HeadGradientError, match="head gradients for 2 heads"):
        back(head)


def test_vjp_accepts_matching_heads():
    _, back = pb.vjp(sine_and_square, X3)
    (g,) = back((np.ones(3), np.full(3, 2.0)))
    np.testing.assert_allclose(g, np.cos(X3) + 4 * X3)
    (g,) = back((None, np.ones(3)))   # None: that output's gradient is zero
    np.testing.assert_allclose(g, 2 * X3)
    _, back = pb.vjp(sum_of_sines, X3)
    (g,) = back(2.0)   # a number for a scalar output takes its dtype
    np.testing.assert_allclose(g, 2 * np.cos(X3))


@pytest.mark.parametrize("argnums", [1.0, "0", (0, 1.0), True])
def test_argnums_must_be_positions(argnums):
    for make in (lambda: pb.vjp(three_sines, X3, argnums=argnums),
                 lambda: pb.grad(three_sines, argnums=argnums),
                 lambda: pb.value_and_grad(three_sines, argnums=argnums)):
        with pytest.raises(TypeError, match="argnums must be an int or a tuple of ints"):
            make()


# ----- arrays compiled code would read as constants are refused, never silently lost -------

PARAM_LIST = []


def dot_first(x, params):
    return nd.sum(nd.dot(x, params[0]))


def dot_attribute(x, holder):
    return nd.sum(nd.dot(x, holder.W))


def dot_global_list(x):
    return nd.sum(nd.dot(x, PARAM_LIST[0]))


def test_a_tracked_array_inside_a_list_argument_is_an_input_of_the_node():
    # was refused (issue 11, item 2): a list argument is a pytree, its arrays are inputs
    x = nd.array(X_VALUES, dtype="float64")
    with ag.record():
        y = pb.compile(dot_first)(x, [W])
    y.backward()
    np.testing.assert_allclose(W.grad.asnumpy(), central_gradient(
        lambda w: np.sum(X_VALUES @ w), [W_VALUES]), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("fn", "where"), [(dot_attribute, "the argument holder.W"),
                                           (dot_global_list, "PARAM_LIST[0]")])
def test_a_tracked_array_inside_a_container_or_object_is_refused(fn, where):
    PARAM_LIST[:] = [W]
    x = nd.array(X_VALUES, dtype="float64")
    extra = {dot_first: ([W],), dot_attribute: (types.SimpleNamespace(W=W),)}.get(fn, ())
    with ag.record(), pytest.raises(pb.CompileError, match=rf"reads {re.escape(where)}, an "
                                                           "NDArray with a gradient"):
        pb.compile(fn)(x, *extra)
    plain = pb.compile(fn)(x, *extra)   # outside record() nothing is lost: it runs
    np.testing.assert_allclose(plain.asnumpy(), np.sum(X_VALUES @ W_VALUES))
    with ag.record():   # the tape fallback differentiates it
        y = pb.compile(fn, fallback="tape")(x, *extra)
    y.backward()
    np.testing.assert_allclose(W.grad.asnumpy(), central_gradient(
        lambda w: np.sum(X_VALUES @ w), [W_VALUES]), rtol=1e-6, atol=1e-8)


def weighted_squares(x):
    return nd.sum(x * x * b)


def test_second_order_through_a_compiled_call_that_reads_a_global():
    x = nd.array([1.0, -2.0], dtype="float64")
    x.attach_grad()
    with ag.record():
        y = pb.compile(weighted_squares)(x)
        (gx,) = ag.grad(y, [x], create_graph=True)   # its VJP: forward-over-reverse
        z = nd.sum(gx * gx)
    z.backward()
    xs = x.asnumpy()
    np.testing.assert_allclose(x.grad.asnumpy(), central_gradient(
        lambda v: np.sum((2 * v * B_VALUES) ** 2), [xs]), rtol=1e-6)
    np.testing.assert_allclose(b.grad.asnumpy(), central_gradient(
        lambda c: np.sum((2 * xs * c) ** 2), [B_VALUES]), rtol=1e-6)


@pb.compile
def _product_of_two(x, y):
    return x * y


@pb.compile
def _product_of_items(v):
    return v['a'] * v['b']


def test_create_graph_through_a_compiled_call_counts_a_repeated_array_once():
    for call in (lambda x: _product_of_two(x, x), lambda x: _product_of_items({'a': x, 'b': x})):
        x = nd.array([1.0, 2.0], dtype="float64")
        x.attach_grad()
        with ag.record():
            y = call(x)
            g = ag.grad(y, [x], create_graph=True, retain_graph=True)[0]
        np.testing.assert_allclose(g.asnumpy(), [2.0, 4.0])   # d(x^2)/dx = 2x
        g.backward()
        np.testing.assert_allclose(x.grad.asnumpy(), [2.0, 2.0])   # d(sum 2x)/dx
