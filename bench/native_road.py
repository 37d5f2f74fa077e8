"""Whole-function native code (issue 10) against the Python road and the peers, one run.

    python bench/native_road.py                 # W6, W7, W1 n=3 and W3 (full sizes)
    python bench/native_road.py --quick         # smaller sizes, 3 rounds
    python bench/native_road.py --only W7

Runs in this interpreter (numba and jax are timed when they import here; the peers'
venv of run.py is not needed) with every thread pool at one thread.  Tools, interleaved
in each round by harness.py: pullback native road (PULLBACK_NATIVE_FUNCTIONS=1), pullback
python road (=0: the generated Python with its fused kernels), numba (hand adjoint),
jax (jit(grad): fori_loop, W3's lax.scan), numpy (hand-written, the reference every gradient is checked
against).  Prints the table and the ratios measured in this run, and what
``pb.explain`` says about each workload's road.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))
import run as _run  # noqa: E402  (sets the one-thread environment before numpy loads)

os.environ.update(_run.SINGLE_THREAD)

import harness  # noqa: E402
import report  # noqa: E402
import tools  # noqa: E402
import workloads  # noqa: E402

TOOLS = ["numpy (hand-written)", "pullback native road", "pullback python road",
         "numba (hand adjoint)", "jax"]
DEFAULT = ("W6", "W7", "W1", "W3")


def _ratio(case, a, b):
    ra, rb = report._tool(case, a), report._tool(case, b)
    if ra is None or rb is None or ra.status != "ok" or rb.status != "ok":
        return "-"
    return f"{ra.gradient_median / rb.gradient_median:.3g}x"


def _road(module, size):
    import pullback as pb

    os.environ["PULLBACK_NATIVE_FUNCTIONS"] = "1"
    args = module.make_inputs(**size)
    return pb.explain(module.loss, *args, argnums=tuple(module.WRT)).replace("\n", "; ")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(DEFAULT))
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    rounds = args.rounds or report.ROUNDS[mode]
    only = [p.strip().upper() for p in args.only.split(",") if p.strip()]
    names = [n for n in TOOLS if tools.available(n)]
    tools.setup_process()
    cases, roads = [], []
    for module, size in workloads.cases(mode):
        if not any(module.NAME.upper().startswith(p) for p in only):
            continue
        if module.NAME.startswith("W1") and size.get("n", 0) > 10:
            continue   # W1's large case is array work: not this road's
        print(f"== {module.label(size)}", flush=True)
        case = harness.run_case(module, size, names, rounds, report.TARGET_SECONDS[mode],
                                log=lambda text: print(text, file=sys.stderr))
        cases.append(case)
        roads.append(f"- {case.label}: {_road(module, size)}")
    ratios = ["| workload | native / python road | native / numba adjoint | native / jax |",
              "|---|---:|---:|---:|"]
    for case in cases:
        native = "pullback native road"
        ratios.append(f"| {case.label} | {_ratio(case, native, 'pullback python road')} | "
                      f"{_ratio(case, native, 'numba (hand adjoint)')} | "
                      f"{_ratio(case, native, 'jax')} |")
    print()
    header = report.header(mode, 0.0).split("\n- timing")[0].splitlines()
    print("\n".join(line for line in header if "wall time" not in line
                    and not line.startswith("- command")))
    print("- command: `python bench/native_road.py" + "".join(" " + a for a in sys.argv[1:])
          + "`")
    print()
    print(report.table(cases))
    print()
    print("Gradient time ratios (below 1: the native road is faster):\n")
    print("\n".join(ratios))
    print("\nRoads (pb.explain):\n" + "\n".join(roads))


if __name__ == "__main__":
    main()
