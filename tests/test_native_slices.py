"""Slices of arrays, np.concatenate and np.ones/np.zeros on the native road
(compiler/lower_arrays.py: ``array_slice``, ``slice_added``, ``call_support_join``,
``call_support_join_grad``, ``filled``) against the Python road (within rounding: the
native road's libm calls and kernel sums, see ARCHITECTURE.md) and central differences in
float64; what the native road does not lower (a tuple of slices, a float bound) runs on
the Python road with its result or its exception."""

import numpy as np
import pytest

import pullback as pb
from tape_helpers import central_gradient

BOUNDS = [(None, None, None), (None, -1, None), (1, None, None), (2, 5, None),
          (-3, None, None), (-100, 100, None), (5, 2, None), (7, 7, None), (None, None, 2),
          (None, None, -1), (6, 1, -2), (-2, -100, -3), (1, 100, 3), (100, -100, -1),
          (3, 3, -1), (0, 0, 1)]


def sliced(x, a, b, c):
    y = x[a:b:c]
    return np.sum(y * y * np.sin(y)) + np.sum(x) * 0.5


def sliced_one_int(x, a):
    return np.sum(np.exp(x[:a]) * 2.0) + np.sum(x[a:] * x[a:])


def sliced_matrix(M, a, b):
    top = M[a:b]
    return np.sum(top * top) + np.sum(M[::2] * 3.0)


def concatenated(x, w):
    z = np.concatenate((np.ones(1), x[:-1], w, np.zeros(2)))
    return np.sum(z * z * np.cos(z))


def rk4_last(x, s):
    h = 2.0 / s
    y = 0 * x
    for _ in range(s):
        k1 = x * np.concatenate((np.ones(1), y[:-1]))
        y2 = y + h * k1 / 2
        k2 = x * np.concatenate((np.ones(1), y2[:-1]))
        y3 = y + h * k2 / 2
        k3 = x * np.concatenate((np.ones(1), y3[:-1]))
        y4 = y + h * k3
        k4 = x * np.concatenate((np.ones(1), y4[:-1]))
        y = y + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
    return y[-1]


def picked(x, i):
    return (x * x)[i] + (x * 3.0 + 1.0)[-1] * x[i]


def several_axes(M):
    return np.sum(M[1:, :2] ** 2)


def float_bound(x, a):
    return np.sum(x[a:])


def _roads(monkeypatch, fn, args):
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
        value, g = pb.value_and_grad(fn, 0)(*args)
        results.append((float(value), np.asarray(g)))
        if flag == "1":   # the line of this signature
            signature = ", ".join(f"ndarray[float64, {a.ndim}d]" if isinstance(a, np.ndarray)
                                  else type(a).__name__ for a in args)
            first = pb.compile(fn).fn.__code__.co_varnames[0]
            road = [line for line in pb.explain(fn).splitlines()
                    if f"differentiating {first}: ({signature})" in line]
            assert len(road) == 1, pb.explain(fn)
            results.append(road[0])
    (v1, g1), road, (v0, g0) = results
    return v1, g1, road, v0, g0


def _check(monkeypatch, fn, args, native=True):
    v1, g1, road, v0, g0 = _roads(monkeypatch, fn, args)
    if native:
        assert "native (" in road and "Python road" not in road, road
    else:
        assert "Python road" in road, road
    # within rounding: libmvec's sin/exp/cos (4 ulp) and the fused kernels' own sum order
    assert v1 == pytest.approx(v0, rel=1e-12, abs=1e-13)
    assert g1.shape == g0.shape
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(g1, central_gradient(fn, args, 0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("bounds", BOUNDS, ids=[str(b) for b in BOUNDS])
def test_slices_of_every_sign_step_and_clamping(monkeypatch, bounds):
    x = np.random.default_rng(3).normal(size=8)
    assert np.array_equal(x[slice(*bounds)], x[bounds[0]:bounds[1]:bounds[2]])
    # (a None argument is the Python road's; None bounds written in the code are native)
    _check(monkeypatch, sliced, (x, *bounds), native=None not in bounds)
    _check(monkeypatch, sliced, (x, *[0 if b is None else b for b in bounds[:2]], bounds[2] or 1))


def literal_forms(x):
    return (np.sum(x[::2] * x[::2]) + np.sum(x[1:] * x[:-1]) + np.sum(x[::-1] * x)
            + np.sum(x[:]) * np.sum(x[-2:]) + np.sum(x[5:1:-2] * x[5:1:-2]) + np.sum(x[100:]))


def test_slices_written_with_absent_bounds(monkeypatch):
    for n in (0, 1, 2, 7, 8):
        _check(monkeypatch, literal_forms, (np.random.default_rng(n).normal(size=n),))


@pytest.mark.parametrize("a", [-9, -1, 0, 3, 8, 12])
def test_slices_with_one_bound_and_empty_results(monkeypatch, a):
    _check(monkeypatch, sliced_one_int, (np.random.default_rng(4).normal(size=8), a))


@pytest.mark.parametrize("a, b", [(0, 2), (-2, 5), (3, 1), (-9, 100)])
def test_slices_of_matrices_take_rows(monkeypatch, a, b):
    _check(monkeypatch, sliced_matrix, (np.random.default_rng(5).normal(size=(5, 3)), a, b))


def test_slice_step_zero_raises_the_python_roads_error(monkeypatch):
    for flag in ("1", "0"):
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
        with pytest.raises(ValueError, match="slice step cannot be zero"):
            pb.grad(sliced, 0)(np.ones(4), None, None, 0)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_concatenate_ones_zeros_and_their_gradients(monkeypatch, n):
    rng = np.random.default_rng(n)
    x, w = rng.normal(size=n), rng.normal(size=3)
    _check(monkeypatch, concatenated, (x, w))
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    gw = pb.grad(concatenated, 1)(x, w)
    np.testing.assert_allclose(gw, central_gradient(concatenated, (x, w), 1), rtol=1e-6,
                               atol=1e-7)


def test_rk4_of_gradbenchs_ode_takes_the_native_road(monkeypatch):
    x = np.random.default_rng(6).uniform(0.5, 1.5, size=12)
    _check(monkeypatch, rk4_last, (x, 7))


@pytest.mark.parametrize("i", [0, 3, -1, -5])
def test_numbers_picked_out_of_arrays_by_an_index(monkeypatch, i):
    _check(monkeypatch, picked, (np.random.default_rng(7).normal(size=5), i))


def test_what_is_not_lowered_runs_on_the_python_road(monkeypatch):
    _check(monkeypatch, several_axes, (np.random.default_rng(8).normal(size=(4, 3)),),
           native=False)
    for flag in ("1", "0"):   # a float bound: Python's TypeError on both roads
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
        with pytest.raises(TypeError):
            pb.grad(float_bound, 0)(np.ones(4), 1.0)
