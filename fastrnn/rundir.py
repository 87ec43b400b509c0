"""A training run's checkpoint directory: its lock and the rules for reusing it.

* :class:`RunDirectoryLock`: one training run at a time per directory. The lock is an
  advisory ``flock`` on ``DIR/.lock``, which holds the owner's PID. The kernel releases
  it when the process ends, however it ends, so a lock file left by a killed run never
  blocks the next one; a second live run gets :class:`RunDirectoryBusy` naming the PID.
* :func:`check_writable`: a run refuses, before training, a directory it cannot write.
* :func:`checkpoint_entries` / :func:`refuse_reuse`: a new run refuses a directory that
  holds anything named like a checkpoint (readable or not), unless told to overwrite.
* :func:`remove_orphaned_temporaries`: deletes the temporary files of checkpoint writes
  whose writer died (their ``flock`` is gone), never one being written.
"""
from __future__ import annotations

import errno
import glob
import os
import stat
import tempfile
from typing import Any, List, Optional

from .checkpoint import CHECKPOINT_PATTERN, TEMP_PREFIX, TEMP_SUFFIX

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "RunDirectoryBusy",
    "RunDirectoryLock",
    "check_writable",
    "checkpoint_entries",
    "refuse_reuse",
    "remove_orphaned_temporaries",
]

#: The lock file inside a run directory.
LOCK_NAME = ".lock"


class RunDirectoryBusy(RuntimeError):
    """Another live process holds the directory's lock (``pid`` is its PID, or None)."""

    def __init__(self, message: str, pid: Optional[int]) -> None:
        super().__init__(message)
        self.pid = pid


def _no_follow_open(path: str, flags: int) -> int:
    """An fd of a regular file opened without following a symbolic link and without
    blocking; OSError otherwise."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    return fd


def check_writable(directory: str) -> None:
    """Creates ``directory`` if needed and checks that files can be created in it
    (by creating and deleting one). OSError (PermissionError for a read-only directory)
    with a one-line message naming it otherwise."""
    directory = os.fspath(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=directory)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write checkpoints into {directory}: "
                               f"{e.strerror or e}") from None


class RunDirectoryLock:
    """An exclusive advisory lock on a run directory, held from :meth:`acquire` to
    :meth:`release` (or over a ``with`` block). The directory is created if needed and
    must be writable (see :func:`check_writable`)."""

    def __init__(self, directory: str) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, LOCK_NAME)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunDirectoryLock":
        """Takes the lock; RunDirectoryBusy if another process (or another lock object
        of this process) holds it, OSError if the directory cannot be written."""
        if self._fd is not None:
            return self
        check_writable(self.directory)
        try:
            fd = _no_follow_open(self.path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise type(e)(e.errno, f"cannot lock {self.directory} ({self.path}): {e.strerror or e}") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = _read_pid(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OSError(e.errno, f"cannot lock {self.directory}: {e.strerror or e}") from None
                holder = f"PID {pid}" if pid is not None else "a process whose PID is unknown"
                raise RunDirectoryBusy(
                    f"{self.directory} is in use by another training run ({holder}, which holds "
                    f"{self.path}); wait for it to finish or choose another output directory",
                    pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Gives the lock up (the file stays, empty: deleting it would race with a
        process about to lock it)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # releases the flock

    def __enter__(self) -> "RunDirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def checkpoint_entries(directory: str) -> List[str]:
    """Names of every entry of ``directory`` named like a checkpoint (``lm_*.npz``),
    whatever it is: readable or not, of any version, a file, link, FIFO or directory."""
    pattern = os.path.join(glob.escape(os.fspath(directory)), CHECKPOINT_PATTERN)
    return sorted(os.path.basename(p) for p in glob.glob(pattern))


def refuse_reuse(directory: str) -> None:
    """FileExistsError if ``directory`` holds anything named like a checkpoint: a new
    run must not mix its checkpoints with (or delete) another run's, even unreadable ones."""
    if not os.path.isdir(directory):
        return
    names = checkpoint_entries(directory)
    if names:
        raise FileExistsError(
            f"{directory} already holds checkpoints of another run (e.g. {names[-1]}); pass "
            f"--resume to continue it (Trainer.resume), --overwrite to replace it "
            f"(overwrite=True), or choose another output directory")


def remove_orphaned_temporaries(directory: str) -> List[str]:
    """Deletes the temporary files ``.tmp-*.npz`` of checkpoint writes whose writer is
    gone (a writer holds an flock on its temporary file until it renames it); returns
    their paths. Files being written, and anything not a regular file, are left alone."""
    removed = []
    pattern = os.path.join(glob.escape(os.fspath(directory)), f"{TEMP_PREFIX}*{TEMP_SUFFIX}")
    for p in glob.glob(pattern):
        try:
            fd = _no_follow_open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live writer holds it
            try:
                os.remove(p)
                removed.append(p)
            except OSError:
                pass
        finally:
            os.close(fd)
    return removed
