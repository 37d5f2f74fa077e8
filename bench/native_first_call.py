"""W6 (RK4, 1000 steps) on the native road: the first ``pb.grad`` call in a fresh process,
cold (transform + IR + typing + lowering + LLVM) vs after ``python -m pullback compile``.

Run from the repository root:  python bench/native_first_call.py [--runs N]

It compiles this module once with ``python -m pullback compile`` into a temporary
``PULLBACK_CACHE_DIR`` (``loss`` below carries the signature: six differentiated floats
and an int step count), then starts ``2 * N`` fresh interpreters, alternating: *cold*
(an empty cache directory) and *AOT* (the compiled one).  Each child imports pullback,
numpy and the workload (not timed: the same in both), then times its first gradient call
and a second one (wall time, and the first call's CPU time, which other processes on a
shared machine disturb less).  The first call also creates the process's LLVM engine (llvmlite's
import and target set-up), which both cases pay; it is timed separately as
``engine_ms`` first, so the first call's figure is what the native road itself costs.
Medians of the same run; targets (issue 10): cold under 300 ms, AOT under 10 ms.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import pullback as pb  # noqa: E402
from workloads import w6_lotka_volterra as w6  # noqa: E402

#: what ``python -m pullback compile`` finds in this module: W6's loss with its signature
loss = pb.compile(w6.loss, signatures=[("float64",) * 6 + ("int",)])


def child() -> None:
    """One sample, in a fresh interpreter: print the times as JSON."""
    from pullback.runtime import native

    args = w6.make_inputs(1000)
    start = time.perf_counter()
    native._engine()
    engine = time.perf_counter() - start
    gradient = pb.grad(loss, argnums=w6.WRT)
    start, cpu = time.perf_counter(), time.process_time()
    first = gradient(*args)
    first_seconds = time.perf_counter() - start
    first_cpu = time.process_time() - cpu
    start = time.perf_counter()
    gradient(*args)
    second_seconds = time.perf_counter() - start
    print(json.dumps({"engine_ms": engine * 1e3, "first_ms": first_seconds * 1e3,
                      "first_cpu_ms": first_cpu * 1e3,
                      "second_ms": second_seconds * 1e3, "grad": list(first),
                      "road": pb.explain(loss)}))


def sample(cache_dir: str) -> dict:
    env = dict(os.environ, PULLBACK_CACHE_DIR=cache_dir, PULLBACK_NATIVE_FUNCTIONS="1")
    env.pop("PULLBACK_CACHE", None)
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import native_first_call as m; "
            f"m.child()")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        aot_dir = os.path.join(scratch, "aot")
        env = dict(os.environ, PULLBACK_CACHE_DIR=aot_dir, PULLBACK_NATIVE_FUNCTIONS="1")
        env.pop("PULLBACK_CACHE", None)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pullback", "compile", __file__], env=env,
                              check=True, capture_output=True, text=True)
        compile_seconds = time.perf_counter() - start
        cold, aot = [], []
        for run in range(args.runs):
            cold.append(sample(os.path.join(scratch, f"cold{run}")))
            aot.append(sample(aot_dir))

    assert all(s["grad"] == cold[0]["grad"] for s in cold + aot)
    assert all("native (" in s["road"] for s in cold + aot), cold[0]["road"]
    assert all("no lowering" in s["road"] for s in aot), aot[0]["road"]
    print(f"W6 RK4 1000 steps, pb.grad in a fresh process ({args.runs} of each, alternating; "
          f"`python -m pullback compile` took {compile_seconds:.2f} s including start-up: "
          f"{done.stdout.strip().splitlines()[-1]})")
    print(f"{'':30}{'cold':>10}{'after AOT':>12}{'ratio':>9}")
    for key, label in (("engine_ms", "LLVM engine set-up (ms)"),
                       ("first_ms", "first gradient call (ms)"),
                       ("first_cpu_ms", "  its CPU time (ms)"),
                       ("second_ms", "second call (ms)")):
        c = statistics.median(s[key] for s in cold)
        a = statistics.median(s[key] for s in aot)
        print(f"{label:30}{c:10.2f}{a:12.2f}{c / a:8.1f}x")
    print(f"road after AOT: {aot[0]['road']}")


if __name__ == "__main__":
    main()
