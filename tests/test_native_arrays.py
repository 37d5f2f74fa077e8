"""float64 arrays on the native road (compiler/lower_arrays.py) against the Python road
and central differences: broadcasting elementwise code and fused kernels, whole-array and
per-axis reductions, ``np.dot`` of vectors and matrices, ``x[i]`` reads, loops over
``x.shape``, the W1 and W3 workloads, and random array programs.

Every program here must really take the native road (``pb.explain`` says so), and its
value and gradients must equal the Python road's (``PULLBACK_NATIVE_FUNCTIONS=0``) within
rounding (reductions and ``np.dot`` sum in index order, numpy pairwise and BLAS), and
central differences.  Errors (a shape mismatch, an index out of range) are the Python
road's exceptions; arguments native code cannot take (float32, non-contiguous) run on the
Python road with the same results.
"""

import importlib.util

import numpy as np
import pytest

import pullback as pb
from tape_helpers import central_gradient

#: index-order sums against numpy's pairwise sums and BLAS
RTOL = 1e-12


def chapter_f(a):
    b = a * 2
    while np.linalg.norm(b) < 1000:
        b = b * 2
    if np.sum(b) > 0:
        c = b
    else:
        c = 100 * b
    return np.sum(c)


def rnn(W, U, b, xs, h):
    for t in range(xs.shape[0]):
        h = np.tanh(np.dot(W, h) + np.dot(U, xs[t]) + b)
    return np.sum(h * h)


def broadcasting(M, v, s):
    a = M * v + s
    b = np.exp(a * 0.1) - v / (M * M + 1.0)
    return np.sum(b * s) + np.mean(a)


def reductions(M, v):
    rows = np.sum(M, axis=1)
    cols = np.mean(M, axis=0)
    top = np.max(M * v, axis=1)
    low = np.min(M + v, axis=0)
    extremes = np.max(v) * np.min(M)
    return np.sum(rows * rows) + np.dot(cols, v) + np.sum(top) - np.sum(low * low) \
        + extremes


def dots(A, B, v, w):
    mm = np.dot(A, B)
    mv = np.dot(mm, w)
    vm = np.dot(v, A)
    return np.dot(mv, mv) + np.dot(vm, vm) * 0.5 - np.sum(A @ B)


def indexing(X, v):
    s = 0.0
    for i in range(X.shape[0]):
        s = s + np.dot(np.sin(X[i] * v), v) * X[-1 - i][0]
    return s + v[1] * v[-1]


def scalar_and_array(x, v):
    y = x * v
    z = y * y + x
    return np.sum(z) * x


def _matrices(rng):
    return (rng.normal(size=(3, 4)), rng.normal(size=4), float(rng.uniform(0.5, 1.5)))


PROGRAMS = [
    (chapter_f, lambda rng: (rng.normal(size=3) * 1e-3,), (0,)),
    (chapter_f, lambda rng: (-np.abs(rng.normal(size=5)) * 1e-2,), (0,)),
    (rnn, lambda rng: (rng.normal(size=(4, 4)) / 2, rng.normal(size=(4, 3)) / 2,
                       rng.normal(size=4) * 0.1, rng.normal(size=(6, 3)), np.zeros(4)),
     (0, 1, 2, 4)),
    (broadcasting, _matrices, (0, 1, 2)),
    (reductions, lambda rng: (rng.normal(size=(3, 4)), rng.normal(size=4)), (0, 1)),
    (dots, lambda rng: (rng.normal(size=(3, 4)), rng.normal(size=(4, 2)),
                        rng.normal(size=3), rng.normal(size=2)), (0, 1, 2, 3)),
    (indexing, lambda rng: (rng.normal(size=(3, 2)), rng.normal(size=2)), (1,)),
    (scalar_and_array, lambda rng: (float(rng.normal()), rng.normal(size=5)), (0, 1)),
]


def _road(monkeypatch, fn, args, argnums, flag):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
    value, grads = pb.value_and_grad(fn, argnums)(*args)
    return float(value), [np.asarray(g, dtype=np.float64) for g in grads]


def _agree(on, off, rtol=RTOL):
    assert on[0] == pytest.approx(off[0], rel=rtol, abs=1e-13)
    for a, b in zip(on[1], off[1], strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-13)


@pytest.mark.parametrize("fn, sample, argnums", PROGRAMS,
                         ids=[f"{p[0].__name__}{k}" for k, p in enumerate(PROGRAMS)])
def test_arrays_native_equals_python_road_and_central_differences(monkeypatch, fn, sample,
                                                                  argnums):
    rng = np.random.default_rng(99)
    for _ in range(3):
        args = sample(rng)
        on = _road(monkeypatch, fn, args, argnums, "1")
        road = pb.explain(fn)
        assert "native (" in road and "Python road" not in road, road
        off = _road(monkeypatch, fn, args, argnums, "0")
        _agree(on, off)
        for k, g in zip(argnums, on[1], strict=True):
            np.testing.assert_allclose(g, central_gradient(fn, args, k), rtol=1e-5, atol=1e-6)


def test_native_arrays_really_run_natively(monkeypatch):
    """The native call returns the result (no silent Python-road rerun) and the caller's
    arrays are untouched."""
    from pullback.runtime import native_function

    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    results = []
    original = native_function.NativeGradient.call

    def spy(self, args, seed):
        results.append(original(self, args, seed))
        return results[-1]

    monkeypatch.setattr(native_function.NativeGradient, "call", spy)
    rng = np.random.default_rng(5)
    args = (rng.normal(size=(4, 4)), rng.normal(size=(4, 3)), rng.normal(size=4),
            rng.normal(size=(5, 3)), rng.normal(size=4))
    before = [a.copy() for a in args]
    pb.grad(rnn, argnums=(0, 1, 2))(*args)
    assert results and all(r is not None for r in results)
    for a, b in zip(args, before, strict=True):
        np.testing.assert_array_equal(a, b)


def mismatched(M, v):
    return np.sum(M * v)


def test_shape_mismatch_raises_the_python_roads_error(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    M, v = np.ones((3, 4)), np.ones(3)
    pb.grad(mismatched, argnums=(0, 1))(np.ones((3, 4)), np.ones(4))   # builds native
    assert "native (" in pb.explain(mismatched)
    with pytest.raises(ValueError) as native_error:
        pb.grad(mismatched, argnums=(0, 1))(M, v)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "0")
    with pytest.raises(ValueError) as python_error:
        pb.grad(mismatched, argnums=(0, 1))(M, v)
    assert str(native_error.value) == str(python_error.value)


def row(X, i):
    return np.sum(X[i] * X[i])


def test_index_out_of_range_raises_the_python_roads_error(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    X = np.arange(6.0).reshape(3, 2)
    g = pb.grad(row, argnums=0)
    np.testing.assert_array_equal(g(X, -1), [[0, 0], [0, 0], [8, 10]])   # X[-1]
    assert "native (" in pb.explain(row)
    for bad in (3, -4):
        with pytest.raises(IndexError):
            g(X, bad)


def test_arguments_native_code_does_not_take_run_on_the_python_road(monkeypatch):
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    rng = np.random.default_rng(2)
    M, v, s = rng.normal(size=(3, 8)), rng.normal(size=4), 0.7
    expected = _road(monkeypatch, broadcasting, (M[:, ::2].copy(), v, s), (0, 1, 2), "0")
    got = _road(monkeypatch, broadcasting, (M[:, ::2], v, s), (0, 1, 2), "1")   # strided
    _agree(got, expected)
    pb.value_and_grad(broadcasting, (0, 1, 2))(M[:, ::2].astype(np.float32), v, s)
    assert "Python road: an argument of type ndarray[float32, 2d]" in pb.explain(broadcasting)


def test_w1_and_w3_workloads_take_the_native_road(monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench" / "workloads"))
    import w1_chapter
    import w3_rnn

    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    for module, size in ((w1_chapter, {"n": 3}), (w3_rnn, {"steps": 20, "hidden": 8,
                                                           "inputs": 3})):
        args = module.make_inputs(**size)
        text = pb.explain(module.loss, *args, argnums=tuple(module.WRT))
        assert "native (" in text, text
        grads = pb.grad(module.loss, argnums=tuple(module.WRT))(*args)
        grads = grads if isinstance(grads, tuple) else (grads,)
        for g, expected in zip(grads, module.grad_manual(*args), strict=True):
            np.testing.assert_allclose(g, expected, rtol=1e-12, atol=1e-14)


# ----- random array programs ----------------------------------------------------------------

_UNARY = ["np.tanh({})", "np.sin({})", "np.exp({} * 0.3)", "({} * {})", "(-{})"]
_BINARY = ["({} + {})", "({} - {})", "({} * {})", "({} / (1.5 + {} * {}))"]


def _expression(rng, names, depth):
    if depth == 0 or rng.random() < 0.3:
        return str(rng.choice(names)) if rng.random() < 0.85 else f"{rng.uniform(-2, 2):.3f}"
    if rng.random() < 0.4:
        text = str(rng.choice(_UNARY))
        inner = _expression(rng, names, depth - 1)
        return text.format(*([inner] * text.count("{}")))
    text = str(rng.choice(_BINARY))
    parts = [_expression(rng, names, depth - 1) for _ in range(text.count("{}"))]
    return text.format(*parts)


# (np.max ending a fused run is not lowered with arrays yet: max appears over an axis)
_REDUCE = ["np.sum({})", "np.mean({})", "np.sum(np.max({}, axis=1))", "np.sum(np.sum({}, axis=0))",
           "np.sum(np.mean({}, axis=0) * r)", "np.dot(np.dot({}, c), np.dot({}, c))"]


def _program(rng):
    lines = ["def program(M, r, c, s):", "    t = M * s"]
    names = ["M", "r", "c", "s", "t"]
    for k in range(int(rng.integers(1, 4))):
        lines.append(f"    u{k} = {_expression(rng, names, 2)}")
        names.append(f"u{k}")
    if rng.random() < 0.5:
        lines += ["    for i in range(M.shape[0]):",
                  f"        t = t * 0.9 + {_expression(rng, ['t', 'r', 'c', 's', 'M'], 1)}"]
        names.append("t")
    terms = []
    for name in [n for n in names if n not in ("r", "c", "s")][-3:]:
        text = str(rng.choice(_REDUCE))
        terms.append(text.format(*([f"({name} + M)"] * text.count("{}"))))
    return "\n".join(lines + [f"    return {' + '.join(terms)} * s"]) + "\n"


def test_random_array_programs_on_both_roads(monkeypatch, tmp_path):
    rng = np.random.default_rng(20261207)
    native_count, programs = 0, 20
    for number in range(programs):
        source = _program(rng)
        path = tmp_path / f"random_arrays_{number}.py"
        path.write_text("import numpy as np\n\n\n" + source)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        args = (rng.normal(size=(3, 4)) * 0.5, rng.normal(size=4) * 0.5,
                rng.normal(size=(3, 1)) * 0.5, float(rng.uniform(0.5, 1.5)))
        c4 = rng.normal(size=4)   # np.dot(M + ..., c) needs a vector of M's columns
        args = (args[0], args[1], c4, args[3])
        with np.errstate(all="ignore"):
            on = _road(monkeypatch, module.program, args, (0, 1, 2, 3), "1")
            road = pb.explain(module.program)
            assert "internal error" not in road, f"{road}\n{source}"
            native_count += "native (" in road
            if "native (" not in road:   # a limit named by explain (ARCHITECTURE.md)
                assert "fewer axes than its inputs" in road, road
            off = _road(monkeypatch, module.program, args, (0, 1, 2, 3), "0")
        try:
            _agree(on, off, rtol=1e-10)
        except AssertionError as error:
            raise AssertionError(f"native != Python road for\n{source}") from error
        for k in range(4):
            numeric = central_gradient(module.program, args, k, 1e-6)
            np.testing.assert_allclose(on[1][k], numeric, rtol=1e-4, atol=1e-5,
                                       err_msg=source)
    assert native_count >= programs // 2   # most run natively


# ----- the corpus (tests/corpus.py): every entry that types must agree ----------------------

def _corpus_road(monkeypatch, entry, arrays, flag):
    from pullback import nd

    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", flag)
    args = [a.copy() if entry["numpy"] else nd.array(a) for a in arrays]
    grads = pb.grad(entry["fn"], argnums=tuple(range(len(arrays))))(*args)
    grads = grads if isinstance(grads, tuple) else (grads,)
    return [np.asarray(g.asnumpy() if isinstance(g, pb.NDArray) else g) for g in grads]


def test_corpus_entries_that_type_agree_on_both_roads(monkeypatch):
    from corpus import CASES

    from pullback.runtime import native_function

    calls = []
    original = native_function.NativeGradient.call

    def spy(self, args, seed):   # which entries the native code computed
        calls.append(original(self, args, seed))
        return calls[-1]

    monkeypatch.setattr(native_function.NativeGradient, "call", spy)
    native = []
    for entry in CASES:
        rng = np.random.default_rng(0)
        low, high = (0.2, 2.0) if entry["positive"] else (entry["low"], entry["high"])
        arrays = [rng.uniform(low, high, shape) for shape in entry["shapes"]]
        calls.clear()
        try:
            on = _corpus_road(monkeypatch, entry, arrays, "1")
        except Exception as error:   # noqa: BLE001  the Python road must raise the same
            with pytest.raises(type(error)):
                _corpus_road(monkeypatch, entry, arrays, "0")
            continue
        if not calls or calls[-1] is None:
            continue
        native.append(entry["fn"].__name__)
        off = _corpus_road(monkeypatch, entry, arrays, "0")
        for a, b in zip(on, off, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12,
                                       err_msg=entry["fn"].__name__)
    assert len(native) >= 3, native   # most corpus entries are MXNet-style (nd.*): not yet


def extremes_all(x, w):
    return np.max(x) * 2.0 - np.min(w) * np.sum(x * w) + np.min(x)


@pytest.mark.parametrize("ties", [False, True])
def test_whole_array_max_and_min_every_length_ties_and_nan(monkeypatch, ties):
    """``np.max``/``np.min`` of a whole array run as eight running extrema and a tail:
    every length around the vector width, the extremum in each position, ties (the
    gradient shared by the tied elements), NaN anywhere -- the same values and gradients
    as the Python road, and central differences where there are no ties."""
    rng = np.random.default_rng(11)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    for n in [*range(1, 20), 31, 32, 33, 1000]:
        for where in sorted({0, n // 2, n - 1}):
            x = rng.integers(-3, 3, size=n).astype(float) if ties else rng.normal(size=n)
            x[where] = 10.0   # the max here (and ties with another 10.0 when ties)
            if ties and n > 1:
                x[(where + 1) % n] = 10.0
            w = rng.uniform(0.5, 1.5, size=n)
            on = _road(monkeypatch, extremes_all, (x, w), (0, 1), "1")
            assert "native (" in pb.explain(extremes_all)
            off = _road(monkeypatch, extremes_all, (x, w), (0, 1), "0")
            _agree(on, off)
            if not ties:
                for k in (0, 1):
                    np.testing.assert_allclose(on[1][k], central_gradient(
                        extremes_all, (x, w), k), rtol=1e-5, atol=1e-6)
            x[where] = np.nan
            with np.errstate(invalid="ignore"):   # the Python road's 0 / 0 count
                on = _road(monkeypatch, extremes_all, (x, w), (0, 1), "1")
                off = _road(monkeypatch, extremes_all, (x, w), (0, 1), "0")
            assert np.isnan(on[0]) and np.isnan(off[0])
            for a, b in zip(on[1], off[1], strict=True):
                np.testing.assert_array_equal(a, b)


def whole_sums(x, w):
    return np.sum(x) + np.mean(w) * 3.0


def test_whole_array_sums_are_numpys_pairwise_sums(monkeypatch):
    """``np.sum``/``np.mean`` of a whole array sum as numpy does (pairwise: blocks of up
    to 128 as eight running sums): the native value equals numpy's bit for bit at every
    length around the block sizes, and the gradients are the Python road's."""
    rng = np.random.default_rng(12)
    monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
    for n in [*range(1, 20), 127, 128, 129, 135, 136, 255, 257, 1000, 4099, 160_003]:
        x, w = rng.normal(size=n) * 1e3, rng.normal(size=n)
        value, grads = pb.value_and_grad(whole_sums, (0, 1))(x, w)
        assert "native (" in pb.explain(whole_sums)
        assert float(value) == float(np.sum(x) + np.mean(w) * 3.0), n
        off = _road(monkeypatch, whole_sums, (x, w), (0, 1), "0")
        monkeypatch.setenv("PULLBACK_NATIVE_FUNCTIONS", "1")
        _agree((float(value), [np.asarray(g) for g in grads]), off)
        if n < 8:
            for k in (0, 1):
                np.testing.assert_allclose(grads[k], central_gradient(whole_sums, (x, w), k),
                                           rtol=1e-5, atol=1e-6)
