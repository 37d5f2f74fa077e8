"""Ahead-of-time artifacts: the on-disk cache of compiled variants, its keys, its stats.

A *variant* (one function, one activity mask) compiles to generated Python
source that depends on neither dtypes nor shapes.  ``build`` is how
``pipeline.Variant`` gets its code: if a valid *artifact* of the variant is on
disk it loads the stored source -- no parse, no pipeline -- binding the names
the source reads again (the function's free names through its closure, globals
and builtins; its callees by module and qualified name); otherwise it runs the
pipeline and stores the result.  ``python -m pullback compile`` (see
``pullback/__main__.py``) calls ``precompile`` to fill the cache ahead of time.

**Where.**  ``__pullback_cache__/<file stem>.<qualname>.<mask>.pbc`` beside the
function's source file, like ``__pycache__``; with ``PULLBACK_CACHE_DIR`` set,
``$PULLBACK_CACHE_DIR/artifacts/<file stem>-<hash of its path>.<qualname>.<mask>.pbc``.
``PULLBACK_CACHE=0`` turns the disk cache off (functions still compile, in memory).

**Format.**  ``PBC1 <sha256 of the payload>\\n`` then the payload, JSON: the key,
the generated source, the names to bind, the callees with their source digests,
the kernel names.

Invariants:

- **Key.**  An artifact is used only if its key equals the one computed now from:
  the format version; pullback's version and a fingerprint of its installed
  files (sizes, mtimes; or ``$PULLBACK_BUILD_ID``); the Python and llvmlite
  versions; ``PULLBACK_FUSE``; the mask; the function's source text, file name,
  first line and bytecode; and what every name the function reads refers to,
  directly or as an attribute of a module it reads (a module by name, a user
  function by qualified name and source digest, another callable by qualified
  name, any other object by its type).  The source digest of each user function
  it calls, by any spelling, is stored and checked as well.  A callee is a
  variant of its own with its own artifact, checked the same way on its first
  call, so an edit anywhere down the call graph rebuilds every variant whose
  generated code could depend on it.  Anything else is stale: rebuilt and
  overwritten.  Native object code (CPU name and features, LLVM version, dtype)
  is keyed by ``runtime/native.py``'s own cache.
- **Integrity.**  A file that fails its checksum (truncated, corrupted) is
  reported once (``CacheWarning``), never executed, and rebuilt.
- **Trust.**  Every read and write goes through ``runtime/safefile.py``: the
  folder chain from the cache root is verified (ours, not writable by others, no
  symlinks; else one warning and the directory is ignored for the process); a
  file is read only if it is a regular file with the same properties, opened so
  that neither a symlink nor a FIFO can redirect or block it (otherwise one
  warning, and it is rebuilt and replaced).
- **Atomicity.**  A file is written under an unpredictable temporary name in its
  directory (``O_EXCL | O_NOFOLLOW``), then renamed into place: readers see the
  old file or the new one, never a torn one.
- **Fallback.**  If a directory cannot be created or written, one warning; the
  process keeps compiled code in memory only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import linecache
import os
import sys
import types
import warnings
from pathlib import Path

from pullback.runtime import fused, safefile

from . import codegen
from .bindings import _MISSING, attribute_lookup, followed
from .parse import ParsedFunction, parameter_count

FORMAT = 2   # 2: callee masks as mask codes (container structures stored)
MAGIC = b"PBC1"
SUFFIX = ".pbc"
FOLDER = "__pullback_cache__"
DEFAULT_DTYPES = ("float32", "float64")

_STATS = dict.fromkeys((
    "functions_transformed",   # variants run through the pipeline (parse ... codegen)
    "kernels_compiled",        # fused kernels those transforms produced
    "kernels_loaded",          # fused kernels of variants loaded from artifacts
    "cache_hits",              # variants loaded from a valid artifact
    "cache_misses",            # lookups that found no usable artifact (missing, stale, bad)
    "cache_stale",             # ... of which the artifact's key did not match
    "cache_corrupt",           # ... of which the artifact failed its checksum
    "artifacts_written",
    "bytes_written",
), 0)

CacheWarning = safefile.CacheWarning
_IGNORED_DIRECTORIES: dict[str, str] = {}   # directory -> why this process does not use it
_WARNED: set = set()


def stats() -> dict:
    """Counters of this process's compiler activity.

    Returns a new dict: ``functions_transformed`` (variants that went through the
    pipeline); ``kernels_compiled`` (fused kernels those transforms produced, plus
    native kernels LLVM optimised and compiled) and ``kernels_loaded`` (fused
    kernels of variants loaded from artifacts, plus native kernels linked from
    cached object code), with the native parts also as ``native_compiled`` and
    ``native_loaded``; ``cache_hits``, ``cache_misses`` (of which ``cache_stale``
    and ``cache_corrupt``), ``artifacts_written`` and ``bytes_written``.
    """
    counts = dict(_STATS)
    compiled, loaded = _native_counts()
    counts.update(native_compiled=compiled, native_loaded=loaded)
    counts["kernels_compiled"] += compiled
    counts["kernels_loaded"] += loaded
    return counts


def _native_counts() -> tuple:
    """(compiled, loaded-from-cache) native kernels of this process."""
    native = sys.modules.get("pullback.runtime.native")   # never imported just to count
    if native is None:
        return 0, 0
    if callable(getattr(native, "stats", None)):
        counts = native.stats()
        return counts.get("compiled", 0), counts.get("loaded", 0)
    # until runtime.native reports counts itself: each kernel knows where its code came from
    how = [getattr(k, "loaded_from", None) for k in getattr(native, "_KERNELS", {}).values()]
    return how.count("compiled"), how.count("cached")


def _warn_once(kind: str, subject, message: str) -> None:
    if (kind, str(subject)) not in _WARNED:
        _WARNED.add((kind, str(subject)))
        warnings.warn(message, CacheWarning, stacklevel=_caller_stacklevel())


_OUR_FOLDERS = tuple(str(Path(m.__file__).resolve().parent) + os.sep
                     for m in (codegen, fused, sys.modules["pullback"]))


def _caller_stacklevel() -> int:
    """``stacklevel`` for ``_warn_once``'s ``warn``: the first frame outside pullback."""
    level, frame = 2, sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_OUR_FOLDERS):
        level, frame = level + 1, frame.f_back
    return level


# ----- keys ----------------------------------------------------------------------------------

@functools.cache
def environment() -> str:
    """What every key shares in this process: versions and pullback's own files."""
    try:
        import llvmlite
        llvmlite_version = llvmlite.__version__
    except ImportError:
        llvmlite_version = None
    return json.dumps({"format": FORMAT, "pullback": sys.modules["pullback"].__version__,
                       "build": os.environ.get("PULLBACK_BUILD_ID") or build_fingerprint(),
                       "python": sys.implementation.cache_tag, "llvmlite": llvmlite_version})


def build_fingerprint() -> str:
    """A digest of the names, sizes and mtimes of pullback's own files.

    Any change to the compiler or runtime invalidates every artifact, also in a
    development checkout where the version does not change.  ``PULLBACK_BUILD_ID``
    replaces it (for packagers, and for tests run while the tree is being edited).
    """
    build = hashlib.sha256()
    for package in ("pullback", "pullback.compiler", "pullback.runtime"):
        folder = os.path.dirname(sys.modules[package].__file__)
        for name in sorted(n for n in os.listdir(folder) if n.endswith(".py")):
            info = os.stat(os.path.join(folder, name))
            build.update(f"{package}/{name} {info.st_size} {info.st_mtime_ns}\n".encode())
    return build.hexdigest()


def mask_bits(mask) -> str:
    """``(True, False)`` -> ``"10"``; a container argument's structure (a ``Kind``) is
    ``k`` and 12 hex digits of the hash of its (process-stable) repr."""
    return "".join(("1" if m else "0") if isinstance(m, (bool, int))
                   else "k" + _digest(repr(m))[:12] for m in mask)


def mask_code(mask) -> list:
    """``mask`` as JSON values, read back by ``mask_from_code``: a bool per argument, or
    ``{"tag", "items", "elem"}`` for a container's structure (keys keep their type)."""
    return [bool(m) if isinstance(m, (bool, int)) else _kind_code(m) for m in mask]


def mask_from_code(code) -> tuple:
    """The mask ``mask_code`` wrote (a TypeError/KeyError/ValueError for other data)."""
    return tuple(m if isinstance(m, bool) else _kind_from_code(m) for m in code)


def _kind_code(kind) -> dict:
    return {"tag": kind.tag,
            "items": None if kind.items is None
            else [[k, _kind_code(v)] for k, v in kind.items],
            "elem": None if kind.elem is None else _kind_code(kind.elem)}


def _kind_from_code(code):
    from .pytree import Kind   # not at import: the cache is imported by the facade early

    if not isinstance(code, dict) or not isinstance(code["tag"], str):
        raise ValueError(f"not a mask entry: {code!r}")
    items = code["items"]
    return Kind(code["tag"],
                None if items is None else tuple((k, _kind_from_code(v)) for k, v in items),
                None if code["elem"] is None else _kind_from_code(code["elem"]))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def function_source(fn) -> str | None:
    """The lines of ``fn``'s file from its first line (decorators included) to the end
    of its last expression; None if it has no source file.

    Cheaper than ``inspect.getsource`` (no tokenizer) and covers every line the
    parser could read code from.
    """
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    linecache.checkcache(code.co_filename)
    lines = linecache.getlines(code.co_filename)
    last = _last_line(code)
    if not lines or last > len(lines):
        return None
    return "".join(lines[code.co_firstlineno - 1:last])


def _last_line(code) -> int:
    if hasattr(code, "co_positions"):
        ends = [end for _, end, _, _ in code.co_positions() if end is not None]
    else:   # Python 3.10
        ends = [line for _, _, line in code.co_lines() if line is not None]
    ends.append(code.co_firstlineno)
    ends.extend(_last_line(c) for c in code.co_consts if isinstance(c, types.CodeType))
    return max(ends)


def _source_digest(fn) -> str | None:
    source = function_source(fn)
    return None if source is None else _digest(source)


def _resolver(fn) -> ParsedFunction:
    """Name resolution exactly as the parser does it, without parsing anything."""
    return ParsedFunction(fn, None, "", 0, 0, [])


def _names_read(code) -> set:
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_read(const)
    return names


def _compiled_class():
    from .api import CompiledFunction  # not at import: api imports pipeline imports us
    return CompiledFunction


def _is_user_function(obj) -> bool:
    module = getattr(obj, "__module__", "") or ""
    return isinstance(obj, types.FunctionType) and not module.startswith(("pullback", "numpy"))


def _describe(obj) -> str:
    """What an object is, as far as the generated code could depend on it."""
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    if isinstance(obj, _compiled_class()):
        obj = obj.fn
    if _is_user_function(obj):
        return f"function {obj.__module__}.{obj.__qualname__} {_source_digest(obj)}"
    if callable(obj):
        qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if qualname is not None:
            return f"callable {getattr(obj, '__module__', None)}.{qualname}"
    return f"value {type(obj).__module__}.{type(obj).__qualname__}"


def key(fn, mask, source: str) -> str:
    """The key of ``fn``'s variant for ``mask`` (see the module docstring)."""
    code = fn.__code__
    fuse = os.environ.get("PULLBACK_FUSE", "1") != "0"
    parts = [environment(), fuse, mask_bits(mask), os.path.basename(code.co_filename),
             code.co_firstlineno, source, code.co_code.hex(), _reads(fn)]
    return _digest(json.dumps(parts))


def _reads(fn) -> list:
    """What each name ``fn`` reads refers to now, and each attribute it may read
    through a module (``nd.tanh``, ``cfg.ACT``, ``pkg.sub.helper``) or an object
    ``bindings.followed`` looks into (``ns.act``, ``Cfg.act``)."""
    names = sorted(_names_read(fn.__code__))
    resolver = _resolver(fn)
    reads, modules = [], []
    for name in names:
        try:
            found = resolver.resolve(name)
        except KeyError:
            reads.append(f"{name}: -")
            continue
        reads.append(f"{name}: {_describe(found)}")
        if isinstance(found, types.ModuleType) or followed(found):
            modules.append((name, found))
    seen = {id(found) for _, found in modules}
    while modules:
        path, holder = modules.pop()
        for name in names:
            found = attribute_lookup(holder, name)[1]   # not getattr: no lazy imports
            if found is _MISSING:
                continue
            reads.append(f"{path}.{name}: {_describe(found)}")
            if id(found) not in seen and (followed(found) or (
                    isinstance(found, types.ModuleType) and path.count(".") < 3)):
                seen.add(id(found))
                modules.append((f"{path}.{name}", found))
    return reads


# ----- where artifacts live ------------------------------------------------------------------

def cache_enabled() -> bool:
    return os.environ.get("PULLBACK_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def directory_for(source_file) -> safefile.Location:
    """The artifact folder of functions defined in ``source_file``."""
    if os.environ.get("PULLBACK_CACHE_DIR"):
        return safefile.Location(safefile.default_root(), ("artifacts",))
    return safefile.Location(Path(os.path.abspath(source_file)).parent / FOLDER)


def artifact_prefix(source_file) -> str:
    """The start of the file names of ``source_file``'s artifacts in their directory."""
    path = os.path.abspath(source_file)
    stem = Path(path).stem
    if os.environ.get("PULLBACK_CACHE_DIR"):
        return f"{stem}-{_digest(path)[:10]}."
    return f"{stem}."


def artifact_path(fn, mask) -> tuple | None:
    """``(folder, file name)`` of the artifact of ``fn``'s variant for ``mask`` (None: no
    disk cache)."""
    if not cache_enabled():
        return None
    code = getattr(fn, "__code__", None)
    if code is None or not os.path.isfile(code.co_filename):
        return None   # <stdin>, exec'd strings, notebooks without files
    qualname = fn.__qualname__.replace("<locals>", "locals")
    if "<lambda>" in qualname:   # lambdas of one scope share a qualname
        qualname = qualname.replace("<lambda>", f"lambda{code.co_firstlineno}")
    qualname = "".join(c if c.isalnum() or c in "._" else "_" for c in qualname)
    name = f"{artifact_prefix(code.co_filename)}{qualname}.{mask_bits(mask) or 'none'}{SUFFIX}"
    return directory_for(code.co_filename), name


def _ignore_directory(directory, reason: str) -> None:
    _IGNORED_DIRECTORIES[str(directory)] = reason
    _warn_once("directory", directory, f"pullback: not using the cache directory {directory}: "
               f"{reason}; compiled code is kept in memory only")


def open_directory(location: safefile.Location, create: bool = False):
    """The verified artifact folder (``safefile.Folder``), or None: missing (and not
    ``create``), or unusable (warned once, then ignored for the process)."""
    if str(location) in _IGNORED_DIRECTORIES:
        return None
    try:
        return location.open(create)
    except safefile.Unsafe as exc:
        _ignore_directory(location, str(exc))
    except OSError as exc:
        _ignore_directory(location, f"it cannot be {'written' if create else 'read'} "
                          f"({exc.strerror or exc})")
    return None


def ignored_directories() -> dict:
    """Directories this process did not use, with the reason (for the CLI's summary)."""
    return dict(_IGNORED_DIRECTORIES)


# ----- reading and writing artifacts ---------------------------------------------------------

def encode(payload: dict) -> bytes:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + b" " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(data: bytes) -> dict | None:
    """The payload of an artifact's bytes, or None if they fail the checksum."""
    header, newline, body = data.partition(b"\n")
    if not newline or header != MAGIC + b" " + hashlib.sha256(body).hexdigest().encode():
        return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def read_artifact(location: safefile.Location, name: str) -> dict | None:
    """The payload of artifact ``name``, or None (missing, untrusted or corrupted: warned once)."""
    path = location.path / name
    folder = open_directory(location)
    if folder is None:
        return None
    try:
        with folder:
            data = folder.read(name)
    except safefile.Unsafe as exc:
        _warn_once("untrusted", path, f"pullback: not loading the cache file: {exc}; "
                   "it is rebuilt")
        return None
    except OSError as exc:
        _warn_once("unreadable", path, f"pullback: cannot read the cache file {path} "
                   f"({exc.strerror or exc}); it is ignored and rebuilt")
        return None
    if data is None:
        return None
    payload = decode(data)
    if payload is None:
        _STATS["cache_corrupt"] += 1
        _warn_once("corrupt", path, f"pullback: the cache file {path} is corrupted or truncated "
                   "(checksum mismatch); it is ignored and rebuilt")
    elif payload.get("format") != FORMAT:   # written by another pullback: stale, silently
        _STATS["cache_stale"] += 1
        return None
    return payload


def write_artifact(location: safefile.Location, name: str, payload: dict) -> int:
    """Write ``payload`` as artifact ``name`` atomically; the bytes written (0: not written)."""
    data = encode(payload)
    folder = open_directory(location, create=True)
    if folder is None:
        return 0
    try:
        with folder:
            folder.write(name, data, 0o644)
    except OSError as exc:
        _ignore_directory(location, f"it cannot be written ({exc.strerror or exc})")
        return 0
    _STATS["artifacts_written"] += 1
    _STATS["bytes_written"] += len(data)
    return len(data)


# ----- building a variant --------------------------------------------------------------------

def build(function, mask, transform):
    """The code of ``function``'s variant for ``mask``: ``(source, namespace, name)``.

    Loads the variant's artifact if a valid one exists; otherwise runs
    ``transform(parsed, mask, variant_for, meta=...)`` and stores an artifact.
    ``name`` is the generated functions' stem (``<name>_forward``, ``<name>_adjoint``).
    Fused kernels keep their native object code in ``kernels/`` beside the artifact.
    """
    built = _build(function, mask, transform)
    where = artifact_path(function.fn, mask)
    if where is not None:
        for value in built[1].values():
            if isinstance(value, fused.FusedKernel):
                value.object_directory = where[0].child("kernels")
    return built


def _build(function, mask, transform):
    fn = function.fn
    where = artifact_path(fn, mask)
    source = function_source(fn) if where is not None else None
    variant_key = key(fn, mask, source) if source is not None else None
    if variant_key is not None:
        loaded = _load(function, mask, where, variant_key)
        if loaded is not None:
            _STATS["cache_hits"] += 1
            return loaded
        _STATS["cache_misses"] += 1
    meta = {}
    generated, namespace = transform(function.parsed(), mask, function.variant_for, meta=meta)
    _STATS["functions_transformed"] += 1
    _STATS["kernels_compiled"] += len(meta["kernels"])
    if variant_key is not None:
        payload = _payload(fn, mask, variant_key, generated, meta)
        if payload is not None:
            write_artifact(*where, payload)
    return generated, namespace, meta["name"]


def _load(function, mask, where, variant_key):
    payload = read_artifact(*where)
    path = where[0].path / where[1]
    if payload is None:
        return None
    if payload.get("key") != variant_key or payload.get("mask") != mask_bits(mask):
        _STATS["cache_stale"] += 1
        return None
    fn = function.fn
    try:
        names = _bind(function, payload)
        if names is None:
            _STATS["cache_stale"] += 1
            return None
        namespace = codegen.load(payload["source"], f"{fn.__module__}.{payload['name']}", names)
        kernels = len(payload["kernels"])
    except (KeyError, TypeError, ValueError, SyntaxError) as exc:   # checksummed, yet not ours
        _STATS["cache_corrupt"] += 1
        _warn_once("corrupt", path, f"pullback: the cache file {path} cannot be used "
                   f"({type(exc).__name__}: {exc}); it is ignored and rebuilt")
        return None
    _STATS["kernels_loaded"] += kernels
    return payload["source"], namespace, payload["name"]


def _bind(function, payload) -> dict | None:
    """The names the stored source reads, bound again (None if one no longer resolves)."""
    fn = function.fn
    resolver = _resolver(fn)
    names = {}
    try:
        for name in payload["free"]:
            names[name] = resolver.resolve(name)
        for name, module in payload["modules"].items():
            names[name] = sys.modules.get(module) or importlib.import_module(module)
    except (LookupError, ImportError):
        return None
    for ref, module, qualname, code, digest in payload["callees"]:
        callee = find_function(fn, module, qualname)
        if callee is None or _source_digest(callee) != digest:
            return None
        names[ref] = function.variant_for(callee, mask_from_code(code))
    return names


def find_function(fn, module: str | None, qualname: str):
    """The user function ``module.qualname`` (``module`` None: ``fn``'s own module)."""
    if "<" in qualname:
        return None   # <locals>, <lambda>: not reachable by name
    if module is None:
        namespace = fn.__globals__
    else:
        try:
            namespace = vars(sys.modules.get(module) or importlib.import_module(module))
        except ImportError:
            return None
    head, *rest = qualname.split(".")
    found = namespace.get(head)
    for part in rest:
        found = getattr(found, part, None)
    if isinstance(found, _compiled_class()):
        found = found.fn
    return found if isinstance(found, types.FunctionType) else None


def _payload(fn, mask, variant_key, source, meta) -> dict | None:
    """The artifact of a fresh transform, or None if its names cannot be bound again."""
    from .pipeline import Variant  # not at import: pipeline imports us

    resolver = _resolver(fn)
    free, modules, callees = [], {}, []
    for name, value in meta["names"].items():
        if isinstance(value, Variant):
            callee = value.function.fn
            module = None if callee.__globals__ is fn.__globals__ else callee.__module__
            if find_function(fn, module, callee.__qualname__) is not callee:
                return None
            callees.append([name, module, callee.__qualname__, mask_code(value.mask),
                            _source_digest(callee)])
        elif _resolves_to(resolver, name, value):
            free.append(name)
        elif isinstance(value, types.ModuleType):
            modules[name] = value.__name__
        else:
            return None
    return {"format": FORMAT, "key": variant_key, "mask": mask_bits(mask),
            "function": f"{fn.__module__}.{fn.__qualname__}", "name": meta["name"],
            "source": source, "free": sorted(free), "modules": modules,
            "callees": sorted(callees), "kernels": list(meta["kernels"])}


def _resolves_to(resolver, name, value) -> bool:
    try:
        return resolver.resolve(name) is value
    except KeyError:
        return False


# ----- ahead of time -------------------------------------------------------------------------

def plan(compiled) -> list:
    """``[(mask, dtypes)]``: the variants ``precompile`` builds for a CompiledFunction.

    By default the plain forward (nothing differentiated) and the adjoint with
    every parameter differentiated, for float32 and float64; with
    ``signatures``, the plain forward and each signature's mask and dtypes.
    """
    count = parameter_count(compiled.fn)
    # implicit inputs (globals, ...) follow the arguments and are data, as in pb.grad
    data = (False,) * len(compiled.implicit)
    signatures = getattr(compiled, "signatures", None)
    if not signatures:
        return [((False,) * count + data, DEFAULT_DTYPES),
                ((True,) * count + data, DEFAULT_DTYPES)]
    steps = {(False,) * count + data: set()}
    for signature in signatures:
        mask = tuple(_signature_mask_entry(entry) for entry in signature) + data
        dtypes = set(_signature_dtypes(signature)) or set(DEFAULT_DTYPES)
        steps.setdefault(mask, set()).update(dtypes)
        steps[(False,) * count + data].update(dtypes)
    return [(mask, tuple(sorted(dtypes))) for mask, dtypes in steps.items()]


def _signature_mask_entry(entry):
    """A signature entry's mask entry: False (None), True (a dtype), or the structure
    (``Kind``) of a differentiated container argument (a dict/list/tuple of dtypes)."""
    if entry is None or (isinstance(entry, str) and entry in NUMBER_ENTRIES):
        return False   # data, or a number that is not differentiated
    if isinstance(entry, str):
        return True
    from . import pytree   # not at import: the facade imports the cache early

    def kind(e):
        if isinstance(e, str):
            return pytree.LEAF
        pairs = e.items() if isinstance(e, dict) else enumerate(e)
        tag = "dict" if isinstance(e, dict) else "list" if isinstance(e, list) else "tuple"
        return pytree.container(tag, ((k, kind(v)) for k, v in pairs))
    return kind(entry)


def _signature_dtypes(entry):
    """Every dtype named in a signature (or one of its entries), nested ones too."""
    if isinstance(entry, str):
        if entry in DEFAULT_DTYPES:
            yield entry
    elif isinstance(entry, dict):
        for e in entry.values():
            yield from _signature_dtypes(e)
    elif isinstance(entry, (list, tuple)):
        for e in entry:
            yield from _signature_dtypes(e)


def precompile(compiled) -> dict:
    """Build every variant of ``compiled`` that ``plan`` names, and those of its callees.

    Each variant is loaded from its artifact or transformed and stored.  Fused
    kernels are compiled natively for the plan's dtypes when the runtime offers
    ``FusedKernel.precompile(dtype)``.  Returns counts: ``variants``,
    ``kernels`` (distinct fused kernels) and ``native`` (precompile calls).
    Raises what compiling raises (CompileError for unsupported code).
    """
    from .pipeline import Variant

    queue = []
    for mask, dtypes in plan(compiled):
        queue.append((compiled.variant(mask), dtypes))
    seen, kernels, native = set(), set(), 0
    while queue:
        variant, dtypes = queue.pop()
        if (id(variant), dtypes) in seen:
            continue
        seen.add((id(variant), dtypes))
        variant._build()
        for value in list(variant._forward.__globals__.values()):
            if isinstance(value, Variant):
                queue.append((value, dtypes))
            elif isinstance(value, fused.FusedKernel):
                kernels.add(id(value))
                if callable(getattr(value, "precompile", None)):
                    for dtype in dtypes:
                        value.precompile(dtype)
                        native += 1
    return {"variants": len({v for v, _ in seen}), "kernels": len(kernels), "native": native,
            "native_functions": _precompile_native_functions(compiled)}


#: a signature entry naming a Python number that is not differentiated (native functions)
NUMBER_ENTRIES = {"int": int, "float": float, "bool": bool}


def _precompile_native_functions(compiled) -> int:
    """The whole-function native code (compiler/native_road.py) of the ``signatures``
    whose entries are all dtypes or ``NUMBER_ENTRIES``, read as numbers (``"float64"``: a
    differentiated number, an ``np.float64`` inside; ``"int"``: a step count).  Without
    ``signatures`` none (the default plan is for arrays).  Returns how many are native (a
    refusal is the Python road, not an error: ``pb.explain`` tells why)."""
    import numpy as np

    from . import native_road

    data = (False,) * len(compiled.implicit)
    if compiled.implicit:
        return 0   # implicit inputs' types are the values' at each call
    signatures = getattr(compiled, "signatures", None) or ()
    built = 0
    for signature in signatures:
        if not all(isinstance(entry, str) for entry in signature):
            continue   # data (None) or a container: not a whole function of numbers
        mask = tuple(entry in DEFAULT_DTYPES for entry in signature) + data
        types = tuple(NUMBER_ENTRIES.get(entry) or {"float64": np.float64, "float32": np.float32}[
            entry] for entry in signature)
        built += native_road.precompile(compiled.variant(mask), types)
    return built


def check_signatures(fn, signatures) -> tuple | None:
    """``signatures`` validated against ``fn``'s parameters (see ``compile``)."""
    if signatures is None:
        return None
    count = parameter_count(fn)
    checked = []
    for signature in signatures:
        signature = tuple(signature)
        if len(signature) != count or not all(map(_valid_entry, signature)):
            raise ValueError(
                f"a signature of {fn.__qualname__}() has one entry per parameter ({count}): "
                f"'float32' or 'float64' for an array or number that is differentiated, a "
                f"dict, list or tuple of them for a differentiated container of arrays, None "
                f"for an argument that is not ('int', 'float' or 'bool': a number that is "
                f"not, for whole native functions); got {signature!r}")
        checked.append(signature)
    return tuple(checked)


def _valid_entry(entry, top=True) -> bool:
    if isinstance(entry, str):
        return entry in DEFAULT_DTYPES or (top and entry in NUMBER_ENTRIES)
    if top and entry is None:
        return True
    if isinstance(entry, dict):
        return all(isinstance(k, (str, int, bool, type(None))) and _valid_entry(v, False)
                   for k, v in entry.items())
    return isinstance(entry, (list, tuple)) and all(_valid_entry(e, False) for e in entry)


def compile(fn=None, *, signatures=None, **options):
    """Decorator: differentiate ``fn`` by source transformation.

    Usable as ``@compile`` or ``@compile(native=..., fallback="tape", signatures=...)``.
    The function is transformed lazily, once per pattern of differentiated
    inputs, and the result is cached on disk (see ``pullback.compiler.cache``).

    Args:
        signatures: what ``python -m pullback compile`` builds ahead of time: a
            list with one tuple per call pattern, one entry per parameter:
            ``"float32"`` or ``"float64"`` for an array whose gradient is taken,
            a dict, list or tuple of them (nested) for a differentiated container
            argument of that structure (``{"w": "float64", "b": "float64"}``),
            ``None`` for an argument that is not differentiated.  Default: the
            plain forward and the adjoint of all parameters, float32 and float64.
            A signature of dtypes and ``"int"``/``"float"``/``"bool"`` (a number that is
            not differentiated) also builds the whole native function for numbers of
            those types (a dtype: a differentiated number), e.g. ``("float64",
            "float64", "int")`` for ``f(x, y, steps)``.
        options: as for ``pullback.compiler.api.compile`` (``native``, ``fallback``).
    """
    if fn is None:
        return functools.partial(compile, signatures=signatures, **options)
    from .api import compile as compile_function

    compiled = compile_function(fn, **options)
    compiled.signatures = check_signatures(fn, signatures)
    return compiled
