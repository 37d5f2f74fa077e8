"""The arena of native array functions across calls (compiler/lower_arrays.py): a call's
largest chunk is kept for the function's next call (taken and put back with atomic
exchanges), so calls with growing and shrinking sizes, calls from two threads at once and
calls that leave for the Python road mid-way must all still give the Python road's value
and gradients (rtol 1e-12: index-order sums) and central differences, and memory must not
grow with the number of calls (read from /proc/self/statm: tracemalloc cannot see malloc).
"""

import threading

import numpy as np
import pytest

import pullback as pb
from pullback.runtime import native_function
from tape_helpers import central_gradient

RTOL = 1e-12
#: sizes in an order that grows the kept block, shrinks below it and grows past it again
SIZES = (3, 40, 20_000, 160_000, 7, 1, 300_000, 5_000, 160_000, 64)


def lse(x):
    a = np.max(x)
    return a + np.log(np.sum(np.exp(x - a)))


def several(x, w):
    y = np.tanh(x) * w
    z = np.exp(y * 0.5) + x * x
    a = np.max(x)   # lse(x) inline: a callee with arrays keeps a caller on the Python road
    return np.sum(z * w) + np.dot(y, x) + a + np.log(np.sum(np.exp(x - a)))


def fails_late(x, i):
    z = np.tanh(x) * 2.0 + x
    return np.dot(z, x) + x[i] * np.max(z)   # i out of range: IndexError after z is made


@pytest.fixture(autouse=True)
def native_functions(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def _python_road(monkeypatch, fn, argnums, args):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    try:
        return pb.value_and_grad(fn, argnums)(*args)
    finally:
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def _agree(native, python, n=1):
    """Within rounding: 1e-12, or for sums of more terms the bound of a sum in index order
    of ``n`` positive terms, ``n * eps`` (the Python road's kernels sum in other orders)."""
    rtol = max(RTOL, n * np.finfo(np.float64).eps)
    assert float(native[0]) == pytest.approx(float(python[0]), rel=rtol, abs=1e-13)
    for a, b in zip(native[1], python[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-13)


def _directional(fn, args, k, gradient, rng, eps=1e-6):
    """Central differences of ``fn`` along a random direction of ``args[k]`` against the
    gradient's projection (an elementwise check for large arrays costs n calls)."""
    d = rng.normal(size=args[k].shape)
    moved = [list(args), list(args)]
    moved[0][k], moved[1][k] = args[k] + eps * d, args[k] - eps * d
    numeric = (fn(*moved[0]) - fn(*moved[1])) / (2 * eps)
    assert float(np.sum(gradient * d)) == pytest.approx(numeric, rel=1e-5, abs=1e-6)


def _native_road(monkeypatch):
    """The NativeGradient objects called, and whether each call returned natively."""
    calls = []
    original = native_function.NativeGradient.call

    def spy(self, args, seed):
        calls.append((self, original(self, args, seed)))
        return calls[-1][1]

    monkeypatch.setattr(native_function.NativeGradient, "call", spy)
    return calls


def _resident_bytes() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_growing_and_shrinking_sizes(monkeypatch):
    rng = np.random.default_rng(3)
    calls = _native_road(monkeypatch)
    for n in SIZES:
        x, w = rng.normal(size=n), rng.normal(size=n)
        for fn, argnums, args in ((lse, 0, (x,)), (several, (0, 1), (x, w))):
            native = pb.value_and_grad(fn, argnums)(*args)
            grads = native[1] if isinstance(argnums, tuple) else (native[1],)
            python = _python_road(monkeypatch, fn, argnums, args)
            _agree((native[0], grads), (python[0], python[1] if isinstance(argnums, tuple)
                                        else (python[1],)), n)
            for k, g in enumerate(grads):
                if n <= 40:
                    np.testing.assert_allclose(g, central_gradient(fn, args, k), rtol=1e-5,
                                               atol=1e-6)
                else:
                    _directional(fn, args, k, g, rng)
    assert "native (" in pb.explain(lse) and "native (" in pb.explain(several)
    assert calls and all(done is not None for _, done in calls)   # no Python-road rerun


def test_two_threads_at_once(monkeypatch):
    """Through ctypes (the GIL released), two threads run the same native function at
    once with different sizes; each must get its own arena and the right results."""
    calls = _native_road(monkeypatch)
    rng = np.random.default_rng(4)
    inputs = [(rng.normal(size=n), rng.normal(size=n)) for n in (50_000, 200_000, 9, 120_000)]
    expected = [pb.value_and_grad(several, (0, 1))(*args) for args in inputs]
    road = calls[-1][0]
    assert road.call(inputs[0], 1.0) is not None
    failures = []

    def work(order):
        try:
            for _ in range(15):
                for k in order:
                    value, grads = road._call_ctypes(inputs[k], 1.0)
                    assert float(value) == float(expected[k][0])
                    for g, e in zip(grads, expected[k][1], strict=True):
                        np.testing.assert_array_equal(g, e)
        except BaseException as error:   # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=work, args=(order,)) for order in
               ((0, 1, 2, 3), (3, 2, 1, 0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]
    for args, (value, grads) in zip(inputs, expected, strict=True):
        _agree((value, grads), _python_road(monkeypatch, several, (0, 1), args), args[0].size)


def test_an_exception_mid_call_returns_the_memory_and_the_next_call_is_right(monkeypatch):
    rng = np.random.default_rng(5)
    g = pb.value_and_grad(fails_late, 0)
    x = rng.normal(size=100_000)
    good = g(x, 7)
    assert "native (" in pb.explain(fails_late)
    with pytest.raises(IndexError):
        g(x, 100_000)
    again = g(x, 7)
    _agree((again[0], (again[1],)), (good[0], (good[1],)))
    python = _python_road(monkeypatch, fails_late, 0, (x, 7))
    _agree((again[0], (again[1],)), (python[0], (python[1],)), x.size)
    _directional(fails_late, (x, 7), 0, again[1], rng)
    before = _resident_bytes()
    for _ in range(300):   # a leak: 300 x 3 arrays of 800 kB
        with pytest.raises(IndexError):
            g(x, -100_001)
    assert _resident_bytes() - before < 64 << 20


def test_memory_does_not_grow_over_1000_calls():
    rng = np.random.default_rng(6)
    grad = pb.grad(several, (0, 1))
    inputs = [(rng.normal(size=n), rng.normal(size=n)) for n in (30_000, 70_000, 1_000)]
    for args in inputs:
        grad(*args)
    before = _resident_bytes()
    for k in range(1000):
        grad(*inputs[k % 3])
    grown = _resident_bytes() - before
    assert grown < 16 << 20, grown   # a leak of the arena: at least 64 KiB per call


def test_a_huge_call_does_not_stay_resident():
    """A call whose largest chunk is over ARENA_KEEP_MAX frees it at the exit."""
    from pullback.compiler.lower_arrays import ARENA_KEEP_MAX

    rng = np.random.default_rng(7)
    grad = pb.grad(lse)
    small = rng.normal(size=1_000)
    grad(small)
    before = _resident_bytes()
    # arrays just over half the bound: the second chunk (twice the first) is over it
    x = rng.normal(size=(ARENA_KEEP_MAX // 2 + (1 << 20)) // 8)
    g = grad(x)
    assert g.shape == x.shape and abs(float(np.sum(g)) - 1.0) < 1e-9
    del x, g
    after = _resident_bytes()
    np.testing.assert_allclose(grad(small), np.exp(small - small.max()) /
                               np.sum(np.exp(small - small.max())), rtol=1e-12)
    assert after - before < ARENA_KEEP_MAX // 2, (before, after)


def test_repeated_calls_reuse_mapped_memory():
    """The kept block is reused: after the first calls, a call with arrays of 1.25 MB
    page-faults almost nothing (each freed chunk went back to the kernel before: ~1,800
    minor faults per call of lse at this size)."""
    import resource

    x = np.random.default_rng(8).normal(size=160_000)
    grad = pb.grad(lse)
    for _ in range(5):
        expected = grad(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(50):
        np.testing.assert_array_equal(grad(x), expected)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50
    assert faults < 300, faults
