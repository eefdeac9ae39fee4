"""Writing files atomically: a crash or Ctrl-C mid-write never leaves a half-written file.

The data goes to a temporary file in the target's folder, is flushed to disk, and then
renamed over the target (``os.replace`` is atomic on POSIX and Windows).

A write that fails because of the disk or the file system (full, read-only, no
permission, a name too long) is a :class:`OutputError` naming the path, so the command
line reports it in one line; :func:`check_writable` finds most of those problems before
the work starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import UserError

#: The OSErrors of a write that the user can fix (free space, another folder, permissions).
_WRITE_PROBLEMS = {
    errno.ENOSPC: "disk full (no space left on device)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file name",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter one",
}


class OutputError(UserError):
    """An output file or folder cannot be written; the message names it and says why."""


def _write_problem(error: BaseException) -> OSError | None:
    """The file system's OSError (one with an errno) in ``error`` or what it was raised from.

    ``torch.save`` turns a failed write into a RuntimeError whose ``__context__`` holds
    the OSError, hence the walk along the chain.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno is not None:
            return error
        error = error.__cause__ or error.__context__
    return None


def _reason(error: OSError) -> str:
    return _WRITE_PROBLEMS.get(error.errno) or (error.strerror or str(error)).lower()


@contextmanager
def reporting_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError of the file system (disk full, read-only, permission, ...) raised
    inside into an :class:`OutputError` naming ``path``."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        problem = _write_problem(error)
        if problem is None:
            raise
        raise OutputError(f"cannot write {path}: {_reason(problem)}") from error


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """Raise :class:`OutputError` unless ``path`` (a file, or with ``folder`` a folder) can be
    created or replaced: it is not of the other kind and its nearest existing ancestor is a
    writable folder on a writable file system, and no name in it is too long. Call it before long
    work that ends in a write."""
    with reporting_write_errors(path):  # looking at the path can fail too (a name too long, a folder not searchable)
        _check_writable(Path(path), folder)


def _check_writable(path: Path, folder: bool) -> None:
    if path.exists():
        if folder and not path.is_dir():
            raise OutputError(f"cannot write into {path}: it is a file, not a folder")
        if not folder and path.is_dir():
            raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    ancestor = path if folder and path.is_dir() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        if ancestor.is_symlink():
            raise OutputError(f"cannot write {path}: {ancestor} is a broken symbolic link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot write {path}: {ancestor} is a file, not a folder")
    if os.statvfs(ancestor).f_flag & os.ST_RDONLY:
        raise OutputError(f"cannot write {path}: {ancestor} is on a read-only file system")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: permission denied for {ancestor}")
    limit = _name_max(ancestor)
    for name in path.relative_to(ancestor).parts:
        if len(os.fsencode(name)) > limit:
            raise OutputError(f"cannot write {path}: a name of {len(os.fsencode(name))} bytes is longer than the "
                              f"{limit} its file system allows; choose a shorter one")


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` allows."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        return 255


def name_beside(path: str | os.PathLike, suffix: str) -> Path:
    """``path`` with ``suffix`` added to its name, the name cut short where the file system
    would refuse it (so whatever ``path`` may be called, the name beside it works too)."""
    path = Path(path)
    room = _name_max(path.parent if path.parent.is_dir() else Path(".")) - len(os.fsencode(suffix))
    return path.with_name(os.fsencode(path.name)[:max(room, 1)].decode("utf-8", "ignore") + suffix)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_beside(path: Path) -> tuple[int, str]:
    """A new hidden file ``.NAME.XXXXXXXX.tmp`` in the folder of ``path``, NAME cut short
    so that the temporary name fits the file system whenever ``path``'s own name does."""
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        room = _name_max(path.parent) - len("..XXXXXXXX.tmp")  # the dots, mkstemp's 8 characters, .tmp
        name = os.fsencode(path.name)[:max(room, 0)].decode("utf-8", "ignore")
        return tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)


def _publish(tmp: str, path: Path) -> None:
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600 files; use the usual permissions
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file name")
    os.replace(tmp, path)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], binary: bool = False) -> None:
    """Call ``write(handle)`` on a temporary file, then move it to ``path``."""
    path = Path(path)
    fd, tmp = _temporary_beside(path)
    try:
        with reporting_write_errors(path):
            with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text))


def write_json_atomic(path: str | os.PathLike, data, indent: int | None = None) -> None:
    atomic_write(path, lambda handle: json.dump(data, handle, indent=indent, ensure_ascii=False))


class AtomicLineWriter:
    """Lines written to a temporary file that replaces ``path`` on :meth:`close`: the file
    is complete or untouched.

    Use it as a context manager: leaving the block normally publishes the file; an
    exception (a crash, Ctrl-C, a closed pipe) discards the temporary file instead.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        fd, self.tmp = _temporary_beside(self.path)
        self.handle = os.fdopen(fd, "w", encoding="utf-8")

    def write(self, line: str) -> None:
        with reporting_write_errors(self.path):
            self.handle.write(line + "\n")

    def close(self) -> None:
        """Publish the lines written so far as ``path``."""
        try:
            with reporting_write_errors(self.path):
                self.handle.flush()
                os.fsync(self.handle.fileno())
                self.handle.close()
                _publish(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Forget the lines written: ``path`` keeps its old content (or stays absent).

        Closing flushes what is buffered, which fails again on a full disk; the file is
        closed all the same, and the temporary file removed."""
        try:
            with contextlib.suppress(OSError):
                self.handle.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)

    def __enter__(self) -> "AtomicLineWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()
