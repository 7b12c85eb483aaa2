"""
The queue manager's scheduler: jobs wait per transport and per
destination, and start within the transport's process limit and each
destination's concurrency window.

The window follows Postfix's nqmgr: it starts at
C{initial_destination_concurrency}, grows with positive feedback (a
delivery that reached the destination) up to the transport's
C{destination_concurrency_limit}, and shrinks with negative feedback (a
delivery that could not reach it at all, a "site failure").  When
C{destination_concurrency_failed_cohort_limit} windows' worth of
deliveries in a row fail that way, the destination is taken for dead:
its waiting mail is deferred at once, as is new mail for it, until
C{minimal_backoff_time} has passed or a delivery still under way
succeeds.  One broken site thus costs one round of timeouts, and never
holds up the others.
"""

from __future__ import annotations

import math
import re
from collections import deque
from typing import Callable, Deque, Dict, Optional, Set

from twisted.internet import defer

from tmta.logging import Logger
from tmta.qmgr.jobs import DestinationKey, Job

log = Logger()

def parseFeedback(text: str) -> Callable[[int], float]:
    """
    Parse a C{destination_concurrency_positive_feedback} or
    C{..._negative_feedback} value: a number, a fraction, or Postfix's
    C{1/concurrency} and C{1/sqrt_concurrency}.

    @return: the feedback for a given window.

    @raise ValueError: none of those.
    """
    value = text.strip().replace(" ", "")
    match = re.fullmatch(r"(\d+(?:\.\d*)?)/(concurrency|sqrt_concurrency|\d+(?:\.\d*)?)", value)
    if match:
        numerator = float(match.group(1))
        divisor = match.group(2)
        if divisor == "concurrency":
            return lambda window: numerator / max(1, window)
        if divisor == "sqrt_concurrency":
            return lambda window: numerator / math.sqrt(max(1, window))
        if float(divisor) == 0:
            raise ValueError(f"bad feedback value {text!r}")
        constant = numerator / float(divisor)
        return lambda window: constant
    try:
        constant = float(value)
    except ValueError:
        raise ValueError(f"bad feedback value {text!r}") from None
    return lambda window: constant


class Destination:
    """
    Jobs waiting for one destination of one transport, the deliveries
    running for it, and its concurrency window.

    @ivar window: how many deliveries may run at once; 0 while the
        destination is taken for dead.
    @ivar success: positive feedback gathered towards the next
        increase of the window.
    @ivar failure: negative feedback gathered towards the next decrease
        of the window.
    @ivar failedCohorts: consecutive site failures, in windows.
    @ivar suspended: why the destination is taken for dead, or C{None}.
    """

    def __init__(self, key: DestinationKey, window: int) -> None:
        self.key = key
        self.waiting: Deque[Job] = deque()
        self.busy = 0
        self.window = window
        self.success = 0.0
        self.failure = 0.0
        self.failedCohorts = 0.0
        self.suspended: Optional[str] = None
        self.revival = None

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.busy and self.suspended is None


class TransportQueue:
    """
    Jobs waiting for one transport, started within the transport's total
    limit and each destination's window.

    The destinations that may start one more job take turns, so that one
    busy destination neither starves the others nor makes every start
    look through its whole backlog.

    @param start: starts a job: returns a Deferred firing when the
        transport is done with it (its answer, or a failure).  An answer
        with a C{siteFailure} attribute (an L{Outcome}) gives the
        destination its feedback.
    @param complete: called with that result and the job once the job's
        place is free again (and the next job started): the bookkeeping
        that need not hold up the transport.
    @param suspend: called with a job and the reason when the job's
        destination is taken for dead: the job will not be started.
    @param destinationLimit: the most deliveries at once to one
        destination; 0 for no limit.
    @param initialConcurrency: where a destination's window starts
        (at most C{destinationLimit}); C{None} for C{destinationLimit}.
    @param cohortLimit: how many windows of site failures in a row make
        a destination dead; 0 never.
    @param deadTime: how long a dead destination stays so.
    @param clock: an C{IReactorTime}, for bringing dead destinations
        back; needed when C{cohortLimit} is set.
    """

    def __init__(self, name: str, limit: int, destinationLimit: int,
                 start: Callable[[Job], defer.Deferred],
                 complete: Optional[Callable[[object, Job], object]] = None,
                 *,
                 suspend: Optional[Callable[[Job, str], object]] = None,
                 initialConcurrency: Optional[int] = None,
                 positiveFeedback: Callable[[int], float] = lambda window: 1.0,
                 negativeFeedback: Callable[[int], float] = lambda window: 1.0,
                 cohortLimit: float = 0,
                 deadTime: float = 300.0,
                 clock=None) -> None:
        self.name = name
        self.limit = limit
        self.destinationLimit = destinationLimit
        if initialConcurrency is None or initialConcurrency <= 0:
            initialConcurrency = destinationLimit or 1
        if destinationLimit > 0:
            initialConcurrency = min(initialConcurrency, destinationLimit)
        self.initialConcurrency = initialConcurrency
        self.positiveFeedback = positiveFeedback
        self.negativeFeedback = negativeFeedback
        self.cohortLimit = cohortLimit
        self.deadTime = deadTime
        self.clock = clock
        self._start = start
        self._complete = complete
        self._suspend = suspend
        self.destinations: Dict[DestinationKey, Destination] = {}
        self.running = 0
        self._ready: Deque[Destination] = deque()
        self._isReady: Set[DestinationKey] = set()
        #: Set when the queue manager stops: jobs not started stay so.
        self.paused = False

    # -- looking in ------------------------------------------------------------

    @property
    def waiting(self) -> Dict[DestinationKey, int]:
        """
        How many jobs wait, by destination (those with any).
        """
        return {key: len(d.waiting) for key, d in self.destinations.items() if d.waiting}

    @property
    def perDestination(self) -> Dict[DestinationKey, int]:
        """
        How many jobs run, by destination (those with any).
        """
        return {key: d.busy for key, d in self.destinations.items() if d.busy}

    def window(self, key: DestinationKey) -> int:
        """
        The concurrency window of a destination (its initial one when it
        has no state).
        """
        destination = self.destinations.get(key)
        return self.initialConcurrency if destination is None else destination.window

    # -- jobs in and out ---------------------------------------------------------

    def submit(self, job: Job) -> None:
        destination = self.destinations.get(job.destination)
        if destination is None:
            destination = Destination(job.destination, self.initialConcurrency)
            self.destinations[job.destination] = destination
        if destination.suspended is not None:
            self._suspended(job, destination.suspended)
            return
        destination.waiting.append(job)
        self._markReady(destination)
        self.pump()

    def _markReady(self, destination: Destination) -> None:
        if (destination.waiting and destination.key not in self._isReady
                and destination.busy < destination.window):
            self._ready.append(destination)
            self._isReady.add(destination.key)

    def pump(self) -> None:
        while self._ready and not self.paused and (self.limit <= 0 or self.running < self.limit):
            destination = self._ready.popleft()
            self._isReady.discard(destination.key)
            if not destination.waiting or destination.busy >= destination.window:
                continue  # suspended, or its window shrank meanwhile
            job = destination.waiting.popleft()
            self.running += 1
            destination.busy += 1
            self._markReady(destination)
            d = self._start(job).addBoth(self._finished, job, destination)
            if self._complete is not None:
                d.addBoth(self._complete, job)

    def _finished(self, result, job: Job, destination: Destination):
        self.running -= 1
        destination.busy -= 1
        siteFailure = getattr(result, "siteFailure", False)
        if siteFailure:
            self._negative(destination, siteFailure if isinstance(siteFailure, str)
                           else "site failure")
        elif siteFailure is None:
            self._positive(destination)
        # Anything else (a failure, no answer) is no news of the site.
        if destination.idle and self.destinations.get(destination.key) is destination:
            del self.destinations[destination.key]
        self._markReady(destination)
        self.pump()
        return result

    def _suspended(self, job: Job, reason: str) -> None:
        if self._suspend is not None:
            self._suspend(job, f"delivery temporarily suspended: {reason}")

    # -- feedback ------------------------------------------------------------------

    def _positive(self, destination: Destination) -> None:
        """
        A delivery reached the destination: it is alive, and its window
        may grow by a step once enough such feedback has gathered.
        """
        if destination.suspended is not None:
            self._revive(destination)
            return
        destination.failedCohorts = 0.0
        if self.destinationLimit > 0 and destination.window >= self.destinationLimit:
            return
        step = self.positiveFeedback(destination.window)
        destination.success += step
        # Half a step of slack absorbs rounding in fractional feedback.
        while destination.success + step / 2 >= 1:
            destination.window += 1
            destination.success -= 1
            destination.failure = 0.0
        if self.destinationLimit > 0:
            destination.window = min(destination.window, self.destinationLimit)

    def _negative(self, destination: Destination, reason: str) -> None:
        """
        A delivery could not reach the destination: shrink its window,
        and take it for dead after enough failed cohorts.
        """
        if destination.suspended is not None:
            return
        destination.failedCohorts += 1.0 / max(1, destination.window)
        if self.cohortLimit > 0 and destination.failedCohorts >= self.cohortLimit:
            self._kill(destination, reason)
            return
        step = self.negativeFeedback(destination.window)
        destination.failure += step
        while destination.failure + step / 2 >= 1:
            destination.window -= 1
            destination.failure -= 1
            destination.success = 0.0
        destination.window = max(1, destination.window)

    def _kill(self, destination: Destination, reason: str) -> None:
        nexthop = destination.key[0]
        log.warn("{transport} destination {nexthop}: taken for dead for {time:.0f}s "
                 "after failed deliveries: {reason}",
                 transport=self.name, nexthop=nexthop, time=self.deadTime, reason=reason)
        destination.suspended = reason
        destination.window = 0
        if self.clock is not None:
            destination.revival = self.clock.callLater(self.deadTime, self._revive, destination)
        waiting, destination.waiting = destination.waiting, deque()
        for job in waiting:
            self._suspended(job, reason)

    def _revive(self, destination: Destination) -> None:
        if destination.revival is not None and destination.revival.active():
            destination.revival.cancel()
        destination.revival = None
        destination.suspended = None
        destination.window = self.initialConcurrency
        destination.success = destination.failure = destination.failedCohorts = 0.0
        if destination.idle and self.destinations.get(destination.key) is destination:
            del self.destinations[destination.key]

    def reviveAll(self) -> None:
        """
        Take no destination for dead any longer (a flush, as Postfix's
        C{postqueue -f} asks its queue manager to try dead destinations
        too).
        """
        for destination in list(self.destinations.values()):
            if destination.suspended is not None:
                self._revive(destination)

    def close(self) -> None:
        """
        Cancel the timers that bring dead destinations back.
        """
        for destination in self.destinations.values():
            if destination.revival is not None and destination.revival.active():
                destination.revival.cancel()
            destination.revival = None
