"""Check every tool's gradient against the reference, then time the tools interleaved.

For one workload case: build each tool, time its first gradient call (compile, jit or
tracing included), check its primal and gradient against the hand-written numpy
reference, and only then time it.  Timing runs ``rounds`` rounds; in every round each
tool that passed (in a fresh random order) times a batch of primal calls and a batch
of gradient calls, so machine noise hits all tools alike.  Medians over rounds are
reported, and ratios are taken between numbers of the same run.
"""

from __future__ import annotations

import math
import random
import statistics
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
from tools import BUILDERS, Refused, available, jax_eager

RTOL = 1e-6


@dataclass
class ToolResult:
    tool: str
    status: str = "ok"            # ok | refused | wrong | failed | missing
    note: str = ""
    first_call: float = math.nan
    primal: list = field(default_factory=list)
    gradient: list = field(default_factory=list)

    @property
    def primal_median(self):
        return statistics.median(self.primal) if self.primal else math.nan

    @property
    def gradient_median(self):
        return statistics.median(self.gradient) if self.gradient else math.nan


@dataclass
class CaseResult:
    label: str
    tools: list


def _max_relative_error(got, want):
    got = np.asarray(got, dtype=np.float64).reshape(np.shape(want))
    scale = max(1.0, float(np.max(np.abs(want))) if np.size(want) else 1.0)
    return float(np.max(np.abs(got - want))) / scale if np.size(want) else 0.0


def _scalar(value) -> float:
    if isinstance(value, dict):                 # a reply from another process
        value = value["value"]
    if hasattr(value, "asnumpy"):               # pullback's or MXNet's NDArray
        value = value.asnumpy()
    return float(np.asarray(value).reshape(-1)[0])


def check(impl, reference_value, reference_grads):
    """None if the tool's primal and gradient match the reference, else what differs."""
    value = _scalar(impl.primal())
    if abs(value - reference_value) > RTOL * max(1.0, abs(reference_value)):
        return f"wrong primal: {value!r} != {reference_value!r}"
    grads = impl.to_numpy(impl.gradient())
    if len(grads) != len(reference_grads):
        return f"wrong gradient: {len(grads)} arrays, expected {len(reference_grads)}"
    for k, (got, want) in enumerate(zip(grads, reference_grads, strict=True)):
        if np.size(got) != np.size(want):
            return f"wrong gradient {k}: shape {np.shape(got)} != {np.shape(want)}"
        err = _max_relative_error(got, want)
        if not err <= RTOL:
            return f"wrong gradient {k}: max relative error {err:.2e}"
    return None


def _batch_seconds(impl, what, number):
    timer = getattr(impl, "time", None)
    if timer is not None:                       # a tool in another process times itself
        return timer(what, number)
    fn = getattr(impl, what)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _calls_per_batch(impl, what, target):
    once = _batch_seconds(impl, what, 1)
    return max(1, min(100_000, math.ceil(target / max(once, 1e-7))))


def _build(name, builder, module, args, reference, results, impls, log):
    result = ToolResult(name)
    results.append(result)
    try:
        impl = builder(module, args)
        start = time.perf_counter()
        impl.gradient()
        result.first_call = impl.first_call or time.perf_counter() - start
        problem = check(impl, *reference)
    except Refused as refusal:
        result.status, result.note = "refused", str(refusal)
        return False
    except Exception as error:  # noqa: BLE001 -- any crash is reported, never hidden
        result.status, result.note = "failed", f"{type(error).__name__}: {error}"[:300]
        log(traceback.format_exc())
        return False
    if problem:
        result.status, result.note = "wrong", problem
        impl.close()
        return False
    impls[name] = impl
    return True


def run_case(module, size, tools, rounds, target, log=print, seed=0) -> CaseResult:
    """Check, then time, every tool in ``tools`` on one workload case."""
    args = module.make_inputs(**size)
    reference_value = float(np.asarray(getattr(module, "primal_manual", module.loss)(*args)))
    reference = (reference_value, tuple(np.asarray(g) for g in module.grad_manual(*args)))
    results, impls = [], {}
    for name in tools:
        if not available(name):
            results.append(ToolResult(name, "missing", "not installed in this venv"))
            continue
        ok = _build(name, BUILDERS[name], module, args, reference, results, impls, log)
        if name == "jax" and not ok and results[-1].status == "refused":
            _build("jax eager", jax_eager, module, args, reference, results, impls, log)
    by_name = {r.tool: r for r in results}
    numbers = {(name, what): _calls_per_batch(impl, what, target)
               for name, impl in impls.items() for what in ("primal", "gradient")}
    order = list(impls)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            for what in ("primal", "gradient"):
                seconds = _batch_seconds(impls[name], what, numbers[name, what])
                getattr(by_name[name], what).append(seconds)
    for impl in impls.values():
        impl.close()
    return CaseResult(module.label(size), results)
