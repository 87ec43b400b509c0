"""Opening files without surprises.

* :func:`open_regular` opens a file for reading only if it is a regular file: a FIFO, a
  device (``/dev/zero``), a socket or a directory, directly or through a symbolic link,
  is refused at once instead of blocking or streaming forever.
* :func:`creation_mode` is the permission a new file gets from the process's umask
  (``0o666 & ~umask``), for files first created private (``tempfile.mkstemp`` makes
  them 0600) and then renamed into place.
"""
from __future__ import annotations

import os
import stat
from typing import BinaryIO

__all__ = ["NotARegularFile", "open_regular", "creation_mode", "current_umask"]


class NotARegularFile(OSError):
    """A path names a FIFO, device, socket or directory where a regular file is needed."""


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file (symbolic links are
    followed). Never blocks: the file is opened with ``O_NONBLOCK`` and checked with
    ``fstat`` before anything is read.

    Raises :class:`NotARegularFile` (an OSError naming the path and what it is) for a
    FIFO, device, socket or directory; other OSErrors (missing file, no permission) as
    ``os.open`` raises them.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{path} is {_kind(st.st_mode)}, not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def current_umask() -> int:
    """The process's file-creation mask (read from ``/proc/self/status`` where it is
    shown, so that no other thread ever sees a changed mask)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def creation_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()
