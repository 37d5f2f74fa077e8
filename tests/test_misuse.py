"""Misuse of autograd raises a clear pullback.AutogradError, never a silent wrong gradient.

Each error is also an instance of the builtin that fits (RuntimeError, ValueError), and
its message names the cause and the fix; the key words are asserted.
"""

from contextlib import contextmanager

import numpy as np
import pytest
from pullback.runtime.errors import FunctionReuseError

import pullback as pb
from pullback import autograd as ag
from pullback import nd


@pytest.fixture(autouse=True)
def fresh_state():
    ag.set_recording(False)
    ag.set_training(False)
    yield
    ag.set_recording(False)
    ag.set_training(False)


def variable(values, grad_req="write"):
    x = nd.array(np.array(values, dtype=np.float64))
    x.attach_grad(grad_req)
    return x


@contextmanager
def raises(error, builtin, *words):
    """``pytest.raises(error)`` that also checks the error's bases and that each of
    ``words`` appears in its message."""
    with pytest.raises(error) as info:
        yield info
    assert isinstance(info.value, pb.AutogradError)
    assert isinstance(info.value, builtin)
    for word in words:
        assert word in str(info.value), f"{word!r} not in message: {info.value}"


# ----- backward twice ------------------------------------------------------------------------

def test_backward_twice_without_retain_graph():
    x = variable([1.0, 2.0])
    with ag.record():
        z = x * x
    z.backward()
    with raises(pb.GraphFreedError, RuntimeError, "retain_graph"):
        z.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), [2.0, 4.0])  # the failed pass wrote nothing


def test_grad_twice_without_retain_graph():
    x = variable([1.0, 2.0])
    with ag.record():
        z = x * x
    ag.grad(z, [x])
    with raises(pb.GraphFreedError, RuntimeError, "retain_graph"):
        ag.grad(z, [x])


def test_backward_through_a_shared_part_freed_by_another_backward():
    x = variable([1.0, 2.0])
    with ag.record():
        y = x * x
        z1 = y * 2
        z2 = y * 3
    z1.backward()
    with raises(pb.GraphFreedError, RuntimeError, "retain_graph"):
        z2.backward()


# ----- backward of an array that was never recorded -------------------------------------------

def _not_recorded_message(make_head):
    head = make_head()
    with raises(pb.NotRecordedError, RuntimeError) as info:
        head.backward()
    return str(info.value)


def _no_input_had_attach_grad():
    x = nd.array([1.0, 2.0])
    with ag.record():
        return x * 2


def _computed_outside_record():
    x = variable([1.0, 2.0])
    return x * 2


def _detached():
    x = variable([1.0, 2.0])
    with ag.record():
        return (x * 2).detach()


def test_not_recorded_because_no_input_had_attach_grad():
    message = _not_recorded_message(_no_input_had_attach_grad)
    assert "attach_grad()" in message and "none of the arrays" in message
    assert "outside" not in message and "detach" not in message


def test_not_recorded_because_computed_outside_record():
    message = _not_recorded_message(_computed_outside_record)
    assert "outside" in message and "autograd.record()" in message
    assert "detach" not in message and "none of the arrays" not in message


def test_not_recorded_because_detached():
    message = _not_recorded_message(_detached)
    assert "detach()" in message
    assert "outside" not in message and "none of the arrays" not in message


def test_the_three_reasons_are_distinct():
    reasons = {_not_recorded_message(make) for make in
               (_no_input_had_attach_grad, _computed_outside_record, _detached)}
    assert len(reasons) == 3


def test_reason_carries_through_later_operations():
    x = variable([1.0, 2.0])
    d = (x * 2).detach()
    outside = x * 3
    with ag.record():
        from_detached = d * 5 + 1
        from_outside = outside * 5
    with raises(pb.NotRecordedError, RuntimeError, "detach()"):
        from_detached.backward()
    with raises(pb.NotRecordedError, RuntimeError, "outside"):
        from_outside.backward()


def test_not_recorded_array_created_directly():
    with raises(pb.NotRecordedError, RuntimeError, "created directly"):
        nd.ones((2, 2)).backward()


def test_not_recorded_through_op_without_gradient():
    x = variable([1.0, 3.0, 2.0])
    with ag.record():
        index = nd.argmax(x, axis=0)
    with raises(pb.NotRecordedError, RuntimeError, "'argmax'"):
        index.backward()


def test_grad_of_array_never_recorded():
    x = variable([1.0, 2.0])
    y = x * 2
    with raises(pb.NotRecordedError, RuntimeError, "outside"):
        ag.grad(y, [x])


def test_grad_with_respect_to_array_without_attach_grad():
    x, constant = variable([1.0, 2.0]), nd.array([3.0, 4.0])
    with ag.record():
        y = x * constant
    with raises(pb.NotRecordedError, RuntimeError, "attach_grad()"):
        ag.grad(y, [constant])


# ----- head gradients ------------------------------------------------------------------------

def test_head_gradient_with_wrong_shape():
    x = variable([[1.0, 2.0], [3.0, 4.0]])
    with ag.record():
        z = x * x
    with raises(pb.HeadGradientError, ValueError, "shape", "(3,)", "(2, 2)"):
        z.backward(nd.ones((3,), dtype="float64"))
    z.backward(nd.ones((2, 2), dtype="float64"))  # the graph survived the failed call
    np.testing.assert_allclose(x.grad.asnumpy(), [[2.0, 4.0], [6.0, 8.0]])


def test_head_gradient_with_wrong_dtype():
    x = nd.array([1.0, 2.0])  # float32
    x.attach_grad()
    with ag.record():
        z = x * x
    with raises(pb.HeadGradientError, ValueError, "dtype", "float64", "float32"):
        z.backward(nd.array(np.array([1.0, 1.0])))  # numpy float64 keeps its dtype
    z.backward(nd.array([1.0, 1.0]))
    np.testing.assert_allclose(x.grad.asnumpy(), [2.0, 4.0])


def test_head_gradients_count_must_match_heads():
    x = variable([1.0])
    with ag.record():
        a, b = x * 2, x * 3
    with raises(pb.HeadGradientError, ValueError, "2 heads"):
        ag.backward([a, b], [nd.ones((1,), dtype="float64")])


# ----- in-place changes of arrays the graph needs --------------------------------------------

def _set_all(a):
    a[:] = 5.0


def _set_one(a):
    a[1] = 5.0


def _full_out(a):
    nd.full(a.shape, 5.0, dtype="float64", out=a)


def _op_out(a):
    nd.add(nd.zeros(a.shape, dtype="float64"), 5.0, out=a)


def _with_one(values):
    values = values.copy()
    values[1] = 5.0
    return values


# name: (change, values after the change from the values before)
MUTATIONS = {"x[:]=": (_set_all, lambda before: np.full_like(before, 5.0)),
             "x[i]=": (_set_one, _with_one),
             "full(out=x)": (_full_out, lambda before: np.full_like(before, 5.0)),
             "op(out=x)": (_op_out, lambda before: np.full_like(before, 5.0))}
MUTATION_PARAMS = list(MUTATIONS)


def _graph(role):
    """A graph z of x and the array ``role`` names: an input that a node saved, an
    intermediate that a node saved, or the head itself."""
    x = variable([1.0, 2.0])
    with ag.record():
        y = x * 2
        z = y * y
    return x, {"input": x, "intermediate": y, "head": z}[role], z


@pytest.mark.parametrize("role", ["input", "intermediate", "head"])
@pytest.mark.parametrize("mutation", MUTATION_PARAMS)
def test_inplace_change_outside_record_happens_then_backward_raises(mutation, role):
    _, target, z = _graph(role)
    change, after = MUTATIONS[mutation]
    before = target.asnumpy()
    change(target)
    np.testing.assert_array_equal(target.asnumpy(), after(before))
    with raises(pb.InPlaceError, RuntimeError, "changed in place"):
        z.backward()


@pytest.mark.parametrize("role", ["input", "intermediate", "head"])
@pytest.mark.parametrize("mutation", MUTATION_PARAMS)
def test_inplace_change_inside_record_raises_and_leaves_data(mutation, role):
    x, target, z = _graph(role)
    before = target.asnumpy()
    change, _ = MUTATIONS[mutation]
    with ag.record(), raises(pb.InPlaceError, RuntimeError, "left unchanged"):
        change(target)
    np.testing.assert_array_equal(target.asnumpy(), before)
    z.backward()  # the graph is intact: z = 4 x**2
    np.testing.assert_allclose(x.grad.asnumpy(), [8.0, 16.0])


@pytest.mark.parametrize("make_view", [
    lambda x: x.reshape((2, 1)),
    lambda x: x[0:1],
    lambda x: x.detach(),
], ids=["reshape", "slice", "detach"])
def test_inplace_change_through_a_view_is_seen(make_view):
    x = variable([1.0, 2.0])
    with ag.record():
        z = x * x
    view = make_view(x)  # outside record: a view with no history of its own
    with ag.record(), raises(pb.InPlaceError, RuntimeError, "left unchanged"):
        view[:] = 0.0
    np.testing.assert_array_equal(x.asnumpy(), [1.0, 2.0])
    view[:] = 0.0  # outside record the write goes through to x ...
    assert x.asnumpy()[0] == 0.0
    with raises(pb.InPlaceError, RuntimeError, "changed in place"):
        z.backward()  # ... and backward refuses the stale graph


def test_inplace_change_of_a_recorded_view_is_seen_by_its_base():
    x = variable([1.0, 2.0, 3.0, 4.0])
    with ag.record():
        z = x * x
    rows = x.reshape((2, 2))
    rows[1] = 0.0
    with raises(pb.InPlaceError, RuntimeError, "changed in place"):
        z.backward()


def test_assigning_a_recorded_value_into_an_array_inside_record():
    x = variable([1.0, 2.0])
    buffer = nd.zeros((2,), dtype="float64")
    with ag.record():
        with raises(pb.InPlaceError, RuntimeError, "gradient", "detach()"):
            buffer[:] = x * 2
        buffer[:] = (x * 2).detach()  # explicitly without gradient: allowed
    np.testing.assert_array_equal(buffer.asnumpy(), [2.0, 4.0])


# ----- augmented assignment ------------------------------------------------------------------

def _iadd(y, w):
    y += w
    return y


def _isub(y, w):
    y -= w
    return y


def _imul(y, w):
    y *= w
    return y


def _idiv(y, w):
    y /= w
    return y


def _ipow(y, w):
    y **= w
    return y


# y = 2x, then y op= w; (update, dx, dw) with analytic gradients
AUGMENTED = {
    "+=": (_iadd, lambda x, w: 2 + 0 * x, lambda x, w: 1 + 0 * w),
    "-=": (_isub, lambda x, w: 2 + 0 * x, lambda x, w: -1 + 0 * w),
    "*=": (_imul, lambda x, w: 2 * w, lambda x, w: 2 * x),
    "/=": (_idiv, lambda x, w: 2 / w, lambda x, w: -2 * x / w ** 2),
    "**=": (_ipow, lambda x, w: 2 * w * (2 * x) ** (w - 1),
            lambda x, w: (2 * x) ** w * np.log(2 * x)),
}


@pytest.mark.parametrize("op", AUGMENTED)
def test_augmented_assignment_inside_record_rebinds_and_differentiates(op):
    update, dx, dw = AUGMENTED[op]
    xv, wv = np.array([0.5, 1.5]), np.array([2.0, 3.0])
    x, w = variable(xv), variable(wv)
    with ag.record():
        y = x * 2
        old = y
        y = update(y, w)
    assert y is not old
    np.testing.assert_array_equal(old.asnumpy(), 2 * xv)  # the old array is untouched
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), dx(xv, wv), rtol=1e-12)
    np.testing.assert_allclose(w.grad.asnumpy(), dw(xv, wv), rtol=1e-12)


def test_augmented_assignment_with_constant_inside_record():
    x = variable([1.0, 2.0])
    with ag.record():
        y = x * x
        old = y
        y += 10.0
        y *= nd.array(np.array([3.0, 3.0]))
    assert y is not old
    np.testing.assert_array_equal(old.asnumpy(), [1.0, 4.0])
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), [6.0, 12.0])


def test_augmented_assignment_of_a_variable_inside_record():
    w = variable([1.0, 2.0])
    with ag.record():
        v = w
        v *= 3.0
    assert v is not w
    np.testing.assert_array_equal(w.asnumpy(), [1.0, 2.0])
    v.backward()
    np.testing.assert_allclose(w.grad.asnumpy(), [3.0, 3.0])


def test_augmented_assignment_updates_in_place_when_no_graph_is_involved():
    a = nd.array([1.0, 2.0])
    before = id(a)
    a += nd.array([1.0, 1.0])  # d2l "saving memory": same object
    assert id(a) == before
    with ag.record():
        a *= 2.0  # inside record too, as long as a is not part of the graph
    assert id(a) == before
    np.testing.assert_array_equal(a.asnumpy(), [4.0, 6.0])


# ----- grad_req ------------------------------------------------------------------------------

def test_attach_grad_with_invalid_grad_req():
    x = nd.array([1.0])
    with raises(pb.GradReqError, ValueError, "'sum'", "'write'", "'add'", "'null'"):
        x.attach_grad("sum")
    assert x.grad is None


def test_mark_variables_with_invalid_grad_req():
    with raises(pb.GradReqError, ValueError, "'inplace'", "'write'", "'add'", "'null'"):
        ag.mark_variables([nd.array([1.0])], [nd.zeros((1,))], grad_reqs="inplace")


# ----- what stays allowed --------------------------------------------------------------------

def test_sgd_update_in_place_after_backward_is_allowed():
    # d2l's sgd: param[:] = param - lr * param.grad, on f(w) = sum((w - 3)^2)
    w = variable([0.0, 1.0])
    expected = np.array([0.0, 1.0])
    lr = 0.1
    for _ in range(3):
        with ag.record():
            loss = nd.sum((w - 3.0) * (w - 3.0))
        loss.backward()
        np.testing.assert_allclose(w.grad.asnumpy(), 2 * (expected - 3.0))
        w[:] = w - lr * w.grad
        expected = expected - lr * 2 * (expected - 3.0)
        np.testing.assert_allclose(w.asnumpy(), expected)


def test_augmented_sgd_update_keeps_the_variable():
    w = variable([1.0, -2.0])
    with ag.record():
        loss = nd.sum(w * w)
    loss.backward()
    original = w
    w -= 0.25 * w.grad
    assert w is original and w.grad is not None
    np.testing.assert_allclose(w.asnumpy(), [0.5, -1.0])


def test_inplace_update_of_array_without_history_inside_record():
    x = variable([1.0, 2.0])
    scratch = nd.zeros((2,), dtype="float64")
    with ag.record():
        scratch[:] = 3.0
        scratch[0] = 1.0
        z = x * scratch
    z.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), [1.0, 3.0])


def test_inplace_update_after_retained_backward_then_backward_again_raises():
    w = variable([1.0, 2.0])
    with ag.record():
        loss = nd.sum(w * w)
    loss.backward(retain_graph=True)
    w[:] = 0.0  # allowed: outside record
    with raises(pb.InPlaceError, RuntimeError, "changed in place"):
        loss.backward()


# ----- Function ------------------------------------------------------------------------------

class Square(ag.Function):
    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, dy):
        (x,) = self.saved_tensors
        return 2 * x * dy


def test_function_instance_called_again_after_a_recorded_call():
    a, b = variable([1.0]), variable([5.0])
    square = Square()
    with ag.record():
        ya = square(a)
        with raises(FunctionReuseError, RuntimeError, "new instance"):
            square(b)  # would overwrite the tensors ya's backward needs
    ya.backward()
    np.testing.assert_allclose(a.grad.asnumpy(), [2.0])


def test_function_instance_may_be_reused_while_nothing_is_recorded():
    square = Square()
    np.testing.assert_allclose(square(nd.array([3.0])).asnumpy(), [9.0])
    np.testing.assert_allclose(square(nd.array([4.0])).asnumpy(), [16.0])


def test_function_backward_twice_without_retain_graph():
    x = variable([2.0])
    with ag.record():
        y = Square()(x)
    y.backward()
    with raises(pb.GraphFreedError, RuntimeError, "retain_graph"):
        y.backward()


def test_out_of_a_recorded_result_inside_record_raises():
    x = variable([1.0, 2.0])
    target = nd.zeros((2,), dtype="float64")
    with ag.record(), pytest.raises(pb.InPlaceError, match="out=.*lose its gradient"):
        nd.exp(x, out=target)
    assert target.asnumpy().tolist() == [0.0, 0.0]


# ----- numpy's view of an NDArray cannot bypass the version check (issue 14 item 6) -----

def test_a_write_through_np_asarray_is_refused_and_backward_keeps_the_recorded_values():
    x = variable([1.0, 2.0, 3.0])
    with ag.record():
        y = (x * x).sum()
    view = np.asarray(x)
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 100.0
    with pytest.raises(ValueError, match="read-only"):
        np.copyto(view, 0.0)
    y.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), [2.0, 4.0, 6.0])


def test_np_array_of_an_ndarray_is_a_writable_copy():
    x = variable([1.0, 2.0])
    copy = np.array(x)
    copy[0] = 7.0
    np.testing.assert_array_equal(x.asnumpy(), [1.0, 2.0])
    converted = np.asarray(x, dtype=np.float32)
    converted[1] = 5.0   # a dtype conversion is a copy of its own
    np.testing.assert_array_equal(x.asnumpy(), [1.0, 2.0])


def test_np_asarray_sees_writes_made_through_the_ndarray():
    x = variable([1.0, 2.0])
    view = np.asarray(x)
    x[0] = 4.0
    assert view[0] == 4.0


# ----- a numpy function on a recorded NDArray is refused, not a silent constant ---------

@pytest.mark.parametrize("call", [
    lambda x: np.where(x > 0, x, x * 0.1),
    lambda x: np.dot(x, x),
    lambda x: np.concatenate([x, x]),
    lambda x: np.stack((x, x)),
    lambda x: np.linalg.norm(x),
    lambda x: np.mean(x),
], ids=["where", "dot", "concatenate", "stack", "norm", "mean"])
def test_a_numpy_function_of_a_recorded_ndarray_is_refused(call):
    x = variable([1.0, -2.0, 3.0])
    with ag.record():
        with pytest.raises(pb.UnrecordedOpError, match="not recorded"):
            call(x)
    # outside record(), or of arrays no gradient flows into, numpy computes on the values
    np.testing.assert_allclose(np.asarray(call(x)), np.asarray(call(x.asnumpy() * 1)))
    with ag.record():
        constant = nd.array([1.0, -2.0, 3.0])
        np.testing.assert_allclose(np.asarray(call(constant)), np.asarray(call(x.asnumpy())))


# ----- x[x > 0] on the tape: MXNet's indices or numpy's mask? Refused, never a guess ------

def test_indexing_with_a_0_1_array_shaped_like_the_array_is_refused_on_the_tape():
    x = variable([-0.5, 0.2, 0.7])
    for build in (lambda: x > 0, lambda: x == 0.2, lambda: nd.greater(x, 0),
                  lambda: (x > 0).copy(), lambda: (x > 0).detach(), lambda: (x > 0)[:],
                  lambda: (x > 0).reshape((-1,)), lambda: nd.concat(x > 0, dim=0),
                  lambda: (x > 0) * 1.0, lambda: nd.array([1.0, 0.0, 1.0])):
        with pytest.raises(pb.MaskIndexError, match="ambiguous"):
            x[build()]
        with ag.record(), pytest.raises(IndexError, match="ambiguous"):
            x[build()]
    # MXNet's reading, asked for explicitly: indices 0 and 1
    with ag.record():
        y = x[(x > 0).astype("int64")].sum()
    y.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), [1.0, 2.0, 0.0])
    # 0/1 indices of another shape than the array are indices, as in MXNet
    np.testing.assert_array_equal(x[nd.array([1.0, 0.0])].asnumpy(), [0.2, -0.5])
