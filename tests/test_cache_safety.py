"""Issue 17: attacks on the on-disk caches (artifacts, generated code, kernel objects, the
CLI's ``cache clear``) are cache misses or refusals, never a hang, a crash, a write
through someone else's folder or the loss of a user's files.

Each victim runs in a fresh interpreter with a timeout, so a regression (a hang on a
FIFO, a segfault) fails its test instead of stopping the suite.  Files "planted by
another user" are made by a process running as ``nobody`` (uid 65534), which needs
root; those tests skip otherwise.
"""

import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from pullback.compiler import cache
from pullback.runtime import native, safefile

ROOT = str(Path(__file__).resolve().parents[1])
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="planting files as another user (nobody) needs root")
BUILD_ID = cache.build_fingerprint()

MODEL = textwrap.dedent('''\
    import pullback as pb
    from pullback import nd


    @pb.compile
    def f(a):
        return nd.tanh(a * 2.0) * a + nd.exp(a)
''')

RUN = textwrap.dedent('''\
    import json, warnings
    warnings.simplefilter("always")
    import pullback as pb
    from pullback import nd, autograd as ag
    import model

    a = nd.array([0.5, -1.0, 2.0], dtype="float64")
    a.attach_grad()
    with ag.record():
        c = model.f(a)
    c.backward()
    print(json.dumps({"value": c.asnumpy().tolist(), "grad": a.grad.asnumpy().tolist(),
                      "stats": pb.stats()}))
''')


def environment(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULLBACK_CACHE")}
    env.update(PULLBACK_BUILD_ID=BUILD_ID, PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def victim(command, cwd, env, timeout=90):
    """Run ``command``; (stdout, stderr).  A hang or a crash fails the test."""
    try:
        proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} hung (killed after {timeout} s)")
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stderr}"
    return proc.stdout, proc.stderr


def run(project, **env):
    """The victim program: (its report, its stderr)."""
    out, err = victim([sys.executable, "run.py"], project, environment(**env))
    return json.loads(out.splitlines()[-1]), err


def cli(project, *args, **env):
    return victim([sys.executable, "-m", "pullback", *args], project, environment(**env))


def as_nobody(*command):
    """Run a shell command as uid/gid 65534 (the attacker)."""
    subprocess.run(["sh", "-c", *command], user=NOBODY, group=NOBODY, extra_groups=[],
                   check=True, timeout=30)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "run.py").write_text(RUN)
    return tmp_path


@pytest.fixture
def expected(project):
    report, _ = run(project, PULLBACK_CACHE="0")
    return {k: report[k] for k in ("value", "grad")}


def results(report):
    return {k: report[k] for k in ("value", "grad")}


@pytest.fixture
def shared():
    """A world-writable sticky folder like /tmp that another user can reach."""
    folder = Path(tempfile.mkdtemp(prefix="pb-shared-", dir="/tmp"))
    folder.chmod(0o1777)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def files_in(folder):
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*"))


# ----- the safe-file layer itself ------------------------------------------------------------

def test_folders_are_created_private_and_reads_refuse_symlinks_and_fifos(tmp_path):
    location = safefile.Location(tmp_path / "root", ("a", "b"))
    assert location.open() is None                       # readers never create
    with location.open(create=True) as folder:
        folder.write("x", b"data")
        os.mkfifo(folder.path / "fifo")
        os.symlink(folder.path / "x", folder.path / "link")
        assert folder.read("x") == b"data" and folder.read("missing") is None
        for name, why in (("fifo", "not a regular file"), ("link", "symbolic link")):
            with pytest.raises(safefile.Unsafe, match=why):
                folder.read(name)
    for path in (tmp_path / "root", tmp_path / "root" / "a", tmp_path / "root" / "a" / "b"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


@pytest.mark.parametrize("attack", ["root is a symlink", "middle is a symlink",
                                    "root writable by others", "parent writable by others",
                                    "root owned by another user"])
def test_every_folder_of_the_chain_is_verified(tmp_path, attack):
    root = tmp_path / "parent" / "root"
    (root / "a").mkdir(parents=True, mode=0o700)
    if attack == "root is a symlink":
        root.rename(tmp_path / "real")
        root.symlink_to(tmp_path / "real")
    elif attack == "middle is a symlink":
        (root / "a").rename(tmp_path / "real")
        (root / "a").symlink_to(tmp_path / "real")
    elif attack == "root writable by others":
        root.chmod(0o777)
    elif attack == "parent writable by others":
        root.parent.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("giving a folder to another user needs root")
        os.chown(root, NOBODY, NOBODY)
    with pytest.raises(safefile.Unsafe):
        safefile.Location(root, ("a",)).open(create=True)
    root.parent.chmod(0o1777)
    if attack == "parent writable by others":   # a sticky parent, like /tmp, is fine
        safefile.Location(root, ("a",)).open().close()


def test_writes_never_follow_planted_symlinks(tmp_path):
    victim_file = tmp_path / "victim.txt"
    victim_file.write_text("precious")
    with safefile.Location(tmp_path / "cache").open(create=True) as folder:
        for pid in range(os.getpid() - 5, os.getpid() + 50):   # the old, predictable names
            (folder.path / f".mod.py.{pid}.tmp").symlink_to(victim_file)
        (folder.path / "mod.py").symlink_to(victim_file)
        folder.write("mod.py", b"x = 1\n")
        assert (folder.path / "mod.py").read_text() == "x = 1\n"
        assert not (folder.path / "mod.py").is_symlink()
    assert victim_file.read_text() == "precious"


# ----- generated code (item 1) ---------------------------------------------------------------

@needs_root
def test_generated_code_is_not_written_into_a_cache_root_another_user_created(
        project, expected, shared):
    # the attack: someone pre-creates /tmp/pullback-<victim's uid>/ (here under
    # $TMPDIR, the default root's parent) and opens it up for symlink games
    root = shared / f"pullback-{os.geteuid()}"
    as_nobody(f"mkdir -m 0777 {root} {root}/generated {root}/kernels")
    report, stderr = run(project, TMPDIR=str(shared))
    assert results(report) == expected
    assert files_in(root) == ["generated", "kernels"]   # nothing written there
    owners = {p.stat().st_uid for p in root.rglob("*")} | {root.stat().st_uid}
    assert owners == {NOBODY}
    assert "owned by uid 65534" in stderr and "kept in memory only" in stderr, stderr


@pytest.mark.parametrize("attack", ["generated/ is a symlink", "root writable by others"])
def test_generated_code_is_not_written_through_an_untrusted_folder(
        project, expected, tmp_path_factory, attack):
    cache_root = tmp_path_factory.mktemp("cache")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    if attack == "generated/ is a symlink":
        (cache_root / "generated").symlink_to(elsewhere)
    else:
        cache_root.chmod(0o777)
    report, stderr = run(project, PULLBACK_CACHE_DIR=str(cache_root))
    assert results(report) == expected
    assert files_in(elsewhere) == []
    assert not list(cache_root.rglob("*.py"))
    assert "not writing generated code" in stderr, stderr


# ----- FIFOs (item 2) ------------------------------------------------------------------------

def test_a_fifo_at_an_artifact_path_is_a_cache_miss_not_a_hang(project, expected):
    cli(project, "compile", "model")
    artifact = project / "__pullback_cache__" / "model.f.1.pbc"
    artifact.unlink()
    os.mkfifo(artifact)
    report, stderr = run(project)
    assert results(report) == expected
    assert "not a regular file" in stderr and stderr.count("CacheWarning") == 1, stderr
    assert report["stats"]["cache_misses"] == report["stats"]["functions_transformed"] == 1
    assert stat.S_ISREG(artifact.lstat().st_mode)                   # rebuilt in its place
    info, _ = cli(project, "cache", "info")
    os.unlink(artifact)
    os.mkfifo(artifact)
    info, _ = cli(project, "cache", "info")                         # the CLI does not hang
    assert "model.f.1.pbc  UNSAFE" in info and "not a regular file" in info


def test_a_fifo_at_a_generated_module_path_is_replaced_not_a_hang(
        project, expected, tmp_path_factory):
    cache_root = tmp_path_factory.mktemp("cache")
    report, _ = run(project, PULLBACK_CACHE_DIR=str(cache_root))
    modules = sorted((cache_root / "generated").glob("*.py"))
    assert modules
    for module in modules:
        module.unlink()
        os.mkfifo(module)
    report, stderr = run(project, PULLBACK_CACHE_DIR=str(cache_root))
    assert results(report) == expected
    assert "replacing an untrusted generated file" in stderr, stderr
    assert all(stat.S_ISREG(m.lstat().st_mode) for m in modules)


# ----- cache clear (item 3) ------------------------------------------------------------------

def _user_folder(folder):
    """A folder of someone's own files, some with names the cache uses."""
    (folder / "kernels").mkdir(parents=True, exist_ok=True)
    files = {"precious.pbc": b"my notes", "notes.txt": b"keep me",
             "kernels/weights.bin": b"\x00" * 64,
             f"kernels/{'a' * 64}.o": b"my object file"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def test_cache_clear_never_follows_a_symlinked_cache_folder(project, tmp_path_factory):
    cli(project, "compile", "model")
    user = tmp_path_factory.mktemp("user")
    files = _user_folder(user)
    real = project / "__pullback_cache__"
    for artifact in real.glob("*.pbc"):   # even files in the cache's own format survive
        (user / artifact.name).write_bytes(artifact.read_bytes())
        files[artifact.name] = artifact.read_bytes()
    subprocess.run(["rm", "-rf", str(real)], check=True)
    real.symlink_to(user)                 # e.g. unpacked from someone's tarball
    out, _ = cli(project, "cache", "clear")
    assert "skipped" in out and "symbolic link" in out, out
    assert {name: (user / name).read_bytes() for name in files} == files
    out, _ = cli(project, "cache", "clear", "model.py")
    assert "symbolic link" in out and {n: (user / n).read_bytes() for n in files} == files


def test_cache_clear_removes_only_its_own_files(project):
    cli(project, "compile", "model")
    folder = project / "__pullback_cache__"
    ours = sorted(p.name for p in folder.glob("*.pbc"))
    assert ours
    files = _user_folder(folder)
    our_object = folder / "kernels" / f"{'b' * 64}.o"
    our_object.write_bytes(native.OBJECT_MAGIC + bytes(40))
    leftover = folder / f".{ours[0]}.0123456789abcdef.tmp"
    leftover.write_bytes(b"PBC1 half-writ")
    out, _ = cli(project, "cache", "clear")
    assert f"removed {len(ours) + 1} artifacts" in out, out
    assert {name: (folder / name).read_bytes() for name in files} == files
    assert not our_object.exists() and not leftover.exists()
    assert not list(folder.glob("model.*.pbc"))


@needs_root
def test_cache_clear_keeps_files_of_another_user(project):
    cli(project, "compile", "model")
    folder = project / "__pullback_cache__"
    theirs = folder / "model.f.1.pbc"
    os.chown(theirs, NOBODY, NOBODY)
    out, _ = cli(project, "cache", "clear")
    assert theirs.exists() and folder.is_dir(), out
    assert not (folder / "model.f.0.pbc").exists()


# ----- artifacts' folders (item 4) -----------------------------------------------------------

def test_a_symlinked_artifacts_folder_is_not_used(project, expected, tmp_path_factory):
    cache_root = tmp_path_factory.mktemp("cache")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (cache_root / "artifacts").symlink_to(elsewhere)
    report, stderr = run(project, PULLBACK_CACHE_DIR=str(cache_root))
    assert results(report) == expected
    assert report["stats"]["artifacts_written"] == 0 and files_in(elsewhere) == []
    assert "artifacts is a symbolic link" in stderr, stderr


@pytest.mark.parametrize("attack", ["writable by others", "owned by another user"])
def test_the_artifacts_parent_folder_is_verified(project, expected, tmp_path_factory, attack):
    cache_root = tmp_path_factory.mktemp("cache")
    (cache_root / "artifacts").mkdir(mode=0o700)
    if attack == "writable by others":
        cache_root.chmod(0o777)
    elif os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    else:
        os.chown(cache_root, NOBODY, NOBODY)
    report, stderr = run(project, PULLBACK_CACHE_DIR=str(cache_root))
    assert results(report) == expected
    assert report["stats"]["artifacts_written"] == 0
    assert list((cache_root / "artifacts").iterdir()) == []
    assert ("writable by other users" if attack == "writable by others"
            else "owned by uid 65534") in stderr, stderr


# ----- kernel object files (item 4) ----------------------------------------------------------

_KERNEL_CHILD = textwrap.dedent("""
    import json, sys, warnings
    import numpy as np
    from pullback.compiler.lower import lower
    from pullback.runtime.native import KernelSpec, compile_kernel
    spec = KernelSpec("float64", ("x",), (), (("f", sys.argv[1]),), ("f",), (("f", "sum"),))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernel = compile_kernel(spec, lower(spec))
    f, total = kernel(np.linspace(-2, 2, 1001))
    print(json.dumps({"how": kernel.loaded_from, "total": total,
                      "warnings": [str(w.message) for w in caught]}))
""")


def kernel_child(cache_root, expression):
    out, _ = victim([sys.executable, "-c", _KERNEL_CHILD, expression], ROOT,
                    {**os.environ, "PULLBACK_CACHE_DIR": str(cache_root)})
    return json.loads(out)


def kernel_file(cache_root, expression):
    from pullback.compiler.lower import lower
    spec = native.KernelSpec("float64", ("x",), (), (("f", expression),), ("f",),
                             (("f", "sum"),))
    return cache_root / "kernels" / f"{native._engine().cache_key(lower(spec))}.o"


def with_header(payload: bytes) -> bytes:
    return native._HEADER.pack(native.OBJECT_MAGIC, len(payload),
                               hashlib.sha256(payload).digest()) + payload


@pytest.mark.parametrize("forgery", ["random bytes", "another kernel's object",
                                     "writable by others"])
def test_a_forged_kernel_object_is_a_cache_miss_never_a_crash(tmp_path, forgery):
    expression = f"tanh(x) * {int.from_bytes(os.urandom(3), 'little')}.5"
    first = kernel_child(tmp_path, expression)
    assert first["how"] == "compiled" and first["warnings"] == []
    path = kernel_file(tmp_path, expression)
    if forgery == "random bytes":   # a valid header: length and checksum hold
        path.write_bytes(with_header(os.urandom(len(path.read_bytes()))))
    elif forgery == "another kernel's object":
        other = f"exp(x) * {int.from_bytes(os.urandom(3), 'little')}.5"
        kernel_child(tmp_path, other)
        path.write_bytes(kernel_file(tmp_path, other).read_bytes())
    else:
        path.chmod(0o666)
    second = kernel_child(tmp_path, expression)
    assert second["how"] == "compiled" and second["total"] == first["total"]
    reason = {"random bytes": "not a 64-bit little-endian ELF object",
              "another kernel's object": "does not define",
              "writable by others": "writable by other users"}[forgery]
    assert len(second["warnings"]) == 1 and reason in second["warnings"][0], second
    third = kernel_child(tmp_path, expression)
    assert third == {**first, "how": "cached"}


def test_object_files_are_checked_structurally():
    from pullback.compiler.lower import lower
    spec = native.KernelSpec("float64", ("x",), (), (("f", "x * 3.5"),), ("f",), ())
    text = lower(spec)
    symbol = native.kernel_symbol(text)
    blob = with_header(native._engine().object_code(text))
    assert native.object_file_problem(blob, symbol) is None
    assert "does not define" in native.object_file_problem(blob, "pb_kernel_0")
    truncated = with_header(blob[native._HEADER.size:][:-200])
    assert native.object_file_problem(truncated, symbol) is not None
