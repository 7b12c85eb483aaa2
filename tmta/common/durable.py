"""
Durable files: what makes a write survive a crash, for the queue and
for mailboxes alike.
"""

from __future__ import annotations

import os
from typing import Callable


def fsyncDirectory(path: str, fsync: Callable[[int], None] = os.fsync) -> None:
    """
    fsync a directory, so that the names created in it survive a crash.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync(fd)
    finally:
        os.close(fd)


def fsyncName(path: str) -> None:
    """
    Make the name of the (already fsynced) file C{path} survive a crash.
    The writer of a directory it may add to but not read (C{maildrop/},
    for an ordinary user) cannot fsync the directory: it flushes the
    whole file system the file is on instead.
    """
    try:
        fsyncDirectory(os.path.dirname(path))
        return
    except PermissionError:
        pass
    fd = os.open(path, os.O_RDONLY)
    try:
        _syncfs(fd)
    finally:
        os.close(fd)


def _syncfs(fd: int) -> None:
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (OSError, AttributeError):
        pass
    os.sync()


def writeFully(fd: int, data: bytes) -> None:
    """
    Write all of C{data} to C{fd}, however many system calls it takes.
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
