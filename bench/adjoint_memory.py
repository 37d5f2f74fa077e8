"""What the compiled forward saves for the adjoint, against what must be saved.

    python bench/adjoint_memory.py                  # this checkout
    python bench/adjoint_memory.py --root /path     # another checkout's pullback (before/after)
    python bench/adjoint_memory.py --quick          # smaller sizes

For each case, pb.grad's variant runs its forward on a fresh stack; then the stack is
measured: ``saved`` is the array data it holds (each buffer once; a number 8 bytes; a
data-free stand-in of ``support.like`` 8 bytes for its shared element), ``pushes`` how many
items (8 bytes of stack slot each, not in ``saved``).  The same case at two trip counts
gives the bytes saved per iteration, next to the analytic lower bound per iteration: the
values the adjoint must read that the loop overwrites, with no recomputation across
statements (formulas in LOWER_BOUNDS).  ``peak`` is tracemalloc's peak over forward +
adjoint (numpy reports its buffers to tracemalloc), the live input and output included.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent


def linear_while(a, n):
    i = 0
    while i < n:
        a = a * 0.9999 + 1.0
        i = i + 1
    return a


def linear_for_two(a, n):
    b = a * 0.5
    for i in range(n):
        b = b * 0.9 + a
        a = a - b * 0.01
    return a + b


def nonlinear_sin(a, n):
    for i in range(n):
        a = np.sin(a) * 0.5 + a
    return a


def product(a, w, n):
    for i in range(n):
        a = a * w + 1.0
    return a


def _cases(quick):
    sys.path.insert(0, str(BENCH))
    from workloads import w3_rnn, w6_lotka_volterra

    n, N = (100, 10_000) if quick else (1000, 10_000)
    x = np.linspace(-1.0, 1.0, N)
    w = np.full(N, 0.999)
    T = 200
    W, U, b, xs, h0 = w3_rnn.make_inputs(T, 32, 8)
    steps = 300 if quick else 1000
    params = w6_lotka_volterra.make_inputs(steps)[:6]
    # (label, fn, args at trip count k, argnums, iterations(k), bound per iteration in bytes)
    return [
        (f"linear while, a = a*0.9999 + 1 ({N} elements)", linear_while,
         lambda k: (x, k), 0, (n // 2, n), 0),
        (f"linear for, two coupled updates ({N} elements)", linear_for_two,
         lambda k: (x, k), 0, (n // 2, n), 0),
        (f"nonlinear for, a = sin(a)*0.5 + a ({N} elements)", nonlinear_sin,
         lambda k: (x, k), 0, (n // 2, n), 8 * N),
        (f"product for, a = a*w + 1, d/da only ({N} elements)", product,
         lambda k: (x, w, k), 0, (n // 2, n), 0),
        (f"product for, a = a*w + 1, d/da and d/dw ({N} elements)", product,
         lambda k: (x, w, k), (0, 1), (n // 2, n), 8 * N),
        ("W3 RNN, T steps, hidden 32, input 8", w3_rnn.loss,
         lambda k: (W, U, b, xs[:k], h0), (0, 1, 2), (T // 2, T), 8 * 32),
        ("W6 Lotka-Volterra RK4, steps", w6_lotka_volterra.loss,
         lambda k: (*params, k), (0, 1, 2, 3, 4, 5), (steps // 2, steps), 2 * 8),
    ]


LOWER_BOUNDS = """\
linear loops: 0 per iteration (every derivative is a constant; only the trip count).
nonlinear sin: the old a, 8 N bytes (cos(a) reads it).
product, d/da only: 0 (the derivative w.r.t. a is w, an input never overwritten).
product, d/da and d/dw: the old a, 8 N bytes (d/dw reads it).
W3: the old h, 8 * hidden bytes (dot(W, h) w.r.t. W reads it; tanh's derivative reads the new
    h, which the next step saves; xs[t] is a view of an input).
W6: the state x, y, 16 bytes (each RK4 step's values are functions of x, y and the parameters,
    recomputed inside the step's kernel)."""


def held_bytes(values) -> int:
    seen, total, todo = set(), 0, list(values)
    while todo:
        v = todo.pop()
        if isinstance(v, (list, tuple)):
            todo.extend(v)
        elif isinstance(v, (np.ndarray, np.generic)):
            base = v
            while isinstance(base, np.ndarray) and isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen:
                seen.add(id(base))
                total += base.nbytes
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and id(v) not in seen:
            seen.add(id(v))
            total += 8
    return total


def measure(fn, args, argnums):
    from pullback.compiler import api
    from pullback.runtime.stack import Stack

    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    try:
        variant = api._differentiated(fn, nums, nums, len(args))
    except TypeError:   # later checkouts take the arguments themselves
        variant = api._differentiated(fn, nums, nums, list(args))
    internal = api._internal_arguments(fn, list(args), nums)
    stack = Stack()
    variant.forward(stack, *internal)
    saved, pushes = held_bytes(stack._items), len(stack._items)
    del stack
    tracemalloc.start()
    stack = Stack()
    out = variant.forward(stack, *internal)
    variant.adjoint(stack, api._ones(out))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return saved, pushes, peak


def _size(b: float) -> str:
    for unit, scale in (("MiB", 2 ** 20), ("kiB", 2 ** 10)):
        if abs(b) >= scale:
            return f"{b / scale:.1f} {unit}"
    return f"{b:.0f} B"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="import pullback from this checkout")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve() if args.root else BENCH.parent
    sys.path.insert(0, str(root))
    import pullback as pb

    print(f"pullback from {root}")
    print(f"{'case':58}{'iters':>6}{'saved':>11}{'pushes':>8}{'peak':>11}"
          f"{'saved/iter':>12}{'bound/iter':>12}{'ratio':>8}")
    for label, fn, make, argnums, (k1, k2), bound in _cases(args.quick):
        compiled = pb.compile(fn)
        s1, _, _ = measure(compiled, make(k1), argnums)
        s2, pushes, peak = measure(compiled, make(k2), argnums)
        per = (s2 - s1) / (k2 - k1)
        ratio = f"{per / bound:.2f}" if bound else ("0 = 0" if per == 0 else "inf")
        print(f"{label:58}{k2:>6}{_size(s2):>11}{pushes:>8}{_size(peak):>11}"
              f"{_size(per):>12}{_size(bound):>12}{ratio:>8}")
    print("\nlower bounds per iteration:\n" + LOWER_BOUNDS)


if __name__ == "__main__":
    main()
