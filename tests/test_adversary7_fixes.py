"""Families of the seventh adversary's findings (tests/test_adversary7_findings.py), fixed:
each family checked on the compiled road against the eager tape (values, gradients, the
tape's InPlaceError) and central differences in float64."""

from types import SimpleNamespace

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from tape_helpers import central_gradient


# ----- finding 6: a compiled result viewing an argument's buffer is the tape's view --------

W_VIEWED = nd.array([1.0, 2.0, 3.0, 4.0], dtype="float64")


def reshaped(x):
    return x.reshape((4,))


def a_row(x):
    return x[1]


def itself(x):
    return x


def a_global_slice(x):
    return W_VIEWED[1:3]


def a_reshaped_global(x):
    return W_VIEWED.reshape((2, 2))


def view_and_value(x):
    return x.reshape((4,)), x * 2.0


def fresh(x):
    return x.reshape((4,)) * 1.0


VIEWS = [reshaped, a_row, itself, a_global_slice, a_reshaped_global, view_and_value]


@pytest.mark.parametrize("recorded", [False, True])
@pytest.mark.parametrize("fn", VIEWS + [fresh])
def test_a_write_through_the_result_is_seen_as_the_tapes_is(fn, recorded):
    """Writing into the result after the viewed array was recorded: the tape's answer
    (InPlaceError in backward for a view, the right gradient for a fresh result) on both
    roads."""
    outcomes = []
    for road in ("tape", "compiled"):
        call = pb.compile(fn) if road == "compiled" else fn
        W_VIEWED[:] = nd.array([1.0, 2.0, 3.0, 4.0], dtype="float64")
        x = nd.array([[0.5, -1.0], [2.0, 0.25]], dtype="float64")
        x.attach_grad()
        W_VIEWED.attach_grad()
        if recorded and not (road == "tape" and fn is itself):
            with ag.record():
                y = call(x)
        else:
            y = call(x)
        y = y[0] if isinstance(y, tuple) else y
        with ag.record():
            loss = (x * x).sum() + (W_VIEWED * W_VIEWED * W_VIEWED).sum()
        if road == "compiled" and recorded and fn is itself:
            # the tape's record() returns x itself, whose write inside record() is refused;
            # the compiled call's recorded result is a copy: a write changes nothing else
            y[:] = 5.0
            loss.backward()
            np.testing.assert_allclose(x.grad.asnumpy(), 2 * np.array([[0.5, -1.0],
                                                                       [2.0, 0.25]]))
            return
        y[:] = 5.0
        try:
            loss.backward()
        except pb.InPlaceError:
            outcomes.append("InPlaceError")
            continue
        outcomes.append((x.grad.asnumpy().copy(), W_VIEWED.grad.asnumpy().copy()))
    tape, compiled = outcomes
    if tape == "InPlaceError" or compiled == "InPlaceError":
        assert tape == compiled == "InPlaceError"
    else:
        for a, b in zip(tape, compiled, strict=True):
            np.testing.assert_allclose(a, b)
        np.testing.assert_allclose(tape[0], 2 * np.array([[0.5, -1.0], [2.0, 0.25]]))


@pytest.mark.parametrize("fn", [reshaped, a_row])
def test_value_and_grad_value_viewing_an_ndarray_argument_is_linked(fn):
    x = nd.array([[0.5, -1.0], [2.0, 0.25]], dtype="float64")
    x.attach_grad()
    with ag.record():
        loss = (x * x * x).sum()
    value, grad = pb.value_and_grad(fn)(x)
    expected = np.ones((2, 2)) if fn is reshaped else np.array([[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(grad.asnumpy(), expected)
    value[:] = 7.0   # writes x too (a view, as the tape's result would be)
    assert x.asnumpy().max() == 7.0
    with pytest.raises(pb.InPlaceError):
        loss.backward()


def test_results_of_fresh_values_stay_unlinked_and_gradients_unchanged():
    """A result computed from (not viewing) an argument owns its buffer: writing into it
    leaves the argument, and a later backward, alone; gradients vs central differences."""
    compiled = pb.compile(lambda x: nd.tanh(x.reshape((4,))) * 2.0)
    x0 = np.array([[0.5, -1.0], [2.0, 0.25]])
    x = nd.array(x0, dtype="float64")
    x.attach_grad()
    with ag.record():
        y = compiled(x)
        loss = (y * y).sum()
    loss.backward()
    y[:] = 0.0
    np.testing.assert_allclose(x.asnumpy(), x0)
    numeric = central_gradient(lambda a: float(np.sum((np.tanh(a.reshape(4)) * 2.0) ** 2)),
                               (x0,), 0)
    np.testing.assert_allclose(x.grad.asnumpy(), numeric, rtol=1e-6, atol=1e-8)


# ----- finding 1: autograd.is_recording() inside compiled code is the caller's state -------

W_STATE = nd.array([0.7, -1.3, 0.4], dtype="float64")


def _recording_factor():
    return 3.0 if ag.is_recording() else 1.0


def branch_on_recording(x):
    if ag.is_recording():
        return nd.sin(x * W_STATE).sum() * 2.0
    return nd.sin(x * W_STATE).sum()


def branch_in_a_helper(x):
    return (x * W_STATE * x).sum() * _recording_factor()


def branch_inside_pause(x):
    with ag.pause():
        inside = ag.is_recording()
    scale = 5.0 if inside else 1.0
    return (nd.exp(x * W_STATE)).sum() * scale + (x * x).sum() * ag.is_recording()


def branch_on_a_dict(params, x):
    if ag.is_recording():
        return (nd.tanh(x * params["w"]) * 2.0).sum()
    return nd.tanh(x * params["w"]).sum()


STATE_FUNCTIONS = [branch_on_recording, branch_in_a_helper, branch_inside_pause]


def _run_state(fn, recorded, x_tracked, w_tracked):
    W_STATE.attach_grad(grad_req="write" if w_tracked else "null")
    x = nd.array([0.3, -0.8, 1.1], dtype="float64")
    if x_tracked:
        x.attach_grad()
    if not recorded:
        return [fn(x).asnumpy()]
    with ag.record():
        loss = fn(x)
    if not (x_tracked or w_tracked):
        return [loss.asnumpy()]
    loss.backward()
    found = [loss.asnumpy()]
    if x_tracked:
        found.append(x.grad.asnumpy().copy())
    if w_tracked:
        found.append(W_STATE.grad.asnumpy().copy())
    return found


@pytest.mark.parametrize("tracked", [(False, False), (True, False), (False, True),
                                     (True, True)])
@pytest.mark.parametrize("recorded", [False, True])
@pytest.mark.parametrize("fn", STATE_FUNCTIONS)
def test_is_recording_inside_compiled_code_follows_the_caller(fn, recorded, tracked):
    eager = _run_state(fn, recorded, *tracked)
    compiled = _run_state(pb.compile(fn), recorded, *tracked)
    for a, b in zip(eager, compiled, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12)


@pytest.mark.parametrize("recorded", [False, True])
def test_is_recording_with_a_container_argument(recorded):
    """A dict argument takes the general road (_call_slowly)."""
    results = []
    for fn in (branch_on_a_dict, pb.compile(branch_on_a_dict)):
        w = nd.array([0.7, -1.3, 0.4], dtype="float64")
        w.attach_grad()
        x = nd.array([0.3, -0.8, 1.1], dtype="float64")
        if recorded:
            with ag.record():
                loss = fn({"w": w}, x)
            loss.backward()
            results.append((loss.asnumpy(), w.grad.asnumpy().copy()))
        else:
            results.append((fn({"w": w}, x).asnumpy(),))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12)
    if recorded:   # the recorded branch (2 tanh) against central differences
        numeric = central_gradient(
            lambda w: 2.0 * np.sum(np.tanh(np.array([0.3, -0.8, 1.1]) * w)),
            (np.array([0.7, -1.3, 0.4]),), 0)
        np.testing.assert_allclose(results[1][1], numeric, rtol=1e-6, atol=1e-8)


def test_create_graph_through_a_branch_on_is_recording():
    """The second-order re-run of the compiled forward takes the recorded call's branch:
    x.grad of sum(grad(l)**2) equals the tape's and central differences."""
    def run(fn, x0):
        W_STATE.attach_grad()
        x = nd.array(x0, dtype="float64")
        x.attach_grad()
        with ag.record():
            loss = fn(x)
            gx = ag.grad(loss, [x], create_graph=True)[0]
            s = (gx * gx).sum()
        s.backward()
        return float(s.asnumpy()[0]), x.grad.asnumpy().copy()

    x0 = np.array([0.3, -0.8, 1.1])
    _, eager = run(branch_on_recording, x0)
    _, compiled = run(pb.compile(branch_on_recording), x0)
    eps = 1e-6
    numeric = np.array([(run(branch_on_recording, x0 + e)[0]
                         - run(branch_on_recording, x0 - e)[0]) / (2 * eps)
                        for e in np.eye(3) * eps])
    np.testing.assert_allclose(eager, numeric, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(compiled, eager, rtol=1e-10)


# ----- finding 7: container arguments of a compiled call that records nothing -------------

def mlp(params, x):
    h = nd.tanh(nd.dot(x, params["layers"][0]["W"]) + params["layers"][0]["b"])
    return nd.dot(h, params["layers"][1][0]) + params["scale"] * params["layers"][1][1]


def _mlp_params(attach):
    rs = np.random.RandomState(4)
    leaves = [nd.array(rs.randn(*shape), dtype="float64") for shape in ((3, 4), (4,), (4, 2),
                                                                       (2,))]
    if attach:
        for leaf in leaves:
            leaf.attach_grad()
    return {"layers": [{"W": leaves[0], "b": leaves[1]}, (leaves[2], leaves[3])],
            "scale": 0.5}, leaves


@pytest.mark.parametrize("state", ["plain", "plain_attached", "recorded_untracked",
                                   "paused"])
def test_container_arguments_without_a_recorded_node(state):
    params, _ = _mlp_params(attach=state != "recorded_untracked")
    x = nd.array(np.random.RandomState(5).randn(5, 3), dtype="float64")
    compiled = pb.compile(mlp)
    if state == "recorded_untracked":
        with ag.record():
            got = compiled(params, x)
    elif state == "paused":
        with ag.record():
            with ag.pause():
                got = compiled(params, x)
    else:
        got = compiled(params, x)
    np.testing.assert_allclose(got.asnumpy(), mlp(params, x).asnumpy(), rtol=1e-12)


def test_container_arguments_evaluated_between_recorded_steps():
    """Train under record(), evaluate outside it, train again: gradients equal the tape's
    and central differences, evaluations equal the eager values."""
    results = []
    for fn in (mlp, pb.compile(mlp)):
        params, leaves = _mlp_params(attach=True)
        x = nd.array(np.random.RandomState(5).randn(5, 3), dtype="float64")
        found = []
        for _ in range(2):
            with ag.record():
                loss = (fn(params, x) ** 2).sum()
            loss.backward()
            found += [leaf.grad.asnumpy().copy() for leaf in leaves]
            for leaf in leaves:
                leaf[:] = leaf - 0.01 * leaf.grad
            found.append(fn(params, x).asnumpy())
        results.append(found)
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10)
    params, leaves = _mlp_params(attach=False)
    x0 = np.random.RandomState(5).randn(5, 3)
    w0 = leaves[0].asnumpy()

    def loss_of_w(w):
        h = np.tanh(x0 @ w + leaves[1].asnumpy())
        return np.sum((h @ leaves[2].asnumpy() + 0.5 * leaves[3].asnumpy()) ** 2)

    np.testing.assert_allclose(results[1][0], central_gradient(loss_of_w, (w0,), 0),
                               rtol=1e-6, atol=1e-8)


# ----- finding 2: second derivatives through a compiled call drawing random numbers --------

W_DRAWS = nd.array([1.764052345967664, 0.4001572083672233, 0.9787379841057392],
                   dtype="float64")
GENERATOR = np.random.default_rng(0)


def scaled_by_uniform(x):
    r = nd.random.uniform(0.5, 1.5, shape=(3,), dtype="float64")
    return nd.sin(x * W_DRAWS * r).sum()


def scaled_by_two_normals(x):
    r = nd.random.normal(1.0, 0.2, shape=(3,), dtype="float64")
    s = nd.random.normal(0.0, 0.1, shape=(3,), dtype="float64")
    return (nd.exp(x * r) * W_DRAWS + x * x * s).sum()


def masked_by_randint(x):
    mask = nd.random.randint(0, 2, shape=(3,)).astype("float64")
    return (nd.tanh(x * W_DRAWS) * (mask + 0.5)).sum()


def two_outputs_drawing(x):
    r = nd.random.uniform(0.5, 1.5, shape=(3,), dtype="float64")
    return nd.sin(x * r), nd.cos(x * W_DRAWS) * r


def drawn_by_numpy(x):
    r = np.random.uniform(0.5, 1.5, size=3)
    return nd.sin(x * W_DRAWS * r).sum()


def drawn_by_a_generator(x):
    r = GENERATOR.uniform(0.5, 1.5, size=3)
    return nd.sin(x * W_DRAWS * r).sum()


def _second_order(fn, x0, order=2):
    """s = sum(grad(l)**2) (order 2) or the gradient of its gradient's sum (order 3):
    its value, x.grad, W.grad and the next nd.random draw after the backward."""
    W_DRAWS.attach_grad()
    x = nd.array(x0, dtype="float64")
    x.attach_grad()
    nd.random.seed(3)
    with ag.record():
        out = fn(x)
        loss = out if not isinstance(out, tuple) else (out[0] * out[1]).sum()
        gx = ag.grad(loss, [x], create_graph=True)[0]
        s = (gx * gx).sum()
        if order == 3:
            gxx = ag.grad(s, [x], create_graph=True)[0]
            s = (gxx * gxx).sum()
    s.backward()
    return (float(s.asnumpy()[0]), x.grad.asnumpy().copy(), W_DRAWS.grad.asnumpy().copy(),
            nd.random.uniform(shape=(2,), dtype="float64").asnumpy())


X_DRAWS = np.array([1.6243453636632417, -0.6117564136500754, -0.5281717522634557])


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("fn", [scaled_by_uniform, scaled_by_two_normals, masked_by_randint,
                                two_outputs_drawing])
def test_second_and_third_order_through_nd_random_draws(fn, order):
    eager = _second_order(fn, X_DRAWS, order)
    compiled = _second_order(pb.compile(fn), X_DRAWS, order)
    for a, b in zip(eager, compiled, strict=True):   # the next draw too: one draw per call
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    if order == 2:
        eps = 1e-6
        numeric = np.array([(_second_order(fn, X_DRAWS + e)[0]
                             - _second_order(fn, X_DRAWS - e)[0]) / (2 * eps)
                            for e in np.eye(3) * eps])
        np.testing.assert_allclose(compiled[1], numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("fn", [drawn_by_numpy, drawn_by_a_generator])
def test_other_random_sources_refuse_second_order_and_keep_first_order(fn):
    """np.random and Generator objects cannot be replayed: create_graph through them is an
    AutogradError naming the function; first-order gradients (one forward) stay exact."""
    compiled = pb.compile(fn)
    x = nd.array(X_DRAWS, dtype="float64")
    x.attach_grad()
    with ag.record():
        loss = compiled(x)
        with pytest.raises(pb.AutogradError, match=fn.__name__):
            ag.grad(loss, [x], create_graph=True)[0].sum().backward()
    np.random.seed(1)
    globals()["GENERATOR"] = np.random.default_rng(1)
    with ag.record():
        loss = compiled(x)
    loss.backward()
    np.random.seed(1)
    globals()["GENERATOR"] = np.random.default_rng(1)
    r = np.random.uniform(0.5, 1.5, size=3) if fn is drawn_by_numpy else \
        GENERATOR.uniform(0.5, 1.5, size=3)
    w = W_DRAWS.asnumpy()
    np.testing.assert_allclose(x.grad.asnumpy(), np.cos(X_DRAWS * w * r) * w * r,
                               rtol=1e-12)


# ----- finding 8: recorded second (and third) derivatives with heads depending on x -------

W_HEAD = nd.array([0.9, -0.4, 1.3], dtype="float64")


def one_output(x):
    return nd.sin(x * W_HEAD) * x


def two_outputs(x):
    return nd.tanh(x * W_HEAD), nd.exp(x * 0.5) * W_HEAD


def looped(x):
    h = x
    for _ in range(2):
        h = nd.sin(h * W_HEAD) + x
    return h


HEADS = {
    "squared": lambda out: (out * out).sum() if not isinstance(out, tuple)
    else (out[0] * out[0]).sum() + (out[1] * out[0]).sum(),
    "product": lambda out: (out * nd.exp(out)).sum() if not isinstance(out, tuple)
    else (out[0] * out[1]).sum(),
    "constant": lambda out: out.sum() if not isinstance(out, tuple)
    else out[0].sum() + 2 * out[1].sum(),
}


def _recorded_derivatives(fn, head, x0, order):
    W_HEAD.attach_grad()
    x = nd.array(x0, dtype="float64")
    x.attach_grad()
    with ag.record():
        loss = HEADS[head](fn(x))
        gx = ag.grad(loss, [x], create_graph=True)[0]
        s = (gx * gx * x).sum()
        gxx = ag.grad(s, [x], create_graph=True)[0]
        t = (gxx * gxx).sum()
    if order == 3:
        t.backward()
        return float(s.asnumpy()[0]), gxx.asnumpy(), x.grad.asnumpy().copy(), \
            W_HEAD.grad.asnumpy().copy()
    return float(s.asnumpy()[0]), gxx.asnumpy()


X_HEAD = np.array([0.8, -0.3, 0.45])


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("fn", [one_output, two_outputs, looped])
def test_recorded_higher_derivatives_through_compiled_calls(fn, head, order):
    eager = _recorded_derivatives(fn, head, X_HEAD, order)
    compiled = _recorded_derivatives(pb.compile(fn), head, X_HEAD, order)
    for a, b in zip(eager, compiled, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    if order == 2:   # the eager road itself against central differences of s
        eps = 1e-6
        numeric = np.array([(_recorded_derivatives(fn, head, X_HEAD + e, 2)[0]
                             - _recorded_derivatives(fn, head, X_HEAD - e, 2)[0]) / (2 * eps)
                            for e in np.eye(3) * eps])
        np.testing.assert_allclose(compiled[1], numeric, rtol=1e-5, atol=1e-7)


# ----- finding 3: attributes of NDArrays that numpy arrays lack (.grad, .context, .ctx) ---


W_ATTR = nd.array([1.0, 2.0, 3.0], dtype="float64")
SETTINGS = SimpleNamespace(context=2.5)


def grad_of_argument(p, lr):
    return p - lr * p.grad


def grad_of_global(lr):
    return W_ATTR - lr * W_ATTR.grad


def grad_of_local(p):
    q = p * 2.0
    return q.grad


def grad_in_a_helper_call(p):
    return grad_of_local(p) + p


@pytest.mark.parametrize("fn, args", [(grad_of_argument, ("W", 0.1)), (grad_of_global, (0.1,)),
                                      (grad_of_local, ("W",)), (grad_in_a_helper_call, ("W",))])
def test_grad_attribute_is_refused_at_its_line(fn, args):
    W_ATTR.attach_grad()
    args = tuple(W_ATTR if a == "W" else a for a in args)
    with pytest.raises(pb.CompileError) as error:
        pb.compile(fn)(*args)
    text = str(error.value)
    assert ".grad inside a compiled function" in text and "test_adversary7_fixes.py" in text


def on_the_cpu(x):
    zeros = nd.zeros(x.shape, ctx=x.context, dtype="float64")
    scale = 2.0 if x.ctx == nd.cpu() else 0.0
    return nd.sin(x + zeros) * W_ATTR * scale + SETTINGS.context * x


def test_context_attributes_are_the_cpu_on_every_road():
    x0 = np.array([0.3, -0.5, 1.2])
    W_ATTR.attach_grad()
    results = []
    for fn in (on_the_cpu, pb.compile(on_the_cpu)):
        x = nd.array(x0, dtype="float64")
        x.attach_grad()
        plain = fn(x).asnumpy()
        with ag.record():
            loss = fn(x).sum()
        loss.backward()
        results.append((plain, x.grad.asnumpy().copy(), W_ATTR.grad.asnumpy().copy()))
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12)
    w = W_ATTR.asnumpy()
    numeric = central_gradient(lambda v: np.sum(np.sin(v) * w * 2.0 + 2.5 * v), (x0,), 0)
    np.testing.assert_allclose(results[1][1], numeric, rtol=1e-6, atol=1e-8)
    # pb.grad of numpy arrays: the attributes read the CPU as well
    np.testing.assert_allclose(pb.grad(lambda v: on_the_cpu(v).sum())(x0), numeric,
                               rtol=1e-6, atol=1e-8)


# ----- finding 4: bound methods are refused by every entry point alike --------------------

class Scaled:
    def __init__(self):
        self.scale = 3.0

    def forward(self, x):
        return nd.tanh(x) * self.scale

    @classmethod
    def make(cls, x):
        return x * 2.0


@pytest.mark.parametrize("entry", [pb.compile, pb.grad, pb.value_and_grad,
                                   lambda f: pb.compile(native=False)(f)])
@pytest.mark.parametrize("method", ["forward", "make"])
def test_bound_methods_are_refused_by_name(entry, method):
    bound = getattr(Scaled(), method)
    with pytest.raises(TypeError, match="is a bound method"):
        entry(bound)(nd.array([0.5, -1.0], dtype="float64"))


def test_the_function_of_a_method_compiles_with_its_object_as_an_argument():
    model = Scaled()
    x0 = np.array([0.5, -1.0])
    compiled = pb.compile(Scaled.forward)
    np.testing.assert_allclose(compiled(model, nd.array(x0, dtype="float64")).asnumpy(),
                               np.tanh(x0) * 3.0, rtol=1e-12)
    np.testing.assert_allclose(pb.grad(lambda m, v: np.sum(Scaled.forward(m, v)), 1)(model, x0),
                               central_gradient(lambda v: np.tanh(v) * 3.0, (x0,), 0),
                               rtol=1e-6, atol=1e-8)


# ----- finding 5: pb.hessian keeps the input's float dtype as pb.grad and pb.hvp do --------

def quartic(x):
    return np.sum(x * x * x * x + np.sin(x))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_hessian_dtype_of_arrays_follows_the_gradient(dtype):
    x = np.array([0.5, -1.0, 2.0]).astype(dtype) if dtype is not np.int64 else \
        np.array([1, -1, 2])
    hessian = np.asarray(pb.hessian(quartic)(x))
    assert hessian.dtype == np.asarray(pb.grad(quartic)(x)).dtype
    xf = x.astype(np.float64)
    expected = np.diag(12 * xf * xf - np.sin(xf))
    tol = {np.float16: 2e-2, np.float32: 1e-5}.get(dtype, 1e-12)
    np.testing.assert_allclose(hessian.astype(np.float64), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("x", [np.float32(1.5), np.float64(1.5), 1.5, 2])
def test_hessian_of_a_number_is_the_hvp_kind(x):
    cube = lambda a: a * a * a   # noqa: E731
    hessian = pb.hessian(cube)(x)
    product = pb.hvp(cube, (x,), (type(x)(1) if not isinstance(x, int) else 1.0,))[1]
    assert type(hessian) is type(product) or (isinstance(x, int) and isinstance(hessian, float))
    assert float(hessian) == pytest.approx(6 * float(x), rel=1e-6)


# ----- finding 1/2's family: the create_graph re-run sees the call's training mode --------

def scaled_when_training(x):
    if ag.is_training():
        return (nd.sin(x * W_STATE) * 2.0).sum()
    return nd.sin(x * W_STATE).sum()


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("record_training", [True, False])
@pytest.mark.parametrize("backward_training", [True, False])
def test_second_order_re_run_keeps_the_calls_training_mode(record_training,
                                                           backward_training, order):
    def run(fn):
        W_STATE.attach_grad()
        x = nd.array([0.3, -0.8, 1.1], dtype="float64")
        x.attach_grad()
        with ag.record(train_mode=record_training):
            loss = fn(x)
            gx = ag.grad(loss, [x], create_graph=True, train_mode=backward_training)[0]
            s = (gx * gx).sum()
            if order == 3:
                gxx = ag.grad(s, [x], create_graph=True, train_mode=backward_training)[0]
                s = (gxx * gxx).sum()
        s.backward(train_mode=backward_training)
        return x.grad.asnumpy().copy(), W_STATE.grad.asnumpy().copy()

    for a, b in zip(run(scaled_when_training), run(pb.compile(scaled_when_training)),
                    strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
