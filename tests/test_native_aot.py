"""Ahead-of-time compile of whole native functions: ``python -m pullback compile`` stores
the native function's object code and its manifest beside the source, and a fresh
process then runs ``pb.grad`` natively without lowering (no IR, typing or LLVM code
generation), with the gradients of the Python road and of central differences; a damaged
manifest is ignored and rebuilt, never trusted."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from pullback.compiler import cache

MODEL = textwrap.dedent('''\
    import numpy as np
    import pullback as pb


    def step(x, y, h):
        return x + h * np.sin(y), y - h * x * 0.5


    @pb.compile(signatures=[("float64", "float64", "int")])
    def orbit(x, y, n):
        for _ in range(n):
            x, y = step(x, y, 0.01)
        return x * x + y
''')

RUN = textwrap.dedent('''\
    import json, sys
    import pullback as pb
    import pullback.compiler.native_road as road
    if "--no-lowering" in sys.argv:
        def refuse(*args, **kwargs):
            raise AssertionError("lowered although compiled ahead of time")
        road.lower_function = refuse
    import model

    gradient = pb.grad(model.orbit, (0, 1))(0.3, -0.4, 50)
    print(json.dumps({"grad": list(gradient), "road": pb.explain(model.orbit)}))
''')


def _environment(root, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLBACK_CACHE")}
    env.update(PULLBACK_BUILD_ID=cache.build_fingerprint(), PYTHONDONTWRITEBYTECODE="1",
               PULLBACK_CACHE_DIR=str(root), PULLBACK_NATIVE_FUNCTIONS="1")
    env.update(extra)
    return env


def _run(cwd, env, *flags):
    proc = subprocess.run([sys.executable, "run.py", *flags], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _python_road_and_central_differences():
    import numpy as np

    def orbit(x, y, n):
        for _ in range(n):
            x, y = x + 0.01 * np.sin(y), y - 0.01 * x * 0.5
        return x * x + y

    eps = 1e-6
    numeric = [(orbit(0.3 + eps, -0.4, 50) - orbit(0.3 - eps, -0.4, 50)) / (2 * eps),
               (orbit(0.3, -0.4 + eps, 50) - orbit(0.3, -0.4 - eps, 50)) / (2 * eps)]
    return numeric


@pytest.fixture
def project(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "run.py").write_text(RUN)
    return tmp_path


def test_compiled_ahead_of_time_runs_natively_without_lowering(project, tmp_path):
    env = _environment(tmp_path / "root")
    proc = subprocess.run([sys.executable, "-m", "pullback", "compile", "model.py"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 whole native function" in proc.stdout, proc.stdout
    kernels = tmp_path / "root" / "artifacts" / "kernels"   # PULLBACK_CACHE_DIR: artifacts here
    manifests = sorted(kernels.glob("*.native.json"))
    assert len(manifests) == 1, list(kernels.iterdir())
    report = _run(project, env, "--no-lowering")
    assert "no lowering" in report["road"], report["road"]
    python = _run(project, _environment(tmp_path / "root", PULLBACK_NATIVE_FUNCTIONS="0"))
    assert report["grad"] == pytest.approx(python["grad"], rel=1e-12)
    assert report["grad"] == pytest.approx(_python_road_and_central_differences(), rel=1e-6)

    manifests[0].write_text(manifests[0].read_text().replace('"symbol": "pb_native_',
                                                             '"symbol": "pb_nope_'))
    again = _run(project, env)   # a damaged manifest: ignored, lowered again, rewritten
    assert "no lowering" not in again["road"] and "native (" in again["road"], again["road"]
    assert again["grad"] == report["grad"]
    assert "no lowering" in _run(project, env, "--no-lowering")["road"]

    cleared = subprocess.run([sys.executable, "-m", "pullback", "cache", "clear", "model.py"],
                             cwd=project, env=env, capture_output=True, text=True, timeout=120,
                             check=False)
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert not list(kernels.glob("*.native.json")) if kernels.exists() else True
