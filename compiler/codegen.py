"""Step 6, codegen: generated source -> a real file -> live functions.

Guarantees: the generated module is written to a file (atomically, through
``runtime/safefile.py``, in ``generated/`` under the cache root) and
compiled with that file name, so tracebacks and ``pdb`` show the generated
lines (its code object is kept beside it, as a ``.pyc`` is, for the next process: a
``.code`` file tagged with this interpreter's bytecode magic number and bound by a
digest to the source and file name, so a stale or foreign one is compiled again); its globals hold only the runtime helpers (``support``, ``ops``,
``vjp``), the objects the user's free names referred to at compile time (as
numba does, functions and modules are bound once, when the function is compiled;
arrays and numbers are implicit inputs, parameters read at each call) and the
variants of the user functions it calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import linecache
import marshal
import sys
import warnings

from pullback.runtime import safefile, support


def generated_dir() -> safefile.Location:
    """Where generated modules are written: ``generated/`` under the cache root."""
    return safefile.Location(safefile.default_root(), ("generated",))


def load(source: str, stem: str, names: dict) -> dict:
    """Execute ``source`` from a file named after ``stem``; returns its namespace."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"{stem}.{digest}.py"
    code = None
    try:
        filename, code = _write(generated_dir(), filename, source.encode())
    except OSError:   # no file: tracebacks still show the source, through linecache
        filename = f"<pullback-generated {filename}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": f"pullback_generated.{stem}", "support": support,
                 "ops": support.ops, "npops": support.npops, "mathops": support.mathops,
                 "vjp": support.vjp, "jvp": support.jvp}
    namespace.update(names)
    exec(code or compile(source, filename, "exec"), namespace)
    if "support.scope_enter(" in source:   # with blocks: closed when the code raises
        for key, value in list(namespace.items()):
            if callable(value) and getattr(value, "__module__", None) == namespace["__name__"]:
                namespace[key] = support.closes_scopes(value)
    return namespace


_WARNED: set = set()


def _write(location: safefile.Location, name: str, data: bytes) -> tuple:
    """``(path, code)``: the path of file ``name`` holding ``data`` in ``location``
    (written unless it is already there) and its compiled code (from the ``.code`` file
    beside it when that is this source's, else compiled and stored there).  Something
    untrusted in the way is warned about once, then raised."""
    try:
        with location.open(create=True) as folder:
            try:
                current = folder.read(name)
            except safefile.Unsafe as exc:   # a FIFO, a symlink: replaced
                _warn_once(name, f"pullback: replacing an untrusted generated file: {exc}")
                current = None
            if current != data:
                folder.write(name, data)
            path = str(location.path / name)
            return path, _code(folder, name, data, path)
    except safefile.Unsafe as exc:
        _warn_once(str(location), f"pullback: not writing generated code to {location}: {exc}; "
                   "it is kept in memory only")
        raise


_CODE_MAGIC = b"PBCODE1\n"


def _code(folder, name: str, data: bytes, path: str):
    """The code object of source ``data`` compiled as file ``path``: unmarshalled from
    ``<name>.<cache tag>.code`` when its header (our magic, the interpreter's bytecode
    magic number, a SHA-256 of the path and the source) matches, else compiled and
    stored there (``compile`` is most of loading a cached variant)."""
    stored = f"{name[:-3]}.{sys.implementation.cache_tag}.code"
    header = _CODE_MAGIC + importlib.util.MAGIC_NUMBER + hashlib.sha256(
        path.encode() + b"\0" + data).digest()
    try:
        blob = folder.read(stored)
    except OSError:   # not a regular file of ours (Unsafe), unreadable: compiled again
        blob = None
    if blob is not None and blob.startswith(header):
        try:
            return marshal.loads(blob[len(header):])
        except (EOFError, ValueError, TypeError):
            pass
    code = compile(data.decode(), path, "exec")
    try:
        folder.write(stored, header + marshal.dumps(code))
    except OSError:
        pass   # the next process compiles it again
    return code


def _warn_once(subject: str, message: str) -> None:
    if subject not in _WARNED:
        _WARNED.add(subject)
        warnings.warn(message, safefile.CacheWarning, stacklevel=4)
