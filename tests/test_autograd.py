"""The MXNet-style autograd API: scopes, threads, backward, grad, grad_req, Function.

Every gradient is compared with its analytic value.
"""

import threading

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd


@pytest.fixture(autouse=True)
def fresh_state():
    """Each test starts, and leaves, with recording and training off."""
    ag.set_recording(False)
    ag.set_training(False)
    yield
    ag.set_recording(False)
    ag.set_training(False)


def f64(values):
    return nd.array(np.array(values, dtype=np.float64))


def variable(values, grad_req="write"):
    x = f64(values)
    x.attach_grad(grad_req)
    return x


def assert_close(actual, expected, rtol=1e-10, atol=1e-12):
    actual = actual.asnumpy() if isinstance(actual, pb.NDArray) else np.asarray(actual)
    np.testing.assert_allclose(actual, np.broadcast_to(expected, actual.shape), rtol=rtol,
                               atol=atol)


def state():
    return ag.is_recording(), ag.is_training()


# ----- recording and training state ----------------------------------------------------------

def test_default_state_is_not_recording_not_training():
    assert state() == (False, False)


def test_setters_return_previous_state():
    assert ag.set_recording(True) is False
    assert ag.set_recording(True) is True
    assert ag.set_recording(False) is True
    assert ag.is_recording() is False
    assert ag.set_training(True) is False
    assert ag.set_training(False) is True
    assert ag.is_training() is False


@pytest.mark.parametrize("make_scope, inside", [
    (lambda: ag.record(), (True, True)),
    (lambda: ag.record(train_mode=False), (True, False)),
    (lambda: ag.pause(), (False, False)),
    (lambda: ag.pause(train_mode=True), (False, True)),
    (lambda: ag.train_mode(), (False, True)),
    (lambda: ag.predict_mode(), (False, False)),
])
def test_each_scope_sets_and_restores_state(make_scope, inside):
    with make_scope():
        assert state() == inside
    assert state() == (False, False)


@pytest.mark.parametrize("make_scope", [ag.record, ag.pause, ag.train_mode, ag.predict_mode])
@pytest.mark.parametrize("before", [(False, False), (True, False), (False, True), (True, True)])
def test_scope_restores_state_when_block_raises(make_scope, before):
    ag.set_recording(before[0])
    ag.set_training(before[1])
    with pytest.raises(KeyError), make_scope():
        raise KeyError("boom")
    assert state() == before


def test_train_and_predict_mode_keep_recording():
    with ag.record():
        with ag.predict_mode():
            assert state() == (True, False)
            with ag.train_mode():
                assert state() == (True, True)
            assert state() == (True, False)
        assert state() == (True, True)


def test_scopes_nest_and_unwind_in_order():
    with ag.record():
        with ag.pause():
            assert state() == (False, False)
            with ag.record(train_mode=False):
                assert state() == (True, False)
                with ag.pause(train_mode=True):
                    assert state() == (False, True)
                assert state() == (True, False)
            assert state() == (False, False)
        assert state() == (True, True)
    assert state() == (False, False)


def test_exception_unwinds_several_nested_scopes():
    with (
        pytest.raises(ZeroDivisionError),
        ag.record(),
        ag.pause(train_mode=True),
        ag.record(train_mode=False),
    ):
        assert state() == (True, False)
        raise ZeroDivisionError
    assert state() == (False, False)


def test_one_scope_object_can_be_reentered_nested():
    scope = ag.record(train_mode=False)
    with scope:
        with ag.pause(train_mode=True):
            with scope:
                assert state() == (True, False)
            assert state() == (False, True)
        assert state() == (True, False)
    assert state() == (False, False)


def test_pause_inside_record_does_not_record():
    x = variable([1.0, 2.0])
    with ag.record():
        y = x * x
        with ag.pause():
            constant = x * 10
        z = y + constant
    z.backward()
    assert_close(x.grad, 2 * np.array([1.0, 2.0]))  # the paused x * 10 adds nothing


# ----- recording is per thread ---------------------------------------------------------------

def _run_threads(*targets):
    errors = []

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
                errors.append(error)
        return run

    threads = [threading.Thread(target=guarded(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive(), "thread did not finish"
    if errors:
        raise errors[0]


def test_recording_in_one_thread_does_not_make_another_record():
    barrier = threading.Barrier(2, timeout=10)
    x = variable([1.0, 2.0, 3.0])
    seen = {}

    def recorder():
        with ag.record():
            barrier.wait()  # 1: this thread is recording
            seen["recorder state"] = state()
            y = x * x
            barrier.wait()  # 2: the observer has computed its value meanwhile
        seen["recorder grad"] = ag.grad(y, [x])[0].asnumpy()

    def observer():
        barrier.wait()  # 1
        seen["observer state"] = state()
        z = x * 2
        seen["observer has history"] = z._node is not None
        barrier.wait()  # 2

    _run_threads(recorder, observer)
    assert seen["recorder state"] == (True, True)
    assert seen["observer state"] == (False, False)
    assert seen["observer has history"] is False
    assert_close(seen["recorder grad"], [2.0, 4.0, 6.0])
    assert state() == (False, False)


def test_setters_in_one_thread_do_not_leak_into_another():
    barrier = threading.Barrier(2, timeout=10)
    seen = {}

    def setter():
        seen["previous"] = (ag.set_recording(True), ag.set_training(True))
        barrier.wait()  # 1: flags are set here
        barrier.wait()  # 2: the other thread has looked

    def reader():
        barrier.wait()  # 1
        seen["reader"] = state()
        barrier.wait()  # 2

    _run_threads(setter, reader)
    assert seen["previous"] == (False, False)  # a new thread starts with both off
    assert seen["reader"] == (False, False)
    assert state() == (False, False)


def test_threads_record_and_differentiate_independently():
    barrier = threading.Barrier(3, timeout=10)
    results = {}

    def worker(scale):
        def run():
            x = variable([1.0, 2.0])
            with ag.record():
                barrier.wait()  # all three record at the same time
                y = x * x * scale
            y.backward()
            results[scale] = x.grad.asnumpy()
        return run

    _run_threads(worker(1.0), worker(2.0), worker(3.0))
    for scale in (1.0, 2.0, 3.0):
        assert_close(results[scale], 2 * scale * np.array([1.0, 2.0]))


# ----- backward ------------------------------------------------------------------------------

def test_backward_of_non_scalar_head_uses_ones():
    x = variable([[1.0, 2.0], [3.0, 4.0]])
    with ag.record():
        z = x * 2 * x
    z.backward()
    assert_close(x.grad, [[4.0, 8.0], [12.0, 16.0]])


def test_backward_with_head_gradient():
    x = variable([1.0, 2.0, 3.0])
    head = f64([10.0, 1.0, 0.1])
    with ag.record():
        z = x * x
    z.backward(head)
    assert_close(x.grad, 2 * np.array([1.0, 2.0, 3.0]) * head.asnumpy())


def test_backward_of_several_heads_sums_them():
    x = variable([1.0, 2.0])
    with ag.record():
        z1 = x * x
        z2 = x * 3
    ag.backward([z1, z2])
    assert_close(x.grad, 2 * np.array([1.0, 2.0]) + 3)


def test_backward_of_several_heads_with_head_gradients():
    x = variable([1.0, 2.0])
    with ag.record():
        z1 = x * x
        z2 = nd.exp(x)
    ag.backward([z1, z2], [f64([1.0, 2.0]), f64([3.0, 0.5])])
    xv = np.array([1.0, 2.0])
    assert_close(x.grad, 2 * xv * [1.0, 2.0] + np.exp(xv) * [3.0, 0.5])


def test_same_head_twice_counts_twice():
    x = variable([1.0, 2.0])
    with ag.record():
        z = x * 5
    ag.backward([z, z])
    assert_close(x.grad, 10.0)


def test_ndarray_backward_retain_graph_allows_a_second_pass():
    x = variable([1.0, 2.0], grad_req="add")
    with ag.record():
        z = x * x * x
    z.backward(f64([1.0, 1.0]), retain_graph=True)
    assert_close(x.grad, 3 * np.array([1.0, 4.0]))
    z.backward(f64([2.0, 2.0]), retain_graph=True)
    assert_close(x.grad, 3 * np.array([1.0, 4.0]) * 3)  # 1x + 2x, accumulated ('add')


def test_gradient_flows_through_shared_subexpressions():
    x = variable([0.5, -1.5])
    with ag.record():
        y = x * x
        z = y * y + y * 3  # x**4 + 3 x**2
    z.backward()
    xv = np.array([0.5, -1.5])
    assert_close(x.grad, 4 * xv ** 3 + 6 * xv)


def test_broadcast_operand_gets_summed_gradient():
    x = variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = variable([10.0, 20.0, 30.0])
    with ag.record():
        z = x * b
    z.backward()
    assert_close(b.grad, [5.0, 7.0, 9.0])
    assert_close(x.grad, [[10.0, 20.0, 30.0]] * 2)


# ----- mark_variables ------------------------------------------------------------------------

def test_mark_variables_uses_the_given_gradient_buffers():
    x, y = f64([1.0, 2.0]), f64([3.0, 4.0])
    gx, gy = nd.zeros((2,), dtype="float64"), nd.ones((2,), dtype="float64")
    ag.mark_variables([x, y], [gx, gy], grad_reqs=["write", "add"])
    assert x.grad is gx and y.grad is gy
    with ag.record():
        z = x * y
    z.backward()
    assert_close(gx, [3.0, 4.0])
    assert_close(gy, [1.0 + 1.0, 1.0 + 2.0])  # 'add' kept the buffer's ones


def test_mark_variables_accepts_single_arrays():
    x = f64([2.0])
    gx = nd.zeros((1,), dtype="float64")
    ag.mark_variables(x, gx)
    with ag.record():
        z = x * x * x
    z.backward()
    assert_close(gx, [12.0])


def test_mark_variables_rejects_mismatched_buffer_shape():
    with pytest.raises(ValueError, match=r"\(3,\)"):
        ag.mark_variables([f64([1.0, 2.0])], [nd.zeros((3,))])


# ----- grad ----------------------------------------------------------------------------------

def test_grad_returns_one_gradient_per_variable_and_leaves_dot_grad_alone():
    x, y = variable([1.0, 2.0]), variable([3.0, 4.0])
    x.grad[:] = 7.0
    with ag.record():
        z = x * y + x
    gx, gy = ag.grad(z, [x, y])
    assert_close(gx, [4.0, 5.0])
    assert_close(gy, [1.0, 2.0])
    assert_close(x.grad, 7.0)
    assert_close(y.grad, 0.0)
    assert gx is not x.grad


def test_grad_of_single_variable_is_a_list_as_in_mxnet():
    x = variable([1.0, 2.0])
    with ag.record():
        z = x * x
    result = ag.grad(z, x)
    assert isinstance(result, list) and len(result) == 1
    assert_close(result[0], [2.0, 4.0])


def test_grad_of_unreached_variable_is_zero():
    x, unused = variable([1.0, 2.0]), variable([5.0, 6.0, 7.0])
    with ag.record():
        z = x * 3
    gx, gu = ag.grad([z], [x, unused])
    assert_close(gx, 3.0)
    assert_close(gu, np.zeros(3))


def test_grad_with_several_heads_and_head_gradients():
    x = variable([1.0, 2.0])
    with ag.record():
        a = x * x
        b = x * 4
    (gx,) = ag.grad([a, b], [x], head_grads=[f64([1.0, 0.5]), f64([2.0, 2.0])])
    assert_close(gx, 2 * np.array([1.0, 2.0]) * [1.0, 0.5] + 8.0)


def test_grad_retain_graph_allows_another_pass():
    x = variable([3.0])
    with ag.record():
        z = x * x
    first = ag.grad(z, [x], retain_graph=True)[0]
    second = ag.grad(z, [x])[0]
    assert_close(first, 6.0)
    assert_close(second, 6.0)


# ----- higher order --------------------------------------------------------------------------

X = np.array([0.3, -1.2, 0.7, 2.0])
A = np.array([[1.0, 2.0, 0.0, -1.0], [0.5, -3.0, 1.0, 2.0], [0.0, 1.5, 2.0, 0.5],
              [-2.0, 0.0, 1.0, 4.0]])


def _tanh_derivatives(x):
    t = np.tanh(x)
    return [1 - t ** 2, -2 * t * (1 - t ** 2), (1 - t ** 2) * (6 * t ** 2 - 2)]


def _norm_derivatives(x):
    r, s, n = np.sqrt(np.sum(x * x)), np.sum(x), x.size
    return [x / r, (1 - x * s / r ** 2) / r,
            -n * x / r ** 3 - 2 * s / r ** 3 + 3 * s ** 2 * x / r ** 5]


# name: (function, [d1, d2, d3]); dk is the gradient of sum(d(k-1)) (head gradient ones)
HIGHER_ORDER = {
    "x*x": (lambda x: x * x, lambda x: [2 * x, 2 + 0 * x, 0 * x]),
    "exp": (nd.exp, lambda x: [np.exp(x)] * 3),
    "tanh": (nd.tanh, _tanh_derivatives),
    "sum-linear": (nd.sum, lambda x: [1 + 0 * x, 0 * x, 0 * x]),
    "sum-cubic": (lambda x: nd.sum(x * x * x), lambda x: [3 * x ** 2, 6 * x, 6 + 0 * x]),
    "norm": (nd.norm, _norm_derivatives),
    "dot": (lambda x: nd.dot(x, nd.dot(f64(A), x)),
            lambda x: [(A + A.T) @ x, (A + A.T) @ np.ones_like(x), 0 * x]),
}


@pytest.mark.parametrize("name", HIGHER_ORDER)
def test_create_graph_gives_second_and_third_derivatives(name):
    fn, derivatives = HIGHER_ORDER[name]
    x = variable(X)
    with ag.record():
        y = fn(x)
    d1 = ag.grad(y, [x], create_graph=True)[0]
    d2 = ag.grad(d1, [x], create_graph=True)[0]
    d3 = ag.grad(d2, [x])[0]
    for k, (got, expected) in enumerate(zip([d1, d2, d3], derivatives(X), strict=True), 1):
        assert got.shape == X.shape, f"order {k}"
        assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert_close(x.grad, 0.0)  # grad() never writes .grad


def _sigmoid_derivatives(d):
    s = 1 / (1 + np.exp(-d))
    first = s * (1 - s)
    return [first, first * (1 - 2 * s), first * (1 - 6 * s + 6 * s ** 2)]


def test_create_graph_softmax_up_to_third_order():
    # softmax over two entries: its first entry is sigmoid(x0 - x1), so the k-th
    # derivative of that entry is (s_k, -s_k) with s_k the k-th derivative of sigmoid.
    values = np.array([[0.3, -0.4], [2.0, 1.0], [-1.0, 0.5]])
    first_entry = f64(np.tile([1.0, 0.0], (3, 1)))
    x = variable(values)
    with ag.record():
        y = nd.softmax(x, axis=-1)
    grads, current = [], y
    for order in (1, 2, 3):
        current = ag.grad(current, [x], head_grads=[first_entry], create_graph=order < 3)[0]
        grads.append(current)
    for got, expected in zip(grads, _sigmoid_derivatives(values[:, 0] - values[:, 1]),
                             strict=True):
        assert_close(got, np.stack([expected, -expected], axis=1), rtol=1e-9, atol=1e-12)


def test_backward_of_a_create_graph_gradient_fills_dot_grad():
    # MXNet's documented example: z = exp(x) + x, dz/dx = exp(x) + 1, d2z/dx2 = exp(x)
    x = variable([0.5, 1.0])
    with ag.record():
        z = nd.exp(x) + x
        dx = ag.grad(z, [x], create_graph=True)[0]
    assert_close(dx, np.exp([0.5, 1.0]) + 1)
    dx.backward()
    assert_close(x.grad, np.exp([0.5, 1.0]))


def test_create_graph_mixed_partials():
    x, y = variable([1.5]), variable([-0.5])
    with ag.record():
        z = x * x * y + nd.exp(x * y)
    gx, gy = ag.grad(z, [x, y], create_graph=True)
    (dxy,) = ag.grad(gx, [y])  # d/dy (2xy + y exp(xy)) = 2x + exp(xy) + xy exp(xy)
    e = np.exp(1.5 * -0.5)
    assert_close(gx, 2 * 1.5 * -0.5 - 0.5 * e)
    assert_close(gy, 1.5 ** 2 + 1.5 * e)
    assert_close(dxy, 2 * 1.5 + e + 1.5 * -0.5 * e)


# ----- grad_req ------------------------------------------------------------------------------

def _two_passes(x):
    for _ in range(2):
        with ag.record():
            z = x * x
        z.backward()


def test_grad_req_write_overwrites():
    x = variable([1.0, 2.0], grad_req="write")
    _two_passes(x)
    assert_close(x.grad, [2.0, 4.0])


def test_grad_req_add_accumulates():
    x = variable([1.0, 2.0], grad_req="add")
    _two_passes(x)
    assert_close(x.grad, [4.0, 8.0])


def test_grad_req_null_has_no_gradient_and_other_inputs_still_get_theirs():
    x = variable([1.0, 2.0], grad_req="null")
    y = variable([3.0, 4.0])
    assert x.grad is None
    with ag.record():
        z = x * y
    z.backward()
    assert x.grad is None
    assert_close(y.grad, [1.0, 2.0])


def test_attach_grad_again_resets_the_gradient():
    x = variable([1.0, 2.0], grad_req="add")
    _two_passes(x)
    x.attach_grad()
    assert_close(x.grad, 0.0)
    _two_passes(x)
    assert_close(x.grad, [2.0, 4.0])


# ----- detach and intermediate variables -----------------------------------------------------

def test_detach_treats_the_value_as_a_constant():
    x = variable([1.0, 2.0, 3.0])
    with ag.record():
        y = (x * x).detach() * x  # d/dx = x**2, not 3 x**2
    y.backward()
    assert_close(x.grad, np.array([1.0, 2.0, 3.0]) ** 2)


def test_detach_keeps_values_and_drops_history():
    x = variable([1.0, 2.0])
    with ag.record():
        y = x * 3
    d = y.detach()
    assert d._node is None and d.grad is None
    assert_close(d, [3.0, 6.0])


def test_attach_grad_on_intermediate_keeps_the_graph():
    x = variable([1.0, 2.0])
    with ag.record():
        y = x * 2
        y.attach_grad()
        z = y * y
    z.backward()
    assert_close(y.grad, 2 * np.array([2.0, 4.0]))       # dz/dy = 2y
    assert_close(x.grad, 2 * 2 * np.array([2.0, 4.0]))   # dz/dx = 2y * 2: graph not cut


# ----- Function ------------------------------------------------------------------------------

class Sigmoid(ag.Function):
    """MXNet's documented example."""

    def forward(self, x):
        y = 1 / (1 + nd.exp(-x))
        self.save_for_backward(y)
        return y

    def backward(self, dy):
        (y,) = self.saved_tensors
        return dy * y * (1 - y)


class Multiply(ag.Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a * b

    def backward(self, dy):
        a, b = self.saved_tensors
        return dy * b, dy * a


class SumAndProduct(ag.Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a + b, a * b

    def backward(self, d_sum, d_product):
        a, b = self.saved_tensors
        return d_sum + d_product * b, d_sum + d_product * a


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_function_single_input():
    values = np.array([-2.0, 0.0, 1.5])
    x = variable(values)
    with ag.record():
        m = Sigmoid()(x)
    m.backward()
    assert_close(m, _sigmoid(values))
    assert_close(x.grad, _sigmoid(values) * (1 - _sigmoid(values)))


def test_function_inside_a_larger_graph():
    values = np.array([-0.5, 0.25])
    x = variable(values)
    with ag.record():
        z = Sigmoid()(x * 3) * 2
    z.backward()
    s = _sigmoid(3 * values)
    assert_close(x.grad, 6 * s * (1 - s))


def test_function_with_grad_req_add():
    values = np.array([0.1, -1.0])
    x = variable(values, grad_req="add")
    for _ in range(2):
        with ag.record():
            m = Sigmoid()(x)
        m.backward()
    s = _sigmoid(values)
    assert_close(x.grad, 2 * s * (1 - s))


def test_function_several_inputs():
    a, b = variable([1.0, 2.0]), variable([3.0, 5.0])
    with ag.record():
        y = Multiply()(a, b)
    y.backward(f64([1.0, 10.0]))
    assert_close(a.grad, [3.0, 50.0])
    assert_close(b.grad, [1.0, 20.0])


def test_function_input_without_gradient_gets_none():
    a, b = variable([1.0, 2.0]), f64([3.0, 5.0])
    with ag.record():
        y = Multiply()(a, b)
    y.backward()
    assert_close(a.grad, [3.0, 5.0])
    assert b.grad is None


def test_function_several_outputs():
    a, b = variable([1.0, 2.0]), variable([3.0, -1.0])
    with ag.record():
        total, product = SumAndProduct()(a, b)
        loss = total * 2 + product * 3
    loss.backward()
    assert_close(total, [4.0, 1.0])
    assert_close(product, [3.0, -2.0])
    assert_close(a.grad, 2 + 3 * np.array([3.0, -1.0]))
    assert_close(b.grad, 2 + 3 * np.array([1.0, 2.0]))


def test_function_several_outputs_only_one_used():
    a, b = variable([1.0, 2.0]), variable([3.0, -1.0])
    with ag.record():
        _, product = SumAndProduct()(a, b)
    product.backward()
    assert_close(a.grad, [3.0, -1.0])
    assert_close(b.grad, [1.0, 2.0])


def test_function_several_outputs_with_grad_req_add():
    a, b = variable([1.0, 2.0], "add"), variable([3.0, -1.0], "add")
    for _ in range(3):
        with ag.record():
            total, product = SumAndProduct()(a, b)
        ag.backward([total, product])
    assert_close(a.grad, 3 * (1 + np.array([3.0, -1.0])))
    assert_close(b.grad, 3 * (1 + np.array([1.0, 2.0])))


def test_function_retained_graph_uses_each_new_head_gradient():
    x = variable([1.0, 2.0])
    with ag.record():
        y = Multiply()(x, x)
    for scale in (1.0, 10.0, 3.0, 0.5):
        y.backward(f64([scale, scale]), retain_graph=True)
        assert_close(x.grad, 2 * scale * np.array([1.0, 2.0]))


def test_function_retained_graph_sees_head_gradient_changed_in_place():
    x = variable([1.0, 2.0])
    head = f64([1.0, 1.0])
    with ag.record():
        y = Multiply()(x, x)
    y.backward(head, retain_graph=True)
    assert_close(x.grad, [2.0, 4.0])
    head[:] = 10.0  # same object (same id) with new values
    y.backward(head, retain_graph=True)
    assert_close(x.grad, [20.0, 40.0])


def test_function_outside_record_records_nothing():
    x = variable([1.0])
    y = Sigmoid()(x)
    assert_close(y, _sigmoid(1.0))
    with pytest.raises(pb.NotRecordedError, match="outside"):
        y.backward()


def test_function_returning_its_input_gets_a_new_array():
    class Identity(ag.Function):
        def forward(self, x):
            return x

        def backward(self, dy):
            return dy * 1

    x = variable([4.0, 5.0])
    with ag.record():
        y = Identity()(x)
        z = y * y
    assert y is not x
    z.backward()
    assert_close(x.grad, [8.0, 10.0])


def test_grad_wrt_an_intermediate_does_not_walk_the_history_behind_it(monkeypatch):
    """Nested reverse mode stays linear: the ops before the variable are not visited."""
    from pullback.runtime import primitives as P

    calls = []
    exp_prim = P.REGISTRY["exp"]
    original = exp_prim.vjps

    def counting_rule(g, ans, x):
        calls.append(1)
        return original[0](g, ans, x)

    monkeypatch.setattr(exp_prim, "vjps", (counting_rule,))
    x = nd.array([0.1, 0.2], dtype="float64")
    x.attach_grad()
    with ag.record():
        y = x
        for _ in range(20):
            y = nd.exp(y * 0.1)
        v = y * 2
        z = nd.sin(v)
        (dv,) = ag.grad([z], [v], retain_graph=True)
    assert calls == []
    np.testing.assert_allclose(dv.asnumpy(), np.cos(v.asnumpy()))
    z.backward()   # the full history is still there for the leaf
    assert len(calls) == 20 and np.all(np.isfinite(x.grad.asnumpy()))


class CountingSquare(ag.Function):
    """x**2 whose backward counts its calls."""

    calls = 0

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, dy):
        CountingSquare.calls += 1
        (x,) = self.saved_tensors
        return 2 * dy * x


def test_grad_runs_only_the_rules_on_a_path_to_its_variables():
    x, w = nd.array([1.0, 2.0]), nd.array([3.0, -1.0])
    x.attach_grad()
    w.attach_grad()
    CountingSquare.calls = 0
    with ag.record():
        y = x * CountingSquare()(w)     # the square's rule leads only to w
    (gx,) = ag.grad([y], [x], head_grads=[nd.ones((2,))])
    np.testing.assert_array_equal(gx.asnumpy(), [9.0, 1.0])
    assert CountingSquare.calls == 0
    CountingSquare.calls = 0
    with ag.record():
        y = x * CountingSquare()(w)
    (gw,) = ag.grad([y], [w], head_grads=[nd.ones((2,))])
    np.testing.assert_array_equal(gw.asnumpy(), [6.0, -4.0])
    assert CountingSquare.calls == 1
