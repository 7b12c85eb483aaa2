"""
In-flow back-pressure (Postfix's C{in_flow_delay}): while the queue
manager's active queue is full, cleanup holds each new message's answer
for up to C{in_flow_delay} seconds, so that senders slow down to the
speed at which mail leaves instead of filling the disk.

The signal is a file, C{private/inflow-full}, that qmgr creates when its
active queue fills and removes when room is made: a file operation only
when the state changes on qmgr's side, and on cleanup's a C{stat} at most
every tenth of a second while there is room (L{InFlowGate}).
"""

from __future__ import annotations

import os
from typing import Optional

from twisted.internet import task

FLAG = os.path.join("private", "inflow-full")


class InFlowFlag:
    """
    qmgr's side: says whether the active queue is full.
    """

    def __init__(self, queueDirectory: str) -> None:
        self.path = os.path.join(queueDirectory, FLAG)
        self.full: Optional[bool] = None

    def set(self, full: bool) -> None:
        if full == self.full:
            return
        self.full = full
        try:
            if full:
                with open(self.path, "w"):
                    pass
            else:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError:
            # Without the flag cleanup does not wait: mail keeps flowing.
            self.full = None


class InFlowGate:
    """
    cleanup's side: holds a message's answer while the active queue is
    full, for at most C{limit} seconds, looking at the flag every
    C{poll} seconds.

    Having found room, it takes that as the answer for the next C{poll}
    seconds rather than ask the file system for every message: a queue
    that fills is noticed up to C{poll} seconds late, which the
    C{limit} of a wait is anyway counted in.
    """

    def __init__(self, clock, queueDirectory: str, limit: float, poll: float = 0.1) -> None:
        self.clock = clock
        self.path = os.path.join(queueDirectory, FLAG)
        self.limit = limit
        self.poll = poll
        self._roomUntil = float("-inf")

    def _full(self) -> bool:
        now = self.clock.seconds()
        if now < self._roomUntil:
            return False
        full = os.path.exists(self.path)
        if not full:
            self._roomUntil = now + self.poll
        return full

    def mayWait(self) -> bool:
        """
        Whether L{wait} may wait now: C{False} is the common case,
        answered without a coroutine.
        """
        return self.limit > 0 and self._full()

    async def wait(self) -> float:
        """
        Wait while the active queue is full.

        @return: how long it waited.
        """
        waited = 0.0
        while waited < self.limit and self._full():
            step = min(self.poll, self.limit - waited)
            await task.deferLater(self.clock, step, lambda: None)
            waited += step
        return waited
