"""
The queue manager: takes mail into the active queue, resolves its
recipients, and hands deliveries to transports through the scheduler.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, task

from tmta.common.eager import eagerly
from tmta.common.flow import InFlowFlag
from tmta.logging import Logger
from tmta.qmgr.active import ActiveMessages, MessageCompletion, Outstanding
from tmta.qmgr.jobs import ActiveMessage, Job
from tmta.qmgr.scan import FEED_SLICE, QueueScan
from tmta.qmgr.settings import QmgrSettings
from tmta.qmgr.transports import Transports
from tmta.queue.qfile import (
    DELIVERABLE_ATTRIBUTE,
    PROBE_ATTRIBUTE,
    VERIFY_REPORT,
    CorruptQueueFile,
    Recipient,
)
from tmta.queue.qid import isQueueId
from tmta.queue.store import QueueStore

log = Logger()


#: The queue file attributes the queue manager acts on.
_KEPT_ATTRIBUTES = frozenset({"filter", "dsn_ret", "dsn_envid", "requiretls",
                              PROBE_ATTRIBUTE, DELIVERABLE_ATTRIBUTE})

#: How many messages may wait at once for trivial-rewrite to resolve
#: their recipients.  Enough to keep it busy; few enough that taking up
#: a queue of 20,000 deferred messages holds no request, coroutine and
#: answer for each of them.
RESOLVING_LIMIT = 100

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
                 resolve: Callable[..., defer.Deferred],
                 transportLimits: Optional[Dict[str, int]] = None,
                 now: Callable[[], float] = time.time) -> None:
        self.reactor = reactor
        #: The queue managers' lock (L{_onlyQueueManager}).
        self._lock: Optional[int] = None
        self.config = config
        self.settings = QmgrSettings.fromConfig(config)
        self.store = store
        self.connect = connect
        self.resolve = resolve
        self.now = now
        self.active = ActiveMessages()
        self.active.onRemoved = self._roomMade
        # The passes over incoming/ and deferred/, fed from in turns so
        # that neither new nor deferred mail starves the other.
        self._scans = [QueueScan("incoming"), QueueScan("deferred")]
        self._turn = 0
        self._feeding = False
        self._feedCall = None
        # Set when mail was left waiting for want of room (the in-flow
        # flag is then raised until some is made).
        self._leftWaiting = False
        # Messages whose recipients trivial-rewrite is resolving.
        self._resolving = 0
        self.inFlow = InFlowFlag(store.directory)
        self._deferredScan: Optional[task.LoopingCall] = None
        self.stopping = False
        # Deliveries started and finishings under way: stop() waits for
        # them, so that what a transport did is recorded before exit.
        self.outstanding = Outstanding()
        self.completion = MessageCompletion(reactor, self.settings, store, self.active, connect,
                                            self.outstanding, now)
        self.transports = Transports(reactor, config, connect, self.completion,
                                     self.outstanding, transportLimits)

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
        self._deferredScan.start(self.settings.runDelay, now=True)

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
        if self._feedCall is not None and self._feedCall.active():
            self._feedCall.cancel()
        self.inFlow.set(False)
        self.transports.close()
        return self.outstanding.drained().addBoth(self.transports.closePools)

    def wakeup(self) -> None:
        """
        There may be new mail in C{incoming/}: scan it (once more after
        the pass under way, if any).
        """
        self._requestScan(self._scans[0])

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
            or self._full()
            or self._resolving >= RESOLVING_LIMIT
            or not self.store.isRegular("incoming", queueId)
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

    def _full(self) -> bool:
        """
        Whether the active queue holds as much as it may: at most
        C{qmgr_message_active_limit} messages, and new messages are taken
        up only while their recipients number fewer than
        C{qmgr_message_recipient_limit}.  Full, it asks cleanup to slow
        the inflow (C{in_flow_delay}).
        """
        settings = self.settings
        full = (len(self.active) >= settings.activeLimit
                or (settings.recipientLimit > 0
                    and self.active.recipients >= settings.recipientLimit))
        if full:
            self._leftWaiting = True
            self.inFlow.set(True)
        return full

    def _roomMade(self) -> None:
        if not self._leftWaiting or self._full() or self.stopping:
            return
        self._leftWaiting = False
        self.inFlow.set(False)
        self._feedLater()

    def _feedLater(self) -> None:
        """
        Go on feeding the active queue at the next turn of the reactor
        (not from within the completion or answer that made room).
        """
        if self.stopping or not any(scan.running for scan in self._scans):
            return
        if self._feedCall is None or not self._feedCall.active():
            self._feedCall = self.reactor.callLater(0, self._feed)

    def recoverActive(self) -> None:
        """
        Put back into C{incoming/} every file in C{active/} that this
        queue manager is not working on: left by a queue manager that
        crashed or was replaced, or by a step of this one that failed.

        Only while no other queue manager works on the queue: master.cf
        may name two (mailcow's C{watchdog_qmgr}), and a file the other
        is delivering must not be delivered again (L{_onlyQueueManager}).
        """
        if not self._onlyQueueManager():
            return
        try:
            self._recoverActive()
        finally:
            self._shareQueue()

    def _onlyQueueManager(self) -> bool:
        """
        Whether no other queue manager of this queue runs now: each holds
        a shared lock on C{pid/qmgr.lock} while it runs, and this one can
        make its own exclusive only when none does.  (POSIX record locks:
        the change back to shared is atomic, and a process that dies lets
        go of its lock.)
        """
        import fcntl

        if self._lock is None:
            path = os.path.join(self.store.directory, "pid", "qmgr.lock")
            try:
                self._lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as e:
                # Mail left in active/ must not be stranded: recovered as
                # by a queue manager that is alone.
                log.warn("cannot open {path}: {error}: taking active/ back as if no other "
                         "queue manager ran", path=path, error=e.strerror or e)
                return True
        try:
            fcntl.lockf(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._shareQueue()
            return False
        return True

    def _shareQueue(self) -> None:
        """
        Hold the shared lock that says this queue manager runs (taken
        again later when another is recovering and holds it exclusively).
        """
        import fcntl

        if self._lock is None or self.stopping:
            return
        try:
            fcntl.lockf(self._lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            self.reactor.callLater(0.1, self._shareQueue)

    def _recoverActive(self) -> None:
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
        Try every deferred message now, whatever its retry time, and
        every destination taken for dead (C{tmta queue flush}, Postfix's
        C{postqueue -f}).
        """
        log.info("flush: trying deferred mail now")
        self.transports.reviveAll()
        self._requestScan(self._scans[1], everything=True)

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
        """
        Take up the deferred mail whose retry time has come (once more
        after the pass under way, if any).
        """
        self._requestScan(self._scans[1])

    def _due(self, queueId: str) -> bool:
        """
        Whether a deferred message's retry time has come.  One further
        off than any backoff gives (a clock that was wrong, a file
        touched by hand) is not waited for.
        """
        try:
            retry = os.stat(self.store.path("deferred", queueId)).st_mtime
        except OSError:
            return False
        now = self.now()
        return retry <= now or retry > now + self.settings.maximalBackoff

    def _requestScan(self, scan: QueueScan, everything: bool = False) -> None:
        if self.stopping:
            return
        try:
            scan.request(self.store.list, everything)
        except OSError as e:
            log.error("cannot scan the {queue} queue: {error}", queue=scan.queueName, error=e)
            return
        self._feed()

    def _feed(self) -> None:
        """
        Take up mail from the passes under way, a message from each in
        turn, while the active queue has room and fewer than
        L{RESOLVING_LIMIT} messages wait for their recipients to be
        resolved; after L{FEED_SLICE} queue files, go on at the next
        turn of the reactor.
        """
        if self._feeding:
            # Asked again from within a message being taken up: the
            # loop under way sees the pass that was asked for.
            return
        self._feeding = True
        try:
            for _ in range(FEED_SLICE):
                if self.stopping or self._full() or self._resolving >= RESOLVING_LIMIT:
                    return
                found = self._nextQueued()
                if found is None:
                    return
                self._takeUp(*found)
            self._feedLater()
        finally:
            self._feeding = False

    def _nextQueued(self) -> Optional[Tuple[QueueScan, str]]:
        """
        The next message of the passes under way, from each in turn.
        """
        count = len(self._scans)
        for step in range(count):
            index = (self._turn + step) % count
            queueId = self._scans[index].next(self.store.list)
            if queueId is not None:
                self._turn = (index + 1) % count
                return self._scans[index], queueId
        return None

    def _takeUp(self, scan: QueueScan, queueId: str) -> None:
        """
        Move a message of a pass into C{active/} and activate it, when
        it is still there, complete, and (deferred) due.
        """
        queueName = scan.queueName
        if queueId in self.active:
            return
        if not self.store.isRegular(queueName, queueId):
            # Never taken into active/ (a link would lead to another
            # queue file): set aside for the operator, with a word.
            self.store.corrupt(queueName, queueId, "not a regular file")
            return
        if not self.store.isComplete(queueName, queueId):
            return
        if queueName == "deferred" and not scan.everything and not self._due(queueId):
            return
        try:
            self.store.move(queueId, queueName, "active")
        except FileNotFoundError:
            return  # taken up meanwhile, by a trigger or an operator
        except OSError as e:
            log.error("{queueId}: cannot move to active: {error}", queueId=queueId, error=e)
            return
        self.activate(queueId, wasDeferred=queueName == "deferred",
                      flushed=queueName == "deferred" and scan.everything)

    # -- one message -------------------------------------------------------

    def activate(self, queueId: str, wasDeferred: bool = False, flushed: bool = False) -> None:
        try:
            envelope = self.store.readEnvelope("active", queueId)
        except CorruptQueueFile as e:
            self.store.corrupt("active", queueId, str(e))
            return
        except OSError as e:
            log.error("{queueId}: cannot read: {error}", queueId=queueId, error=e)
            return
        # Only what the queue manager reads stays in memory with the
        # message: the active queue may hold qmgr_message_active_limit
        # of them.
        envelope.attributes = {name: value for name, value in envelope.attributes.items()
                               if name in _KEPT_ATTRIBUTES}
        pending = envelope.pending()
        probe = envelope.attributes.get(PROBE_ATTRIBUTE)
        message = ActiveMessage(queueId, envelope, self.now(), wasDeferred=wasDeferred,
                                flushed=flushed, recipientCount=len(pending),
                                probe=probe in ("yes", VERIFY_REPORT),
                                report=probe == VERIFY_REPORT)
        self.active[queueId] = message
        log.info(
            "{queueId}: from=<{sender}>, size={size}, nrcpt={nrcpt} (queue active)",
            queueId=queueId, sender=envelope.sender, size=envelope.size, nrcpt=len(pending),
        )
        message.jobs += 1  # held while the recipients are being resolved
        scheduled = eagerly(self._schedule(message, pending))
        if not isinstance(scheduled, defer.Deferred):
            self.completion.jobDone(message)
            return
        self._resolving += 1
        scheduled.addErrback(
            lambda f: log.failure("{queueId}: scheduling failed", f, queueId=queueId))
        scheduled.addBoth(lambda _: self._scheduled(message))

    def _scheduled(self, message: ActiveMessage) -> None:
        """
        A message's recipients, which had to wait for trivial-rewrite,
        are resolved and handed to their transports.
        """
        self._resolving -= 1
        self._feedLater()
        self.completion.jobDone(message)

    async def _schedule(self, message: ActiveMessage, pending: List[Recipient]) -> None:
        if message.probe and not self._probeAdmitted(message, pending):
            return
        groups: Dict[Tuple[str, str], List[Recipient]] = {}
        # A content filter (content_filter, or a FILTER action) sends
        # every recipient through its transport instead of the one the
        # address resolves to -- but not a probe, which only asks.
        contentFilter = "" if message.probe else message.envelope.attributes.get("filter", "")
        for recipient in pending:
            if contentFilter:
                groups.setdefault(self._filterRoute(contentFilter, recipient.address),
                                  []).append(recipient)
                continue
            try:
                sender = message.envelope.sender if self.settings.senderDependent else None
                if message.probe and not message.report:
                    # The verify service's probes take the routes
                    # address_verify_* give them; sendmail -bv's do not.
                    resolution = await self.resolve(recipient.address, sender, verify=True)
                elif sender is not None:
                    resolution = await self.resolve(recipient.address, sender)
                else:
                    resolution = await self.resolve(recipient.address)
            except Exception as e:
                self.completion.defer(message, "none", [recipient],
                                      f"address resolver failure: {e}")
                continue
            groups.setdefault((resolution.transport, resolution.nexthop), []).append(recipient)
        for (transport, nexthop), recipients in groups.items():
            if transport in self.settings.deferTransports and not message.flushed:
                # defer_transports: only a flush sends this mail.
                self.completion.defer(message, nexthop, recipients, "deferred transport")
                continue
            queue = self.transports.queue(transport)
            perRequest = self.transports.recipientLimit(transport)
            for start in range(0, len(recipients), perRequest):
                batch = recipients[start : start + perRequest]
                destination = (nexthop, batch[0].address) if perRequest == 1 else (nexthop, "")
                message.jobs += 1
                queue.submit(Job(message, transport, nexthop, destination, batch))

    def _filterRoute(self, contentFilter: str, address: str) -> Tuple[str, str]:
        """
        The transport and next hop a content filter C{transport:nexthop}
        gives a recipient: without a next hop, C{default_filter_nexthop},
        else the recipient's domain, else C{myhostname}.
        """
        transport, _, nexthop = contentFilter.partition(":")
        if not nexthop:
            _, at, domain = address.rpartition("@")
            nexthop = self.settings.defaultFilterNexthop or (at and domain) or \
                self.settings.myhostname
        return transport, nexthop

    def _probeAdmitted(self, message: ActiveMessage, pending: List[Recipient]) -> bool:
        """
        Whether an address verification probe goes to a transport: not
        when cleanup already found its answer (an alias of several
        addresses), nor past C{address_verify_pending_request_limit}
        probes in the active queue (they are answered "deferred").
        """
        known = message.envelope.attributes.get(DELIVERABLE_ATTRIBUTE)
        if known:
            self.completion.deliverable(message, pending, known)
            return False
        probes = sum(1 for m in self.active.values() if m.probe and not m.report)
        if not message.report and probes > self.settings.verifyPendingLimit:
            self.completion.defer(message, "none", pending,
                                  "Too many address verification requests", "4.3.2")
            return False
        return True
