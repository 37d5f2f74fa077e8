"""``python -m pullback`` (or ``pullback``): the ahead-of-time compile step and its cache.

    pullback compile TARGET...            compile every @pb.compile function of TARGET
    pullback cache info [TARGET...]       list the artifacts (default: all under .)
    pullback cache clear [TARGET...]      delete them (only the cache's own files)
    pullback show TARGET:FUNCTION [--ir]  print the generated forward/adjoint (and kernel IR)

TARGET is a module name (``mypkg.models``), a package (all its modules,
recursively) or the path of a .py file or package directory.  ``compile``
imports each module, finds the ``CompiledFunction`` objects in its globals and
builds their variants with ``pullback.compiler.cache.precompile``: artifacts
go to ``__pullback_cache__/`` beside each source file (``$PULLBACK_CACHE_DIR``
overrides).  It compiles everything it can and exits 1 if anything failed
(2 for a usage error).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import pkgutil
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from pullback.compiler import cache
from pullback.compiler.api import CompiledFunction, adjoint_source, kernel_ir
from pullback.compiler.errors import CompileError
from pullback.runtime import errors, native, safefile


@dataclass
class Failure:
    """Something ``compile`` could not do: what, where (file:line) and why."""

    what: str
    where: str | None
    reason: str


# ----- finding modules and functions ---------------------------------------------------------

_NOT_USER_CODE = tuple(os.path.dirname(m.__file__) + os.sep
                       for m in (importlib, cache, errors, sys.modules[__package__ or "pullback"]))


def _location_of(exc: BaseException) -> str | None:
    """file:line of an exception: a CompileError's own, a SyntaxError's, else where it rose."""
    if isinstance(exc, CompileError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(("<frozen", *_NOT_USER_CODE))]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, CompileError) and exc.filename and text.startswith('File "'):
        text = text.split(": ", 1)[-1]   # the location is printed separately
    return f"{type(exc).__name__}: {text}"


def _path_module(path: Path) -> tuple[Path, str]:
    """(sys.path entry, dotted module name) of a .py file or a package directory."""
    path = path.resolve()
    parts = [] if path.name == "__init__.py" else [path.stem if path.is_file() else path.name]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder, ".".join(parts)


def _target_name(target: str) -> str:
    """The module name of TARGET, putting its root on ``sys.path`` if it is a path."""
    path = Path(target)
    if target.endswith(".py") or os.sep in target or path.is_dir():
        if not path.exists():
            raise FileNotFoundError(f"no such file or directory: {target}")
        root, name = _path_module(path)
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        return name
    return target


def import_target(target: str, failures: list) -> list:
    """The modules of TARGET (a package: all of its modules), recording import failures."""
    try:
        module = importlib.import_module(_target_name(target))
    except Exception as exc:  # noqa: BLE001 -- any error in the user's module is reported
        failures.append(Failure(target, _location_of(exc), _reason(exc)))
        return []
    modules = [module]
    if hasattr(module, "__path__"):
        def on_error(name):
            failures.append(Failure(name, _location_of(sys.exc_info()[1]),
                                    _reason(sys.exc_info()[1])))

        for info in pkgutil.walk_packages(module.__path__, module.__name__ + ".", on_error):
            if info.name.rsplit(".", 1)[-1] == "__main__":
                continue   # importing a package's __main__ would run it
            try:
                modules.append(importlib.import_module(info.name))
            except Exception as exc:  # noqa: BLE001
                failures.append(Failure(info.name, _location_of(exc), _reason(exc)))
    return modules


def compiled_functions(modules) -> list:
    """``[(label, CompiledFunction)]`` in the modules' globals, each function once."""
    found, seen = [], set()
    for module in modules:
        for name, value in vars(module).items():
            if isinstance(value, CompiledFunction) and id(value) not in seen:
                seen.add(id(value))
                found.append((f"{module.__name__}.{name}", value))
    return found


# ----- compile -------------------------------------------------------------------------------

class Progress:
    """A bar redrawn in place on a terminal; one plain line per function otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream=None):
        self.total, self.stream = total, stream or sys.stdout
        self.tty = self.stream.isatty()

    def update(self, done: int, label: str, outcome: str = "") -> None:
        if self.tty:
            filled = self.WIDTH * done // max(self.total, 1)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {done}/{self.total} {label[:40]:<40}")
        elif outcome:
            self.stream.write(f"[{done}/{self.total}] {label}: {outcome}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * (self.WIDTH + 60) + "\r")
            self.stream.flush()


def _size(count: int) -> str:
    return f"{count} B" if count < 1000 else f"{count / 1000:.1f} kB"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def command_compile(targets, out=None) -> int:
    out = out or sys.stdout
    start = time.perf_counter()
    failures = []
    modules = [m for target in targets for m in import_target(target, failures)]
    functions = compiled_functions(modules)
    before = cache.stats()
    progress = Progress(len(functions), out)
    compiled, variants, kernels, native, folders, functions_native = 0, 0, 0, 0, set(), 0
    for done, (label, function) in enumerate(functions, 1):
        progress.update(done - 1, label)
        folders.add(cache.directory_for(function.fn.__code__.co_filename))
        try:
            counts = cache.precompile(function)
        except Exception as exc:  # noqa: BLE001 -- report, then compile the rest
            failures.append(Failure(label, _location_of(exc), _reason(exc)))
            progress.update(done, label, "FAILED")
            continue
        compiled += 1
        variants += counts["variants"]
        kernels += counts["kernels"]
        native += counts["native"]
        functions_native += counts.get("native_functions", 0)
        progress.update(done, label, f"{_plural(counts['variants'], 'variant')}, "
                                     f"{_plural(counts['kernels'], 'kernel')}")
    progress.close()
    for folder, reason in cache.ignored_directories().items():
        failures.append(Failure(f"cache directory {folder}", folder,
                                f"artifacts were not written: {reason}"))
    after = cache.stats()
    fresh = after["functions_transformed"] - before["functions_transformed"]
    written = after["bytes_written"] - before["bytes_written"]
    elapsed = time.perf_counter() - start
    out.write(f"pullback compile: {compiled} of {_plural(len(functions), 'function')} "
              f"({_plural(variants, 'variant')}: {fresh} compiled, {variants - fresh} up to date; "
              f"{_plural(kernels, 'kernel')}) in {elapsed:.2f} s; {_size(written)} written to "
              f"{_plural(len(folders), 'cache directory', 'cache directories')}\n")
    if functions_native:
        out.write(f"{_plural(functions_native, 'whole native function')} (value and gradient "
                  f"in one call) compiled\n")
    if kernels and not native:
        out.write("note: the runtime cannot precompile native kernels yet "
                  "(FusedKernel.precompile); they compile on first use\n")
    if not functions and not failures:
        out.write("note: no @pb.compile functions found\n")
    if failures:
        out.write(f"{_plural(len(failures), 'failure')}:\n")
        for failure in failures:
            reason = failure.reason.replace("\n", "\n      ")
            where = f"{failure.where}: " if failure.where else ""
            out.write(f"  {where}{failure.what}: {reason}\n")
    return 1 if failures else 0


# ----- cache info / clear --------------------------------------------------------------------

def _source_files(target: str) -> list:
    """The .py files of TARGET without importing it (a package: all, recursively)."""
    path = Path(target)
    if not (target.endswith(".py") or os.sep in target or path.is_dir()):
        spec = importlib.util.find_spec(target)
        if spec is None:
            raise FileNotFoundError(f"no module named {target!r}")
        if spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations)))
        elif spec.origin:
            path = Path(spec.origin)
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such file or directory: {target}")


def artifact_folders(targets) -> dict:
    """``{Location: name prefixes, or None for all}``: the artifact folders of TARGETs
    (none: every ``__pullback_cache__`` under ., or ``$PULLBACK_CACHE_DIR``'s)."""
    if not targets:
        if os.environ.get("PULLBACK_CACHE_DIR"):
            return {cache.directory_for("x.py"): None}
        return {safefile.Location(Path(os.path.abspath(root)) / cache.FOLDER): None
                for root, dirs, _ in os.walk(".") if cache.FOLDER in dirs and not _hidden(root)}
    found = {}
    for target in targets:
        for source in _source_files(target):
            found.setdefault(cache.directory_for(source), set()).add(cache.artifact_prefix(source))
    return found


def _hidden(root: str) -> bool:
    return any(part.startswith(".") and part not in (".", "..") for part in Path(root).parts)


_OBJECT = re.compile(r"[0-9a-f]{64}\.o")   # runtime.native's kernel files
_MANIFEST = re.compile(r"[0-9a-f]{64}\.native\.json")   # native_road's native-function files


def _temporary_of(name: str) -> str:
    """The file a temporary file of ``safefile.Folder.write`` stands for ("": not one)."""
    match = re.fullmatch(r"\.(.+)\.[0-9a-f]{16}\.tmp", name)
    return match.group(1) if match else ""


def _is_artifact_name(name: str, prefixes) -> bool:
    return name.endswith(cache.SUFFIX) and (prefixes is None or name.startswith(tuple(prefixes)))


def _artifact_names(folder, prefixes) -> list:
    """The names of the artifacts in ``folder`` (of the given prefixes, or all)."""
    return [name for name in folder.names() if _is_artifact_name(name, prefixes)]


def _has_magic(folder, name: str, magic: bytes) -> bool:
    """Whether ``name`` is a regular file of ours that starts with ``magic``."""
    try:
        return folder.read(name, len(magic)) == magic
    except OSError:
        return False


def _own_artifacts(folder, prefixes) -> list:
    """Our artifacts (by name and magic) and leftover temporary files in ``folder``."""
    return [name for name in folder.names()
            if _is_artifact_name(name, prefixes) and _has_magic(folder, name, cache.MAGIC)
            or _is_artifact_name(_temporary_of(name), prefixes)]


def _own_objects(folder) -> list:
    """Our kernel object files (by name and magic) and leftover temporary files."""
    return [name for name in folder.names()
            if _OBJECT.fullmatch(name) and _has_magic(folder, name, native.OBJECT_MAGIC)
            or _OBJECT.fullmatch(_temporary_of(name))
            or _MANIFEST.fullmatch(name) and _has_magic(folder, name, b'{"format": "pullback-')
            or _MANIFEST.fullmatch(_temporary_of(name))]


def _open(location, out):
    """The verified folder at ``location`` (None: missing, or unsafe and reported)."""
    try:
        return location.open()
    except OSError as exc:   # safefile.Unsafe: a symlink, someone else's, writable by others
        out.write(f"{location}: skipped -- {exc}\n")
        return None


def command_cache_info(targets, out=None) -> int:
    out = out or sys.stdout
    total_files = total_bytes = 0
    for location, prefixes in artifact_folders(targets).items():
        folder = _open(location, out)
        if folder is None:
            continue
        with folder:
            lines, size = [], 0
            for name in _artifact_names(folder, prefixes):
                try:
                    data = folder.read(name)
                except OSError as exc:
                    lines.append(f"  {name}  UNSAFE, not read: {exc}")
                    continue
                size += len(data)
                payload = cache.decode(data)
                if payload is None:
                    lines.append(f"  {name}  {_size(len(data))}  CORRUPT (rebuilt on next use)")
                elif payload.get("format") != cache.FORMAT or "function" not in payload:
                    lines.append(f"  {name}  {_size(len(data))}  another pullback's format "
                                 f"(rebuilt on next use)")
                else:
                    lines.append(f"  {payload['function']} [differentiated: "
                                 f"{payload['mask'] or '-'}]  {_size(len(data))}")
            total_files, total_bytes = total_files + len(lines), total_bytes + size
            out.write(f"{location}: {_plural(len(lines), 'artifact')}, {_size(size)}\n")
            kernels = _open(location.child("kernels"), out)
            if kernels is not None:
                with kernels:
                    objects = [n for n in kernels.names() if _OBJECT.fullmatch(n)]
                    if objects:
                        kernel_size = sum(kernels.size(n) for n in objects)
                        out.write(f"  native object code: {_plural(len(objects), 'kernel')}, "
                                  f"{_size(kernel_size)}\n")
            for line in lines:
                out.write(line + "\n")
    out.write(f"{_plural(total_files, 'artifact')}, {_size(total_bytes)}\n")
    return 0


def command_cache_clear(targets, out=None) -> int:
    """Delete the artifacts of TARGETs (and a folder's kernels with its last artifact).

    Only files that are the cache's own by name and magic are removed; a folder goes
    only once empty; a symlinked or untrusted folder is skipped, with a message."""
    out = out or sys.stdout
    removed = size = 0
    found = artifact_folders(targets)
    for location, prefixes in found.items():
        folder = _open(location, out)
        if folder is None:
            continue
        with folder:
            for name in _own_artifacts(folder, prefixes):
                size, removed = size + _remove(folder, name, out), removed + 1
            if not _own_artifacts(folder, None):
                # native object code is shared by the folder's artifacts: it goes with the last
                kernels = _open(location.child("kernels"), out)
                if kernels is not None:
                    with kernels:
                        for name in _own_objects(kernels):
                            size += _remove(kernels, name, out)
                    location.child("kernels").remove_if_empty()
        location.remove_if_empty()
    out.write(f"removed {_plural(removed, 'artifact')} ({_size(size)}) from "
              f"{_plural(len(found), 'cache directory', 'cache directories')}\n")
    return 0


def _remove(folder, name: str, out) -> int:
    try:
        return folder.remove(name)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        out.write(f"kept {folder.path / name}: {exc}\n")
        return 0


# ----- show ----------------------------------------------------------------------------------

def command_show(spec: str, ir: bool, argnums, out=None) -> int:
    out = out or sys.stdout
    target, _, qualname = spec.rpartition(":")
    if not target or not qualname:
        raise SystemExit(f"pullback show: expected FILE_OR_MODULE:FUNCTION, got {spec!r}")
    found = importlib.import_module(_target_name(target))
    for part in qualname.split("."):
        found = getattr(found, part)
    out.write(adjoint_source(found, argnums))
    if ir:
        for dtype in cache.DEFAULT_DTYPES:
            text = kernel_ir(found, argnums, dtype)
            out.write(f"\n{text}\n" if text else f"\n; no fused kernels ({dtype})\n")
    return 0


# ----- entry point ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pullback", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("compile", help="compile every @pb.compile function ahead "
                                "of time")
    build.add_argument("targets", nargs="+", metavar="TARGET",
                       help="module name, package or path of a .py file or package")
    info = commands.add_parser("cache", help="inspect or clear the artifact cache")
    info.add_argument("action", choices=("info", "clear"))
    info.add_argument("targets", nargs="*", metavar="TARGET")
    show = commands.add_parser("show", help="print a function's generated adjoint source")
    show.add_argument("function", metavar="FILE_OR_MODULE:FUNCTION")
    show.add_argument("--ir", action="store_true", help="also print the kernels' LLVM IR")
    show.add_argument("--argnums", type=lambda s: tuple(int(n) for n in s.split(",")),
                      default=None, help="differentiated parameters, e.g. 0,2 (default all)")
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=file or sys.stderr)


def main(argv=None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())   # as ``python -m`` does, for the console script
    warnings.showwarning = _show_warning
    if args.command == "compile":
        return command_compile(args.targets)
    if args.command == "cache":
        try:
            run = command_cache_info if args.action == "info" else command_cache_clear
            return run(args.targets)
        except FileNotFoundError as exc:
            print(f"pullback cache: {exc}", file=sys.stderr)
            return 1
    return command_show(args.function, args.ir, args.argnums)


if __name__ == "__main__":
    sys.exit(main())
