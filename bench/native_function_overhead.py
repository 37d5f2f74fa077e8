"""What one ``pb.grad(f)(x)`` call of a whole native function costs, for a trivial scalar
``f(x) = x * x`` (the work itself is a few ns: what is left is the call).

Run from the repository root:  python bench/native_function_overhead.py [--repeats 15]

Cases, interleaved in every repeat so machine noise hits them alike (median of the
repeats, ns per call):

| case | what runs |
|---|---|
| pb.grad(f)(x) | the user's call: the fastcall entry checks x, calls native, boxes the float |
| careful path, fastcall native | api.py's Python glue (arguments, road lookup, conversion) around the raw entry |
| careful path, ctypes native | the same glue around a ctypes call: every call before the entry |
| raw entry alone | ``NativeGradient.call``: the entry returning (value, gradient) |
| ctypes alone | the same native function through ctypes |
| python f(x) | calling the plain Python function (a floor for any Python-level call) |
| jax jit(grad(f))(x) | the peer's compiled gradient call (when jax imports here) |

The ratios printed at the end are against ``pb.grad(f)(x)`` in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PULLBACK_NATIVE_FUNCTIONS", "1")


def square(x):
    return x * x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--number", type=int, default=20000)
    options = parser.parse_args()

    import pullback as pb
    from pullback.compiler import api, native_road

    x = 1.25
    gradient = pb.grad(square)
    gradient(x)
    gradient(x)   # the entry is installed
    variant = api._differentiated(square, 0, (0,), (x,))
    internal = api._internal_arguments(square, (x,), (0,))
    road = native_road.gradient_function(variant, internal)
    if road is None:
        sys.exit(f"square is not on the native road: {pb.explain(square)}")
    careful = api._gradient_runner(square, 0)
    entry = road._entry

    def careful_ctypes():
        road._entry = None   # NativeGradient.call then takes ctypes, as before the entry
        try:
            return careful((x,), {})
        finally:
            road._entry = entry

    cases = {
        "pb.grad(f)(x)": lambda: gradient(x),
        "careful path, fastcall native": lambda: careful((x,), {}),
        "careful path, ctypes native": careful_ctypes,
        "raw entry alone": lambda: road.call(internal, 1),
        "ctypes alone": lambda: road._call_ctypes(internal, 1),
        "python f(x)": lambda: square(x),
    }
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        jax_gradient = jax.jit(jax.grad(square))
        jax_gradient(x).block_until_ready()
        cases["jax jit(grad(f))(x)"] = lambda: jax_gradient(x).block_until_ready()
    except ImportError:
        pass
    expected = 2 * x
    for name, case in cases.items():
        got = case()
        if isinstance(got, tuple):   # careful: (args, value, gradient); call: (value, grads)
            got = got[2] if len(got) == 3 else got[1][0]
        if name != "python f(x)" and float(got) != expected:
            sys.exit(f"{name} computed {got}, expected {expected}")
    samples = {name: [] for name in cases}
    for _ in range(options.repeats):
        for name, case in cases.items():
            seconds = timeit.timeit(case, number=options.number)
            samples[name].append(seconds / options.number * 1e9)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["pb.grad(f)(x)"]
    print(f"{'case':<32} {'ns/call':>9} {'/ pb.grad':>10}")
    for name, value in medians.items():
        print(f"{name:<32} {value:>9.0f} {value / base:>9.2f}x")
    print(f"\n(road: {pb.explain(square)})")


if __name__ == "__main__":
    main()
