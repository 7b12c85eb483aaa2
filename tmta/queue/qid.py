"""
Queue ids: unique, sortable by arrival, safe as file names.

An id is the arrival time in microseconds (13 upper-case hex digits, so
that ids sort by time for the next century) followed by five hex digits
of the creating process's pid.  Two processes never share a pid at the
same moment, and one process never hands out the same microsecond twice,
so ids are unique without coordination; the queue file is still created
with C{O_EXCL} as a last guard.
"""

from __future__ import annotations

import os
import re
import time
from typing import Callable

_VALID = re.compile(r"^[0-9A-F]{18}$")


class QueueIdGenerator:
    """
    Hands out queue ids for one process.
    """

    def __init__(
        self, now: Callable[[], float] = time.time, pid: Callable[[], int] = os.getpid
    ) -> None:
        self._now = now
        self._pid = pid
        self._last = 0

    def next(self) -> str:
        """
        A new queue id, later than any this generator gave before.
        """
        usec = int(self._now() * 1_000_000)
        if usec <= self._last:
            usec = self._last + 1
        self._last = usec
        return f"{usec:013X}{self._pid() & 0xFFFFF:05X}"


def isQueueId(text: str) -> bool:
    """
    Whether C{text} is a well-formed queue id (and so safe as a file name).
    """
    return bool(_VALID.match(text))


def hashDirectory(queueId: str, depth: int) -> str:
    """
    The subdirectory path of a queue id in a hashed queue: one level per
    C{depth}, named by the id's fast-changing last time digits.
    """
    return "/".join(queueId[12 - i] for i in range(depth))
