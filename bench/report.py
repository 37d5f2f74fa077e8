"""Run the cases and print/write the table (the part of run.py that needs the tools)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import harness
import tools
import workloads

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
ROUNDS = {"full": 7, "quick": 3}
TARGET_SECONDS = {"full": 0.05, "quick": 0.01}    # one timed batch lasts at least this


def fmt_time(seconds):
    if seconds is None or math.isnan(seconds):
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def fmt_ratio(x):
    return "-" if x is None or math.isnan(x) else f"{x:.2f}x"


def best_peer(case):
    timed = [r for r in case.tools if r.tool in tools.PEERS and r.status == "ok"]
    return min(timed, key=lambda r: r.gradient_median) if timed else None


def _tool(case, name):
    return next((r for r in case.tools if r.tool == name), None)


def _short(note, limit=70):
    return note if len(note) <= limit else note[:limit].rsplit(" ", 1)[0] + " ... (notes)"


def table(cases) -> str:
    lines = ["| workload | tool | primal | gradient | gradient/primal | first call | note |",
             "|---|---|---:|---:|---:|---:|---|"]
    for case in cases:
        for k, r in enumerate(case.tools):
            ok = r.status == "ok"
            ratio = r.gradient_median / r.primal_median if ok else math.nan
            note = "" if ok else f"{r.status.upper()}: {_short(r.note)}"
            first = fmt_time(r.first_call) if r.status in ("ok", "wrong") else "-"
            lines.append(f"| {case.label if k == 0 else ''} | {r.tool} | "
                         f"{fmt_time(r.primal_median) if ok else '-'} | "
                         f"{fmt_time(r.gradient_median) if ok else '-'} | {fmt_ratio(ratio)} | "
                         f"{first} | {note.replace('|', '/')} |")
    return "\n".join(lines)


def summary(cases) -> str:
    lines = [("| workload | pullback gradient | best peer | best peer gradient | "
              "pullback speed-up over best peer | pullback eager speed-up | "
              "pullback / numba adjoint |"),
             "|---|---:|---|---:|---:|---:|---:|"]
    for case in cases:
        pb, eager, numba = (_tool(case, n) for n in
                            ("pullback", "pullback eager", "numba (hand adjoint)"))
        peer = best_peer(case)
        pb_t = pb.gradient_median if pb and pb.status == "ok" else math.nan
        eager_t = eager.gradient_median if eager and eager.status == "ok" else math.nan
        peer_t = peer.gradient_median if peer else math.nan
        numba_t = numba.gradient_median if numba and numba.status == "ok" else math.nan
        lines.append(f"| {case.label} | {fmt_time(pb_t)} | {peer.tool if peer else '-'} | "
                     f"{fmt_time(peer_t)} | {fmt_ratio(peer_t / pb_t)} | "
                     f"{fmt_ratio(peer_t / eager_t)} | {fmt_ratio(pb_t / numba_t)} |")
    return "\n".join(lines)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = ""
    load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return f"{model}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.release()}{load}"


def _git(*args):
    try:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def mxnet_version():
    python = BENCH / ".venv-mxnet" / "bin" / "python"
    if not python.exists():
        return "not installed"
    script = "import mxnet, numpy; print(mxnet.__version__, 'with numpy', numpy.__version__)"
    done = subprocess.run([str(python), "-c", script], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "broken: " + done.stderr.strip()[-200:]


def header(mode, elapsed) -> str:
    commit = _git("rev-parse", "--short", "HEAD") + (" (dirty)" if _git("status", "--porcelain",
                                                                          "--", ".") else "")
    v = tools.versions()
    v["mxnet"] = mxnet_version()
    versions = ", ".join(f"{k} {val}" for k, val in v.items())
    threads = ", ".join(f"{k}={os.environ.get(k, '')}" for k in
                        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "NUMBA_NUM_THREADS", "XLA_FLAGS"))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join([
        f"- date: {when}; mode: {mode}; wall time {elapsed:.0f} s",
        f"- command: `python3.11 bench/run.py{' --quick' if mode == 'quick' else ''}`",
        f"- pullback commit: {commit}",
        f"- machine: {machine()}",
        f"- versions: {versions}",
        f"- threads: {threads}; torch.set_num_threads(1)",
        (f"- timing: median over {ROUNDS[mode]} interleaved rounds of per-call means over "
         f"batches of >= {TARGET_SECONDS[mode] * 1e3:.0f} ms; first call = the first "
         "gradient call, compile/jit/trace included"),
    ])


def notes(cases) -> str:
    """Each distinct problem once, with the workloads it happened on."""
    seen = {}
    for case in cases:
        for r in case.tools:
            if r.status != "ok":
                seen.setdefault((r.tool, r.status, r.note), []).append(case.label)
    out = [f"- {tool}, {status} on {'; '.join(labels)}: {note}"
           for (tool, status, note), labels in seen.items()]
    problem = os.environ.get("PULLBACK_BENCH_MXNET_PROBLEM")
    if problem:
        out.append(f"- mxnet venv: {problem}")
    return "\n".join(out) if out else "- none"


def run(args):
    mode = "quick" if args.quick else "full"
    rounds = args.rounds or ROUNDS[mode]
    names = [n.strip() for n in args.tools.split(",") if n.strip()] or list(tools.BUILDERS)
    only = [p.strip().upper() for p in args.only.split(",") if p.strip()]
    tools.setup_process()
    start = time.perf_counter()
    cases = []
    for module, size in workloads.cases(mode):
        if only and not any(module.NAME.upper().startswith(p) for p in only):
            continue
        case_tools = [n for n in names if n != "mxnet" or hasattr(module, "MXNET_MODULE")]
        print(f"== {module.label(size)}", flush=True)
        case = harness.run_case(module, size, case_tools, rounds, TARGET_SECONDS[mode],
                                log=lambda text: print(text, file=sys.stderr))
        for r in case.tools:
            print(f"   {r.tool:22s} {r.status:8s} grad {fmt_time(r.gradient_median):>9s}  "
                  f"primal {fmt_time(r.primal_median):>9s}  first {fmt_time(r.first_call)}"
                  + (f"  {r.note[:100]}" if r.note else ""), flush=True)
        cases.append(case)
    elapsed = time.perf_counter() - start
    text = "\n\n".join([
        f"# pullback benchmark results ({mode})",
        header(mode, elapsed),
        "## Every workload x tool\n\nTimes are per call. `gradient` computes the loss and "
        "its gradient. Peers: " + ", ".join(tools.PEERS) + "; references: "
        + ", ".join(tools.REFERENCES) + ".\n\n" + table(cases),
        "## pullback against the best peer\n\nspeed-up = best peer's gradient time / "
        "pullback's (above 1: pullback is faster). The last column is how many times "
        "slower compiled pullback is than the hand-written numba adjoint (speed of light).\n\n" + summary(cases),
        "## Refusals, failures, wrong gradients\n\n" + notes(cases),
    ]) + "\n"
    print()
    print(text)
    output = args.output or (BENCH / ("RESULTS.md" if mode == "full" and not only
                                      and not args.tools else f"RESULTS-{mode}.md"))
    Path(output).write_text(text)
    print(f"written to {output}")
