"""Compiled gradient vs the eager tape on the chapter's f (3 elements), and compile time.

Run from the repository root:  python bench/compiled_vs_tape.py [--repeat N]

Both roads run in the same process, interleaved, so the ratio is meaningful on a
noisy machine; absolute times are reported only for reference.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pullback as pb  # noqa: E402
from pullback import autograd as ag  # noqa: E402
from pullback import nd  # noqa: E402
from pullback.compiler.api import CompiledFunction  # noqa: E402

import chapter_f  # noqa: E402


def tape_gradient(a):
    x = a.copy()
    x.attach_grad()
    with ag.record():
        c = chapter_f.f(x)
    c.backward()
    return x.grad


def time_per_call(fn, arg, number):
    start = time.perf_counter()
    for _ in range(number):
        fn(arg)
    return (time.perf_counter() - start) / number


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--number", type=int, default=500)
    args = parser.parse_args()

    nd.random.seed(0)
    a = nd.random_normal(shape=3)

    compile_times = []
    os.environ["PULLBACK_CACHE"] = "0"   # time the transformation, not an artifact's load
    for _ in range(args.repeat):
        fresh = CompiledFunction(chapter_f.f)     # no cached variant
        start = time.perf_counter()
        pb.grad(fresh)(a)
        compile_times.append(time.perf_counter() - start)
    del os.environ["PULLBACK_CACHE"]

    compiled = pb.grad(chapter_f.f)
    assert abs(compiled(a) - tape_gradient(a)).max().asscalar() < 1e-4
    compiled_times, tape_times = [], []
    for _ in range(args.repeat):
        compiled_times.append(time_per_call(compiled, a, args.number))
        tape_times.append(time_per_call(tape_gradient, a, args.number))
    c, t = statistics.median(compiled_times), statistics.median(tape_times)
    c_min, t_min = min(compiled_times), min(tape_times)
    print("chapter f, 3 elements, float32, gradient (forward + backward):")
    print(f"{'':26}{'median':>10}{'min':>10}")
    print(f"  compiled (pb.grad)      {c * 1e6:8.1f}us {c_min * 1e6:8.1f}us")
    print(f"  eager tape (record)     {t * 1e6:8.1f}us {t_min * 1e6:8.1f}us")
    print(f"  tape / compiled         {t / c:9.2f}x {t_min / c_min:9.2f}x")
    print(f"  first call incl. compile  {statistics.median(compile_times) * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
