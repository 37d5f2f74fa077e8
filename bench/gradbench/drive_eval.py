"""Run one real GradBench eval against pullback's tool, here, without GradBench's CLI.

    python bench/gradbench/drive_eval.py --gradbench DIR --eval-python PY lse -- -n 1000
    python bench/gradbench/drive_eval.py --gradbench DIR --eval-python PY --tool manual lse


DIR is a checkout of the GradBench repository whose C++ reference tool is built
(``make -C tools/manual bin/<eval>``); PY is a Python with GradBench's package and its
dependencies (pydantic, numpy, scipy, dataclasses-json).  The eval's own validator
(``analysis`` messages) decides; this script only pipes the two processes together and
prints, per evaluate, the function, its description, the eval's verdict and the mean
``evaluate`` time.  Exits non-zero if any evaluate failed or was judged invalid.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def drive(eval_cmd, eval_cwd, tool_cmd, log=print, tool_cwd=ROOT):
    """Pipe messages between the eval and the tool; returns (ok, rows)."""
    evaluator = subprocess.Popen(eval_cmd, cwd=eval_cwd, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    tool = subprocess.Popen(tool_cmd, cwd=tool_cwd, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pending, rows, ok = {}, [], True
    try:
        for line in evaluator.stdout:
            message = json.loads(line)
            tool.stdin.write(line)
            tool.stdin.flush()
            if message["kind"] == "end":
                break
            response = json.loads(tool.stdout.readline())
            if message["kind"] == "define" and not response.get("success"):
                log(f"define {message['module']}: not supported: {response.get('error')}")
            if message["kind"] == "evaluate":
                times = [t["nanoseconds"] for t in response.get("timings", [])
                         if t["name"] == "evaluate"]
                compile_ns = sum(t["nanoseconds"] for t in response.get("timings", [])
                                 if t["name"] == "compile")
                row = {"function": message["function"],
                       "description": message.get("description", ""),
                       "success": response.get("success"),
                       "mean_seconds": sum(times) / len(times) / 1e9 if times else None,
                       "compile_seconds": compile_ns / 1e9 if compile_ns else None,
                       "valid": None, "error": response.get("error")}
                rows.append(row)
                pending[message["id"]] = row
                if not response.get("success"):
                    ok = False
                    log(f"{row['function']} {row['description']}: FAILED {row['error']}")
            if message["kind"] == "analysis":
                row = pending.get(message["of"])
                if row is not None:
                    row["valid"] = message["valid"]
                    ok = ok and message["valid"]
                    mean = row["mean_seconds"]
                    log(f"{row['function']:>10s} {row['description']:>14s}: "
                        f"{'valid' if message['valid'] else 'INVALID'}"
                        f"  mean {mean * 1e3 if mean else float('nan'):.3f} ms"
                        + (f"  compile {row['compile_seconds'] * 1e3:.1f} ms"
                           if row["compile_seconds"] else "")
                        + ("" if message["valid"] else f"\n{message.get('error', '')}"))
            evaluator.stdin.write(json.dumps(response) + "\n")
            evaluator.stdin.flush()
    finally:
        for process in (evaluator, tool):
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
            process.wait(timeout=60)
    return ok and evaluator.returncode == 0, rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gradbench", required=True, help="GradBench checkout")
    parser.add_argument("--eval-python", default=sys.executable)
    parser.add_argument("--tool-python", default=sys.executable)
    parser.add_argument("--tool", default="pullback",
                        help="pullback, or a C++ tool of the checkout (e.g. manual) to time the "
                             "reference the same way")
    parser.add_argument("eval")
    parser.add_argument("eval_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    extra = args.eval_args[1:] if args.eval_args[:1] == ["--"] else args.eval_args
    script = Path(args.gradbench) / "python" / "gradbench" / "gradbench" / "evals" / args.eval
    if args.tool == "pullback":
        tool_cmd, tool_cwd = [args.tool_python, str(ROOT / "bench" / "gradbench" / "run.py")], ROOT
    else:
        tool_cmd, tool_cwd = [args.eval_python, "-m", "gradbench.cpp", args.tool], args.gradbench
    ok, _ = drive([args.eval_python, str(script / "run.py"), *extra], args.gradbench, tool_cmd,
                  tool_cwd=tool_cwd)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
