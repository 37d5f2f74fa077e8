"""The benchmark workloads (W1-W7 at their "test" sizes) through forward mode and
forward-over-reverse: pb.jvp = central differences of the loss, pb.hvp = central
differences of pb.grad, float64, along random directions of the differentiated inputs."""

import sys
from pathlib import Path

import numpy as np
import pytest

import pullback as pb

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import workloads  # noqa: E402

CASES = workloads.cases("test")


def _directions(module, args, seed):
    rng = np.random.default_rng(seed)
    return [(float(rng.standard_normal()) if np.ndim(a) == 0 else rng.standard_normal(
        np.shape(a))) if i in module.WRT else None for i, a in enumerate(args)]


def _moved(args, directions, eps):
    return [a if d is None else a + eps * d for a, d in zip(args, directions, strict=True)]


def _flat(values):
    return np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in values])


@pytest.mark.parametrize("module,size", CASES, ids=[m.label(s) for m, s in CASES])
def test_jvp_and_hvp_of_the_benchmark_workloads(module, size):
    args = list(module.make_inputs(**size))
    directions = _directions(module, args, seed=2)
    _, dot = pb.jvp(module.loss, args, directions)
    eps = 1e-6
    numeric = (float(module.loss(*_moved(args, directions, eps)))
               - float(module.loss(*_moved(args, directions, -eps)))) / (2 * eps)
    assert float(np.asarray(dot).reshape(-1)[0]) == pytest.approx(numeric, rel=1e-5, abs=1e-7)
    gradient, product = pb.hvp(module.loss, args, directions)
    wrt = tuple(module.WRT)
    grad_fn = pb.grad(module.loss, argnums=wrt)
    if len(wrt) == 1:
        gradient, product = (gradient,), (product,)
    np.testing.assert_allclose(_flat(gradient), _flat(grad_fn(*args)), rtol=1e-10, atol=1e-12)
    eps = 1e-5
    up = _flat(grad_fn(*_moved(args, directions, eps)))
    down = _flat(grad_fn(*_moved(args, directions, -eps)))
    np.testing.assert_allclose(_flat(product), (up - down) / (2 * eps), rtol=1e-5, atol=1e-7)
