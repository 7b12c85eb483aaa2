"""
The queue manager's scheduling and bookkeeping.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Set, Tuple

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from tmta.bounce.commands import BounceRecipients
from tmta.delivery import (
    BOUNCED,
    DEFERRED,
    SENT,
    Deliver,
    DeliveryRequest,
    RecipientStatus,
    RequestRecipient,
    logDelivery,
)
from tmta.queue.qfile import CorruptQueueFile, Envelope, Recipient, markDone
from tmta.queue.qid import isQueueId
from tmta.queue.store import QueueStore
from tmta.wire import ConnectionPool

log = Logger()


@dataclass
class ActiveMessage:
    """
    A message in C{active/} and what is under way for it.
    """

    queueId: str
    envelope: Envelope
    activated: float
    jobs: int = 0
    bounced: List[Tuple[Recipient, str, str]] = field(default_factory=list)
    deferred: Dict[int, str] = field(default_factory=dict)
    unmarked: List[Recipient] = field(default_factory=list)
    #: It was deferred before, and may have a defer log to remove.
    wasDeferred: bool = False
    #: Taken up by a flush: delivered even by a transport in
    #: defer_transports.
    flushed: bool = False


@dataclass
class Job:
    """
    One delivery request: recipients of one message for one destination.
    """

    message: ActiveMessage
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


class QueueManager:
    """
    The queue manager.

    @param connect: C{connect(service)} returns a Deferred firing with an
        AMP connection to a private service (a transport, bounce).
    @param resolve: returns a Deferred firing with a
        L{tmta.rewrite.Resolution}.
    @param transportLimits: the process limit of each transport in
        master.cf, which bounds how many deliveries run at once.
    """

    def __init__(self, reactor, config, store: QueueStore,
                 connect: Callable[[str], defer.Deferred],
                 resolve: Callable[[str], defer.Deferred],
                 transportLimits: Optional[Dict[str, int]] = None,
                 now: Callable[[], float] = time.time) -> None:
        self.reactor = reactor
        self.config = config
        self.store = store
        self.connect = connect
        self.resolve = resolve
        self.now = now
        self.transportLimits = transportLimits or {}
        self.active: Dict[str, ActiveMessage] = {}
        self.transports: Dict[str, TransportQueue] = {}
        self.activeLimit = config.getInt("qmgr_message_active_limit")
        self.minimalBackoff = config.getTime("minimal_backoff_time")
        self.maximalBackoff = config.getTime("maximal_backoff_time")
        self.queueLifetime = config.getTime("maximal_queue_lifetime")
        self.bounceLifetime = config.getTime("bounce_queue_lifetime")
        self.runDelay = config.getTime("queue_run_delay")
        self.softBounce = config.getBool("soft_bounce")
        self.deferTransports = set(config.getList("defer_transports"))
        self._flushing = False
        self.defaultProcessLimit = config.getInt("default_process_limit")
        self.ipcIdle = config.getTime("ipc_idle")
        self.pools: Dict[str, ConnectionPool] = {}
        self._scanning = False
        self._rescan = False
        self._deferredScan: Optional[task.LoopingCall] = None
        self.stopping = False
        # Deliveries started and finishings under way: stop() waits for
        # them, so that what a transport did is recorded before exit.
        self._outstanding = 0
        self._drained: Optional[defer.Deferred] = None

    # -- start and triggers ------------------------------------------------

    def start(self) -> None:
        """
        Recover what a crash left in C{active/}, then take up incoming and
        due deferred mail, and look at deferred mail every
        C{queue_run_delay}.
        """
        self.recoverActive()
        self.store.removeStale("incoming", 86400)
        self._deferredScan = task.LoopingCall(self.periodicScan)
        self._deferredScan.clock = self.reactor
        self._deferredScan.start(self.runDelay, now=True)

    def stop(self) -> defer.Deferred:
        """
        Take up no more mail and start no more deliveries; fire once the
        deliveries under way have answered and their results are in the
        queue files.  What was not started stays in C{active/} for the
        next queue manager, which the master starts only after this one
        has gone.
        """
        self.stopping = True
        if self._deferredScan is not None and self._deferredScan.running:
            self._deferredScan.stop()
        for queue in self.transports.values():
            queue.paused = True
        if self._outstanding:
            self._drained = defer.Deferred()
            drained = self._drained
        else:
            drained = defer.succeed(None)
        return drained.addBoth(self._closePools)

    def _closePools(self, result=None):
        for pool in self.pools.values():
            pool.close()
        return result

    def _begin(self) -> None:
        self._outstanding += 1

    def _end(self, result=None):
        self._outstanding -= 1
        if self._outstanding == 0 and self._drained is not None:
            drained, self._drained = self._drained, None
            drained.callback(None)
        return result

    def wakeup(self) -> None:
        """
        There may be new mail in C{incoming/}: scan it (once more after
        the scan under way, if any).
        """
        if self.stopping:
            return
        if self._scanning:
            self._rescan = True
            return
        self._scanning = True
        try:
            while True:
                self._rescan = False
                self._scan("incoming", due=lambda queueId: True)
                if not self._rescan:
                    break
        finally:
            self._scanning = False

    def incoming(self, queueId: str) -> None:
        """
        cleanup queued C{queueId}: take it up without listing the
        directory (it is gossip: checked like anything else).
        """
        if self.stopping:
            return
        if (
            queueId in self.active
            or not isQueueId(queueId)
            or len(self.active) >= self.activeLimit
            or not self.store.isComplete("incoming", queueId)
        ):
            self.wakeup()
            return
        try:
            self.store.move(queueId, "incoming", "active")
        except OSError:
            self.wakeup()
            return
        self.activate(queueId)

    def recoverActive(self) -> None:
        """
        Put back into C{incoming/} every file in C{active/} that this
        queue manager is not working on: left by a queue manager that
        crashed or was replaced, or by a step of this one that failed.
        The master never runs two queue managers at once.
        """
        for queueId in self.store.list("active"):
            if queueId in self.active:
                continue
            try:
                self.store.move(queueId, "active", "incoming")
                log.info("{queueId}: recovered from active queue", queueId=queueId)
            except OSError as e:
                log.error("{queueId}: cannot recover: {error}", queueId=queueId, error=e)

    def flush(self) -> None:
        """
        Try every deferred message now, whatever its retry time
        (C{tmta queue flush}, Postfix's C{postqueue -f}).
        """
        log.info("flush: trying deferred mail now")
        self._flushing = True
        try:
            self._scan("deferred", lambda queueId: True)
        finally:
            self._flushing = False

    def periodicScan(self) -> None:
        """
        Every C{queue_run_delay}: mail stranded in C{active/}, mail whose
        trigger was lost (a cleanup killed after it stored the file) and
        deferred mail now due.
        """
        self.recoverActive()
        self.wakeup()
        self.scanDeferred()

    def scanDeferred(self) -> None:
        now = self.now()

        def due(queueId: str) -> bool:
            try:
                return os.stat(self.store.path("deferred", queueId)).st_mtime <= now
            except OSError:
                return False

        self._scan("deferred", due)

    def _scan(self, queueName: str, due) -> None:
        if self.stopping:
            return
        for queueId in self.store.list(queueName):
            if len(self.active) >= self.activeLimit:
                return
            if queueId in self.active or not self.store.isComplete(queueName, queueId):
                continue
            if not due(queueId):
                continue
            try:
                self.store.move(queueId, queueName, "active")
            except OSError as e:
                log.error("{queueId}: cannot move to active: {error}", queueId=queueId, error=e)
                continue
            self.activate(queueId, wasDeferred=queueName == "deferred")

    # -- one message -------------------------------------------------------

    def activate(self, queueId: str, wasDeferred: bool = False) -> None:
        try:
            envelope = self.store.readEnvelope("active", queueId)
        except CorruptQueueFile as e:
            self.store.corrupt("active", queueId, str(e))
            return
        except OSError as e:
            log.error("{queueId}: cannot read: {error}", queueId=queueId, error=e)
            return
        message = ActiveMessage(queueId, envelope, self.now(), wasDeferred=wasDeferred,
                                flushed=self._flushing)
        self.active[queueId] = message
        pending = envelope.pending()
        log.info(
            "{queueId}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue active)",
            queueId=queueId, sender=envelope.sender, size=envelope.size, nrcpt=len(pending),
        )
        message.jobs += 1  # held while the recipients are being resolved
        d = defer.Deferred.fromCoroutine(self._schedule(message, pending))
        d.addErrback(lambda f: log.failure("{queueId}: scheduling failed", f, queueId=queueId))
        d.addBoth(lambda _: self._jobDone(message))

    async def _schedule(self, message: ActiveMessage, pending: List[Recipient]) -> None:
        groups: Dict[Tuple[str, str], List[Recipient]] = {}
        for recipient in pending:
            try:
                resolution = await self.resolve(recipient.address)
            except Exception as e:
                message.deferred[recipient.offset] = f"address resolver failure: {e}"
                continue
            groups.setdefault((resolution.transport, resolution.nexthop), []).append(recipient)
        for (transport, nexthop), recipients in groups.items():
            if transport in self.deferTransports and not message.flushed:
                # defer_transports: only a flush sends this mail.
                self._defer(message, nexthop, recipients, "deferred transport")
                continue
            queue = self._transport(transport)
            perRequest = self._recipientLimit(transport)
            for start in range(0, len(recipients), perRequest):
                batch = recipients[start : start + perRequest]
                destination = (nexthop, batch[0].address) if perRequest == 1 else (nexthop, "")
                message.jobs += 1
                queue.submit(Job(message, transport, nexthop, destination, batch))

    def _parameter(self, transport: str, suffix: str) -> int:
        specific = f"{transport}_{suffix}"
        if self.config.raw(specific) is not None:
            return self.config.getInt(specific)
        return self.config.getInt(f"default_{suffix}")

    def _pool(self, transport: str) -> ConnectionPool:
        pool = self.pools.get(transport)
        if pool is None:
            pool = ConnectionPool(lambda: self.connect(transport), self.reactor, self.ipcIdle)
            self.pools[transport] = pool
        return pool

    def _recipientLimit(self, transport: str) -> int:
        return max(1, self._parameter(transport, "destination_recipient_limit"))

    def _transport(self, name: str) -> TransportQueue:
        queue = self.transports.get(name)
        if queue is None:
            limit = self.transportLimits.get(name, self.defaultProcessLimit)
            queue = TransportQueue(
                name, limit, max(1, self._parameter(name, "destination_concurrency_limit")),
                lambda job: defer.Deferred.fromCoroutine(self._deliver(job)),
                self._delivered,
            )
            self.transports[name] = queue
        return queue

    async def _deliver(self, job: Job):
        """
        Hand a job to its transport.

        @return: the transport's statuses, or C{None} when it gave none
            (the job's recipients are then deferred, with the reason).
        """
        self._begin()
        message = job.message
        pool = self._pool(job.transport)
        try:
            agent = await pool.acquire()
        except Exception:
            self._defer(message, job.nexthop, job.recipients, "mail transport unavailable")
            return None
        try:
            result = await agent.callRemote(
                Deliver,
                queue_id=message.queueId,
                sender=message.envelope.sender,
                nexthop=job.nexthop,
                arrival=message.envelope.arrival,
                activated=message.activated,
                recipients=[
                    {"address": r.address, "original": r.original, "offset": r.offset}
                    for r in job.recipients
                ],
            )
        except Exception as e:
            pool.discard(agent)
            self._defer(message, job.nexthop, job.recipients,
                        f"delivery agent {job.transport} failed: {e}")
            return None
        pool.release(agent)
        return result["statuses"]

    def _delivered(self, statuses, job: Job):
        """
        Record what a transport did with a job (after the transport was
        given its next one).
        """
        message = job.message
        if isinstance(statuses, Failure):
            log.failure("{queueId}: delivery failed", statuses, queueId=message.queueId)
            self._defer(message, job.nexthop, [r for r in job.recipients
                                       if r.offset not in message.deferred], "internal error")
            statuses = None
        marking = None
        if statuses is not None:
            try:
                marking = self._applyStatuses(message, job, statuses)
            except Exception:
                log.failure("{queueId}: cannot record the delivery", queueId=message.queueId)
                self._defer(message, job.nexthop, [r for r in job.recipients
                                           if r.offset not in message.deferred],
                            "internal error")
        if marking is None:
            try:
                self._jobDone(message)
            finally:
                self._end()
            return None

        def marked(result):
            self._jobDone(message)
            return result

        return marking.addBoth(marked).addErrback(
            lambda f: log.failure("{queueId}: cannot mark recipients done", f,
                                  queueId=message.queueId)).addBoth(self._end)

    def _applyStatuses(self, message: ActiveMessage, job: "Job",
                       statuses) -> Optional[defer.Deferred]:
        """
        Record a delivery's statuses.

        @return: C{None}, or a Deferred firing once the recipients it
            delivered are marked done in the queue file.
        """
        recipients = job.recipients
        byOffset = {r.offset: r for r in recipients}
        done = []
        for status in statuses:
            recipient = byOffset.get(status["offset"])
            if recipient is None:
                continue  # gossip about a recipient we did not send
            if status["status"] == SENT:
                done.append(recipient)
            elif status["status"] == BOUNCED and not self.softBounce:
                message.bounced.append((recipient, status["dsn"], status["reason"]))
            else:
                message.deferred[recipient.offset] = status["reason"]
        answered = {s["offset"] for s in statuses}
        self._defer(message, job.nexthop, [r for r in recipients if r.offset not in answered],
                    "delivery agent gave no status")
        if done:
            if message.jobs > 1:
                # Other deliveries of this message are under way: record
                # these as done now, so a crash does not repeat them.
                return self._markDone(message, done)
            message.unmarked.extend(done)
        return None

    def _defer(self, message: ActiveMessage, nexthop: str, recipients: List[Recipient],
               reason: str) -> None:
        """
        Defer recipients no transport answered for (it was unavailable,
        crashed, or is in defer_transports), with the log line a
        transport would have written.
        """
        if not recipients:
            return
        request = DeliveryRequest(message.queueId, "", message.envelope.sender, nexthop, [],
                                  message.envelope.arrival, message.activated)
        started = self.now()
        for r in recipients:
            message.deferred[r.offset] = reason
            logDelivery(request, RequestRecipient(r.address, r.original, r.offset), "none",
                        RecipientStatus(r.offset, DEFERRED, "4.3.0", reason), started)

    def _markDone(self, message: ActiveMessage, recipients: List[Recipient]) -> defer.Deferred:
        path = self.store.path("active", message.queueId)

        def mark():
            fd = os.open(path, os.O_RDWR)
            try:
                for r in recipients:
                    markDone(fd, r)
            finally:
                os.close(fd)

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), mark)

    def _jobDone(self, message: ActiveMessage) -> None:
        message.jobs -= 1
        if message.jobs:
            return
        if not message.deferred and not message.bounced:
            # Every recipient is done: the common case, finished here
            # without the coroutine the other cases need.
            del self.active[message.queueId]
            self._remove(message)
            return
        self._begin()
        d = defer.Deferred.fromCoroutine(self._finish(message))
        d.addErrback(lambda f: log.failure("{queueId}: finishing failed", f,
                                           queueId=message.queueId))
        d.addBoth(self._end)

    def _remove(self, message: ActiveMessage) -> None:
        # Like the rename into active/, the unlink is done here: it does
        # not wait for the disk (nothing is synced), and costs less than
        # handing it to a thread and back.
        self.store.remove("active", message.queueId)
        if message.wasDeferred:
            self.store.removeDeferLog(message.queueId)
        log.info("{queueId}: removed", queueId=message.queueId)

    async def _finish(self, message: ActiveMessage) -> None:
        queueId = message.queueId
        envelope = message.envelope
        age = self.now() - envelope.arrival
        lifetime = self.bounceLifetime if not envelope.sender else self.queueLifetime
        if message.deferred and age > lifetime:
            for recipient in envelope.recipients:
                reason = message.deferred.pop(recipient.offset, None)
                if reason is not None:
                    message.bounced.append(
                        (recipient, "4.4.7", f"message is too old: {reason}"))
        if message.bounced:
            try:
                await self._bounce(message)
            except Exception as e:
                log.warn("{queueId}: cannot send the non-delivery notice: {error}",
                         queueId=queueId, error=e)
                for recipient, dsn, reason in message.bounced:
                    message.deferred[recipient.offset] = reason
        # The message stays in self.active until its file has left
        # active/, so that recoverActive leaves it alone meanwhile.
        try:
            if not message.deferred:
                self._remove(message)
                return
            if message.unmarked:
                # The file stays: record what the last delivery finished.
                await self._markDone(message, message.unmarked)
                message.unmarked = []
            backoff = min(self.maximalBackoff, max(self.minimalBackoff, age))
            retry = self.now() + backoff
            try:
                reasons = {r.address: message.deferred[r.offset]
                           for r in envelope.recipients if r.offset in message.deferred}
                self.store.writeDeferLog(queueId, reasons)
                path = self.store.path("active", queueId)
                os.utime(path, (retry, retry))
                self.store.move(queueId, "active", "deferred")
            except OSError as e:
                log.error("{queueId}: cannot defer: {error}", queueId=queueId, error=e)
        finally:
            del self.active[queueId]

    async def _bounce(self, message: ActiveMessage) -> None:
        bounce = await self.connect("bounce")
        try:
            await bounce.callRemote(
                BounceRecipients,
                queue_id=message.queueId,
                sender=message.envelope.sender,
                recipients=[
                    {"address": r.address, "original": r.original, "dsn": dsn, "reason": reason}
                    for r, dsn, reason in message.bounced
                ],
            )
        finally:
            if bounce.transport is not None:
                bounce.transport.loseConnection()
        await self._markDone(message, [r for r, _, _ in message.bounced])
        message.bounced = []
