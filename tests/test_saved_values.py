"""What the forward saves for the adjoint: only values the adjoint reads (issue 17, item 5).

A loop whose adjoint needs no primal value (``a = a * 0.9999 + 1.0``) must save nothing
per iteration but the loop's own bookkeeping; a loop whose adjoint reads an overwritten
value (a nonlinear op, a product with a differentiated variable, a branch or a trip count
decided by the values) must still save it, and its gradients must be right: each case is
checked against central differences in float64 and against the eager tape.
"""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.runtime import support
from pullback.testing import saved_by_forward


def linear_while(a, n):
    i = 0
    while i < n:
        a = a * 0.9999 + 1.0
        i = i + 1
    return a


def linear_for(a, n):
    for i in range(n):
        a = a * 0.9999 + 1.0
    return a


def linear_two_updates(a, n):
    b = a * 0.5
    for i in range(n):
        b = b * 0.9 + a
        a = a - b * 0.01
    return a + b


def nonlinear_loop(a, n):
    for i in range(n):
        a = nd.sin(a) * 0.5 + a
    return a


def product_loop(a, w, n):
    for i in range(n):
        a = a * w + 1.0
    return a


def exp_while(a, n):
    i = 0
    while i < n:
        a = nd.exp(a * -0.1) + a * 0.5
        i = i + 1
    return a


def nested_with_branch_and_break(a, w, n):
    for i in range(n):
        for j in range(4):
            if nd.sum(a).asscalar() > 40.0:
                break
            a = a * w + 0.1
        if nd.sum(a).asscalar() > 0.0:
            a = nd.tanh(a) * 3.0
        else:
            a = a + 1.0
    return a


def trip_count_by_value(a, n):
    b = a * 2.0
    while nd.norm(b).asscalar() < 1000.0:
        b = b * 2.0
    return b * b + a


def branch_in_loop(a, n):
    for i in range(n):
        if nd.sum(a).asscalar() > 0.0:
            a = a * a * 0.1
        else:
            a = a * 0.5 + 1.0
    return a


def broadcast_growth(a, b, n):
    for i in range(n):
        a = a * 0.5 + b     # a grows from (1,) to b's shape in the first iteration
    return a


ELEMENTS = 10_000


def _saved(fn, args, argnums=0):
    return saved_by_forward(pb.compile(fn), *args, argnums=argnums)


@pytest.mark.parametrize("fn", [linear_while, linear_for, linear_two_updates])
def test_a_linear_loop_saves_nothing_per_iteration(fn):
    a = np.linspace(-1.0, 1.0, ELEMENTS)
    few, many = _saved(fn, (a, 500)), _saved(fn, (a, 1000))
    # the bytes are the same whatever the trip count: no iteration keeps array data
    # (trip counts above 256, so that the final counters are int objects in both)
    assert many.nbytes() == few.nbytes()
    assert many.nbytes() <= 6 * a.nbytes   # the final values the adjoint starts from
    # what is pushed per iteration (if anything) holds no data of its own
    per_iteration = (len(many) - len(few)) / 500
    assert per_iteration <= 6   # stand-ins (support.like) and counters: 8 bytes of stack each
    assert not any(isinstance(v, np.ndarray) and v.base is None and v.size > 1
                   and v.strides != (0,) for v in many._items[len(few):])


def test_the_while_loop_of_issue_17_pushes_no_array_and_is_right():
    source = pb.adjoint_source(pb.compile(linear_while), argnums=0)
    forward = source.split("def linear_while_adjoint")[0]
    pushes = [line.strip() for line in forward.splitlines() if "_stack.push(" in line]
    saved = [p for p in pushes if "'saved'" not in p and "trips" not in p]
    assert all(p.startswith("_stack.push(support.like(") for p in saved), pushes
    _check(linear_while, (np.linspace(-1.0, 1.0, 7),), (25,))


@pytest.mark.parametrize("fn, per_iteration", [(nonlinear_loop, 1), (exp_while, 1)])
def test_a_nonlinear_loop_still_saves_its_operand(fn, per_iteration):
    a = np.linspace(-1.0, 1.0, ELEMENTS)
    few, many = _saved(fn, (a, 10)), _saved(fn, (a, 50))
    assert many.nbytes() - few.nbytes() >= per_iteration * 40 * a.nbytes


def test_a_product_with_a_differentiated_variable_saves_the_operand():
    a, w = np.linspace(-1.0, 1.0, ELEMENTS), np.full(ELEMENTS, 0.9)
    few, many = _saved(product_loop, (a, w, 10), (0, 1)), _saved(product_loop, (a, w, 50), (0, 1))
    assert many.nbytes() - few.nbytes() >= 40 * a.nbytes
    # with respect to a only, the old a is never read: nothing per iteration
    few, many = _saved(product_loop, (a, w, 300), 0), _saved(product_loop, (a, w, 600), 0)
    assert many.nbytes() == few.nbytes()


def test_shape_stand_ins_keep_each_iterations_shape():
    # the old a is read only for its shape (to sum the gradient down), which changes
    a, b = np.array([0.7]), np.linspace(-1.0, 1.0, 5)
    _check(broadcast_growth, (a, b), (4,), wrt=(0, 1))


def _tape_gradients(fn, xs, rest):
    arrays = [nd.array(x) for x in xs]
    for x in arrays:
        x.attach_grad()
    with ag.record():
        out = nd.sum(fn(*arrays, *rest))
    out.backward()
    return [x.grad.asnumpy() for x in arrays]


def _central(fn, xs, rest, k, eps=1e-6):
    def total(values):
        return float(nd.sum(fn(*[nd.array(v) for v in values], *rest)).asscalar())

    x = xs[k]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = [v.copy() for v in xs], [v.copy() for v in xs]
        up[k][idx] += eps
        down[k][idx] -= eps
        g[idx] = (total(up) - total(down)) / (2 * eps)
    return g


def _check(fn, xs, rest, wrt=None):
    """Compiled gradients (as saved above) = eager tape = central differences, float64."""
    xs = [np.asarray(x, np.float64) for x in xs]
    wrt = tuple(range(len(xs))) if wrt is None else wrt
    compiled = pb.grad(pb.compile(fn), argnums=wrt)(*[nd.array(x) for x in xs], *rest)
    compiled = [np.asarray(g.asnumpy() if isinstance(g, nd.NDArray) else g) for g in compiled]
    tape = _tape_gradients(fn, xs, rest)
    for k in wrt:
        expected = _central(fn, xs, rest, k)
        got = compiled[wrt.index(k)]
        assert got.shape == xs[k].shape
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(got, tape[k], rtol=1e-10, atol=1e-12)


CASES = [
    (linear_for, (np.linspace(-1.0, 1.0, 6),), (30,)),
    (linear_two_updates, (np.linspace(-1.0, 1.0, 6),), (20,)),
    (nonlinear_loop, (np.linspace(-1.0, 1.0, 6),), (12,)),
    (exp_while, (np.linspace(-1.0, 1.0, 6),), (9,)),
    (product_loop, (np.linspace(-1.0, 1.0, 6), np.linspace(0.5, 1.1, 6)), (7,)),
    (nested_with_branch_and_break, (np.linspace(-0.5, 1.5, 6), np.linspace(0.8, 1.6, 6)),
     (5,)),
    (nested_with_branch_and_break, (np.linspace(-3.0, -1.0, 6), np.linspace(0.8, 1.2, 6)),
     (3,)),
    (trip_count_by_value, (np.linspace(0.1, 0.9, 6),), (0,)),
    (branch_in_loop, (np.linspace(-0.2, 0.9, 6),), (6,)),
    (branch_in_loop, (np.linspace(-2.0, 0.5, 6),), (6,)),
]


@pytest.mark.parametrize("fn, xs, rest", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_gradients_where_saving_is_required(fn, xs, rest):
    _check(fn, xs, rest)


@pytest.mark.parametrize("fn, xs, rest", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_gradients_on_the_native_road(fn, xs, rest, monkeypatch):
    from pullback.runtime import fused, native

    if not native.native_enabled():
        pytest.skip("native kernels are disabled on this machine")
    monkeypatch.setattr(fused, "NATIVE_MIN_SIZE", 1)
    _check(fn, xs, rest)


def test_like_keeps_shape_and_dtype_without_data():
    x = np.arange(12.0).reshape(3, 4)
    s = support.like(x)
    assert s.shape == x.shape and s.dtype == x.dtype and s.strides == (0, 0)
    assert support.like(np.zeros((3, 4))) is s
    pair = support.like((x, 2.0))
    assert pair[0] is s and type(pair[1]) is float
    assert support.like(1.5) is support.like(7.0)   # one shared number of the type
    assert type(support.like(np.float32(2))) is np.float32
    assert support.like(None) is None and support.like([x]) == [x]


def rnn_steps(W, h, xs, n):
    for t in range(n):
        h = np.tanh(np.dot(W, h) + xs[t])
    return np.sum(h)


def test_an_rnn_step_saves_only_the_old_state():
    """d/dW of dot(W, h) reads the old h; nothing else of a step is needed (tanh's
    derivative reads the new h, which the next step saves).  np.dot's rule must not read
    its result (bench/adjoint_memory.py's W3 found a rule that did: 3x the bound)."""
    hidden = 32
    rng = np.random.default_rng(0)
    W = rng.normal(size=(hidden, hidden)) * 0.1
    h0 = rng.normal(size=hidden)
    xs = rng.normal(size=(64, hidden))
    few, many = (_saved(rnn_steps, (W, h0, xs, n)) for n in (20, 40))
    assert many.nbytes() - few.nbytes() == 20 * 8 * hidden
    g = pb.grad(rnn_steps)(W, h0, xs, 30)
    eps, k = 1e-6, (3, 5)
    up, down = W.copy(), W.copy()
    up[k] += eps
    down[k] -= eps
    numeric = (rnn_steps(up, h0, xs, 30) - rnn_steps(down, h0, xs, 30)) / (2 * eps)
    assert g[k] == pytest.approx(numeric, rel=1e-6)
