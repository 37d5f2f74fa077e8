"""Step 6, codegen: generated source -> a real file -> live functions.

Guarantees: the generated module is written to a file (atomically, through
``runtime/safefile.py``, in ``generated/`` under the cache root) and
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
import warnings

from pullback.runtime import safefile, support


def generated_dir() -> safefile.Location:
    """Where generated modules are written: ``generated/`` under the cache root."""
    return safefile.Location(safefile.default_root(), ("generated",))


def load(source: str, stem: str, names: dict) -> dict:
    """Execute ``source`` from a file named after ``stem``; returns its namespace."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    filename = f"{stem}.{digest}.py"
    try:
        filename = _write(generated_dir(), filename, source.encode())
    except OSError:   # no file: tracebacks still show the source, through linecache
        filename = f"<pullback-generated {filename}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"__name__": f"pullback_generated.{stem}", "support": support,
                 "ops": support.ops, "npops": support.npops, "mathops": support.mathops,
                 "vjp": support.vjp, "jvp": support.jvp}
    namespace.update(names)
    exec(compile(source, filename, "exec"), namespace)
    if "support.scope_enter(" in source:   # with blocks: closed when the code raises
        for key, value in list(namespace.items()):
            if callable(value) and getattr(value, "__module__", None) == namespace["__name__"]:
                namespace[key] = support.closes_scopes(value)
    return namespace


_WARNED: set = set()


def _write(location: safefile.Location, name: str, data: bytes) -> str:
    """The path of file ``name`` holding ``data`` in ``location`` (written unless it is
    already there).  Something untrusted in the way is warned about once, then raised."""
    try:
        with location.open(create=True) as folder:
            try:
                current = folder.read(name)
            except safefile.Unsafe as exc:   # a FIFO, a symlink: replaced
                _warn_once(name, f"pullback: replacing an untrusted generated file: {exc}")
                current = None
            if current != data:
                folder.write(name, data)
        return str(location.path / name)
    except safefile.Unsafe as exc:
        _warn_once(str(location), f"pullback: not writing generated code to {location}: {exc}; "
                   "it is kept in memory only")
        raise


def _warn_once(subject: str, message: str) -> None:
    if subject not in _WARNED:
        _WARNED.add(subject)
        warnings.warn(message, safefile.CacheWarning, stacklevel=4)
