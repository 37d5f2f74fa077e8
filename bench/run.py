"""Benchmark pullback against its peers on W1..W7, in one run, on this machine.

    python3.11 bench/run.py            # everything; writes bench/RESULTS.md
    python3.11 bench/run.py --quick    # a subset in under two minutes (RESULTS-quick.md)

Creates the peers' venvs under bench/ if missing (.venv-peers: JAX, PyTorch 2.13.0,
HIPS autograd, numba and pullback itself; .venv-mxnet: MXNet 1.9.1 with numpy < 1.24),
re-runs itself inside .venv-peers with every thread pool limited to one thread, then
checks and times every tool on every workload (see harness.py) and prints one table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEERS_VENV = BENCH / ".venv-peers"
MXNET_VENV = BENCH / ".venv-mxnet"
SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
    "BLIS_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1", "MXNET_CPU_WORKER_NTHREADS": "1", "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
os.environ.update(SINGLE_THREAD)       # before numpy (and its BLAS) is imported


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, requirements: Path, editable: bool) -> str | None:
    """Create ``venv`` with ``requirements`` if it is missing; None or why it failed."""
    python = _venv_python(venv)
    marker = venv / ".complete"
    if marker.exists() and python.exists():
        return None
    print(f"creating {venv.relative_to(ROOT)} (once; later runs reuse it) ...", flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)]]
    if editable:
        steps.append([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)])
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"`{' '.join(step[-3:])}` failed: {(done.stderr or done.stdout)[-600:]}"
    marker.write_text("ok\n")
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset in under two minutes")
    parser.add_argument("--no-peers", action="store_true",
                        help="run in this interpreter, with whatever tools it has")
    parser.add_argument("--only", default="", help="comma-separated workload prefixes (W1,W3)")
    parser.add_argument("--tools", default="", help="comma-separated tool names")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--output", default=None, help="markdown file to write")
    args = parser.parse_args(argv)

    inside = Path(sys.prefix).resolve() == PEERS_VENV.resolve()
    if not args.no_peers and not inside:
        problem = ensure_venv(PEERS_VENV, BENCH / "requirements-peers.txt", editable=True)
        if problem:
            sys.exit(f"cannot create the peers' venv: {problem}")
        mxnet_problem = ensure_venv(MXNET_VENV, BENCH / "requirements-mxnet.txt",
                                    editable=False)
        env = dict(os.environ, **SINGLE_THREAD)
        if mxnet_problem:
            env["PULLBACK_BENCH_MXNET_PROBLEM"] = mxnet_problem
        python = str(_venv_python(PEERS_VENV))
        os.execve(python, [python, str(Path(__file__).resolve()), *sys.argv[1:]], env)

    sys.path.insert(0, str(BENCH))
    import report  # imports the tools, so only once inside the right venv

    report.run(args)


if __name__ == "__main__":
    main()
