"""Native kernels vs plain numpy on loss = sum(tanh(x)*exp(-x*x) + sin(x)**2), float64.

Run from the repository root:  python bench/native_kernel.py [--repeats 7] [--quick]

Reports, all measured in this one run (cases interleaved in every repeat so that
machine noise hits them alike; median over repeats, or ``--stat min``):

1. Time per element of the forward pass (loss only) and of value-and-gradient
   (loss and dloss/dx in one pass), n = 1e6 and 1e7, native on one thread and on
   every core, against the same computation in unfused numpy (numpy shares the
   intermediates tanh, exp, sin between loss and gradient, as a person would).
   Issue 4's targets: forward and value-and-grad each >= 8x numpy on one thread.
2. The limits: the machine's copy bandwidth (np.copyto of 1e7 doubles) and the
   math library's own cost per element (kernels computing only sum(exp(x)),
   sum(expm1(x)), sum(tanh(x)), sum(sin(x)), sum(cos(x)); float64 tanh is lowered
   from expm1 and one division, ``lower._tanh``).
3. n = 1000: native (``kernel(...)``) against numpy, including one-op kernels.
4. Compile time per kernel (target < 30 ms) in a fresh process with an empty
   cache, and cached-kernel load time (target < 5 ms) in another fresh process;
   the one-time cost per process (importing llvmlite, the engine, the
   trampoline) is reported separately.
5. Where splitting over threads starts to pay: the forward kernel and ``x * y + 1``
   forced onto every core vs one thread, by n.  ``runtime/native.py`` splits a call
   when its estimated work exceeds ``_PARALLEL_MIN_NS``.
6. Compiled functions whose fused run ends in a norm, a max (or, for reference, a
   sum): f = red(tanh(x)*exp(-x*x) + sin(x)**2) at n = 1e6, ``pb.compile(f)(x)`` and
   ``pb.value_and_grad(f)(x)`` (the fused kernel's native forward; its native adjoint,
   after a tie-counting pass for max; one pass for sum) against plain numpy written
   by hand, sharing intermediates.  numpy's max gradient is given two ways: the mask
   the primitive uses (ties share), and only at np.argmax (what a person might write;
   O(1) after the forward, ties ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pullback.compiler.lower import lower
from pullback.runtime import native
from pullback.runtime.native import KernelSpec, compile_kernel

FORWARD = KernelSpec(
    "float64", ("x",), (),
    (("t", "tanh(x)"), ("e", "exp(-x * x)"), ("s", "sin(x)"), ("f", "t * e + s ** 2")),
    (), (("f", "sum"),))
VALUE_AND_GRAD = KernelSpec(
    "float64", ("x",), (),
    (("t", "tanh(x)"), ("e", "exp(-x * x)"), ("s", "sin(x)"), ("c", "cos(x)"),
     ("f", "t * e + s ** 2"),
     ("g", "(1 - t ** 2) * e + t * e * (-2 * x) + 2 * s * c")),
    ("g",), (("f", "sum"),))
LIBM_ONLY = {name: KernelSpec("float64", ("x",), (), (("y", f"{name}(x)"),), (),
                              (("y", "sum"),))
             for name in ("exp", "expm1", "tanh", "sin", "cos")}
ONE_OPS = {
    "x + y": (("x", "y"), "x + y", lambda x, y: np.add(x, y)),
    "exp(x)": (("x",), "exp(x)", lambda x, y: np.exp(x)),
    "tanh(x)": (("x",), "tanh(x)", lambda x, y: np.tanh(x)),
    "log(x)": (("x",), "log(x)", lambda x, y: np.log(x)),
}


def numpy_forward(x):
    return float((np.tanh(x) * np.exp(-x * x) + np.sin(x) ** 2).sum())


def numpy_value_and_grad(x):
    t, e, s = np.tanh(x), np.exp(-x * x), np.sin(x)
    loss = float((t * e + s ** 2).sum())
    grad = (1 - t ** 2) * e + t * e * (-2 * x) + 2 * s * np.cos(x)
    return loss, grad


def build(spec):
    return compile_kernel(spec, lower(spec))


def with_threads(kernel, threads):
    def run(*args):
        native.set_threads(threads)
        try:
            return kernel(*args)
        finally:
            native.set_threads(None)
    return run


STATISTIC = {"median": statistics.median, "min": min}
_statistic = [statistics.median]


def interleaved(cases: dict, repeats: int, number: int = 1) -> dict:
    """Seconds per call of each case (median, or min with --stat min, over repeats), the
    cases interleaved in every repeat."""
    samples = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, args) in cases.items():
            start = time.perf_counter()
            for _ in range(number):
                fn(*args)
            samples[name].append((time.perf_counter() - start) / number)
    return {name: _statistic[0](values) for name, values in samples.items()}


def check(x):
    """The kernels compute what numpy computes (else the timings mean nothing)."""
    loss, grad = numpy_value_and_grad(x)
    (total,) = build(FORWARD)(x)
    g, total2 = build(VALUE_AND_GRAD)(x)
    scale = np.abs(x).size
    assert abs(total - loss) <= 1e-12 * scale and abs(total2 - loss) <= 1e-12 * scale
    assert np.allclose(g, grad, rtol=1e-13, atol=1e-15)


def workload_table(sizes, repeats, cores):
    forward, value_and_grad = build(FORWARD), build(VALUE_AND_GRAD)
    print("\n1. loss = sum(tanh(x)*exp(-x*x) + sin(x)**2) and its gradient, float64 "
          "(ns per element; ratio = numpy / native)")
    print(f"{'n':>9} {'pass':<15} {'numpy':>8} {'native 1t':>10} {'ratio':>6} "
          f"{f'native {cores}t':>10} {'ratio':>6}")
    for n in sizes:
        x = np.random.default_rng(0).uniform(-3, 3, n)
        check(x[:100_003])
        times = interleaved({
            "numpy forward": (numpy_forward, (x,)),
            "forward 1t": (with_threads(forward, 1), (x,)),
            "forward all": (with_threads(forward, cores), (x,)),
            "numpy vg": (numpy_value_and_grad, (x,)),
            "vg 1t": (with_threads(value_and_grad, 1), (x,)),
            "vg all": (with_threads(value_and_grad, cores), (x,)),
        }, repeats)
        per = {name: seconds / n * 1e9 for name, seconds in times.items()}
        for label, key in (("forward", "forward"), ("value-and-grad", "vg")):
            base = per[f"numpy {key}"]
            one, many = per[f"{key} 1t"], per[f"{key} all"]
            print(f"{n:>9.0e} {label:<15} {base:>8.2f} {one:>10.2f} {base / one:>5.1f}x "
                  f"{many:>10.2f} {base / many:>5.1f}x")


def limits_table(repeats):
    n = 10_000_000
    source, target = np.random.default_rng(1).uniform(-3, 3, n), np.empty(n)
    copy = interleaved({"copy": (np.copyto, (target, source))}, repeats)["copy"]
    print("\n2. limits (one thread)")
    print(f"   np.copyto of 1e7 doubles: {copy * 1e3:.1f} ms = {2 * 8 * n / copy / 1e9:.1f} GB/s "
          f"read+write = {copy / n * 1e9:.2f} ns per element copied")
    x = source[:1_000_000]
    kernels = {name: with_threads(build(spec), 1) for name, spec in LIBM_ONLY.items()}
    times = interleaved({name: (k, (x,)) for name, k in kernels.items()}, repeats)
    costs = {name: seconds / len(x) * 1e9 for name, seconds in times.items()}
    print("   vector math via a kernel sum(f(x)), n = 1e6: " + ", ".join(
        f"{name} {cost:.2f}" for name, cost in costs.items()) + " ns per element")
    print(f"   => forward's math alone (tanh + exp + sin): "
          f"{costs['tanh'] + costs['exp'] + costs['sin']:.2f} ns/element; value-and-grad "
          f"(+ cos): {costs['tanh'] + costs['exp'] + costs['sin'] + costs['cos']:.2f} "
          "ns/element")


def small_table(repeats):
    n = 1000
    rng = np.random.default_rng(2)
    print("\n3. n = 1000: kernel(...) vs numpy (us per call; ratio = numpy / native)")
    for dtype in ("float64", "float32"):
        x, y = rng.uniform(0.1, 3, (2, n)).astype(dtype)
        cases = {}
        for name, (arrays, text, numpy_op) in ONE_OPS.items():
            kernel = build(KernelSpec(dtype, arrays, (), (("z", text),), ("z",)))
            cases[f"native {name}"] = (kernel, (x, y)[:len(arrays)])
            cases[f"numpy {name}"] = (numpy_op, (x, y))
        forward = KernelSpec(dtype, ("x",), (), FORWARD.statements, (), FORWARD.reductions)
        value_and_grad = KernelSpec(dtype, ("x",), (), VALUE_AND_GRAD.statements, ("g",),
                                    VALUE_AND_GRAD.reductions)
        cases["native forward"] = (build(forward), (x,))
        cases["numpy forward"] = (numpy_forward, (x,))
        cases["native value-and-grad"] = (build(value_and_grad), (x,))
        cases["numpy value-and-grad"] = (numpy_value_and_grad, (x,))
        times = interleaved(cases, repeats, number=2000)
        for name in [*ONE_OPS, "forward", "value-and-grad"]:
            a, b = times[f"numpy {name}"] * 1e6, times[f"native {name}"] * 1e6
            print(f"   {dtype} {name:<16} numpy {a:7.2f}  native {b:7.2f}  {a / b:5.2f}x")


_CHILD = """
import json, sys, time
start = time.perf_counter()
import llvmlite.binding  # noqa: F401  (the import alone is a one-time cost)
imported = time.perf_counter()
import numpy as np
sys.path.insert(0, "bench")
from native_kernel import FORWARD, VALUE_AND_GRAD, LIBM_ONLY
from pullback.compiler.lower import lower
from pullback.runtime import native
before_setup = time.perf_counter()
native._engine()
native._trampoline()
ready = time.perf_counter()
result = {"import_ms": (imported - start) * 1e3, "setup_ms": (ready - before_setup) * 1e3,
          "kernels": {}}
for name, spec in [("forward", FORWARD), ("value-and-grad", VALUE_AND_GRAD),
                   ("exp only", LIBM_ONLY["exp"])]:
    t0 = time.perf_counter()
    text = lower(spec)
    t1 = time.perf_counter()
    kernel = native.compile_kernel(spec, text)
    t2 = time.perf_counter()
    kernel(np.ones(10))
    result["kernels"][name] = {"lower_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3,
                               "how": kernel.loaded_from}
print(json.dumps(result))
"""


def compile_table():
    root = Path(__file__).resolve().parents[1]
    print("\n4. compile and load, each in a fresh process (ms)")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PULLBACK_CACHE_DIR": cache}
        runs = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", _CHILD], env=env, cwd=root, check=True,
                                 capture_output=True, text=True).stdout
            runs.append(json.loads(out))
    for label, run in zip(("empty cache", "warm cache"), runs, strict=True):
        print(f"   {label}: once per process: import llvmlite {run['import_ms']:.0f}, "
              f"engine + trampoline {run['setup_ms']:.1f}")
        for name, k in run["kernels"].items():
            print(f"      {name:<15} lower (build IR) {k['lower_ms']:6.1f}   "
                  f"{k['how']:<8} {k['load_ms']:6.1f}")


def threads_table(repeats, cores):
    print(f"\n5. splitting over {cores} threads vs one (us per call)")
    if cores < 2:
        print("   one core only: nothing to split")
        return
    pool = native._pool()
    pool.submit(int).result()
    trips = []
    for _ in range(500):
        start = time.perf_counter()
        pool.submit(int).result()
        trips.append(time.perf_counter() - start)
    print(f"   thread pool round trip (submit + result of a no-op): median "
          f"{statistics.median(trips) * 1e6:.0f} us, min {min(trips) * 1e6:.0f} us")
    arithmetic = build(KernelSpec("float64", ("x", "y"), (), (("z", "x * y + 1"),), ("z",)))
    forward = build(FORWARD)
    print(f"   {'kernel':<10} {'n':>8} {'1 thread':>9} {f'{cores} threads':>10} {'speedup':>8}"
          f"   estimated work")
    for name, kernel in (("forward", forward), ("x * y + 1", arithmetic)):
        saved = kernel.parallel_min
        kernel.set_parallel_min(2 * native.CHUNK)      # force the split for this table
        try:
            for n in (16_384, 65_536, 262_144, 1_048_576):
                args = [np.random.default_rng(3).uniform(-3, 3, n)
                        for _ in kernel.spec.arrays]
                times = interleaved({"1": (with_threads(kernel, 1), args),
                                     "all": (with_threads(kernel, cores), args)},
                                    max(repeats, 9), number=5)
                one, many = times["1"] * 1e6, times["all"] * 1e6
                print(f"   {name:<10} {n:>8} {one:>9.1f} {many:>10.1f} {one / many:>7.2f}x"
                      f"   {n * kernel.ns_per_element / 1e3:8.0f} us")
        finally:
            kernel.set_parallel_min(saved)
    print(f"   (split from an estimated {native._PARALLEL_MIN_NS / 1e3:.0f} us of work on)")


def reduction_loss(reduce):
    def loss(x):
        return reduce(np.tanh(x) * np.exp(-x * x) + np.sin(x) ** 2)

    return loss


REDUCED = {"norm": np.linalg.norm, "max": np.max, "sum": np.sum}


def numpy_reduction_value_and_grad(kind, at_argmax=False):
    def value_and_grad(x):
        t, e, s = np.tanh(x), np.exp(-x * x), np.sin(x)
        f = t * e + s ** 2
        value = REDUCED[kind](f)
        if at_argmax:
            i = int(np.argmax(f))
            grad = np.zeros_like(x)
            grad[i] = (1 - t[i] ** 2) * e[i] + t[i] * e[i] * (-2 * x[i]) + 2 * s[i] * np.cos(
                x[i])
            return value, grad
        df = (1 - t ** 2) * e + t * e * (-2 * x) + 2 * s * np.cos(x)
        if kind == "norm":
            return value, f * (1.0 / value) * df
        if kind == "max":
            mask = f == value
            return value, mask * (1.0 / np.count_nonzero(mask)) * df
        return value, df

    return value_and_grad


def reduction_table(repeats, cores):
    import pullback as pb

    n = 1_000_000
    x = np.random.default_rng(4).uniform(-3, 3, n)
    print("\n6. compiled f = red(tanh(x)*exp(-x*x) + sin(x)**2), n = 1e6, float64 "
          "(ns per element; ratio = numpy / pullback)")
    print(f"   {'red':<5} {'pass':<15} {'numpy':>8} {'pb 1t':>8} {'ratio':>6} "
          f"{f'pb {cores}t':>8} {'ratio':>6}")
    for kind in ("norm", "max", "sum"):
        loss = reduction_loss(REDUCED[kind])
        forward, value_and_grad = pb.compile(loss), pb.value_and_grad(loss)
        numpy_vg = numpy_reduction_value_and_grad(kind)
        value, grad = value_and_grad(x)                      # builds the kernels
        expected, expected_grad = numpy_vg(x)
        assert np.allclose(value, expected, rtol=1e-12) and np.allclose(
            grad, expected_grad, rtol=1e-9, atol=1e-12), kind
        cases = {"numpy forward": (loss, (x,)),
                 "numpy vg": (numpy_vg, (x,))}
        for threads, label in ((1, "1t"), (cores, "all")):
            cases[f"forward {label}"] = (_threads(forward, threads), (x,))
            cases[f"vg {label}"] = (_threads(value_and_grad, threads), (x,))
        if kind == "max":
            cases["numpy argmax"] = (numpy_reduction_value_and_grad(kind, True), (x,))
        per = {name: s / n * 1e9 for name, s in interleaved(cases, repeats).items()}
        rows = [("forward", "numpy forward", "forward"), ("value-and-grad", "numpy vg", "vg")]
        if kind == "max":
            rows.append(("  vs argmax", "numpy argmax", "vg"))
        for label, base_key, key in rows:
            base, one, many = per[base_key], per[f"{key} 1t"], per[f"{key} all"]
            print(f"   {kind:<5} {label:<15} {base:>8.2f} {one:>8.2f} {base / one:>5.1f}x "
                  f"{many:>8.2f} {base / many:>5.1f}x")


def _threads(fn, threads):
    def run(*args):
        native.set_threads(threads)
        try:
            return fn(*args)
        finally:
            native.set_threads(None)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="n = 1e6 only, fewer repeats")
    parser.add_argument("--stat", choices=sorted(STATISTIC), default="median",
                        help="statistic over repeats (min: the machine's best, on a busy host)")
    parser.add_argument("--only", type=int, choices=range(1, 7), metavar="TABLE",
                        help="run one table (1-6)")
    options = parser.parse_args()
    _statistic[0] = STATISTIC[options.stat]
    cores = native.thread_count()
    host = native.host()
    print(f"host: {host.cpu}, {host.lanes} doubles per vector (ISA '{host.isa}'), "
          f"{host.mathlib}, {cores} cores; numpy {np.__version__}; {options.stat} of "
          f"{options.repeats if not options.quick else 3} repeats; load average "
          f"{os.getloadavg()[0]:.1f}")
    sizes = [1_000_000] if options.quick else [1_000_000, 10_000_000]
    repeats = 3 if options.quick else options.repeats
    tables = {1: lambda: workload_table(sizes, repeats, cores), 2: lambda: limits_table(repeats),
              3: lambda: small_table(repeats), 4: compile_table,
              5: lambda: threads_table(repeats, cores), 6: lambda: reduction_table(repeats, cores)}
    for number, table in tables.items():
        if options.only in (None, number):
            table()


if __name__ == "__main__":
    main()
