"""What one call of a native kernel costs from Python, by calling convention.

Run from the repository root:  python bench/native_call_overhead.py [--repeats 15]

The kernel is ``z = x + y`` (float64) so the work itself is small; every case
computes the same thing.  Cases, interleaved in every repeat so machine noise
hits them alike (median of the repeats, ns per call):

| case | how the kernel is reached |
|---|---|
| ctypes + arr.ctypes.data | ctypes function, addresses from ``arr.ctypes.data`` on every call |
| ctypes + __array_interface__ | the same, addresses from ``arr.__array_interface__['data'][0]`` |
| ctypes, cached addresses | ctypes with integer addresses computed once (a lower bound for ctypes) |
| trampoline (kernel.call) | the METH_FASTCALL trampoline: checks headers, allocates the output |
| Kernel.__call__ | ``kernel(x, y)``: the Python method around the trampoline |
| numpy | ``np.add(x, y)`` |

The ctypes cases write into a preallocated output and reuse a preallocated
block for the addresses (the kernel ABI takes a pointer to them), so they
flatter ctypes; the trampoline and numpy allocate the result.
"""

import argparse
import ctypes
import statistics
import timeit

import numpy as np
from pullback.compiler.lower import lower
from pullback.runtime.native import KernelSpec, compile_kernel

CASES = {
    "ctypes + arr.ctypes.data": "block[0] = x.ctypes.data; block[1] = y.ctypes.data; "
                                "block[2] = z.ctypes.data; c_kernel(0, n, p, s, r)",
    "ctypes + __array_interface__": "block[0] = x.__array_interface__['data'][0]; "
                                    "block[1] = y.__array_interface__['data'][0]; "
                                    "block[2] = z.__array_interface__['data'][0]; "
                                    "c_kernel(0, n, p, s, r)",
    "ctypes, cached addresses": "c_kernel(0, n, p, s, r)",
    "trampoline (kernel.call)": "kernel.call(x, y)",
    "Kernel.__call__": "kernel(x, y)",
    "numpy": "np.add(x, y)",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--number", type=int, default=20000)
    options = parser.parse_args()

    spec = KernelSpec("float64", ("x", "y"), (), (("z", "x + y"),), ("z",))
    kernel = compile_kernel(spec, lower(spec))
    c_kernel = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                ctypes.c_void_p, ctypes.c_void_p)(kernel.address)
    print(f"{'n':>6} {'case':<32} {'ns/call':>9}")
    for n in (3, 1000):
        x, y = np.random.default_rng(0).standard_normal((2, n))
        z, block = np.empty(n), np.zeros(3, dtype=np.uintp)
        names = {"np": np, "kernel": kernel, "c_kernel": c_kernel, "x": x, "y": y, "z": z,
                 "n": n, "block": block, "p": block.ctypes.data,
                 "s": np.zeros(1).ctypes.data, "r": np.zeros(1).ctypes.data}
        block[:] = [x.ctypes.data, y.ctypes.data, z.ctypes.data]
        samples = {name: [] for name in CASES}
        for _ in range(options.repeats):
            for name, statement in CASES.items():
                seconds = timeit.timeit(statement, globals=names, number=options.number)
                samples[name].append(seconds / options.number * 1e9)
        for name, values in samples.items():
            print(f"{n:>6} {name:<32} {statistics.median(values):>9.0f}")

if __name__ == "__main__":
    main()
