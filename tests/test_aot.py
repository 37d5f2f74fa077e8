"""The ahead-of-time compile step and the artifact cache (issue 5).

Every case runs real, fresh interpreters: ``python -m pullback compile`` in one,
then a program that imports the module, calls the function and prints
``pb.stats()`` in another.
"""

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pullback.compiler import cache

MODEL = textwrap.dedent('''\
    import pullback as pb
    from pullback import nd


    def helper(x):
        return x * 3


    @pb.compile
    def f(a):
        b = helper(a) * 2
        while nd.norm(b).asscalar() < 100:
            b = b * 2
        return nd.tanh(b * 0.01) * b
''')

RUN = textwrap.dedent('''\
    import json, sys
    import pullback as pb
    from pullback import nd, autograd as ag
    import pullback.compiler.api as api

    if "--no-parse" in sys.argv:
        def refuse(fn):
            raise AssertionError(f"parsed {fn.__qualname__}")
        api.parse_function = refuse
    import model

    a = nd.array([0.5, -1.0, 2.0], dtype="float64")
    a.attach_grad()
    with ag.record():
        c = model.f(a)
    c.backward()
    plain = model.f(a)
    print(json.dumps({"value": c.asnumpy().tolist(), "grad": a.grad.asnumpy().tolist(),
                      "plain": plain.asnumpy().tolist(), "stats": pb.stats()}))
''')

ALL_VARIANTS = 4   # f and helper, each plain and differentiated


# Pinned, so that someone editing pullback while this runs does not invalidate the cache.
BUILD_ID = cache.build_fingerprint()


def environment(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLBACK_CACHE")}
    # no stale .pyc when a test edits a module within the same second
    env.update(PULLBACK_BUILD_ID=BUILD_ID, PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def cli(cwd, *args, env=None):
    return subprocess.run([sys.executable, "-m", "pullback", *args], cwd=cwd,
                          env=env or environment(), capture_output=True, text=True, timeout=120,
                          check=False)


def run(cwd, *flags, env=None):
    """Run run.py in a fresh interpreter: (its JSON report, its stderr)."""
    proc = subprocess.run([sys.executable, "run.py", *flags], cwd=cwd, env=env or environment(),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def reference(cwd):
    """The results with no disk cache at all."""
    report, _ = run(cwd, env=environment(PULLBACK_CACHE="0"))
    assert report["stats"]["cache_hits"] == report["stats"]["cache_misses"] == 0
    return {k: report[k] for k in ("value", "grad", "plain")}


def results(report):
    return {k: report[k] for k in ("value", "grad", "plain")}


def artifacts(folder):
    return sorted(Path(folder).glob("*.pbc"))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "run.py").write_text(RUN)
    return tmp_path


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# ----- loading ------------------------------------------------------------------------------

def test_compile_then_call_loads_artifacts_without_parsing(project):
    expected = reference(project)
    proc = cli(project, "compile", "model")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 of 1 function (4 variants: 4 compiled, 0 up to date" in proc.stdout
    names = [p.name for p in artifacts(project / "__pullback_cache__")]
    assert names == ["model.f.0.pbc", "model.f.1.pbc", "model.helper.0.pbc",
                     "model.helper.1.pbc"]

    report, stderr = run(project, "--no-parse")
    assert results(report) == expected
    assert stderr == ""
    stats = report["stats"]
    assert stats["functions_transformed"] == 0
    assert stats["kernels_compiled"] == 0
    assert stats["kernels_loaded"] == 2   # f's tanh kernel, plain and differentiated
    assert stats["cache_hits"] == ALL_VARIANTS
    assert stats["cache_misses"] == 0


def test_a_first_jit_call_fills_the_cache(project):
    first, _ = run(project)
    assert first["stats"]["functions_transformed"] == ALL_VARIANTS
    assert first["stats"]["cache_misses"] == ALL_VARIANTS
    assert first["stats"]["artifacts_written"] == ALL_VARIANTS
    second, _ = run(project)
    assert second["stats"]["cache_hits"] == ALL_VARIANTS
    assert second["stats"]["functions_transformed"] == 0
    assert results(second) == results(first)
    proc = cli(project, "compile", "model.py")
    assert "0 compiled, 4 up to date" in proc.stdout and "0 B written" in proc.stdout


def test_cache_dir_variable_moves_the_artifacts(project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cache")
    env = environment(PULLBACK_CACHE_DIR=str(elsewhere))
    assert cli(project, "compile", "model", env=env).returncode == 0
    assert not (project / "__pullback_cache__").exists()
    assert len(artifacts(elsewhere / "artifacts")) == ALL_VARIANTS
    report, _ = run(project, env=env)
    assert report["stats"]["cache_hits"] == ALL_VARIANTS


# ----- staleness ----------------------------------------------------------------------------

def test_editing_the_function_recompiles_it(project):
    assert cli(project, "compile", "model").returncode == 0
    edit(project / "model.py", "b * 0.01", "b * 0.02")
    expected = reference(project)
    report, stderr = run(project)
    assert results(report) == expected
    stats = report["stats"]
    assert stats["functions_transformed"] == 2   # f's two variants; helper is unchanged
    assert stats["cache_stale"] == 2 and stats["cache_hits"] == 2
    again, _ = run(project, "--no-parse")
    assert again["stats"]["cache_hits"] == ALL_VARIANTS
    assert stderr == ""


def test_editing_a_called_helper_recompiles_its_callers(project):
    assert cli(project, "compile", "model").returncode == 0
    edit(project / "model.py", "return x * 3", "return x * 5")
    expected = reference(project)
    report, _ = run(project)
    assert results(report) == expected
    assert report["stats"]["functions_transformed"] == ALL_VARIANTS
    assert report["stats"]["cache_stale"] == ALL_VARIANTS


def test_rebinding_a_global_the_function_calls_recompiles_it(project):
    assert cli(project, "compile", "model").returncode == 0
    edit(project / "model.py", "from pullback import nd\n",
         "from pullback import nd\nnd_tanh = nd.tanh\n")
    edit(project / "model.py", "nd.tanh(b * 0.01)", "nd_tanh(b * 0.01)")
    assert results(run(project)[0]) == reference(project)
    edit(project / "model.py", "nd_tanh = nd.tanh", "nd_tanh = nd.sigmoid")   # f's text unchanged
    expected = reference(project)
    report, _ = run(project)
    assert results(report) == expected
    assert report["stats"]["cache_stale"] == 2


def test_rebinding_an_attribute_of_another_module_recompiles(project):
    (project / "config.py").write_text("from pullback import nd\n\nACT = nd.tanh\n")
    edit(project / "model.py", "import pullback as pb\n", "import config\nimport pullback as pb\n")
    edit(project / "model.py", "nd.tanh(b * 0.01)", "config.ACT(b * 0.01)")
    assert cli(project, "compile", "model").returncode == 0
    edit(project / "config.py", "nd.tanh", "nd.sigmoid")   # model.py unchanged
    expected = reference(project)
    report, _ = run(project)
    assert results(report) == expected
    assert report["stats"]["cache_stale"] == 2


# ----- integrity ----------------------------------------------------------------------------

def test_corrupted_or_truncated_artifacts_warn_once_and_are_rebuilt(project):
    expected = reference(project)
    assert cli(project, "compile", "model").returncode == 0
    folder = project / "__pullback_cache__"
    truncated = folder / "model.f.1.pbc"
    truncated.write_bytes(truncated.read_bytes()[:200])
    tampered = folder / "model.f.0.pbc"   # still valid JSON, same length: only the checksum knows
    tampered.write_bytes(tampered.read_bytes().replace(b"tanh", b"sinh"))
    forged = folder / "model.helper.1.pbc"   # a valid checksum over a source that is not ours
    payload = cache.decode(forged.read_bytes())
    forged.write_bytes(cache.encode({**payload, "source": "def helper_forward(:\n"}))

    report, stderr = run(project)
    assert results(report) == expected
    assert stderr.count("CacheWarning") == 3, stderr
    assert all(stderr.count(str(path)) == 1 for path in (truncated, tampered, forged))
    assert "corrupted or truncated" in stderr and "cannot be used (SyntaxError" in stderr
    assert report["stats"]["cache_corrupt"] == 3
    assert report["stats"]["functions_transformed"] == 3

    again, stderr = run(project, "--no-parse")
    assert stderr == "" and again["stats"]["cache_hits"] == ALL_VARIANTS


def test_two_concurrent_compiles_leave_no_torn_file(project):
    many = "".join(f"\n\n@pb.compile\ndef g{k}(x, y):\n    return nd.exp(x * {k}) * y + x\n"
                   for k in range(12))
    (project / "model.py").write_text(MODEL + many)
    command = [sys.executable, "-m", "pullback", "compile", "model"]
    procs = [subprocess.Popen(command, cwd=project, env=environment(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folder = project / "__pullback_cache__"
    files = artifacts(folder)
    assert len(files) == ALL_VARIANTS + 12 * 2
    assert all(cache.decode(f.read_bytes()) is not None for f in files)
    assert sorted(p.name for p in folder.iterdir() if p.name != "kernels") == [
        f.name for f in files]   # no .tmp left
    kernels = list((folder / "kernels").iterdir())   # native object code, beside the source
    assert kernels and all(k.suffix == ".o" for k in kernels)
    report, stderr = run(project, "--no-parse")
    assert stderr == "" and report["stats"]["cache_hits"] == ALL_VARIANTS


# ----- where the cache may not be used ------------------------------------------------------

def test_an_unwritable_cache_directory_falls_back_to_memory(project):
    expected = reference(project)
    blocker = project / "not-a-directory"
    blocker.write_text("")
    env = environment(PULLBACK_CACHE_DIR=str(blocker / "cache"))
    report, stderr = run(project, env=env)
    assert results(report) == expected
    assert stderr.count("CacheWarning") == 1, stderr
    assert "kept in memory only" in stderr
    assert report["stats"]["functions_transformed"] == ALL_VARIANTS
    assert report["stats"]["bytes_written"] == 0
    proc = cli(project, "compile", "model", env=env)
    assert proc.returncode == 1 and "artifacts were not written" in proc.stdout


def read_only_prefix(folder):
    """A command prefix under which ``folder`` cannot be written (None: not possible here)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    # root writes through permissions: mount the folder read-only in a private namespace
    prefix = ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', folder]
    probe = subprocess.run([*prefix, "sh", "-c", f'touch "{folder}/probe"'],
                           capture_output=True, check=False)
    return prefix if probe.returncode != 0 and not (folder / "probe").exists() else None


def test_a_read_only_cache_directory_falls_back_to_memory(project):
    folder = project / "__pullback_cache__"
    folder.mkdir()
    prefix = read_only_prefix(folder)
    if prefix is None:
        pytest.skip("cannot make a directory read-only for root here")
    proc = subprocess.run([*prefix, sys.executable, "run.py"], cwd=project, env=environment(),
                          capture_output=True, text=True, timeout=120, check=False)
    folder.chmod(0o755)
    assert proc.returncode == 0, proc.stderr
    report, stderr = json.loads(proc.stdout.splitlines()[-1]), proc.stderr
    assert stderr.count("CacheWarning") == 1 and "kept in memory only" in stderr, stderr
    assert report["stats"]["functions_transformed"] == ALL_VARIANTS
    assert artifacts(folder) == []


def test_a_cache_directory_writable_by_others_is_ignored(project):
    assert cli(project, "compile", "model").returncode == 0
    folder = project / "__pullback_cache__"
    before = {p.name: p.read_bytes() for p in artifacts(folder)}
    folder.chmod(0o777)
    report, stderr = run(project)
    assert stderr.count("CacheWarning") == 1, stderr
    assert "writable by other users" in stderr
    assert report["stats"]["cache_hits"] == 0
    assert report["stats"]["functions_transformed"] == ALL_VARIANTS
    assert {p.name: p.read_bytes() for p in artifacts(folder)} == before   # not written either


def test_an_artifact_writable_by_others_is_not_loaded(project):
    assert cli(project, "compile", "model").returncode == 0
    loose = project / "__pullback_cache__" / "model.f.1.pbc"
    loose.chmod(0o666)
    report, stderr = run(project)
    assert stderr.count("CacheWarning") == 1 and "not loading" in stderr, stderr
    assert report["stats"]["functions_transformed"] == 1 and report["stats"]["cache_hits"] == 3


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the directory away")
def test_a_cache_directory_owned_by_another_user_is_ignored(project):
    assert cli(project, "compile", "model").returncode == 0
    os.chown(project / "__pullback_cache__", 65534, 65534)
    report, stderr = run(project)
    assert "owned by uid 65534" in stderr and stderr.count("CacheWarning") == 1
    assert report["stats"]["cache_hits"] == 0


def test_cache_can_be_turned_off(project):
    report, _ = run(project, env=environment(PULLBACK_CACHE="0"))
    assert report["stats"]["functions_transformed"] == ALL_VARIANTS
    assert not (project / "__pullback_cache__").exists()


# ----- the command line ---------------------------------------------------------------------

PACKAGE = {
    "pkg/__init__.py": "",
    "pkg/models.py": textwrap.dedent('''\
        import pullback as pb
        from pullback import nd


        @pb.compile
        def square(x):
            return x * x


        @pb.compile(signatures=[("float64", None)])
        def scaled(x, s):
            return nd.sin(x) * s
    '''),
    "pkg/sub/__init__.py": "",
    "pkg/sub/more.py": textwrap.dedent('''\
        import pullback as pb


        @pb.compile
        def fine(x):
            return x + 1


        @pb.compile
        def unsupported(x):
            try:
                y = x * 2
            except ValueError:
                y = x
            return y
    '''),
}


@pytest.fixture
def package(tmp_path):
    for name, text in PACKAGE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_cli_compiles_a_package_recursively_and_reports_failures(package):
    proc = cli(package, "compile", "pkg")
    assert proc.returncode == 1
    out = proc.stdout
    assert "pullback compile: 3 of 4 functions" in out
    assert "1 failure:" in out
    where = package / "pkg" / "sub" / "more.py"
    assert f"{where}:11: pkg.sub.more.unsupported: CompileError" in out
    assert "try/except" in out
    assert "[4/4]" in out and "FAILED" in out   # plain progress lines: not a terminal
    assert "\r" not in out
    models = [p.name for p in artifacts(package / "pkg" / "__pullback_cache__")]
    # signatures: plain forward and (x differentiated, s not) only
    assert models == ["models.scaled.00.pbc", "models.scaled.10.pbc",
                      "models.square.0.pbc", "models.square.1.pbc"]
    assert len(artifacts(package / "pkg" / "sub" / "__pullback_cache__")) == 2

    proc = cli(package, "compile", "pkg/models.py")
    assert proc.returncode == 0 and "0 compiled, 4 up to date" in proc.stdout


def test_cli_exit_codes(package):
    missing = cli(package, "compile", "no_such_module")
    assert missing.returncode == 1 and "no_such_module: ModuleNotFoundError" in missing.stdout
    assert cli(package, "compile").returncode == 2          # usage error
    assert cli(package, "frobnicate").returncode == 2
    (package / "broken.py").write_text("import pullback\n\nx = 1 / 0\n")
    broken = cli(package, "compile", "broken.py")
    assert broken.returncode == 1
    assert f"{package / 'broken.py'}:3: broken.py: ZeroDivisionError" in broken.stdout


def test_cli_cache_info_clear_and_show(package):
    assert cli(package, "compile", "pkg.models").returncode == 0
    info = cli(package, "cache", "info")
    assert info.returncode == 0
    assert "pkg.models.square [differentiated: 1]" in info.stdout
    assert info.stdout.splitlines()[-1].startswith("4 artifacts, ")
    (package / "pkg" / "__pullback_cache__" / "models.square.1.pbc").write_bytes(b"PBC1 0\n{}")
    assert "CORRUPT" in cli(package, "cache", "info", "pkg").stdout

    show = cli(package, "show", "pkg/models.py:scaled", "--argnums", "0", "--ir")
    assert show.returncode == 0 and "def scaled_adjoint(_stack, result_grad):" in show.stdout
    assert "(forward, float32) ----" in show.stdout and "(adjoint, float64) ----" in show.stdout
    assert "define void @\"pb_kernel_" in show.stdout

    cleared = cli(package, "cache", "clear", "pkg.models")
    assert cleared.returncode == 0 and "removed 4 artifacts" in cleared.stdout
    assert not (package / "pkg" / "__pullback_cache__").exists()
    assert "0 artifacts" in cli(package, "cache", "info").stdout


def test_console_script(package):
    script = Path(sys.executable).with_name("pullback")
    if not script.exists():
        pytest.skip("the pullback console script is not installed")
    proc = subprocess.run([str(script), "compile", "pkg.models"], cwd=package,
                          env=environment(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0 and "2 of 2 functions" in proc.stdout


def test_progress_bar_on_a_terminal(package):
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "pullback", "compile", "pkg.models"],
                            cwd=package, env=environment(), stdout=follower,
                            stderr=subprocess.PIPE)
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        try:
            chunk = os.read(leader, 4096) if ready else b""
        except OSError:   # the terminal closed
            chunk = b""
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=60) == 0
    text = output.decode()
    assert "\r[" in text and "] 2/2" in text and "[1/2]" not in text
    assert "pullback compile: 2 of 2 functions" in text


# ----- in process ---------------------------------------------------------------------------

def test_signatures_are_checked_when_decorating():
    import pullback as pb

    with pytest.raises(ValueError, match="one entry per parameter"):
        pb.compile(signatures=[("float32",)])(lambda x, y: x * y)
    with pytest.raises(ValueError, match="'float32' or 'float64'"):
        pb.compile(signatures=[("int8",)])(lambda x: x)


def test_artifact_checksum_rejects_any_change():
    data = cache.encode({"format": cache.FORMAT, "source": "x = 1\n"})
    assert cache.decode(data)["source"] == "x = 1\n"
    assert cache.decode(data[:-1]) is None
    assert cache.decode(data.replace(b"x = 1", b"x = 2")) is None
    assert cache.decode(b"") is None


# ----- containers: a variant per structure, stored and loaded like any other -----------------

TREE_MODEL = textwrap.dedent('''\
    import numpy as np
    import pullback as pb


    def predict(params, X):
        return np.tanh(np.dot(X, params["w"]) + params["b"])


    @pb.compile(signatures=[({"w": "float64", "b": "float64"}, None)])
    def loss(params, X):
        return np.sum(predict(params, X) ** 2)
''')

TREE_RUN = textwrap.dedent('''\
    import json, sys
    import numpy as np
    import pullback as pb
    import pullback.compiler.api as api

    if "--no-parse" in sys.argv:
        def refuse(fn):
            raise AssertionError(f"parsed {fn.__qualname__}")
        api.parse_function = refuse
    import model

    X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
    params = {"w": np.array([0.5, -0.25, 1.5]), "b": 0.125}
    value, grads = pb.value_and_grad(model.loss, argnums=0)(params, X)
    print(json.dumps({"value": float(value), "grad": {"w": grads["w"].tolist(),
                      "b": float(grads["b"])}, "plain": float(model.loss(params, X)),
                      "stats": pb.stats()}))
''')


def test_a_container_signature_is_built_ahead_of_time_and_loaded(tmp_path):
    (tmp_path / "model.py").write_text(TREE_MODEL)
    (tmp_path / "run.py").write_text(TREE_RUN)
    expected = reference(tmp_path)
    proc = cli(tmp_path, "compile", "model")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report, stderr = run(tmp_path, "--no-parse")
    assert results(report) == expected and stderr == ""
    stats = report["stats"]
    # loss and its callee predict, each for params' structure (and loss plain)
    assert stats["functions_transformed"] == 0
    assert stats["cache_hits"] >= 3 and stats["cache_misses"] == 0
    # the gradient itself, against central differences
    X = [[-1.0 + 2.0 * (3 * i + j) / 11 for j in range(3)] for i in range(4)]
    import numpy as np
    X = np.array(X)

    def loss(w, b):
        return np.sum(np.tanh(X @ w + b) ** 2)
    w, b, h = np.array([0.5, -0.25, 1.5]), 0.125, 1e-6
    fd_w = [(loss(w + h * e, b) - loss(w - h * e, b)) / (2 * h) for e in np.eye(3)]
    fd_b = (loss(w, b + h) - loss(w, b - h)) / (2 * h)
    np.testing.assert_allclose(expected["grad"]["w"], fd_w, rtol=1e-7)
    np.testing.assert_allclose(expected["grad"]["b"], fd_b, rtol=1e-7)


def test_signatures_name_what_a_container_entry_may_hold():
    import numpy as np
    import pullback as pb

    def f(p, x):
        return np.sum(p["w"] * x)
    with pytest.raises(ValueError, match="a dict, list or tuple of them"):
        pb.compile(signatures=[({"w": "float16"}, None)])(f)
    with pytest.raises(ValueError, match="a dict, list or tuple of them"):
        pb.compile(signatures=[({"w": None}, None)])(f)


def test_an_artifact_of_another_format_is_stale_not_corrupt(project):
    """Upgrading pullback: artifacts it wrote in its old format are rebuilt silently."""
    assert cli(project, "compile", "model").returncode == 0
    for path in artifacts(project / "__pullback_cache__"):
        payload = cache.decode(path.read_bytes())
        payload["format"] = cache.FORMAT - 1
        path.write_bytes(cache.encode(payload))
    info = cli(project, "cache", "info", "model")
    assert "another pullback's format" in info.stdout and "CORRUPT" not in info.stdout
    report, stderr = run(project)
    assert stderr == ""
    assert report["stats"]["cache_stale"] == ALL_VARIANTS
    assert report["stats"]["cache_corrupt"] == 0
    assert results(report) == reference(project)
