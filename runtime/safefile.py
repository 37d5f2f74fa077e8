"""The one way pullback touches its on-disk caches: verified folders, safe reads, atomic writes.

Every cache file -- artifacts (``compiler/cache.py``), generated modules
(``compiler/codegen.py``), kernel object code (``runtime/native.py``), and what
``python -m pullback cache info/clear`` lists and removes -- is read, written,
listed and removed through a ``Folder``.  A cache folder is a ``Location``: a
*root* (``$PULLBACK_CACHE_DIR``, default ``/tmp/pullback-<euid>``, or a
``__pullback_cache__`` folder beside a source file) and the names below it
(``artifacts``, ``generated``, ``kernels``).

Invariants (each violation raises ``Unsafe``, an ``OSError``; the caller treats
it as a cache miss or an unusable cache and warns once):

- **The chain is verified.**  The root's parent can be changed only by the
  current user or root, or is sticky like ``/tmp`` (nobody can swap the root).
  The root and every folder below it is a real directory, never a symlink, owned
  by the effective uid and not writable by group or others.  A missing folder is
  created with mode 0o700, only by a writer.  The walk goes through directory
  file descriptors, so what was checked is what is used: no path is looked up twice.
- **Reads never hang and never follow a symlink.**  A file is opened with
  ``O_RDONLY | O_NOFOLLOW | O_NONBLOCK`` and read only if ``fstat`` says it is a
  regular file owned by us and not writable by others (a FIFO opens at once and
  is refused).
- **Writes are atomic and unredirectable.**  Data goes to a temporary file with an
  unpredictable name, created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` in the
  caller's mode, then renamed into place: readers see the old file or the new one.
  No fsync: a file torn by a crash fails its checksum and is rebuilt.
- **Removal is by name, of our own files only.**  ``remove`` deletes a regular
  file we own (a symlink, a folder or someone else's file stays); ``remove_folder``
  deletes an empty folder only.  Which names are the cache's own is the callers' rule.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SHARED = stat.S_IWGRP | stat.S_IWOTH


class CacheWarning(UserWarning):
    """The on-disk cache could not be used as is (a file is rebuilt or kept in memory)."""


class Unsafe(OSError):
    """A cache folder or file that must not be trusted (a symlink, not a regular file,
    someone else's, writable by others).  ``str()`` says which and why."""


def default_root() -> Path:
    """``$PULLBACK_CACHE_DIR``, else ``/tmp/pullback-<effective uid>``."""
    root = os.environ.get("PULLBACK_CACHE_DIR")
    return Path(root) if root else Path(tempfile.gettempdir()) / f"pullback-{os.geteuid()}"


@dataclass(frozen=True)
class Location:
    """A cache folder: its root and the names of the folders from there down."""

    root: Path
    parts: tuple = ()

    @property
    def path(self) -> Path:
        return Path(self.root).joinpath(*self.parts)

    def __str__(self) -> str:
        return str(self.path)

    def child(self, name: str) -> Location:
        return Location(self.root, (*self.parts, name))

    def open(self, create: bool = False) -> Folder | None:
        """The verified folder (None: it does not exist and ``create`` is false).

        Raises ``Unsafe`` if a folder of the chain may not be trusted, another
        ``OSError`` if it cannot be opened or created."""
        root = Path(os.path.abspath(self.root))
        if create:
            os.makedirs(root.parent, exist_ok=True)
        try:
            fd = os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        folder = Folder(fd, root.parent)
        try:
            info = os.fstat(fd)
            if info.st_uid not in (0, os.geteuid()) or (
                    info.st_mode & _SHARED and not info.st_mode & stat.S_ISVTX):
                raise Unsafe(f"{root.parent} (the parent of the cache {root}) can be changed "
                             f"by other users (owner uid {info.st_uid}, mode "
                             f"{stat.filemode(info.st_mode)})")
            for name in (root.name, *self.parts):
                with folder:   # closes the folder above
                    folder = folder.subfolder(name, create)
                if folder is None:
                    return None
        except BaseException:
            folder.close()
            raise
        return folder

    def remove_if_empty(self) -> bool:
        """Delete this folder if it is empty (never its contents); whether it went.

        By path: rmdir never follows a final symlink, and the folders above were
        verified not to be changeable by others."""
        try:
            os.rmdir(self.path)
        except OSError:
            return False
        return True


def _check_owner(info, path) -> None:
    if info.st_uid != os.geteuid():
        raise Unsafe(f"{path} is owned by uid {info.st_uid}, not by the current user "
                     f"(uid {os.geteuid()})")
    if info.st_mode & _SHARED:
        raise Unsafe(f"{path} is writable by other users (mode {stat.filemode(info.st_mode)})")


def _not_regular(fd: int, name: str, path: Path, error: OSError) -> OSError:
    """Why ``name`` could not be opened as a file: Unsafe if something else sits there."""
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return error
    if stat.S_ISLNK(info.st_mode):
        return Unsafe(f"{path} is a symbolic link")
    if not stat.S_ISREG(info.st_mode) or error.errno in (errno.ENXIO, errno.ENOTDIR):
        return Unsafe(f"{path} is not a regular file ({stat.filemode(info.st_mode)})")
    return error


class Folder:
    """An open, verified cache folder (a directory file descriptor): use as a context manager."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, Path(path)   # the folder owns ``fd``

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def subfolder(self, name: str, create: bool = False) -> Folder | None:
        """The verified folder ``name`` in this one (None: missing and not ``create``)."""
        path = self.path / name
        try:
            try:
                fd = os.open(name, _DIRECTORY, dir_fd=self.fd)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    os.mkdir(name, 0o700, dir_fd=self.fd)
                except FileExistsError:
                    pass
                fd = os.open(name, _DIRECTORY, dir_fd=self.fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                kind = "a symbolic link" if os.path.islink(path) else "not a directory"
                raise Unsafe(f"{path} is {kind}") from None
            raise
        folder = Folder(fd, path)
        try:
            _check_owner(os.fstat(fd), path)
        except Unsafe:
            folder.close()
            raise
        return folder

    def read(self, name: str, limit: int = -1) -> bytes | None:
        """The bytes of file ``name`` (at most ``limit``), or None if there is none."""
        path = self.path / name
        try:
            fd = os.open(name, _READ, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise _not_regular(self.fd, name, path, error) from None
        with os.fdopen(fd, "rb") as file:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise Unsafe(f"{path} is not a regular file ({stat.filemode(info.st_mode)})")
            _check_owner(info, path)
            return file.read(limit)

    def write(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """Replace file ``name`` with ``data`` in one step (see the module docstring)."""
        temporary = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, _CREATE, mode, dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=self.fd)
            except OSError:
                pass
            raise

    def names(self) -> list:
        """The names in this folder, sorted."""
        return sorted(os.listdir(self.fd))

    def size(self, name: str) -> int:
        """The size of ``name`` itself (a symlink is not followed)."""
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_size

    def remove(self, name: str) -> int:
        """Delete ``name`` if it is a regular file we own; returns its size.

        Raises ``Unsafe`` (and leaves it) for anything else, FileNotFoundError if it is gone."""
        info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            raise Unsafe(f"{self.path / name} is not a regular file "
                         f"({stat.filemode(info.st_mode)})")
        if info.st_uid != os.geteuid():
            raise Unsafe(f"{self.path / name} is owned by uid {info.st_uid}")
        os.unlink(name, dir_fd=self.fd)
        return info.st_size
