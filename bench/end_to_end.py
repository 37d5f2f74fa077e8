"""Whole pullback calls (not kernels alone) against plain numpy, in one run.

Run from the repository root:  python bench/end_to_end.py

1. W2, loss = sum(tanh(x)*exp(-x*x) + sin(x)**2), float64, one thread:
   pb.value_and_grad vs a hand-written numpy value-and-gradient, and a compiled
   forward (pb.compile) vs the numpy function, at n = 1e6 and 1e7.
2. The chapter's f on 3 elements: pb.grad with native kernels allowed vs
   PULLBACK_NATIVE=0 (issue 4: native must never make it slower).
Medians of interleaved rounds; ratios are what to read on a shared machine.
"""

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pullback as pb  # noqa: E402
from pullback import nd  # noqa: E402
from pullback.compiler.api import CompiledFunction  # noqa: E402
from pullback.runtime import native  # noqa: E402

import chapter_f  # noqa: E402
from threshold_workloads import w2_loss  # noqa: E402


def numpy_value_and_grad(x):
    t, e, s = np.tanh(x), np.exp(-x * x), np.sin(x)
    value = np.sum(t * e + s ** 2)
    return value, (1 - t * t) * e + t * e * (-2 * x) + 2 * s * np.cos(x)


def medians(rows, rounds, number=1):
    times = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    native.set_threads(1)
    print("1. W2, float64, one thread (ms per call)")
    for n in (10**6, 10**7):
        x = np.linspace(-2, 2, n)
        value_and_grad = pb.value_and_grad(w2_loss)
        forward = pb.compile(w2_loss)
        assert np.allclose(value_and_grad(x)[1], numpy_value_and_grad(x)[1])
        forward(x)
        m = medians({"pb.value_and_grad": lambda: value_and_grad(x),
                     "numpy value+grad": lambda: numpy_value_and_grad(x),
                     "pb.compile forward": lambda: forward(x),
                     "numpy forward": lambda: w2_loss(x)}, rounds=7)
        print(f"   n={n:.0e}: " + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in m.items()))
        print(f"      value-and-grad {m['numpy value+grad'] / m['pb.value_and_grad']:.2f}x, "
              f"forward {m['numpy forward'] / m['pb.compile forward']:.2f}x faster than numpy")
    print("2. chapter f, 3 elements: pb.grad with native kernels allowed vs PULLBACK_NATIVE=0")
    nd.random.seed(0)
    a = nd.random_normal(shape=3)
    with_native = pb.grad(CompiledFunction(chapter_f.f))
    without_native = pb.grad(CompiledFunction(chapter_f.f))
    with_native(a)
    without_native(a)

    times = {"native allowed": [], "PULLBACK_NATIVE=0": []}
    for _ in range(9):   # interleaved rounds, the variable toggled between rounds
        for name, fn in (("native allowed", with_native), ("PULLBACK_NATIVE=0", without_native)):
            if name == "PULLBACK_NATIVE=0":
                os.environ["PULLBACK_NATIVE"] = "0"
            start = time.perf_counter()
            for _ in range(500):
                fn(a)
            times[name].append((time.perf_counter() - start) / 500)
            os.environ.pop("PULLBACK_NATIVE", None)
    m = {name: statistics.median(t) for name, t in times.items()}
    print("   " + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in m.items())
          + f"; ratio {m['PULLBACK_NATIVE=0'] / m['native allowed']:.2f} (>= ~1: not slower)")


if __name__ == "__main__":
    main()
