"""The adversary's random elementwise programs (tests/adversary/gen2.py), bounded for CI.

Plain numpy programs with kinks (abs, maximum, minimum, where, sign, floor), powers with
array exponents, absorbed and axis reductions, over layouts around the native threshold
(long arrays, one-element arrays, 0-d arrays, Python numbers, a grid).  Each runs on
four compiled roads -- unfused (``PULLBACK_FUSE=0``, the reference), fused numpy
(``PULLBACK_NATIVE=0``), fused native at the real threshold, fused native for every
call -- which must agree in value, shape, dtype and gradient; the value must match the
plain function and the gradient central differences along a random direction (float64).
Fixed seed; layouts that hit an open finding (adv report 1b: a (1,) beside a 0-d array)
are left to tests/test_adversary_findings.py.
"""

import importlib.util
import itertools
import os
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import pullback as pb
from pullback.compiler import api
from pullback.runtime import fused

sys.path.insert(0, str(Path(__file__).resolve().parents[0] / "adversary"))
from gen2 import program  # noqa: E402

PROGRAMS = 50
LAYOUTS = [((600,), (600,), (600,)), ((600,), (1,), (600,)), ((3,), (3,), (1,)),
           ((513,), (513,), (513,)), ((20, 30), (30,), (20, 1)), ((1,), (1,), (1,)),
           ((), (), ()), ((4097,), (1,), (4097,)), ((2,), (2,), (2,)), ((511,), (), (511,)),
           ((600,), "num", (600,))]
ROADS = {"unfused": ("0", "0", 512), "fused-numpy": ("1", "0", 512),
         "fused": ("1", "1", 512), "fused-native": ("1", "1", 1)}
_counter = itertools.count()


def _load(source, directory):
    path = Path(directory) / f"adversary_program_{next(_counter)}.py"
    path.write_text("import numpy as np\n\n" + source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.f


def _run(fn, args, road, head_of):
    fuse, native, threshold = ROADS[road]
    saved = {k: os.environ.get(k) for k in ("PULLBACK_FUSE", "PULLBACK_NATIVE")}
    saved_threshold = fused.NATIVE_MIN_SIZE
    os.environ["PULLBACK_FUSE"], os.environ["PULLBACK_NATIVE"] = fuse, native
    fused.NATIVE_MIN_SIZE = threshold
    api._BY_CODE.clear()   # a fresh CompiledFunction: the fuse switch applies when built
    try:
        out, pullback = pb.vjp(fn, *args)
        head = head_of(out)
        grads = pullback(float(np.reshape(head, -1)[0]) if np.size(head) == 1 else head)
        return out, grads
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fused.NATIVE_MIN_SIZE = saved_threshold
        api._BY_CODE.clear()


def _head_of(out):
    return np.random.default_rng(np.size(out)).uniform(0.5, 1.5, np.shape(out))


def _directional(fn, args, grads, eps=1e-6):
    rng = np.random.default_rng(7)
    dirs = [rng.standard_normal(np.shape(a)) for a in args]

    def value(shift):
        moved = [np.asarray(np.asarray(a) + shift * d) if isinstance(a, np.ndarray)
                 else float(a + shift * d) for a, d in zip(args, dirs, strict=True)]
        out = np.asarray(fn(*moved), np.float64)
        return float(np.sum(out * _head_of(out)))

    numeric = (value(eps) - value(-eps)) / (2 * eps)
    analytic = sum(float(np.sum(np.asarray(g) * d)) for g, d in zip(grads, dirs, strict=True))
    return analytic, numeric, value(0.0)


@pytest.mark.parametrize("seed", range(PROGRAMS))
def test_adversary_programs_agree_on_every_road(seed, tmp_path_factory):
    r = random.Random(seed)
    source = program(r)
    layout = r.choice(LAYOUTS)
    rng = np.random.default_rng(seed)
    args = [float(rng.uniform(-1, 1)) if s == "num" else rng.uniform(-1, 1, s) for s in layout]
    fn = _load(source, tmp_path_factory.getbasetemp())
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            expected = fn(*args)
        except Exception as exc:   # the plain program fails: every road must fail alike
            for road in ROADS:
                with pytest.raises(type(exc)):
                    _run(fn, args, road, _head_of)
            return
        results = {road: _run(fn, args, road, _head_of) for road in ROADS}
        ref_out, ref_grads = results["unfused"]
        where = f"program (seed {seed}, layout {layout}):\n{source}"
        assert np.shape(ref_out) == np.shape(expected), where
        np.testing.assert_allclose(ref_out, expected, rtol=1e-9, atol=1e-12, err_msg=where)
        for road, (out, grads) in results.items():
            assert np.shape(out) == np.shape(ref_out), f"{road} value shape, {where}"
            assert np.asarray(out).dtype == np.asarray(ref_out).dtype, f"{road} dtype, {where}"
            np.testing.assert_allclose(out, ref_out, rtol=1e-9, atol=1e-12,
                                       err_msg=f"{road} value, {where}")
            for k, (g, h) in enumerate(zip(grads, ref_grads, strict=True)):
                assert np.shape(g) == np.shape(h), f"{road} gradient {k} shape, {where}"
                np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-12,
                                           err_msg=f"{road} gradient {k}, {where}")
        analytic, numeric, value = _directional(fn, args, ref_grads)
        if np.isfinite(value) and abs(value) < 1e8 and np.isfinite(analytic):
            assert abs(analytic - numeric) <= 1e-5 + 1e-4 * max(abs(analytic), abs(numeric)), \
                f"directional derivative {analytic} vs central differences {numeric}, {where}"
