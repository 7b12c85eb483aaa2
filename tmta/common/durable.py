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
