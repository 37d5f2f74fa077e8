"""Step 6, codegen: generated source -> a real file -> live functions.

Guarantees: the generated module is written to a file (atomically) and
compiled with that file name, so tracebacks and ``pdb`` show the generated
lines; its globals hold only the runtime helpers (``support``, ``ops``,
``vjp``), the objects the user's free names referred to at compile time (as
numba does, functions and modules are bound once, when the function is compiled;
arrays and numbers are implicit inputs, parameters read at each call) and the
variants of the user functions it calls.
"""

from __future__ import annotations

import hashlib
import linecache
import os
import secrets
import tempfile
from pathlib import Path

from pullback.runtime import support


def generated_dir() -> Path:
    root = os.environ.get("PULLBACK_CACHE_DIR")
    base = Path(root) if root else Path(tempfile.gettempdir()) / f"pullback-{os.getuid()}"
    path = base / "generated"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` in one step (generated code here, artifacts in cache).

    The temporary file has an unpredictable name and is created exclusively, never
    through a symlink: a file planted in a shared folder cannot redirect the write."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load(source: str, stem: str, names: dict) -> dict:
    """Execute ``source`` from a file named after ``stem``; returns its namespace."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"{stem}.{digest}.py"
    try:
        path = generated_dir() / filename
        if not path.exists() or path.read_text() != source:
            write_atomically(path, source.encode())
        filename = str(path)
    except OSError:
        filename = f"<pullback-generated {filename}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": f"pullback_generated.{stem}", "support": support,
                 "ops": support.ops, "npops": support.npops, "vjp": support.vjp}
    namespace.update(names)
    exec(compile(source, filename, "exec"), namespace)
    return namespace
