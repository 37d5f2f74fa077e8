"""pb.jvp's cost relative to the primal (the compiled forward), on W1..W7.

    python3.11 bench/forward_ratio.py [--quick] [--cpu]
    python3.11 bench/forward_ratio.py --roads [--quick]   # W6/W7: native vs Python tangent vs JAX

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


def roads(quick):
    """W6/W7: ``pb.jvp`` on the native road vs the Python road (``PULLBACK_NATIVE_FUNCTIONS=0``)
    vs JAX's ``jit(jvp)`` of the workload's ``lax.fori_loop`` form, interleaved, same run."""
    import os

    import jax

    jax.config.update("jax_enable_x64", True)
    print(f"{'workload':44s} {'native':>10s} {'python':>10s} {'jax':>10s} "
          f"{'python/native':>13s} {'jax/native':>10s}")
    for name in ("w6_lotka_volterra", "w7_sin_loop"):
        module = importlib.import_module(f"workloads.{name}")
        size = module.CASES["quick" if quick else "full"][0]
        args = module.make_inputs(**size)
        tangents = tuple(0.5 if i in module.WRT else None for i in range(len(args)))
        primals = args[:-1]   # the last argument is the int trip count
        jitted = jax.jit(lambda *p: jax.jvp(lambda *q: module.jax_jit_loss()(*q, args[-1]),
                                            p, tuple(0.5 for _ in p)))

        def python_road():
            os.environ["PULLBACK_NATIVE_FUNCTIONS"] = "0"
            try:
                return pb.jvp(module.loss, args, tangents)
            finally:
                del os.environ["PULLBACK_NATIVE_FUNCTIONS"]

        native, python, peer = median_times(
            [lambda: pb.jvp(module.loss, args, tangents), python_road,
             lambda: jax.block_until_ready(jitted(*primals))], 5 if quick else 21)
        print(f"{module.label(size):44s} {native * 1e6:9.1f}u {python * 1e6:9.1f}u "
              f"{peer * 1e6:9.1f}u {python / native:13.2f} {peer / native:10.2f}")


if __name__ == "__main__":
    if "--roads" in sys.argv:
        roads("--quick" in sys.argv)
        sys.exit(0)
    main()
