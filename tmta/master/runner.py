"""
One master.cf service under the master: its listeners, its pool of
worker processes (started through the fork server, each with a control
channel and a log channel back to the master), its wake-up timer, and
its hand-over from the same service before a reload.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Dict, List, Optional

from twisted.internet import defer, task
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure

from tmta.common.contract import WorkerArguments, workerDescriptors
from tmta.config import MasterEntry
from tmta.logging import Logger
from tmta.master.control import Shutdown, WorkerStatus
from tmta.master.listeners import Listener, ListenerWatcher
from tmta.master.policy import ServicePool
from tmta.master.spawner import LineLog, Worker
from tmta.wire import QuietAMP, connectService
from tmta.wire.triggers import Wakeup

log = Logger()

_STOP_GRACE = 10.0
_ORPHAN_GRACE = 5.0


def _factoryOf(protocol) -> Factory:
    """
    A factory whose one connection is C{protocol}.
    """
    return Factory.forProtocol(lambda: protocol)


class _WorkerControl(QuietAMP):
    """
    The master's end of one worker's control channel.

    The worker's exit is reported by the fork server; should the fork
    server itself have gone, the closing of this channel stands in for
    it.
    """

    def __init__(self, pool: ServicePool, worker: Worker) -> None:
        super().__init__()
        self.pool = pool
        self.worker = worker

    @WorkerStatus.responder
    def workerStatus(self, available: bool, served: int):
        self.pool.status(self.worker, available, served)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.pool.clock.callLater(_ORPHAN_GRACE, self._orphaned)

    def _orphaned(self) -> None:
        if not self.worker.ended:
            self.worker.exited(-1)


class ServiceRunner:
    """
    One master.cf service under the master: its listeners, its pool of
    workers and its wakeup timer.
    """

    def __init__(
        self,
        master,
        entry: MasterEntry,
        listeners: List[Listener],
        maxproc: int,
        busyReply: Optional[bytes] = None,
    ) -> None:
        """
        @param master: the L{tmta.master.service.MasterService} the
            service runs under, whose configuration, fork server and
            accepted configuration its workers are started with.
        @param busyReply: what a client hears when every process is
            busy (L{IComponent.busyReply}).
        """
        self.master = master
        self.entry = entry
        self.listeners = listeners
        self.reactor = master.reactor
        config = master.configuration.serviceConfig(entry)
        self.tag = f"{config.get('syslog_name')}/{entry.command}"
        self.processes: Dict[Worker, Worker] = {}
        self.pool = ServicePool(
            f"{entry.service}/{entry.type}",
            maxproc,
            config.getTime("service_throttle_time"),
            master.reactor,
            self.spawn,
            self._listenChanged,
        )
        # A network service's clients hear its busy reply (smtpd's 421)
        # when every process is busy.
        self.pool.answersWhenFull = busyReply is not None and entry.type == "inet"
        self._watchers = [ListenerWatcher(listener, self.pool, busyReply) for listener in listeners]
        self._wakeup: Optional[task.LoopingCall] = None
        self.used = False
        #: Workers of this service from before reloads, still finishing.
        self.predecessors: List[Worker] = []

    def start(self) -> None:
        self.pool.update()
        if self.entry.wakeup and self.entry.type in ("unix", "fifo"):
            self._wakeup = task.LoopingCall(self.wakeup)
            self._wakeup.clock = self.reactor
            self._wakeup.start(self.entry.wakeup, now=not self.entry.wakeupIfUsed)

    def follow(self, previous: "ServiceRunner") -> None:
        """
        Take over from the same service before a reload: its workers
        still running -- and those it had itself taken over from reloads
        before, still finishing -- count against this one's process
        limit until they have finished, so that reloads in quick
        succession never run two of a single-process service (qmgr).
        """
        workers = [w for w in list(previous.processes.values()) + previous.predecessors
                   if not w.ended]
        self.predecessors = workers
        self.pool.inherit(len(workers))
        for worker in workers:
            worker.done.addBoth(self._predecessorExited, worker)

    def _predecessorExited(self, result, worker: Worker):
        if worker in self.predecessors:
            self.predecessors.remove(worker)
        self.pool.predecessorExited()
        if self.entry.wakeup and not self.predecessors and not self.processes \
                and not self.pool.stopped:
            # The wake-up sent when this service started may have gone to
            # the worker that has just left: a service the master wakes
            # (qmgr, pickup) is started now, not at its next timer.
            self.wakeup()
        return result

    def _listenChanged(self, listening: bool) -> None:
        for watcher in self._watchers:
            if listening:
                self.reactor.addReader(watcher)
            else:
                self.reactor.removeReader(watcher)

    def spawn(self) -> Worker:
        """
        Start one worker process with the service's sockets, through the
        fork server; return its handle.
        """
        master = self.master
        controlEnd, childControl = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        logEnd, childLog = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Room for bursts of log lines, so a busy master slows no worker.
        for sock, option in ((childLog, socket.SO_SNDBUF), (logEnd, socket.SO_RCVBUF)):
            sock.setsockopt(socket.SOL_SOCKET, option, 1 << 20)
        arguments = WorkerArguments(f"{self.entry.service}/{self.entry.type}",
                                    master.configuration.directory,
                                    master.configuration.embedded)
        arguments.overrides = [f"{name}={value}" for name, value in master.overrides.items()]
        arguments.accepted = master.accepted
        for listener in self.listeners:
            arguments.addListener(listener.familyName)
        args = arguments.toArgv()
        fds = workerDescriptors(master.devnull, childLog.fileno(), childControl.fileno(),
                                [listener.fileno() for listener in self.listeners])
        worker = Worker(self.tag, self.workerEnded)
        try:
            master.forkserver.spawn(args, fds, worker)
        except OSError:
            for sock in (controlEnd, logEnd):
                sock.close()
            raise
        finally:
            childControl.close()
            childLog.close()
        control = _WorkerControl(self.pool, worker)
        worker.control = control
        logs = LineLog(worker.tag, master.batchLogs)
        for sock, protocol in ((controlEnd, control), (logEnd, logs)):
            sock.setblocking(False)
            self.reactor.adoptStreamConnection(
                sock.fileno(), socket.AF_UNIX, _factoryOf(protocol))
            sock.close()
        worker.done = defer.Deferred()
        self.processes[worker] = worker
        self.used = True
        return worker

    def workerEnded(self, worker: Worker, status: int) -> None:
        self.processes.pop(worker, None)
        self.master.forkserver.forget(worker)
        transport = worker.control.transport if worker.control is not None else None
        if transport is not None:
            transport.loseConnection()
        if status != 0:
            how = f"killed by signal {-status}" if status < 0 else f"status {status}"
            log.warn("{tag}: process ended with {how}", tag=worker.tag(), how=how)
        self.pool.exited(worker, status == 0)
        worker.done.callback(None)
        if status != 0 and self.entry.wakeup and not self.processes and not self.pool.stopped:
            # A service the master wakes (qmgr, pickup) that died is
            # started again now (once the service is not throttled), not
            # at its next timer: mail may be waiting in active/ for it.
            self.wakeup()

    def wakeup(self) -> None:
        """
        Trigger the service on its timer, as Postfix's master does.
        """
        if self.entry.wakeupIfUsed and not self.used:
            return
        def send(protocol: amp.AMP):
            protocol.callRemote(Wakeup, reason="timer")
            if protocol.transport is not None:
                protocol.transport.loseConnection()

        d = connectService(
            self.reactor,
            self.master.configuration.main.get("queue_directory"),
            self.entry.service,
            self.entry.private,
        ).addCallback(send)
        d.addErrback(
            lambda f: log.warn(
                "{service}: wakeup failed: {error}", service=self.entry.service, error=f.value
            )
        )

    def stop(self, closeListeners: bool = True, kill: bool = True) -> defer.Deferred:
        """
        Spawn nothing more, ask every worker to leave, and fire when they
        have.

        @param kill: kill the workers that have not left within a grace
            period (the master is stopping).  At a reload they are not:
            as in Postfix, each finishes what it holds -- an SMTP session
            to its end, the deliveries under way -- however long that
            takes, and the service's new workers wait for the room it
            leaves.
        """
        if self._wakeup is not None and self._wakeup.running:
            self._wakeup.stop()
        self.pool.stop()
        self._listenChanged(False)
        waits = []
        # Predecessors were asked to leave at the reload that made them
        # so; they are waited for (and killed) with the rest.
        for worker in list(self.processes.values()) + list(self.predecessors):
            control = worker.control
            if control is not None and control.transport is not None:
                control.callRemote(Shutdown).addErrback(lambda f: None)
            if kill:
                timer = self.reactor.callLater(_STOP_GRACE, self._kill, worker)
                worker.done.addBoth(lambda r, t=timer: t.cancel() if t.active() else None)
            waits.append(worker.done)
        if closeListeners:
            for listener in self.listeners:
                listener.close()
        return defer.DeferredList(waits)

    def _kill(self, worker: Worker) -> None:
        if not worker.ended and worker.pid is not None:
            log.warn("{tag}: did not stop: killing it", tag=worker.tag())
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except OSError:
                pass


