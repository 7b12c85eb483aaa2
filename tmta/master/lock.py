"""
One master per queue, and no master beside the workers of one that has
gone.

The master holds an exclusive C{flock} on C{pid/master.lock} in the
queue directory, and every worker holds the same lock by inheriting its
descriptor through the fork server: the lock is let go only once the
master and all its workers have exited.  A master that was killed leaves
workers finishing what they hold (L{tmta.master.runtime}); a new master
waits for them before it starts, as Postfix's master refuses to run
twice, so that two queue managers never work on the same files.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Callable

from tmta.logging import Logger

log = Logger()

LOCK_NAME = "master.lock"


class MasterRunning(Exception):
    """
    Another master, or workers of a master that has gone, still hold the
    queue.
    """


def acquireMasterLock(queueDirectory: str, wait: float = 30.0,
                      sleep: Callable[[float], None] = time.sleep,
                      now: Callable[[], float] = time.monotonic) -> int:
    """
    Take the queue's master lock, waiting up to C{wait} seconds for the
    workers of a master that has gone to finish.

    @return: the locked descriptor (close-on-exec: only the fork server
        is given it).
    @raise MasterRunning: it is still held after C{wait} seconds.
    """
    path = os.path.join(queueDirectory, "pid", LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = now() + wait
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise
        if now() >= deadline:
            os.close(fd)
            raise MasterRunning(
                f"the mail system is already running on {queueDirectory}: another master, "
                "or workers of one that has gone, hold " + path)
        if not told:
            log.warn("waiting for the processes of another master to finish with "
                     "{queue}", queue=queueDirectory)
            told = True
        sleep(0.2)
