"""Findings of the fifth adversary (adv5): inputs where compiled code (Python road, native
road), the eager tape, forward mode and central differences disagree, in what landed on
2026-12-07 (array writes and their aliasing rule, with blocks, nested functions, keyword-only
parameters and ``*args``, numpy coverage, forward mode, containers).  Each test asserts the
CORRECT behaviour (plain Python's value, central differences in float64) and is
``xfail(strict=True)`` while the finding is open (an XPASS fails the suite, so a fix must
remove the marker).  Where the tests say so, a clear ``pb.CompileError`` refusal at the
user's line is accepted as a fix.  Details: /work/briefs/adv5-report.md."""

import numpy as np
import pytest

import pullback as pb
from pullback.compiler.errors import CompileError
from tape_helpers import central_gradient


def _python_value_and_gradient_or_refused(fn, x):
    """fn's compiled value equals plain Python's (on a fresh copy: fn writes only into its
    own locals) and its gradient equals central differences, or compiling it is a
    CompileError (the aliasing rule's refusal)."""
    try:
        value, grad = pb.value_and_grad(fn)(x.copy())
    except CompileError:
        return
    np.testing.assert_allclose(value, fn(x.copy()), rtol=1e-12)
    np.testing.assert_allclose(grad, central_gradient(fn, (x,)), rtol=1e-6, atol=1e-8)


V = np.array([0.5, -1.2, 2.0, 0.3])


# ----- 1: numpy functions returning a view (or their argument) are not aliases -----------
# analysis._VIEWS lists reshape/transpose/squeeze/expand_dims/broadcast_to/flatten/getitem,
# but np.atleast_1d/2d/3d (the argument itself for a 1-d array), np.flip (a view) and
# np.diag of a matrix (a read-only view) share memory too: the forward writes in place and
# r sees the write (the value is Python's), but the adjoint treats r as the value before
# the write: a silently wrong gradient.

def write_after_atleast_1d(v):
    y = v.copy()
    r = np.atleast_1d(y)          # r is y
    y[0] = 10.0
    return np.sum(r * v)          # = 10 * v[0] + ...: d/dv[0] = 10


def write_after_atleast_2d(v):
    y = v.copy()
    r = np.atleast_2d(y)
    y[0] = 10.0
    return np.sum(r * v)


def write_after_atleast_3d(v):
    y = v.copy()
    r = np.atleast_3d(y)
    y[0] = 10.0
    return np.sum(r)              # d/dv[0] = 0 (overwritten)


def write_after_flip(v):
    y = v.copy()
    r = np.flip(y)                # a view: r[-1] is y[0]
    y[0] = 10.0
    return np.sum(r * v)


def write_after_diag(m):
    y = m.copy()
    d = np.diag(y)                # numpy: a read-only view of the diagonal
    y[0, 0] = 10.0
    return np.sum(d * np.diag(m))


@pytest.mark.parametrize("fn", [write_after_atleast_1d, write_after_atleast_2d,
                                write_after_atleast_3d, write_after_flip])
def test_write_through_view_of_coverage_op(fn):
    # write_after_atleast_1d: pullback [10.5, -2.4, 4, 0.6], central differences [10, ...]
    _python_value_and_gradient_or_refused(fn, V)


def test_write_through_diag_view():
    m = np.array([[0.5, 1.5], [2.5, 3.5]])
    # pullback [[10.5, 0], [0, 7]], central differences [[10, 0], [0, 7]]
    _python_value_and_gradient_or_refused(write_after_diag, m)


def flip_argument_then_write(v):
    r = np.flip(v)                # a view of the caller's array
    r[0] = 0.0
    return np.sum(r * r)


def test_flip_of_argument_then_write_is_refused():
    x = V.copy()
    with pytest.raises(CompileError):
        pb.grad(flip_argument_then_write)(x)     # pullback: runs, and x[-1] becomes 0.0


# ----- 2: np.asarray(y) / y.astype(same dtype, copy=False) are y itself in numpy ----------
# In compiled code they are the asarray/astype primitives, which copy: r does not see a
# later write into y, so the value AND the gradient differ from Python's, silently.

def write_after_asarray(v):
    y = v.copy()
    r = np.asarray(y)             # r is y
    y[0] = 10.0
    return np.sum(r * v)          # Python 10.53; pullback 5.78


def write_after_astype_no_copy(v):
    y = v.copy()
    r = y.astype(np.float64, copy=False)
    y[0] = 10.0
    return np.sum(r * v)


@pytest.mark.parametrize("fn", [write_after_asarray, write_after_astype_no_copy])
def test_write_after_asarray(fn):
    _python_value_and_gradient_or_refused(fn, V)


def asarray_argument_then_write(v):
    y = np.asarray(v)             # the caller's array
    y[0] = 0.0
    return np.sum(y * y)


def test_asarray_of_argument_then_write_is_refused():
    with pytest.raises(CompileError):
        pb.grad(asarray_argument_then_write)(V.copy())


# ----- 3: a user helper returning a view of its argument ----------------------------------
# The write after the call copies the array first (analysis.copied_writes: it was an
# argument of a user call), so the helper's result -- a real numpy view in Python and in
# compiled code -- no longer sees the write.  Value and gradient differ from Python's.

def squeezed(y):
    return np.squeeze(y)


def first_row(m):
    return m[0]


def write_after_helper_view(v):
    y = v.copy()
    r = squeezed(y)               # a view of y
    y[0] = 10.0
    return np.sum(r * v)          # Python 10.53; pullback 5.78


def write_after_helper_row(m):
    y = m.copy()
    r = first_row(y)
    y[0, 0] = 10.0
    return np.sum(r * m[0])       # Python 13.5; pullback 8.75


@pytest.mark.parametrize("fn, x", [(write_after_helper_view, V),
                                   (write_after_helper_row, np.arange(6.0).reshape(2, 3) + 0.5)])
def test_write_after_helper_returning_a_view(fn, x):
    _python_value_and_gradient_or_refused(fn, x)


# ----- 4: second order refuses kernels whose derivative uses sinh / hypot / abs ------------
# pb.hvp, pb.hessian and pb.grad(pb.grad(.)) of np.cosh / math.cosh (the fused kernel's
# derivative calls _np.sinh), np.arcsinh / math.asinh (_np.hypot) and np.sinc
# (_kernels.absolute) are a CompileError naming a helper the user never wrote ("no tangent
# rule for _np.sinh() in the generated adjoint"); np.sinh, np.arccosh, np.abs work.

def cosh_weighted(x):
    return np.sum(np.cosh(x) * x)


def arcsinh_weighted(x):
    return np.sum(np.arcsinh(x) * x)


def sinc_weighted(x):
    return np.sum(np.sinc(x) * x)


def _fd_hvp(fn, x, v, h=1e-5):
    return (pb.grad(fn)(x + h * v) - pb.grad(fn)(x - h * v)) / (2 * h)


@pytest.mark.parametrize("fn", [cosh_weighted, arcsinh_weighted, sinc_weighted])
def test_hvp_of_cosh_arcsinh_sinc(fn):
    v = np.array([1.0, -0.5, 0.25, 2.0])
    _, hv = pb.hvp(fn, (V,), (v,))
    np.testing.assert_allclose(hv, _fd_hvp(fn, V, v), rtol=1e-5, atol=1e-6)


# ----- 5: differentiating an int parameter used as a count or an index --------------------
# A differentiated number enters compiled code as np.float64, so range(n), x[n] and x[:n]
# fail inside the generated forward with Python's/numpy's TypeError or IndexError (no user
# line, no CompileError), where np.tile(x, n) and x.reshape((n, -1)) are a clear
# CompileError ("n carries a gradient into np.tile where pullback does not differentiate
# it").  Plain Python runs; the gradient with respect to n is 0 (piecewise constant).
# Accepted fixes: that CompileError at the user's line, or n's gradient 0.0 beside x's.

def power_series(x, n):
    s = 0.0
    for i in range(n):
        s = s + x ** i
    return s


def item_at(x, n):
    return x[n] * 2.0


def prefix_sum(x, n):
    return np.sum(x[:n]) * 2.0


@pytest.mark.parametrize("fn, x", [(power_series, 0.7), (item_at, np.arange(4.0)),
                                   (prefix_sum, np.arange(4.0))])
def test_differentiated_int_used_as_count_or_index(fn, x):
    try:
        gx, gn = pb.grad(fn, argnums=(0, 1))(x, 2)
    except CompileError:
        return
    assert gn == 0.0
    np.testing.assert_allclose(gx, pb.grad(fn)(x, 2))


@pytest.mark.parametrize("entry", ["jvp", "hvp"])
def test_tangent_for_int_used_as_count(entry):
    run = pb.jvp if entry == "jvp" else pb.hvp
    try:
        got = run(power_series, (0.7, 3), (1.0, 0.0))
    except CompileError:
        return                       # a clear refusal
    expected = run(power_series, (0.7, 3), (1.0, None))     # n as data: works
    np.testing.assert_allclose(np.ravel(got[1])[:1], np.ravel(expected[1])[:1])


# ----- 6: a lambda bound inside a branch or loop: the refusal says it is not bound ---------
# `def` inside a block gets "a nested function defined inside a block (or twice) cannot be
# inlined ... define it once, at the top level of the function"; the same with a lambda
# says "a lambda that is not bound to a name and called cannot be differentiated ... bind
# it (f = lambda ...) and call it" -- which is what the user did.

def lambda_in_branch(x):
    if x > 0:
        f = lambda t: t * 2.0      # noqa: E731
        return f(x)
    return x


def lambda_in_loop(x):
    s = 0.0
    for i in range(3):
        f = lambda t: t * i        # noqa: E731
        s = s + f(x)
    return s


@pytest.mark.parametrize("fn, expected", [(lambda_in_branch, 2.0), (lambda_in_loop, 3.0)])
def test_lambda_inside_a_block(fn, expected):
    try:
        assert pb.grad(fn)(0.7) == pytest.approx(expected)
    except CompileError as e:                  # a refusal must name the real reason
        assert "not bound to a name" not in str(e)
        assert "lambda bound inside a block" in str(e)


# ----- 7: non-mutating methods of a data array refused as "may change it in place" -------
# c.ravel() / c.conj() of an array that is not differentiated (an argument outside argnums,
# a global) are a CompileError ".ravel() may change c in place, but the gradient needs
# ravel1 as it was before"; neither changes anything (np.ravel(c) and c.cumsum() work).

W_DATA = np.arange(12.0).reshape(3, 4) * 0.1 + 0.3


def times_raveled_argument(m, c):
    return np.sum(m.reshape(-1) * c.ravel())


def times_raveled_global(m):
    return np.sum(m.reshape(-1) * W_DATA.ravel())


def times_conjugate(m, c):
    return np.sum(m * c.conj())


@pytest.mark.parametrize("fn, args, expected", [
    (times_raveled_argument, (np.ones((3, 4)), W_DATA), W_DATA),
    (times_raveled_global, (np.ones((3, 4)),), W_DATA)])
def test_non_mutating_methods_of_data_arrays(fn, args, expected):
    np.testing.assert_allclose(pb.grad(fn)(*args), expected)


def raveled_then_written(x):
    y = x * 1.0
    r = y.ravel()                # a view of y: sees the write below
    y[0, 1] = 5.0
    return np.sum(r * x.ravel())


def test_ravel_is_a_view_in_the_aliasing_rule_and_differentiable():
    x = np.arange(6.0).reshape(2, 3) * 0.5 + 0.1
    try:
        g = pb.grad(raveled_then_written)(x)
    except CompileError as e:   # the rule may refuse the write through an alias
        assert "that r may share" in str(e)
        return
    expected = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = 1e-6
        expected[i] = (raveled_then_written(x + e) - raveled_then_written(x - e)) / 2e-6
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.xfail(strict=True, reason="adv5 finding 7 (rest): a real array's .conj() is "
                   "the array itself (numpy returns self), so it needs the aliasing rule's "
                   "view treatment, not 'pure': still refused as possibly changing c")
def test_conj_of_a_data_array():
    np.testing.assert_allclose(pb.grad(times_conjugate)(np.ones((3, 4)), W_DATA), W_DATA)


# ----- 8: a zero-trip loop's number: native np.float64, the Python road a float ----------
# runtime/native_function.py boxes results "as the Python road would"; when a loop over an
# empty array never runs, the Python road returns the Python float it started from
# (0.0 * 2.0), the native road np.float64(0.0).  Equal values, different types.

def loop_sum_doubled(v):
    s = 0.0
    for i in range(v.shape[0]):
        s = s + v[i]
    return s * 2.0


@pytest.mark.xfail(strict=True, reason="adv5 finding 8: the native road boxes a zero-trip "
                   "loop's result as np.float64, the Python road returns a float")
def test_native_value_type_of_a_zero_trip_loop(monkeypatch):
    values = {}
    for road in ("0", "1"):
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", road)
        values[road] = pb.value_and_grad(loop_sum_doubled)(np.zeros(0))[0]
    assert type(values["1"]) is type(values["0"])     # pullback: np.float64 vs float
