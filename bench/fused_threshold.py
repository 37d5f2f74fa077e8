"""Where a fused kernel should switch from its numpy function to native code.

Run from the repository root:  python bench/fused_threshold.py

For the W2 loss (tanh(x)*exp(-x*x) + sin(x)**2 with a trailing sum) and a cheap
arithmetic run, times one compiled gradient call (forward + adjoint) with the
numpy kernels and with native kernels at sizes from 8 to 65536 elements, in the
same process, interleaved; prints the ratio.  runtime/fused.py's NATIVE_MIN_SIZE
is set from where native stops losing.
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pullback as pb  # noqa: E402
from pullback.compiler.api import CompiledFunction  # noqa: E402
from pullback.runtime import fused  # noqa: E402

from threshold_workloads import arithmetic, w2_loss  # noqa: E402


def per_call(fn, x, number):
    start = time.perf_counter()
    for _ in range(number):
        fn(x)
    return (time.perf_counter() - start) / number


def main():
    sizes = [8, 32, 128, 256, 512, 1024, 4096, 16384, 65536]
    print(f"{'workload':>10} {'n':>7} {'numpy us':>10} {'native us':>10} {'numpy/native':>13}")
    for name, fn in (("W2", w2_loss), ("arith", arithmetic)):
        grad = pb.grad(CompiledFunction(fn))
        for n in sizes:
            x = np.linspace(-1.5, 1.5, n)
            number = max(20, 20000 // n)
            numpy_times, native_times = [], []
            for _ in range(7):
                fused.NATIVE_MIN_SIZE = 10**12
                numpy_times.append(per_call(grad, x, number))
                fused.NATIVE_MIN_SIZE = 1
                native_times.append(per_call(grad, x, number))
            a, b = statistics.median(numpy_times), statistics.median(native_times)
            print(f"{name:>10} {n:>7} {a * 1e6:>10.1f} {b * 1e6:>10.1f} {a / b:>13.2f}")


if __name__ == "__main__":
    main()
