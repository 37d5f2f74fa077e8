"""Adversary 9, part 1: a name rebound so that its later value no longer depends on the
input.  A ``for`` loop over ``range`` binds its target to an int at every iteration; when
the target's name is a differentiated parameter (or any variable carrying a gradient), the
gradient that reached the name after the loop must stop at the loop (the parameter's
gradient survives only a loop that runs zero times, where the name keeps the parameter's
value).  Before this branch every road sent it on to the parameter: the adjoint's ``for``
never reset the target's gradient (it was not even emitted for an empty body), the tangent
code kept the parameter's tangent on the target, and so did forward-over-reverse
(``pb.hvp``, ``pb.jvp(pb.grad(f))``, a nested ``pb.grad``).

Each function here is checked on the native road, the Python road (``PULLBACK_NATIVE=0``),
``pb.jvp``, a compiled call under ``record()`` (the tape node) and the eager tape where
the function is tape code, against central differences in float64; second order against
central differences of the plain function.  The other ways of rebinding a name (plain,
tuple and augmented assignments, one branch of an ``if``, ``while`` loops, loops over lists,
``enumerate``/``zip``/``reversed``, ``break``/``continue``, helpers) were probed with the
same checks and were right; they are pinned here too.  Walrus, ``del``, ``try/except`` and
``match`` are refused at the user's line (never a silent gradient); a comprehension's
variable does not rebind the enclosing name (Python 3 scope).
"""

import os

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from tape_helpers import central_gradient


# ----- the loop target family -------------------------------------------------------------

def target_shadows_parameter(x, y, n):
    for x in range(n):
        pass
    return y * x + x


def target_read_in_body(x, y, n):
    s = 0.0
    for x in range(n):
        s = s + y * x
    return s + x * y + np.sin(x) * y


def parameter_read_before_the_loop(x, y, n):
    s = x * y
    for x in range(n):
        s = s + x
    return s * x


def nested_inner_target(x, y, n, m):
    s = x * 1.0
    for i in range(n):
        for x in range(i, m):
            s = s + y * x
        s = s * x
    return s * x + x


def inner_rebinds_after_use(x, y, n, m):
    s = 0.0
    for i in range(n):
        s = s + x * y
        for x in range(m):
            s = s + y
    return s * x


def two_loops_one_target(x, y, n):
    for x in range(n):
        y = y * 1.5
    s = x * y
    for x in range(n, 0, -1):
        s = s + x * y
    return s * x


def target_of_a_local_with_gradient(x, y, n):
    z = x * y
    for z in range(n):
        pass
    return z * x


def loop_in_a_while(x, y, n):
    i = 0
    while i < 2:
        for x in range(n):
            y = y + 1.0
        y = y * x
        i = i + 1
    return y * x


def loop_on_one_branch(x, y, n):
    if y > 0.5:
        for x in range(n):
            pass
    return x * y + np.exp(x)


def target_with_break(x, y, n):
    for x in range(n):
        if x * y > 1.0:
            break
    return x * y * y


def target_with_continue(x, y, n):
    s = 0.0
    for x in range(n):
        if x == 1:
            continue
        s = s + x * y
    return s * x + x


def reversed_range_target(x, y, n):
    for x in reversed(range(n)):
        y = y + 1.0
    return x * y + x


def _rebinding_helper(x, n):
    for x in range(n):
        pass
    return x * 2.0


def calls_a_rebinding_helper(x, y, n):
    return _rebinding_helper(x * y, n) + _rebinding_helper(y, n) * x


def second_order(x, y, n):
    s = x * x * y
    for x in range(n):
        s = s + x * y * y
    return s * x + np.sin(x) * y


# ----- other rebindings (probed right; pinned) ----------------------------------------------

def assigned_a_number(x, y, n):
    x = 3.0
    return x * y


def assigned_an_int(x, y, n):
    x = int(n)
    x += 2
    return x * y


def augmented_to_zero(x, y, n):
    x *= 0.0
    return x * y + x


def rebound_on_one_branch(x, y, n):
    if n > 1:
        x = 2.0
    return x * y


def rebound_in_a_while(x, y, n):
    i = 0
    while i < n:
        x = 1.5
        i = i + 1
    return x * y


def rebound_after_use_in_a_loop(x, y, n):
    s = x * 0.0
    for i in range(n):
        s = s + x * y
        x = 0.5
    return s + x


def loop_over_a_list(x, y, n):
    for x in [1.0, 2.0 * y][:n]:
        pass
    return y * x


def enumerate_index_target(x, y, n):
    for x, v in enumerate([1.0, 2.0, 3.0][:n]):
        y = y * v
    return x * y


def zip_target(x, y, n):
    for x, w in zip([1.0, 2.0, 3.0][:n], [y, y, y]):
        y = y * w
    return x * y


def swapped(x, y, n):
    x, y = y, x
    return x * 2.0 + y * 3.0


def comparison_rebinds(x, y, n):
    x = y > n
    return x * y


def comprehension_keeps_the_name(x, y, n):
    a = [x for x in range(3)]
    b = [x * y for x in [1.0, 2.0]]
    return y * x + a[1] + b[0] * x


def _rebinds_to_a_number(x, y):
    x = 3.0
    return x * y


def calls_a_helper_that_rebinds(x, y, n):
    return _rebinds_to_a_number(x, y) * x


def a_number_from_a_helper(x, y, n):
    x = _rebinding_helper(2.0, n)
    return x * y


FAMILY = [target_shadows_parameter, target_read_in_body, parameter_read_before_the_loop,
          two_loops_one_target, target_of_a_local_with_gradient, loop_in_a_while,
          loop_on_one_branch, target_with_break, target_with_continue, reversed_range_target,
          calls_a_rebinding_helper, second_order]
OTHERS = [assigned_a_number, assigned_an_int, augmented_to_zero, rebound_on_one_branch,
          rebound_in_a_while, rebound_after_use_in_a_loop, loop_over_a_list,
          enumerate_index_target, zip_target, swapped, comparison_rebinds,
          comprehension_keeps_the_name, calls_a_helper_that_rebinds, a_number_from_a_helper]
# functions the eager tape can run as written (operators and Python control flow only)
TAPE_CODE = {target_shadows_parameter, parameter_read_before_the_loop, two_loops_one_target,
             target_of_a_local_with_gradient, loop_in_a_while, target_with_continue,
             reversed_range_target, nested_inner_target, inner_rebinds_after_use}

X, Y = 0.5, 0.7


def _central(fn, args):
    return np.array([central_gradient(fn, args, k) for k in (0, 1)])


def _grads(fn, args, native, monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE", "1" if native else "0")
    grads = pb.grad(fn, (0, 1))(*args)
    monkeypatch.delenv("PULLBACK_NATIVE")
    return np.array(grads, dtype=np.float64)


def _jvps(fn, args):
    rest = (None,) * (len(args) - 2)
    return np.array([np.sum(pb.jvp(fn, args, t + rest)[1])
                     for t in ((1.0, 0.0), (0.0, 1.0))], dtype=np.float64)


def _recorded(fn, args, compiled):
    x, y = (nd.array([v], dtype="float64") for v in args[:2])
    x.attach_grad()
    y.attach_grad()
    call = pb.compile(fn) if compiled else fn
    with ag.record():
        out = call(x, y, *args[2:])
    out.backward()
    return np.array([x.grad.asnumpy()[0], y.grad.asnumpy()[0]])


def _check_all_roads(fn, args, monkeypatch):
    expected = _central(fn, args)
    close = dict(rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_grads(fn, args, True, monkeypatch), expected, **close)
    np.testing.assert_allclose(_grads(fn, args, False, monkeypatch), expected, **close)
    np.testing.assert_allclose(_jvps(fn, args), expected, **close)
    np.testing.assert_allclose(_recorded(fn, args, compiled=True), expected, **close)
    if fn in TAPE_CODE:
        np.testing.assert_allclose(_recorded(fn, args, compiled=False), expected, **close)


@pytest.mark.parametrize("fn", FAMILY + OTHERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", (0, 1, 3))
def test_a_rebound_name_on_every_road(fn, n, monkeypatch):
    _check_all_roads(fn, (X, Y, n), monkeypatch)


@pytest.mark.parametrize("fn", (nested_inner_target, inner_rebinds_after_use),
                         ids=lambda f: f.__name__)
@pytest.mark.parametrize("n, m", [(0, 0), (0, 2), (2, 0), (2, 3), (3, 1)])
def test_nested_loops_with_zero_trip_counts(fn, n, m, monkeypatch):
    _check_all_roads(fn, (X, Y, n, m), monkeypatch)


def test_the_loop_kills_the_gradient_only_when_it_runs(monkeypatch):
    # zero trips: x is still the parameter (d/dx = y + 1); else the int n - 1 (d/dx = 0)
    assert _grads(target_shadows_parameter, (X, Y, 0), True, monkeypatch) == \
        pytest.approx([Y + 1.0, X])
    assert _grads(target_shadows_parameter, (X, Y, 3), True, monkeypatch) == \
        pytest.approx([0.0, 2.0])


def test_an_array_parameter_shadowed_by_the_loop(monkeypatch):
    def shadowed_array(x, y, n):
        for x in range(n):
            y = y * 2.0
        return np.sum(x * y)

    x, y = np.array([0.5, 0.2]), np.array([0.7, 0.1])
    for n, expected in ((0, (y, x)), (2, (np.zeros(2), np.full(2, 4.0)))):
        for native in (True, False):
            monkeypatch.setenv("PULLBACK_NATIVE", "1" if native else "0")
            got = pb.grad(shadowed_array, (0, 1))(x, y, n)
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_allclose(g, e, rtol=1e-12)
        monkeypatch.delenv("PULLBACK_NATIVE")
        tangent = pb.jvp(shadowed_array, (x, y, n), (np.ones(2), np.ones(2), None))[1]
        assert float(tangent) == pytest.approx(float(np.sum(expected[0]) + np.sum(expected[1])))


# ----- second order ---------------------------------------------------------------------------

def _central_hessian(fn, args, h=1e-4):
    """Second central differences of the plain function in float64 (2x2 over x, y)."""
    def at(dx, dy):
        return float(np.sum(fn(args[0] + dx, args[1] + dy, *args[2:])))

    hxx = (at(h, 0) - 2 * at(0, 0) + at(-h, 0)) / h ** 2
    hyy = (at(0, h) - 2 * at(0, 0) + at(0, -h)) / h ** 2
    hxy = (at(h, h) - at(h, -h) - at(-h, h) + at(-h, -h)) / (4 * h * h)
    return np.array([[hxx, hxy], [hxy, hyy]])


@pytest.mark.parametrize("fn", (second_order, target_read_in_body, calls_a_rebinding_helper,
                                parameter_read_before_the_loop), ids=lambda f: f.__name__)
@pytest.mark.parametrize("n", (0, 1, 3))
def test_second_order_through_the_loop_target(fn, n):
    args = (X, Y, n)
    expected = _central_hessian(fn, args)
    for k, v in enumerate(((1.0, 0.0), (0.0, 1.0))):
        _, hv = pb.hvp(fn, args, v + (None,))
        np.testing.assert_allclose(np.array(hv, dtype=np.float64), expected[:, k],
                                   rtol=1e-4, atol=1e-5)
        column = pb.jvp(pb.grad(fn, (0, 1)), args, v + (None,))[1]
        np.testing.assert_allclose(np.array(column, dtype=np.float64), expected[:, k],
                                   rtol=1e-4, atol=1e-5)
    for k in (0, 1):
        assert float(pb.hessian(fn, k)(*args)) == pytest.approx(expected[k, k], rel=1e-4,
                                                                abs=1e-5)


_DERIVATIVE_OF_SECOND_ORDER = pb.grad(second_order, 0)


def nested_grad_of_a_rebinding_function(x, y, n):
    return _DERIVATIVE_OF_SECOND_ORDER(x, y, n) * y


@pytest.mark.parametrize("n", (0, 1, 3))
def test_a_nested_grad_of_a_rebinding_function(n, monkeypatch):
    # its tangent and its VJP are forward-over-reverse runs of second_order
    args = (X, Y, n)
    expected = _central(nested_grad_of_a_rebinding_function, args)
    close = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _grads(nested_grad_of_a_rebinding_function, args, True, monkeypatch), expected, **close)
    np.testing.assert_allclose(_jvps(nested_grad_of_a_rebinding_function, args), expected,
                               **close)


# ----- refused, never a silent gradient ---------------------------------------------------------

def walrus_rebinds(x, y):
    if (x := 2.0) > 1:
        pass
    return x * y


def del_then_reads_a_copy(x, y):
    z = x
    del x
    return z * y


def except_target(x, y):
    try:
        x = 1.0
    except Exception as x:   # noqa: F841
        pass
    return x * y


def match_capture(x, y):
    match y:
        case x:
            pass
    return x * y


@pytest.mark.parametrize("fn, line", [
    (walrus_rebinds, "if (x := 2.0) > 1:"), (del_then_reads_a_copy, "del x"),
    (except_target, "try:"), (match_capture, "match y:")], ids=lambda v: getattr(v, "__name__", ""))
def test_other_rebinding_statements_are_refused_at_the_users_line(fn, line):
    with pytest.raises(pb.CompileError) as caught:
        pb.grad(fn, (0, 1))(X, Y)
    assert os.path.basename(__file__) in str(caught.value)
    assert line in str(caught.value)
