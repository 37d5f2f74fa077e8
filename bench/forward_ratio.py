"""pb.jvp's cost relative to the primal (the compiled forward), on W1..W7.

    python3.11 bench/forward_ratio.py [--quick] [--cpu]

For each workload (the three calls interleaved in every round): the median time of the
compiled primal (``pb.compile(loss)`` outside ``record()``: no stack), of ``pb.jvp`` with
a random tangent on the inputs the workload differentiates, and of ``pb.grad`` for
reference; prints the ratios.  One process, one thread (set the BLAS thread variables
yourself for a fair single-core run).  ``--cpu`` times this process's CPU seconds
instead of wall-clock seconds (on a machine shared with other jobs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pullback as pb  # noqa: E402

WORKLOADS = ["w1_chapter", "w2_elementwise", "w3_rnn", "w4_logreg", "w5_mlp",
             "w6_lotka_volterra", "w7_sin_loop"]


CLOCK = time.perf_counter   # --cpu: time.process_time (this process's CPU time)


def median_times(calls, repeats, block=5):
    """The median time of each call, the calls interleaved in every round (so that the
    machine's load hits them alike), each round timing ``block`` calls in a row."""
    for call in calls:
        call()   # compile and warm up
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, found in zip(calls, times, strict=True):
            start = CLOCK()
            for _ in range(block):
                call()
            found.append((CLOCK() - start) / block)
    return [float(np.median(t)) for t in times]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu", action="store_true",
                        help="time CPU seconds of this process (time.process_time) instead of "
                             "wall-clock seconds: on a machine shared with other jobs")
    options = parser.parse_args()
    global CLOCK
    if options.cpu:
        CLOCK = time.process_time
    repeats = 5 if options.quick else 21
    print(f"{'workload':44s} {'primal':>10s} {'jvp':>10s} {'grad':>10s} "
          f"{'jvp/primal':>10s} {'grad/primal':>11s}")
    for name in WORKLOADS:
        module = importlib.import_module(f"workloads.{name}")
        size = module.CASES["quick" if options.quick else "full"][0]
        args = module.make_inputs(**size)
        rng = np.random.default_rng(0)
        tangents = [rng.standard_normal(np.shape(a)) if i in module.WRT else None
                    for i, a in enumerate(args)]
        tangents = [float(t) if t is not None and np.ndim(t) == 0 else t for t in tangents]
        primal_fn = pb.compile(module.loss)
        grad_fn = pb.grad(module.loss, argnums=tuple(module.WRT))
        primal, forward, reverse = median_times(
            [lambda: primal_fn(*args), lambda: pb.jvp(module.loss, args, tangents),
             lambda: grad_fn(*args)], repeats)
        print(f"{module.label(size):44s} {primal * 1e6:9.1f}u {forward * 1e6:9.1f}u "
              f"{reverse * 1e6:9.1f}u {forward / primal:10.2f} {reverse / primal:11.2f}")


if __name__ == "__main__":
    main()
