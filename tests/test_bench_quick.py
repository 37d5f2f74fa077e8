"""The benchmark's correctness check in CI: pullback vs the hand-written numpy gradient.

Every workload of bench/workloads at its small "test" size, through pullback's compiled
road (pb.grad) and its eager tape, with the same checker the benchmark uses before it
times a tool.  No peers are needed.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import harness
import tools
import workloads

CASES = workloads.cases("test")


def _reference(module, args):
    value = float(np.asarray(getattr(module, "primal_manual", module.loss)(*args)))
    return value, tuple(np.asarray(g) for g in module.grad_manual(*args))


@pytest.mark.parametrize("module,size", CASES, ids=[m.label(s) for m, s in CASES])
@pytest.mark.parametrize("build", [tools.pullback_compiled, tools.pullback_eager],
                         ids=["compiled", "eager"])
def test_pullback_matches_hand_written_gradient(module, size, build):
    args = module.make_inputs(**size)
    impl = build(module, args)
    assert harness.check(impl, *_reference(module, args)) is None


@pytest.mark.parametrize("module,size", CASES, ids=[m.label(s) for m, s in CASES])
def test_hand_written_gradient_matches_finite_differences(module, size):
    """The reference itself is checked, along one random direction per argument."""
    args = list(module.make_inputs(**size))
    _, grads = _reference(module, args)
    rng = np.random.default_rng(1)
    for index, grad in zip(module.WRT, grads, strict=True):
        direction = rng.normal(size=np.shape(args[index]))
        eps = 1e-6 * max(1.0, float(np.max(np.abs(args[index]))))

        def shifted(sign, index=index, direction=direction, eps=eps):
            moved = list(args)
            moved[index] = args[index] + sign * eps * (
                direction if np.ndim(args[index]) else float(direction))
            return float(module.loss(*moved))

        numeric = (shifted(1) - shifted(-1)) / (2 * eps)
        analytic = float(np.sum(np.asarray(grad) * direction))
        assert abs(numeric - analytic) <= 1e-5 * max(1.0, abs(analytic)), (numeric, analytic)


def test_a_wrong_gradient_is_caught():
    module, size = CASES[0]
    args = module.make_inputs(**size)
    impl = tools.Impl(lambda: module.loss(*args),
                      lambda: tuple(2 * g for g in module.grad_manual(*args)))
    assert "wrong gradient" in harness.check(impl, *_reference(module, args))
