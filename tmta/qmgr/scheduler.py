"""
The queue manager's scheduler: jobs wait per transport and per
destination, and start within the transport's process limit and each
destination's concurrency.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Deque, Dict, List, Optional, Set, Tuple

from twisted.internet import defer

from tmta.queue.qfile import Recipient

if TYPE_CHECKING:
    from tmta.qmgr.active import ActiveMessage


@dataclass
class Job:
    """
    One delivery request: recipients of one message for one destination.
    """

    message: "ActiveMessage"
    transport: str
    nexthop: str
    destination: Tuple[str, str]
    recipients: List[Recipient]


class TransportQueue:
    """
    Jobs waiting for one transport, started within the transport's total
    limit and its per-destination limit.

    Each destination has its own line of waiting jobs, and the
    destinations that may start one more job take turns, so that one
    busy destination neither starves the others nor makes every start
    look through its whole backlog.

    @param start: starts a job: returns a Deferred firing when the
        transport is done with it (its answer, or a failure).
    @param complete: called with that result and the job once the job's
        place is free again (and the next job started): the bookkeeping
        that need not hold up the transport.
    """

    def __init__(self, name: str, limit: int, destinationLimit: int,
                 start: Callable[[Job], defer.Deferred],
                 complete: Optional[Callable[[object, Job], object]] = None) -> None:
        self.name = name
        self.limit = limit
        self.destinationLimit = destinationLimit
        self._start = start
        self._complete = complete
        self.waiting: Dict[Tuple[str, str], Deque[Job]] = {}
        self.running = 0
        self.perDestination: Dict[Tuple[str, str], int] = {}
        self._ready: Deque[Tuple[str, str]] = deque()
        self._isReady: Set[Tuple[str, str]] = set()
        #: Set when the queue manager stops: jobs not started stay so.
        self.paused = False

    def submit(self, job: Job) -> None:
        line = self.waiting.get(job.destination)
        if line is None:
            line = self.waiting[job.destination] = deque()
        line.append(job)
        self._markReady(job.destination)
        self.pump()

    def _markReady(self, destination: Tuple[str, str]) -> None:
        if (destination in self.waiting and destination not in self._isReady
                and self.perDestination.get(destination, 0) < self.destinationLimit):
            self._ready.append(destination)
            self._isReady.add(destination)

    def pump(self) -> None:
        while self._ready and not self.paused and (self.limit <= 0 or self.running < self.limit):
            destination = self._ready.popleft()
            self._isReady.discard(destination)
            line = self.waiting[destination]
            job = line.popleft()
            if not line:
                del self.waiting[destination]
            self.running += 1
            self.perDestination[destination] = self.perDestination.get(destination, 0) + 1
            self._markReady(destination)
            d = self._start(job).addBoth(self._finished, job)
            if self._complete is not None:
                d.addBoth(self._complete, job)

    def _finished(self, result, job: Job):
        self.running -= 1
        count = self.perDestination[job.destination] - 1
        if count:
            self.perDestination[job.destination] = count
        else:
            del self.perDestination[job.destination]
        self._markReady(job.destination)
        self.pump()
        return result
