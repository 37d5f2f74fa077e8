"""A fused run's trailing reduction reduces its operand, not the kernel (issue 14, 1-3).

A kernel is as long as its longest statement, but the value a trailing ``sum``, ``mean``,
``max``, ``min`` or ``norm`` reduces may be one element (a chain over a number, a numpy
scalar, a 0-d or a one-element array) beside a long statement.  The native kernel reduces
over every lane, so such a reduction refuses the native road; a mean divides by its
operand's size; an input that no present output gradient reaches gets no gradient (not a
zero computed from the absent gradients).  Each case is checked on three roads -- native
kernels, the kernels' numpy functions, unfused primitives -- against the function run by
numpy and against central differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from pullback.compiler.api import CompiledFunction
from pullback.runtime import fused, native
from tape_helpers import central_gradient

import pullback as pb


def sum_beside(x, s):
    y = x * 0.5                          # a long statement ...
    r = np.sum(1.0 / (s * s + 1.0))      # ... beside a one-element chain ending in a sum
    return r + np.sum(y)


def norm_beside(x, s):
    y = np.sin(x)
    e = np.exp(s) * s
    return np.linalg.norm(e) * np.sum(y)


def mean_beside(x, s):
    y = np.sin(x)
    r = np.mean(np.exp(s) * 2.0)
    return r * np.sum(y)


def max_beside(x, s):
    y = np.cos(x)
    r = np.max(s * s - 1.0)
    return r * np.sum(y)


def min_beside(x, s):
    y = x * x
    r = np.min(np.tanh(s) + 0.5)
    return r + np.sum(y)


def sum_only_beside(x, s):
    y = x * 0.5                          # dead, but in the kernel: the kernel is long
    r = np.sum(np.sin(s) * s)            # the run's only result: one pass, value and gradient
    return r


def mean_only_beside(x, s):
    y = np.exp(x)
    r = np.mean(s * 3.0 - 1.0)
    return r


def dead_update(x, s):
    v = np.sin(s)
    t = np.sum(x)
    s = s - t                            # fused with w: s's new value gets no gradient
    w = v * 2.0
    if s > 0:
        w = w * 3.0
    return w


FUNCTIONS = [sum_beside, norm_beside, mean_beside, max_beside, min_beside, sum_only_beside,
             mean_only_beside]
SCALARS = {
    "float": lambda v: v,
    "numpy scalar": np.float64,
    "0-d": lambda v: np.array(v),
    "(1,)": lambda v: np.array([v]),
    "(1, 1)": lambda v: np.array([[v]]),
}


def _roads(fn, args, monkeypatch):
    """{road: (value, gradients)} from freshly compiled functions."""
    found = {}
    for road in ("native", "numpy", "unfused"):
        with monkeypatch.context() as patch:
            patch.setenv("PULLBACK_NATIVE", "1" if road == "native" else "0")
            patch.setenv("PULLBACK_FUSE", "0" if road == "unfused" else "1")
            value, grads = pb.value_and_grad(CompiledFunction(fn), tuple(range(len(args))))(
                *args)
        found[road] = (value, grads)
    return found


@pytest.mark.parametrize("scalar", list(SCALARS))
@pytest.mark.parametrize("n", [7, 600])   # the numpy road, and native (NATIVE_MIN_SIZE 512)
@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_one_element_reduction_beside_a_long_statement(fn, n, scalar, monkeypatch):
    assert fused.NATIVE_MIN_SIZE == 512
    x = np.random.default_rng(n).uniform(-1.0, 1.0, n)
    s = SCALARS[scalar](0.7)
    expected = fn(x, s)
    numeric = [central_gradient(fn, (x, s), k) for k in range(2)]
    for road, (value, grads) in _roads(fn, (x, s), monkeypatch).items():
        label = (fn.__name__, n, scalar, road)
        np.testing.assert_allclose(value, expected, rtol=1e-12, err_msg=str(label))
        assert np.shape(value) == np.shape(expected), label
        for g, arg, num in zip(grads, (x, s), numeric, strict=True):
            assert np.shape(g) == np.shape(arg), label
            np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7, err_msg=str(label))


@pytest.mark.skipif(not native.native_enabled(), reason="native kernels disabled")
def test_issue_14_native_sum_of_a_number_beside_600_elements():
    value, (gx, gs) = pb.value_and_grad(sum_beside, (0, 1))(np.full(600, 0.3), 0.5)
    assert value == pytest.approx(0.8 + 600 * 0.15, rel=1e-12)
    assert gs == pytest.approx(-0.64, rel=1e-12)
    np.testing.assert_allclose(gx, 0.5)


def test_issue_14_mean_of_a_number_is_not_divided_by_the_kernel_length(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    x = np.linspace(0.1, 1.0, 10)
    _, (_, gs) = pb.value_and_grad(CompiledFunction(mean_beside), (0, 1))(x, 0.5)
    assert gs == pytest.approx(2.0 * np.exp(0.5) * np.sum(np.sin(x)), rel=1e-12)


@pytest.mark.parametrize("n", [10, 600])
def test_issue_14_dead_update_of_a_number_beside_a_sum(n):
    x = np.full(n, 0.3)
    value, (gx, gs) = pb.value_and_grad(dead_update, (0, 1))(x, 0.5)
    assert value == dead_update(x, 0.5)
    assert gs == pytest.approx(2.0 * np.cos(0.5), rel=1e-12)
    assert gx is None or not np.any(gx)


# ----- an output with no gradient adds nothing, even where its partial is infinite --------

def absent_in_a_condition(x):
    a = np.log(x * x)                    # -inf at 0: its partial 2x / x^2 is nan there
    b = x * 2.0
    if np.sum(a) < 1e300:                # a decides, but carries no gradient
        b = b + 1.0
    return np.sum(b)


def absent_head(x):
    a = np.log(x * x)
    b = x * 2.0
    return np.sum(b), np.sum(a)          # differentiated with the head (1, None)


def _first_output(x):
    return absent_head(x)[0]


@pytest.mark.parametrize("n", [1, 7, 600])   # numbers only (x a float), numpy road, native
def test_an_absent_output_gradient_does_not_turn_an_infinite_partial_into_nan(n, monkeypatch):
    x = 0.0 if n == 1 else np.concatenate([[0.0], np.linspace(0.5, 1.5, n - 1)])
    with np.errstate(divide="ignore", invalid="ignore"):
        numeric = central_gradient(absent_in_a_condition, (x,), 0)
        for road, (_, (g,)) in _roads(absent_in_a_condition, (x,), monkeypatch).items():
            np.testing.assert_allclose(g, numeric, rtol=1e-6, err_msg=f"{n} {road}")
        for road in ("native", "numpy", "unfused"):
            with monkeypatch.context() as patch:
                patch.setenv("PULLBACK_NATIVE", "1" if road == "native" else "0")
                patch.setenv("PULLBACK_FUSE", "0" if road == "unfused" else "1")
                _, back = pb.vjp(CompiledFunction(absent_head), x)
                (g,) = back((1.0, None))
            np.testing.assert_allclose(g, central_gradient(_first_output, (x,), 0),
                                       rtol=1e-6, err_msg=f"{n} {road} vjp")


# ----- a one-element array of more dimensions than the long one broadcasts it up ----------

def run_then_axis_sum(x, y):
    z = np.sin(x * y) + y                # a (1, 1) y makes z (1, n), not (n,)
    return np.sum(np.sum(z, axis=0) ** 2)


def run_returned(x, y):
    return np.cos(x) * y + x


@pytest.mark.parametrize("y_shape", [(), (1,), (1, 1), (1, 1, 1)])
@pytest.mark.parametrize("x_shape", [(7,), (600,), (2, 300)])
def test_a_one_element_array_of_more_dimensions_keeps_numpys_shapes(x_shape, y_shape,
                                                                     monkeypatch):
    x = np.random.default_rng(3).uniform(-1.0, 1.0, x_shape)
    y = np.full(y_shape, 0.5)
    expected = run_then_axis_sum(x, y)
    numeric = [central_gradient(run_then_axis_sum, (x, y), k) for k in range(2)]
    for road, (value, grads) in _roads(run_then_axis_sum, (x, y), monkeypatch).items():
        label = (x_shape, y_shape, road)
        np.testing.assert_allclose(value, expected, rtol=1e-12, err_msg=str(label))
        for g, arg, num in zip(grads, (x, y), numeric, strict=True):
            assert np.shape(g) == np.shape(arg), label
            np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-7, err_msg=str(label))
    for native_on in ("1", "0"):
        monkeypatch.setenv("PULLBACK_NATIVE", native_on)
        out = CompiledFunction(run_returned)(x, y)
        assert np.shape(out) == np.shape(run_returned(x, y)), (x_shape, y_shape, native_on)
        np.testing.assert_allclose(out, run_returned(x, y), rtol=1e-12)


# ----- a numpy float64 number is strong (numpy 2): the same dtype on every road ------------

def scaled_run(x, s):
    return np.sin(x * s) + s


@pytest.mark.parametrize("s", [0.7, np.float64(0.7), np.float32(0.7)],
                         ids=["float", "np.float64", "np.float32"])
def test_a_runs_dtype_does_not_depend_on_the_road_or_the_length(s, monkeypatch):
    dtypes = set()
    for n in (5, 600):
        x = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        for road, (value, grads) in _roads(scaled_run, (x, s), monkeypatch).items():
            dtypes.add(np.asarray(value).dtype)
            assert grads[0].dtype == np.float32, (n, road)
            np.testing.assert_allclose(value, scaled_run(x.astype(np.float64), float(s)),
                                       rtol=2e-6, atol=2e-6)
    assert len(dtypes) == 1, dtypes


# ----- a max's tie mask compares values from the code that computed the max -----------------

def max_of_a_broadcast_run(a, b, c, d):
    v1 = (d - b)
    r0 = np.max(v1)
    v3 = (c + v1)                        # the (1,) max r0 beside the (1, 1) c
    r1 = np.max(np.cos(v3))
    v7 = (d / (1.0 + d * d)) - a
    return 0.5 * r0 + r1 + np.min(v7) + np.mean(np.cos(v7))


def test_a_max_adjoint_on_another_road_than_its_forward_is_not_nan(monkeypatch):
    """The forward ran natively (layout of c, v1) while the adjoint's values (the (1,)
    max beside the (1, 1) c) chose the numpy road: numpy's cos differs from the kernel's
    in the last bit, nothing tied, and the gradient was g * 0 / 0 (soak seed 10155)."""
    monkeypatch.setattr(fused, "NATIVE_MIN_SIZE", 1)
    rng = np.random.default_rng(7)
    for _ in range(50):
        u = rng.uniform(-1, 1, 4)
        args = (np.full((1, 1), u[0]), np.array(u[1]), np.full((1, 1), u[2]), np.float64(u[3]))
        _, grads = pb.value_and_grad(CompiledFunction(max_of_a_broadcast_run), (0, 1, 2, 3))(
            *args)
        for k, g in enumerate(grads):
            np.testing.assert_allclose(g, central_gradient(max_of_a_broadcast_run, args, k),
                                       rtol=1e-6, atol=1e-8)
