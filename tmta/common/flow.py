"""
In-flow back-pressure (Postfix's C{in_flow_delay}): while the queue
manager's active queue is full, cleanup holds each new message's answer
for up to C{in_flow_delay} seconds, so that senders slow down to the
speed at which mail leaves instead of filling the disk.

The signal is a file, C{private/inflow-full}, that qmgr creates when its
active queue fills and removes when room is made: one C{stat} per
message on cleanup's side, and a file operation only when the state
changes on qmgr's.
"""

from __future__ import annotations

from typing import Optional

import os

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


async def waitForRoom(clock, queueDirectory: str, limit: float, poll: float = 0.1) -> float:
    """
    cleanup's side: wait while the active queue is full, for at most
    C{limit} seconds.

    @return: how long it waited.
    """
    path = os.path.join(queueDirectory, FLAG)
    waited = 0.0
    while waited < limit and os.path.exists(path):
        step = min(poll, limit - waited)
        await task.deferLater(clock, step, lambda: None)
        waited += step
    return waited
