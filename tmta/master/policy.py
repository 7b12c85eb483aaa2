"""
The master's process policy for one service: when to spawn a worker,
when to watch the service's sockets for work, when to throttle.

This is pure bookkeeping over an injected clock and spawn function, so
that it can be tested without processes.  It follows Postfix's master:
the master watches a service's listening sockets only while no worker of
that service can take another client; work arriving then means a new
worker is needed, up to C{maxproc}.  Workers report whether they can take
another client -- a multiplexing worker such as smtpd stays available
until it holds its per-process client limit, a single-client worker such
as local is busy while it serves one -- so the bookkeeping counts clients,
not just processes.  A service whose worker dies before serving anybody
(a start-up failure) is throttled for C{service_throttle_time} so that it
is not respawned in a tight loop; a worker that dies after it served
somebody is replaced on demand at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from tmta.logging import Logger


@dataclass
class WorkerState:
    """
    What the master knows of one worker.

    @ivar available: whether it can accept another client now.  A worker
        counts as available from the moment it is spawned, as in Postfix,
        so that a burst of work does not spawn a process per connection
        while the first one starts.
    @ivar served: how many clients it has accepted so far.
    """

    key: Hashable
    available: bool = True
    served: int = 0


class ServicePool:
    """
    The process policy of one master.cf service.

    @ivar maxproc: the process limit, C{0} for none.
    @ivar workers: the live workers by key.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        maxproc: int,
        throttleTime: float,
        clock: IReactorTime,
        spawn: Callable[[], Hashable],
        listenChanged: Callable[[bool], None] = lambda listening: None,
    ) -> None:
        """
        @param spawn: starts a worker and returns a key that identifies it
            in later L{status} and L{exited} calls (the master's handle for
            the process); raises on failure.
        @param listenChanged: called with C{True} when the master must
            watch the service's sockets for work, C{False} when it must
            stop.
        """
        self.name = name
        self.maxproc = maxproc
        self.throttleTime = throttleTime
        self.clock = clock
        self._spawn = spawn
        self._listenChanged = listenChanged
        self.workers: Dict[Hashable, WorkerState] = {}
        self._throttle: Optional[IDelayedCall] = None
        self._listening = False
        self.stopped = False
        self.predecessors = 0

    @property
    def throttled(self) -> bool:
        """
        Whether the service is throttled after a start-up failure.
        """
        return self._throttle is not None

    def available(self) -> int:
        """
        How many workers can accept another client now.
        """
        return sum(1 for w in self.workers.values() if w.available)

    def canSpawn(self) -> bool:
        """
        Whether the policy allows another worker now.
        """
        return (
            not self.stopped
            and not self.throttled
            and (self.maxproc == 0 or len(self.workers) + self.predecessors < self.maxproc)
        )

    def inherit(self, count: int) -> None:
        """
        C{count} workers of the service as it was configured before a
        reload are still finishing their work: they count against
        C{maxproc} until each is gone (L{predecessorExited}), so that a
        reload never runs two of a single-process service (qmgr) at once.
        """
        self.predecessors += count
        self.update()

    def predecessorExited(self) -> None:
        """
        One of the workers counted by L{inherit} has exited.
        """
        self.predecessors = max(0, self.predecessors - 1)
        self.update()

    #: Whether clients a full service cannot take are answered by the
    #: master (L{saturated}), rather than left waiting in the backlog.
    answersWhenFull = False

    def saturated(self) -> bool:
        """
        Whether no worker can take a client and none may be started now
        (the process limit, or a throttle).
        """
        return self.available() == 0 and not self.canSpawn() and not self.stopped

    def shouldListen(self) -> bool:
        """
        Whether the master must watch the service's sockets: when work
        would go unserved otherwise and a worker may be spawned, or, for
        a service that L{answersWhenFull}, when it is L{saturated}.
        """
        return self.available() == 0 and (
            self.canSpawn() or (self.answersWhenFull and not self.stopped))

    def update(self) -> None:
        """
        Tell the listener about a change of L{shouldListen}.
        """
        listening = self.shouldListen()
        if listening != self._listening:
            self._listening = listening
            self._listenChanged(listening)

    def workArrived(self) -> None:
        """
        A service socket became readable while the master watched it:
        start a worker if the policy allows.
        """
        if self.available() == 0 and self.canSpawn():
            self.spawn()
        self.update()

    def spawn(self) -> Optional[Hashable]:
        """
        Start one worker now.

        @return: its key, or C{None} when it could not be started (the
            service is then throttled).
        """
        try:
            key = self._spawn()
        except Exception:
            self.log.failure("{service}: cannot start a worker", service=self.name)
            self.throttle()
            return None
        self.workers[key] = WorkerState(key)
        self.update()
        return key

    def status(self, key: Hashable, available: bool, served: int) -> None:
        """
        A worker reported whether it can take another client and how many
        it has served.
        """
        worker = self.workers.get(key)
        if worker is None:
            return
        worker.available = available
        worker.served = max(worker.served, served)
        self.update()

    def exited(self, key: Hashable, normal: bool) -> None:
        """
        A worker's process ended.

        @param normal: whether it exited with status 0 (after C{max_use}
            or C{max_idle}, or when told to stop).
        """
        worker = self.workers.pop(key, None)
        if worker is None:
            return
        if not normal and not self.stopped:
            if worker.served == 0:
                self.log.warn(
                    "{service}: process died before serving anybody: "
                    "throttling the service for {seconds:g}s",
                    service=self.name,
                    seconds=self.throttleTime,
                )
                self.throttle()
            else:
                self.log.warn(
                    "{service}: process died unexpectedly after serving "
                    "{served} clients; it is replaced on demand",
                    service=self.name,
                    served=worker.served,
                )
        self.update()

    def throttle(self) -> None:
        """
        Spawn nothing for C{throttleTime} seconds.
        """
        if self._throttle is None:
            self._throttle = self.clock.callLater(self.throttleTime, self._unthrottle)
        self.update()

    def _unthrottle(self) -> None:
        self._throttle = None
        self.update()

    def stop(self) -> None:
        """
        Spawn nothing more: the service is going away.
        """
        self.stopped = True
        if self._throttle is not None:
            self._throttle.cancel()
            self._throttle = None
        self.update()
