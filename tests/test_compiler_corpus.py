"""Every corpus function: compiled gradient = eager-tape gradient = finite differences."""

import numpy as np
import pytest

import pullback as pb
from pullback import autograd as ag
from pullback import nd
from pullback.testing import check_grads
from tape_helpers import central_gradient, tape_gradients

from corpus import CASES


def _inputs(entry, dtype, seed=0):
    rng = np.random.default_rng(seed)
    low, high = (0.2, 2.0) if entry["positive"] else (entry["low"], entry["high"])
    return [rng.uniform(low, high, shape).astype(dtype) for shape in entry["shapes"]]


def _compiled_gradients(fn, arrays, kind):
    args = [nd.array(a) for a in arrays] if kind == "nd" else [a.copy() for a in arrays]
    grads = pb.grad(fn, argnums=tuple(range(len(arrays))))(*args)
    return [g.asnumpy() if isinstance(g, pb.NDArray) else np.asarray(g) for g in grads]


IDS = [c["fn"].__name__ for c in CASES]


def test_corpus_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("entry", CASES, ids=IDS)
def test_float64_three_ways(entry):
    fn, arrays = entry["fn"], _inputs(entry, np.float64)
    if entry["numpy"]:
        compiled = _compiled_gradients(fn, arrays, "numpy")
        numeric = [central_gradient(fn, arrays, k) for k in range(len(arrays))]
        for c, n in zip(compiled, numeric, strict=True):
            np.testing.assert_allclose(c, n, rtol=1e-5, atol=1e-6)
        return
    compiled = _compiled_gradients(fn, arrays, "nd")
    tape = tape_gradients(fn, arrays)
    for c, t in zip(compiled, tape, strict=True):
        np.testing.assert_allclose(c, t, rtol=1e-10, atol=1e-12)
    check_grads(fn, [nd.array(a) for a in arrays])


@pytest.mark.parametrize("entry", [c for c in CASES if not c["numpy"]],
                         ids=[c["fn"].__name__ for c in CASES if not c["numpy"]])
def test_float32_compiled_equals_tape(entry):
    fn, arrays = entry["fn"], _inputs(entry, np.float32)
    compiled = _compiled_gradients(fn, arrays, "nd")
    tape = tape_gradients(fn, arrays)
    for c, t in zip(compiled, tape, strict=True):
        assert c.dtype == np.float32
        np.testing.assert_allclose(c, t, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", [c for c in CASES if not c["numpy"]],
                         ids=[c["fn"].__name__ for c in CASES if not c["numpy"]])
def test_compiled_under_record_is_one_node(entry):
    fn, arrays = entry["fn"], _inputs(entry, np.float64)
    compiled = pb.compile(fn)
    xs = [nd.array(a) for a in arrays]
    for x in xs:
        x.attach_grad()
    with ag.record():
        out = compiled(*xs)
    out.backward()
    tape = tape_gradients(fn, arrays)
    for x, t in zip(xs, tape, strict=True):
        np.testing.assert_allclose(x.grad.asnumpy(), t, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("entry", CASES, ids=IDS)
def test_fused_and_unfused_agree(entry, monkeypatch):
    from pullback.compiler.api import CompiledFunction

    fn, arrays = entry["fn"], _inputs(entry, np.float64, seed=1)
    kind = "numpy" if entry["numpy"] else "nd"
    fused = _compiled_gradients(CompiledFunction(fn), arrays, kind)
    monkeypatch.setenv("PULLBACK_FUSE", "0")
    unfused = _compiled_gradients(CompiledFunction(fn), arrays, kind)
    for a, b in zip(fused, unfused, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("entry", CASES, ids=IDS)
def test_native_kernels_agree_with_tape(entry, dtype, monkeypatch):
    """Every fused kernel runs natively (size threshold lowered to 1) and still agrees."""
    from pullback.compiler.api import CompiledFunction
    from pullback.runtime import fused, native

    if not native.native_enabled():
        pytest.skip("native kernels are disabled (PULLBACK_NATIVE=0)")
    monkeypatch.setattr(fused, "NATIVE_MIN_SIZE", 1)
    fn, arrays = entry["fn"], _inputs(entry, dtype, seed=2)
    kind = "numpy" if entry["numpy"] else "nd"
    native_grads = _compiled_gradients(CompiledFunction(fn), arrays, kind)
    monkeypatch.setenv("PULLBACK_NATIVE", "0")
    numpy_grads = _compiled_gradients(CompiledFunction(fn), arrays, kind)
    rtol = 1e-9 if dtype == np.float64 else 2e-5
    for a, b in zip(native_grads, numpy_grads, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
