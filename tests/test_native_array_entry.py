"""The fastcall entry with float64 arrays (runtime/native_entry.py): after a call that
took the native road, ``pb.grad(f)(x)`` of numpy arrays is one native call that checks
each array's header (exact ``np.ndarray``, numpy's float64 dtype object, the signature's
number of axes, C-contiguous, aligned), allocates the gradient arrays and returns what
the careful path returns.  Anything else -- another dtype or layout, a list, an NDArray,
a subclass, a Python exception inside native code -- must give exactly the Python road's
result or exception, and no reference may leak."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import pullback as pb
from pullback import nd
from pullback.compiler import native_road
from pullback.runtime import native_entry
from tape_helpers import central_gradient

pytestmark = pytest.mark.skipif(not native_entry.available(),
                                reason="the entry needs CPython's and numpy's object layouts")

RTOL = 1e-12   # index-order sums (native) against numpy's pairwise sums


@pytest.fixture(autouse=True)
def native_functions(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def chapter_f(a):
    b = a * 2
    while np.linalg.norm(b) < 1000:
        b = b * 2
    if np.sum(b) > 0:
        c = b
    else:
        c = 100 * b
    return np.sum(c)


def mixed(x, v, M, n):
    y = x * v
    s = np.sum(y * y) + np.sum(np.dot(M, v)) * x
    for _ in range(n):
        s = s * 0.5 + np.mean(v)
    return s


def weighted(u, w):
    return np.sum(np.sin(u) * w)


def cube(T):
    return np.sum(T * T * T)


def _python_road(monkeypatch, fn, argnums, args):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    try:
        return pb.grad(fn, argnums)(*args)
    finally:
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")


def _same(native, python, rtol=RTOL):
    """Equal gradients of the same kinds: types, dtypes, shapes, values."""
    native = native if isinstance(native, tuple) else (native,)
    python = python if isinstance(python, tuple) else (python,)
    assert [type(g) for g in native] == [type(g) for g in python]
    for a, b in zip(native, python, strict=True):
        if isinstance(b, float):
            assert a == pytest.approx(b, rel=rtol, abs=1e-13)
            continue
        a, b = np.asarray(a), np.asarray(b)
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-13)


class _Careful:
    """Counts the calls that did not go through the gradient entry (they choose the road
    in ``native_road.gradient_function``)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = native_road.gradient_function

        def counted(variant, args):
            self.calls += 1
            return original(variant, args)

        monkeypatch.setattr(native_road, "gradient_function", counted)


def _cases():
    rng = np.random.default_rng(7)
    return [
        (chapter_f, 0, (rng.normal(size=3) * 1e-3,)),
        (chapter_f, (0,), (-np.abs(rng.normal(size=4)) * 1e-2,)),
        (mixed, (0, 1, 2), (0.7, rng.normal(size=4), rng.normal(size=(3, 4)), 3)),
        (mixed, (1,), (1.3, rng.normal(size=5), rng.normal(size=(2, 5)), 0)),
        (mixed, 2, (np.float64(0.4), rng.normal(size=3), rng.normal(size=(4, 3)), 2)),
        (weighted, (0, 1), (rng.normal(size=(2, 3)), rng.normal(size=(2, 3)))),
        (weighted, 0, (rng.normal(size=6), rng.normal(size=6))),   # w: not differentiated
        (cube, 0, (rng.normal(size=(2, 3, 2)),)),
        (cube, 0, (rng.normal(size=(2, 1, 2, 3)),)),
    ]


@pytest.mark.parametrize("fn, argnums, args", _cases(),
                         ids=[f"{c[0].__name__}{k}" for k, c in enumerate(_cases())])
def test_entry_equals_python_road_and_central_differences(monkeypatch, fn, argnums, args):
    careful = _Careful(monkeypatch)
    g = pb.grad(fn, argnums)
    first = g(*args)
    assert careful.calls == 1
    second = g(*args)
    assert careful.calls == 1, "the second call did not go through the gradient entry"
    road = pb.explain(fn)
    assert "native (" in road and "fastcall" in road, road
    python = _python_road(monkeypatch, fn, argnums, args)
    _same(first, python)
    _same(second, python)
    positions = (argnums,) if isinstance(argnums, int) else argnums
    got = second if isinstance(second, tuple) else (second,)
    for k, value in zip(positions, got, strict=True):
        numeric = central_gradient(fn, [float(a) if isinstance(a, np.floating) else a
                                        for a in args], k)
        np.testing.assert_allclose(value, numeric, rtol=1e-5, atol=1e-6)


def test_results_are_fresh_arrays_and_arguments_are_untouched(monkeypatch):
    rng = np.random.default_rng(3)
    u, w = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    before = u.copy(), w.copy()
    g = pb.grad(weighted, (0, 1))
    g(u, w)
    one, two = g(u, w), g(u, w)
    assert len({id(x) for x in (*one, *two, u, w)}) == 6
    for result in one:
        assert type(result) is np.ndarray and result.dtype == np.float64
        assert result.flags.c_contiguous and result.flags.writeable and result.base is None
    one[0][...] = 0.0   # the caller owns them: changing one changes nothing else
    np.testing.assert_allclose(two[0], np.cos(u) * w, rtol=1e-15)
    np.testing.assert_array_equal(u, before[0])
    np.testing.assert_array_equal(w, before[1])


def test_aliased_arguments(monkeypatch):
    """The same array for two parameters: each gets its own gradient array."""
    v = np.linspace(-1.0, 1.0, 5)
    g = pb.grad(weighted, (0, 1))
    g(v, v)
    got = g(v, v)
    assert got[0] is not got[1]
    _same(got, _python_road(monkeypatch, weighted, (0, 1), (v, v)))
    np.testing.assert_allclose(got[0], np.cos(v) * v, rtol=1e-15)
    np.testing.assert_allclose(got[1], np.sin(v), rtol=1e-15)


def test_empty_arrays(monkeypatch):
    g = pb.grad(mixed, (0, 1, 2))
    rng = np.random.default_rng(4)
    g(0.5, rng.normal(size=3), rng.normal(size=(2, 3)), 1)   # installs the entry
    for args in [(0.5, np.zeros(0), np.zeros((2, 0)), 1), (0.5, np.zeros(0), np.zeros((0, 0)), 0)]:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # mean of nothing: nan
            native = g(*args)
            python = _python_road(monkeypatch, mixed, (0, 1, 2), args)
        assert [np.shape(x) for x in native] == [np.shape(x) for x in python]
        assert [type(x) for x in native] == [type(x) for x in python]
        for a, b in zip(native, python, strict=True):
            np.testing.assert_array_equal(a, b)   # nan where the Python road has nan


def _unaligned(n):
    raw = np.zeros(8 * n + 1, dtype=np.uint8)
    view = raw[1:].view(np.float64)
    view[...] = np.linspace(0.1, 0.9, n)
    assert not view.flags.aligned
    return view


class _Sub(np.ndarray):
    pass


def _bad_inputs():
    v = np.array([0.3, -1.2, 0.8, 2.0])
    return {
        "float32": v.astype(np.float32),
        "int64": np.array([1, 2, 3, 4]),
        "bool": np.array([True, False, True, True]),
        "strided": np.linspace(0.0, 1.0, 8)[::2],
        "fortran_2d": np.asfortranarray(np.arange(6.0).reshape(2, 3) / 7),
        "other_ndim": np.arange(6.0).reshape(2, 3) / 7,
        "zero_d": np.array(0.25),
        "byteswapped": v.astype(">f8"),
        "readonly": np.frombuffer(v.tobytes(), dtype=np.float64),
        "unaligned": _unaligned(4),
        "subclass": v.view(_Sub),
        "list": [0.3, -1.2, 0.8, 2.0],
        "ndarray_of_nd": nd.array(v),
        "python_float": 0.5,
        "numpy_float": np.float64(0.5),
    }


@pytest.mark.parametrize("name", list(_bad_inputs()))
def test_arguments_the_entry_does_not_take_give_the_python_roads_result(monkeypatch, name):
    """After the entry is installed for a 1-d float64 array, any other argument gives the
    result (or the exception) ``pb.grad`` gives with native functions off."""
    bad = _bad_inputs()[name]
    g = pb.grad(weighted, 0)
    g(np.linspace(0.0, 1.0, 4), np.ones(4))   # installs the entry
    w = np.full(4, 0.5) if np.ndim(bad) <= 1 else np.full((2, 3), 0.5)
    try:
        expected = _python_road(monkeypatch, weighted, 0, (bad, w))
    except Exception as error:   # noqa: BLE001  the very same exception is expected
        with pytest.raises(type(error)) as raised:
            g(bad, w)
        assert str(raised.value) == str(error)
        return
    got = g(bad, w)
    assert type(got) is type(expected)
    if isinstance(expected, nd.NDArray):
        got, expected = got.asnumpy(), expected.asnumpy()
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=RTOL)
    assert np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(np.asarray(bad), _bad_inputs()[name])   # untouched


def test_bad_second_argument_and_keywords(monkeypatch):
    g = pb.grad(weighted, (0, 1))
    u = np.linspace(0.0, 1.0, 4)
    g(u, u)
    for w in (u.astype(np.float32), u[::-1], u.reshape(2, 2), list(u)):
        if isinstance(w, list) or w.ndim != 1:
            with pytest.raises(Exception) as raised:
                _python_road(monkeypatch, weighted, (0, 1), (u, w))
            with pytest.raises(type(raised.value)):
                g(u, w)
            continue
        _same(g(u, w), _python_road(monkeypatch, weighted, (0, 1), (u, w)), rtol=1e-6)
    _same(g(u, w=u), _python_road(monkeypatch, weighted, (0, 1), (u, u)))


def mismatched(M, v):
    return np.sum(M * v)


def row(X, i):
    return np.sum(X[i] * X[i])


def test_python_exceptions_inside_native_code_through_the_entry(monkeypatch):
    g = pb.grad(mismatched, (0, 1))
    g(np.ones((3, 4)), np.ones(4))
    assert "fastcall" in pb.explain(mismatched)
    with pytest.raises(ValueError) as native_error:
        g(np.ones((3, 4)), np.ones(3))
    with pytest.raises(ValueError) as python_error:
        _python_road(monkeypatch, mismatched, (0, 1), (np.ones((3, 4)), np.ones(3)))
    assert str(native_error.value) == str(python_error.value)
    r = pb.grad(row, 0)
    X = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(r(X, -1), [[0, 0], [0, 0], [8, 10]])
    np.testing.assert_array_equal(r(X, 0), [[0, 2], [0, 0], [0, 0]])
    for bad in (3, -4, 1 << 70):
        with pytest.raises(IndexError):
            r(X, bad)


def test_no_reference_leaks(monkeypatch):
    """The entry's own references balance: on success (the float64 dtype object's count
    is exact: ``PyArray_Zeros`` steals the reference the entry takes, numpy's own
    ``np.empty`` does not give it back), and when native code asks for the Python road
    (its gradient arrays are dropped: no memory stays allocated)."""
    import tracemalloc

    rng = np.random.default_rng(8)
    u, w = rng.normal(size=5), rng.normal(size=5)
    g, bad = pb.grad(weighted, (0, 1)), pb.grad(mismatched, (0, 1))
    M, v = rng.normal(size=(2, 4000)), rng.normal(size=3999)
    g(u, w)
    bad(M, M[0].copy())
    float64 = np.dtype(np.float64)
    counts = sys.getrefcount(u), sys.getrefcount(w), sys.getrefcount(float64)
    for _ in range(200):
        result = g(u, w)
    first = result[0]
    references = sys.getrefcount(first)
    assert references == 3   # the tuple's, ``first`` and getrefcount's argument
    del result, first
    assert (sys.getrefcount(u), sys.getrefcount(w), sys.getrefcount(float64)) == counts

    def failing():
        try:
            bad(M, v)
        except ValueError:
            return
        raise AssertionError("the shapes do not broadcast")

    failing()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):   # a leak: 100 x (64 + 32) kB of gradient arrays
            failing()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, grown


def test_environment_is_read_at_each_call(monkeypatch):
    careful = _Careful(monkeypatch)
    v = np.linspace(0.1, 0.5, 3) * 1e-3
    g = pb.grad(chapter_f)
    expected = g(v)
    g(v)
    assert careful.calls == 1
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    np.testing.assert_array_equal(g(v), expected)
    assert careful.calls == 2
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    np.testing.assert_array_equal(g(v), expected)
    assert careful.calls == 3


def test_value_and_grad_and_vjp_use_the_raw_entry(monkeypatch):
    from pullback.runtime import native_function

    entries = []
    original = native_function.NativeGradient._call_ctypes

    def spy(self, args, seed):   # the ctypes road: only the entry's careful fallback
        entries.append(args)
        return original(self, args, seed)

    monkeypatch.setattr(native_function.NativeGradient, "_call_ctypes", spy)
    rng = np.random.default_rng(9)
    args = (0.7, rng.normal(size=4), rng.normal(size=(3, 4)), 2)
    pb.value_and_grad(mixed, (0, 1, 2))(*args)
    pb.vjp(mixed, *args, argnums=(1, 2))   # a signature's first call may be ctypes'
    entries.clear()
    value, grads = pb.value_and_grad(mixed, (0, 1, 2))(*args)
    out, pullback = pb.vjp(mixed, *args, argnums=(1, 2))
    twice = pullback(2.0)
    assert not entries
    assert "fastcall" in pb.explain(mixed)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    value_p, grads_p = pb.value_and_grad(mixed, (0, 1, 2))(*args)
    assert float(value) == pytest.approx(float(value_p), rel=RTOL)
    _same(tuple(grads), tuple(grads_p))
    _, pullback_p = pb.vjp(mixed, *args, argnums=(1, 2))
    _same(tuple(twice), tuple(pullback_p(2.0)))


CACHED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pullback as pb

    def f(M, v, s):
        return np.sum(np.tanh(np.dot(M, v)) * s) + np.sum(M * M)

    rng = np.random.default_rng(1)
    M, v = rng.normal(size=(3, 4)), rng.normal(size=4)
    g = pb.grad(f, (0, 1, 2))
    g(M, v, 0.5)
    got = g(M, v, 0.5)
    print(json.dumps({"road": pb.explain(f), "grads": [np.asarray(x).tolist() for x in got]}))
""")


def test_cached_entries_load_and_agree(tmp_path):
    """A second process loads the entries' object code from the disk cache (no IR) and
    computes the same gradients."""
    import json

    script = tmp_path / "cached_entry.py"
    script.write_text(CACHED)
    env = dict(os.environ, PULLBACK_CACHE_DIR=str(tmp_path / "cache"),
               PULLBACK_NATIVE_FUNCTIONS="1",
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    env.pop("PULLBACK_CACHE", None)
    runs = [json.loads(subprocess.run([sys.executable, str(script)], env=env, check=True,
                                      capture_output=True, text=True).stdout)
            for _ in range(2)]
    assert runs[0]["grads"] == runs[1]["grads"]
    assert "compiled, fastcall" in runs[0]["road"], runs[0]["road"]
    assert "cached, fastcall" in runs[1]["road"], runs[1]["road"]
    entries = list((tmp_path / "cache").rglob("*"))
    assert entries, "nothing was cached"
