"""First call of the chapter's f in a fresh process: cold JIT vs after ahead-of-time compile.

Run from the repository root:  python bench/aot_first_call.py [--runs N]

It compiles this module once with ``python -m pullback compile`` into a
temporary ``PULLBACK_CACHE_DIR``, then starts ``2 * N`` fresh interpreters,
alternating: *cold* (an empty cache directory: the first call parses and
transforms, then stores its artifact) and *AOT* (the compiled cache directory).
Each child imports pullback and this module, makes the input, and times only
its first calls: the first gradient (``record()`` + ``backward()``, which builds
the differentiated variant) and then the first plain call (the other variant).
Medians and ratios come from the same run, so they are comparable on a noisy
machine.
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

import chapter_f

import pullback as pb

f = pb.compile(chapter_f.f)   # what ``python -m pullback compile`` finds in this module


def child() -> None:
    """One sample, in a fresh interpreter: print the first-call times as JSON."""
    from pullback import autograd as ag
    from pullback import nd

    a = nd.array([0.3, -1.2, 2.5])
    a.attach_grad()
    start = time.perf_counter()
    with ag.record():
        c = f(a)
    c.backward()
    gradient = time.perf_counter() - start
    start = time.perf_counter()
    f(a)
    forward = time.perf_counter() - start
    print(json.dumps({"gradient_ms": gradient * 1e3, "forward_ms": forward * 1e3,
                      "grad": a.grad.asnumpy().tolist(), "stats": pb.stats()}))


def sample(cache_dir: str) -> dict:
    env = dict(os.environ, PULLBACK_CACHE_DIR=cache_dir)
    env.pop("PULLBACK_CACHE", None)
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import aot_first_call as m; m.child()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        aot_dir = os.path.join(scratch, "aot")
        env = dict(os.environ, PULLBACK_CACHE_DIR=aot_dir)
        env.pop("PULLBACK_CACHE", None)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pullback", "compile", __file__], env=env,
                       check=True, capture_output=True, text=True)
        compile_seconds = time.perf_counter() - start

        cold, aot = [], []
        for run in range(args.runs):
            cold.append(sample(os.path.join(scratch, f"cold{run}")))
            aot.append(sample(aot_dir))

    for s in aot:
        assert s["stats"]["functions_transformed"] == 0 and s["stats"]["cache_misses"] == 0, s
    for s in cold:
        assert s["stats"]["functions_transformed"] == 2, s
    assert all(s["grad"] == cold[0]["grad"] for s in cold + aot)

    print(f"chapter f, first calls in a fresh process ({args.runs} of each, alternating; "
          f"`python -m pullback compile` took {compile_seconds:.2f} s including start-up)")
    print(f"{'':22}{'cold JIT':>12}{'after AOT':>12}{'ratio':>9}")
    for key, label in (("gradient_ms", "first gradient (ms)"),
                       ("forward_ms", "first plain call (ms)")):
        c = statistics.median(s[key] for s in cold)
        a = statistics.median(s[key] for s in aot)
        print(f"{label:22}{c:12.2f}{a:12.2f}{c / a:8.1f}x")
    total_cold = statistics.median(s["gradient_ms"] + s["forward_ms"] for s in cold)
    total_aot = statistics.median(s["gradient_ms"] + s["forward_ms"] for s in aot)
    print(f"{'both (ms)':22}{total_cold:12.2f}{total_aot:12.2f}{total_cold / total_aot:8.1f}x")
    print(f"AOT processes: functions_transformed = 0, cache_hits = {aot[0]['stats']['cache_hits']}")


if __name__ == "__main__":
    main()
