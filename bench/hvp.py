"""Hessian-vector products: pb.hvp (forward-over-reverse) against JAX's jvp(grad(f)).

    python bench/hvp.py [--quick] [--cpu]

For each workload: the median time of ``pb.hvp`` (gradient and H v, forward-over-reverse
on the compiled road) and of ``jax.jit`` of ``jax.jvp(jax.grad(f))`` (gradient and H v as
well, waited for with ``block_until_ready``), both in float64, one thread each, in the
same process, interleaved in every round; prints the times and the ratio pb/JAX, and
checks that both give the same H v (to 1e-8 relative).  Workloads: a Rosenbrock
function in n=1000, and the benchmark suite's W1-W5 (each module's ``jax_jit_loss``
where it has one; a loss that JAX's jit refuses is reported as such; W6/W7 are scalar
loops, left out).  ``--cpu`` times this process's CPU seconds instead of wall-clock
seconds (on a machine shared with other jobs, where waiting for a core dominates).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

os.environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false "
                   "intra_op_parallelism_threads=1"})

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pullback as pb  # noqa: E402


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_jax():
    import jax.numpy as jnp

    def loss(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    return loss


class Rosenbrock:
    label = "Rosenbrock, n=1000"
    WRT = (0,)
    loss = staticmethod(rosenbrock)
    jax_loss = staticmethod(rosenbrock_jax)

    @staticmethod
    def inputs(quick):
        return (np.random.default_rng(0).uniform(-1.5, 1.5, 1000),)


def _suite(name):
    module = importlib.import_module(f"workloads.{name}")

    class Workload:
        WRT = tuple(module.WRT)
        loss = staticmethod(module.loss)
        jax_loss = staticmethod(getattr(module, "jax_jit_loss", module.jax_loss))

        @staticmethod
        def inputs(quick):
            return module.make_inputs(**module.CASES["quick" if quick else "full"][0])

    size = module.CASES["full"][0]
    Workload.label = module.label(size)
    return Workload


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


def jax_hvp(workload, args):
    """``jit`` of ``(grad, H v)`` by ``jax.jvp`` of ``jax.grad`` along the WRT arguments."""
    import jax
    import jax.numpy as jnp

    loss = workload.jax_loss()
    wrt = workload.WRT

    def hvp(primals, vectors, rest):
        def gradient(*params):
            full = list(rest)
            for i, p in zip(wrt, params, strict=True):
                full[i] = p
            return jax.grad(loss, argnums=wrt)(*full)

        return jax.jvp(gradient, primals, vectors)

    compiled = jax.jit(hvp)
    rest = [jnp.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    return compiled, rest


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
    import jax

    jax.config.update("jax_enable_x64", True)
    repeats = 5 if options.quick else 21
    workloads = [Rosenbrock] + [_suite(n) for n in ("w1_chapter", "w2_elementwise", "w3_rnn",
                                                     "w4_logreg", "w5_mlp")]
    print(f"{'workload':44s} {'pb.hvp':>10s} {'jax':>10s} {'pb/jax':>8s}")
    for workload in workloads:
        args = workload.inputs(options.quick)
        rng = np.random.default_rng(1)
        vectors = [rng.standard_normal(np.shape(a)) if i in workload.WRT else None
                   for i, a in enumerate(args)]
        vectors = [float(v) if v is not None and np.ndim(v) == 0 else v for v in vectors]
        ours = pb.hvp(workload.loss, args, vectors)[1]
        compiled, rest = jax_hvp(workload, args)
        primals = tuple(rest[i] for i in workload.WRT)
        tangents = tuple(np.asarray(vectors[i]) for i in workload.WRT)
        try:
            theirs = jax.block_until_ready(compiled(primals, tangents, rest))[1]
        except Exception as error:   # tracing is where JAX refuses (Python control flow)
            print(f"{workload.label:44s} JAX's jit refuses: {str(error).splitlines()[0]}")
            continue
        ours = ours if len(workload.WRT) > 1 else (ours,)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-10)
        pb_time, jax_time = median_times(
            [lambda: pb.hvp(workload.loss, args, vectors),
             lambda: jax.block_until_ready(compiled(primals, tangents, rest))], repeats)
        print(f"{workload.label:44s} {pb_time * 1e6:9.1f}u {jax_time * 1e6:9.1f}u "
              f"{pb_time / jax_time:8.2f}")


if __name__ == "__main__":
    main()
