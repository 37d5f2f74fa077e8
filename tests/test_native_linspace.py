"""``np.linspace`` on the native road, and int numbers fused beside arrays.

GradBench's llsq builds ``t = np.linspace(-1.0, 1.0, n)`` and ``p = 0 * t`` (fused with
the range's ``m - 1``, an int): both kept the whole function on the Python road.  The
native ``np.linspace`` computes what numpy computes (``i * step + start``, ``(i / div) *
delta + start`` when the step underflows, the last element ``stop``), so the arrays are
compared bit for bit with numpy's; a negative count leaves for the Python road, which
raises numpy's ValueError.
"""

import math

import numpy as np
import pytest

import pullback as pb
from tape_helpers import central_gradient


def weighted(x, a, b, n):
    t = np.linspace(a, b, n)
    return np.sum(x * t)


def last(x, a, b, n):
    t = np.linspace(a, b, n)
    return x * t[n - 1] + x * x * t[0]


def polynomial(x, n):
    """GradBench llsq's objective: Horner's rule over a linspace."""
    m = x.shape[0]
    t = np.linspace(-1.0, 1.0, n)
    p = 0 * t
    for j in range(m - 1, -1, -1):
        p = p * t + x[j]
    r = np.sign(t) - p
    return np.sum(r * r) / 2


def _both(fn, args, monkeypatch, argnums=0):
    vg = pb.value_and_grad(fn, argnums)
    native = vg(*args)
    road = pb.explain(fn, *args, argnums=argnums)
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    python = vg(*args)
    monkeypatch.delenv("PULLBACK_NATIVE")
    return native, python, road


ENDS = [(-1.0, 1.0), (0.0, 1.0), (3.0, -2.5), (1e-300, 2e-300), (5e-324, 1e-323),
        (0.0, 0.0), (2.0, 2.0), (-7, 3), (1e308, -1e308), (0.1, 0.7)]
COUNTS = [0, 1, 2, 3, 4, 5, 7, 8, 9, 64, 1000]


@pytest.mark.parametrize("a, b", ENDS)
@pytest.mark.parametrize("n", COUNTS)
def test_the_array_is_numpys_bit_for_bit(a, b, n, monkeypatch):
    x = np.linspace(0.5, 1.5, n) if n else np.zeros(0)
    native, python, road = _both(weighted, (x, a, b, n), monkeypatch)
    assert "native" in road
    with np.errstate(all="ignore"):
        expected = np.linspace(a, b, n)
    # the gradient with respect to x is t itself
    np.testing.assert_array_equal(native[1], expected)
    np.testing.assert_array_equal(python[1], expected)
    assert native[0] == pytest.approx(python[0], rel=1e-12, abs=1e-300, nan_ok=True)


@pytest.mark.parametrize("a, b", [(math.inf, 1.0), (-math.inf, math.inf), (math.nan, 0.0)])
def test_non_finite_ends(a, b, monkeypatch):
    x = np.ones(4)
    with np.errstate(all="ignore"):
        native, python, road = _both(weighted, (x, a, b, 4), monkeypatch)
        expected = np.linspace(a, b, 4)
    assert "native" in road
    np.testing.assert_array_equal(native[1], expected)
    np.testing.assert_array_equal(python[1], expected)


def test_a_negative_count_is_numpys_error():
    with pytest.raises(ValueError, match="non-negative"):
        pb.grad(weighted)(np.ones(3), 0.0, 1.0, -1)


@pytest.mark.parametrize("n", [1, 2, 5, 33])
def test_elements_read_by_index(n, monkeypatch):
    native, python, road = _both(last, (0.7, -2.0, 3.0, n), monkeypatch)
    assert "native" in road
    assert native == python
    assert native[1] == pytest.approx(central_gradient(last, (0.7, -2.0, 3.0, n), 0),
                                      rel=1e-7)


@pytest.mark.parametrize("m, n", [(1, 5), (4, 9), (16, 257), (128, 1024)])
def test_gradbench_llsq_on_the_native_road(m, n, monkeypatch):
    x = np.random.default_rng(m).standard_normal(m)
    native, python, road = _both(polynomial, (x, n), monkeypatch)
    assert "native" in road, road
    assert native[0] == pytest.approx(python[0], rel=1e-12)
    np.testing.assert_allclose(native[1], python[1], rtol=1e-11, atol=1e-12)
    if n <= 257:
        np.testing.assert_allclose(native[1], central_gradient(polynomial, (x, n), 0),
                                   rtol=1e-6, atol=1e-6)


def int_beside_array(x, k):
    y = x * 2.0
    j = k - 1          # fused with the array statement: an int output beside the array
    return np.sum(y) * j + x[j]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_int_numbers_fused_beside_arrays(k, monkeypatch):
    x = np.array([0.5, -1.0, 2.0])
    native, python, road = _both(int_beside_array, (x, k), monkeypatch)
    assert "native" in road, road
    assert native[0] == python[0]
    np.testing.assert_array_equal(native[1], python[1])
    np.testing.assert_allclose(native[1], central_gradient(int_beside_array, (x, k), 0),
                               rtol=1e-7)
