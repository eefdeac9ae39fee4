"""Writing files atomically: a crash or Ctrl-C mid-write never leaves a half-written file.

The data goes to a temporary file in the target's folder, is flushed to disk, and then
renamed over the target (``os.replace`` is atomic on POSIX and Windows).

A write that fails because of the disk or the file system (full, read-only, no
permission) is a :class:`OutputError` naming the path, so the command line reports it
in one line; :func:`check_writable` finds most of those problems before the work starts.
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
}


class OutputError(UserError):
    """An output file or folder cannot be written; the message names it and says why."""


def _write_problem(error: BaseException) -> OSError | None:
    """The OSError with a user-fixable errno in ``error`` or what it was raised from.

    ``torch.save`` turns a failed write into a RuntimeError whose ``__context__`` holds
    the OSError, hence the walk along the chain.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _WRITE_PROBLEMS:
            return error
        error = error.__cause__ or error.__context__
    return None


@contextmanager
def reporting_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a disk-full, read-only or permission OSError raised inside into an :class:`OutputError`."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        problem = _write_problem(error)
        if problem is None:
            raise
        raise OutputError(f"cannot write {path}: {_WRITE_PROBLEMS[problem.errno]}") from error


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """Raise :class:`OutputError` unless ``path`` (a file, or with ``folder`` a folder) can be
    created or replaced: it is not of the other kind and its nearest existing ancestor is a
    writable folder on a writable file system. Call it before long work that ends in a write."""
    path = Path(path)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_beside(path: Path) -> tuple[int, str]:
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


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
