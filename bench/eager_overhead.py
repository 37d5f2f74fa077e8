"""Per-op overhead of the eager road (the tape) against plain numpy.

Times, in one process and interleaved so machine noise hits all of them alike:

- ``numpy``: ``np.multiply(a, b)`` on two 3-element float32 arrays;
- ``nd (no record)``: ``x * y`` on NDArrays outside ``record()``;
- ``recorded``: ``x * y`` inside ``record()`` with ``x.attach_grad()`` (one tape node);
- ``backward``: ``z.backward()`` of that one-node graph (head gradient ones, write into
  ``x.grad``); the recording of ``z`` is excluded from this timing.

Each figure is the median over repeats of the mean time per call in a batch.  The
Python overhead of a recorded op is ``recorded - numpy``.

Run:  python bench/eager_overhead.py [--repeats 31] [--number 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from pullback import autograd as ag
from pullback import nd


def _time_batch(fn, number: int) -> float:
    """Seconds per call of ``fn`` averaged over ``number`` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def _backward_batch(x, y, number: int) -> float:
    """Seconds per ``z.backward()``, each on a freshly recorded ``z = x * y``."""
    heads = []
    with ag.record():
        for _ in range(number):
            heads.append(x * y)
    start = time.perf_counter()
    for z in heads:
        z.backward()
    return (time.perf_counter() - start) / number


def measure(repeats: int, number: int) -> dict[str, float]:
    """Median seconds per call of each case."""
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    b = np.array([4.0, 5.0, 6.0], dtype=np.float32)
    x, y = nd.array(a), nd.array(b)
    x.attach_grad()

    def numpy_mul():
        np.multiply(a, b)

    def nd_mul():
        x * y

    def recorded_mul():
        with ag.record():
            x * y

    def record_scope():
        with ag.record():
            pass

    cases = {"numpy": numpy_mul, "nd (no record)": nd_mul, "record() scope": record_scope,
             "recorded incl. scope": recorded_mul}
    samples: dict[str, list[float]] = {name: [] for name in cases}
    samples["recorded"] = []
    samples["backward"] = []
    for _ in range(repeats):
        for name, fn in cases.items():
            samples[name].append(_time_batch(fn, number))
        with ag.record():
            samples["recorded"].append(_time_batch(lambda: x * y, number))
        samples["backward"].append(_backward_batch(x, y, number))
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    medians = measure(args.repeats, args.number)
    base = medians["numpy"]
    print(f"3-element float32 multiply; median of {args.repeats} repeats x {args.number} calls")
    print(f"{'case':<22}{'us/op':>9}{'x numpy':>10}{'overhead us':>13}")
    for name, seconds in medians.items():
        print(f"{name:<22}{seconds * 1e6:>9.2f}{seconds / base:>10.1f}"
              f"{(seconds - base) * 1e6:>13.2f}")


if __name__ == "__main__":
    main()
