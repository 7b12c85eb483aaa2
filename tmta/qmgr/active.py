"""
Messages in the active queue and what happens to them when their
deliveries answer: each recipient's result recorded in the queue file,
and the message then removed, deferred with a retry time, or bounced.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from tmta.bounce.commands import BounceRecipients
from tmta.delivery import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    RecipientStatus,
    RequestRecipient,
    logDelivery,
)
from tmta.logging import Logger
from tmta.mail.dsn import notifies
from tmta.qmgr.jobs import ActiveMessage, Job, Outcome
from tmta.qmgr.settings import QmgrSettings
from tmta.queue.qfile import Recipient, markDone
from tmta.queue.store import QueueStore
from tmta.verify.client import VerifyClient
from tmta.verify.commands import BOUNCE, DEFER, OK

log = Logger()


class ActiveMessages(Dict[str, ActiveMessage]):
    """
    The active messages by queue id, and how many recipients they had
    when taken up (C{qmgr_message_recipient_limit} bounds it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.recipients = 0
        #: Called after a message leaves (the queue manager may take up
        #: another).
        self.onRemoved: Optional[Callable[[], None]] = None

    def __setitem__(self, queueId: str, message: ActiveMessage) -> None:
        previous = self.get(queueId)
        if previous is not None:
            self.recipients -= previous.recipientCount
        super().__setitem__(queueId, message)
        self.recipients += message.recipientCount

    def __delitem__(self, queueId: str) -> None:
        self.recipients -= self[queueId].recipientCount
        super().__delitem__(queueId)
        if self.onRemoved is not None:
            self.onRemoved()


class Outstanding:
    """
    Counts work whose result must reach the queue files before the queue
    manager may exit: deliveries started, and messages being finished.
    """

    def __init__(self) -> None:
        self.count = 0
        self._waiting: List[defer.Deferred] = []

    def begin(self) -> None:
        self.count += 1

    def end(self, result=None):
        self.count -= 1
        if self.count == 0:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(None)
        return result

    def drained(self) -> defer.Deferred:
        """
        @return: a Deferred firing once nothing is outstanding.
        """
        if not self.count:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        return d


class MessageCompletion:
    """
    Records delivery results for active messages and finishes each
    message once its last delivery has answered.

    @param active: the queue manager's active messages by queue id; a
        message leaves it once its file has left C{active/}.
    @param connect: C{connect("bounce")} returns a Deferred firing with
        an AMP connection to the bounce service.
    """

    def __init__(self, reactor, settings: QmgrSettings, store: QueueStore,
                 active: Dict[str, ActiveMessage],
                 connect: Callable[[str], defer.Deferred],
                 outstanding: Outstanding,
                 now: Callable[[], float]) -> None:
        self.reactor = reactor
        self.store = store
        self.active = active
        self.connect = connect
        self.outstanding = outstanding
        self.now = now
        self.settings = settings
        self.verify = VerifyClient(lambda: connect(settings.verifyService), reactor,
                                   idle=settings.ipcIdle)

    def delivered(self, outcome, job: Job):
        """
        Record what a transport did with a job (after the transport was
        given its next one).

        @param outcome: an L{Outcome} with the transport's statuses
            (C{None} when it gave none: the recipients were deferred
            already), or a Failure.
        """
        message = job.message
        statuses = outcome.statuses if isinstance(outcome, Outcome) else outcome
        if isinstance(statuses, Failure):
            log.failure("{queueId}: delivery failed", statuses, queueId=message.queueId)
            self.defer(message, job.nexthop, [r for r in job.recipients
                                              if r.offset not in message.deferred],
                       "internal error")
            statuses = None
        marking = None
        if statuses is not None:
            try:
                marking = self.applyStatuses(message, job, statuses)
            except Exception:
                log.failure("{queueId}: cannot record the delivery", queueId=message.queueId)
                self.defer(message, job.nexthop, [r for r in job.recipients
                                                  if r.offset not in message.deferred],
                           "internal error")
        if marking is None:
            try:
                self.jobDone(message)
            finally:
                self.outstanding.end()
            return None

        def marked(result):
            self.jobDone(message)
            return result

        return marking.addBoth(marked).addErrback(
            lambda f: log.failure("{queueId}: cannot mark recipients done", f,
                                  queueId=message.queueId)).addBoth(self.outstanding.end)

    def applyStatuses(self, message: ActiveMessage, job: Job,
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
            if message.probe:
                reason = status["reason"]
                if message.report:
                    reason = f"delivery via {job.transport}: {reason}"
                message.probed.append((recipient, status["status"], reason,
                                       status.get("dsn") or ""))
                continue
            if status["status"] == SENT:
                done.append(recipient)
                action = status.get("action") or "delivered"
                if action != "passed" and notifies(recipient.notify, "SUCCESS"):
                    message.succeeded.append((recipient, action, status["reason"]))
            elif status["status"] == BOUNCED and not self.settings.softBounce:
                if notifies(recipient.notify, "FAILURE"):
                    message.bounced.append((recipient, status["dsn"], status["reason"]))
                else:
                    message.silent.append(recipient)
            else:
                message.deferred[recipient.offset] = status["reason"]
                # A soft bounce keeps the detail of its 5.x.y, as a 4.x.y.
                dsn = status.get("dsn") or "4.0.0"
                message.deferredStatus[recipient.offset] = "4" + dsn[1:]
        answered = {s["offset"] for s in statuses}
        self.defer(message, job.nexthop, [r for r in recipients if r.offset not in answered],
                   "delivery agent gave no status")
        if done:
            if message.jobs > 1:
                # Other deliveries of this message are under way: record
                # these as done now, so a crash does not repeat them.
                return self.markDone(message, done)
            message.unmarked.extend(done)
        return None

    def defer(self, message: ActiveMessage, nexthop: str, recipients: List[Recipient],
              reason: str, dsn: str = "4.3.0") -> None:
        """
        Defer recipients no transport answered for (it was unavailable,
        crashed, is in defer_transports, or the destination is
        suspended), with the log line a transport would have written.
        """
        if not recipients:
            return
        request = DeliveryRequest(message.queueId, "", message.envelope.sender, nexthop, [],
                                  message.envelope.arrival, message.activated,
                                  verifyOnly=message.probe)
        started = self.now()
        for r in recipients:
            if message.probe:
                message.probed.append((r, DEFERRED, reason, dsn))
            else:
                message.deferred[r.offset] = reason
                message.deferredStatus[r.offset] = dsn
            logDelivery(request, RequestRecipient(r.address, r.original, r.offset), "none",
                        RecipientStatus(r.offset, DEFERRED, dsn, reason), started)

    def deliverable(self, message: ActiveMessage, recipients: List[Recipient],
                    reason: str) -> None:
        """
        A probe's recipients are known to be deliverable without asking a
        transport (cleanup found an alias of several addresses).
        """
        request = DeliveryRequest(message.queueId, "", message.envelope.sender, "none", [],
                                  message.envelope.arrival, message.activated,
                                  verifyOnly=True)
        started = self.now()
        for r in recipients:
            message.probed.append((r, SENT, reason, "2.0.0"))
            logDelivery(request, RequestRecipient(r.address, r.original, r.offset), "none",
                        RecipientStatus(r.offset, SENT, "2.0.0", reason), started)

    def markDone(self, message: ActiveMessage, recipients: List[Recipient]) -> Deferred:
        path = self.store.path("active", message.queueId)

        def mark():
            fd = os.open(path, os.O_RDWR)
            try:
                for r in recipients:
                    markDone(fd, r)
            finally:
                os.close(fd)

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), mark)

    def jobDone(self, message: ActiveMessage) -> None:
        message.jobs -= 1
        if message.jobs:
            return
        if not (message.deferred or message.bounced or message.succeeded or message.silent
                or message.probed):
            # Every recipient is done: the common case, finished here
            # without the coroutine the other cases need.
            del self.active[message.queueId]
            self.remove(message)
            return
        self.outstanding.begin()
        d = defer.Deferred.fromCoroutine(self.finish(message))
        d.addErrback(lambda f: log.failure("{queueId}: finishing failed", f,
                                           queueId=message.queueId))
        d.addBoth(self.outstanding.end)

    def remove(self, message: ActiveMessage) -> None:
        # Like the rename into active/, the unlink is done here: it does
        # not wait for the disk (nothing is synced), and costs less than
        # handing it to a thread and back.
        self.store.remove("active", message.queueId)
        if message.wasDeferred:
            self.store.removeDeferLog(message.queueId)
        log.info("{queueId}: removed", queueId=message.queueId)

    async def reportProbe(self, message: ActiveMessage) -> None:
        """
        Tell the verify service what the probe found, then remove it.
        A report that cannot be made is logged: the address stays
        "in progress" until verify sends another probe.
        """
        try:
            for recipient, status, reason, _ in message.probed:
                code = {SENT: OK, BOUNCED: BOUNCE}.get(status, DEFER)
                # The address smtpd asked about, and what it became.
                for address in dict.fromkeys([recipient.original, recipient.address]):
                    if address:
                        await self.verify.update(address, code, reason)
        except Exception as e:
            log.warn("{queueId}: verify service failure: {error}", queueId=message.queueId,
                     error=e)
        finally:
            self._forgetProbe(message)

    async def mailReport(self, message: ActiveMessage) -> None:
        """
        Mail the sender of a C{sendmail -bv} request what became of each
        recipient, then remove it.  A report that cannot be sent is
        logged: the request is not repeated.
        """
        try:
            await self.notice(message, "verify", [
                (recipient, dsn or ("2.0.0" if status == SENT else "4.0.0"), reason,
                 "deliverable" if status == SENT else "undeliverable")
                for recipient, status, reason, dsn in message.probed])
        except Exception as e:
            log.warn("{queueId}: cannot send the verification report: {error}",
                     queueId=message.queueId, error=e)
        finally:
            self._forgetProbe(message)

    def _forgetProbe(self, message: ActiveMessage) -> None:
        """
        A probe or C{sendmail -bv} request is answered: remove it.
        """
        message.probed = []
        try:
            self.remove(message)
        finally:
            del self.active[message.queueId]

    async def finish(self, message: ActiveMessage) -> None:
        if message.report:
            await self.mailReport(message)
            return
        if message.probe:
            await self.reportProbe(message)
            return
        queueId = message.queueId
        envelope = message.envelope
        age = self.now() - envelope.arrival
        settings = self.settings
        lifetime = settings.bounceLifetime if not envelope.sender else settings.queueLifetime
        if message.deferred and age > lifetime:
            for recipient in envelope.recipients:
                reason = message.deferred.pop(recipient.offset, None)
                if reason is None:
                    continue
                if notifies(recipient.notify, "FAILURE"):
                    message.bounced.append(
                        (recipient, "4.4.7", f"message is too old: {reason}"))
                else:
                    message.silent.append(recipient)
        if message.bounced:
            try:
                await self.bounce(message)
            except Exception as e:
                log.warn("{queueId}: cannot send the non-delivery notice: {error}",
                         queueId=queueId, error=e)
                for recipient, dsn, reason in message.bounced:
                    message.deferred[recipient.offset] = reason
                message.bounced = []
        if message.silent:
            # NOTIFY=NEVER (or without FAILURE): done, and nobody told.
            await self.markDone(message, message.silent)
            message.silent = []
        if message.succeeded:
            try:
                await self.notice(message, "success",
                                  [(r, "2.0.0", reason, action)
                                   for r, action, reason in message.succeeded])
            except Exception as e:
                # The mail was delivered; a lost success notice is not
                # worth delivering it again.
                log.warn("{queueId}: cannot send the success notice: {error}",
                         queueId=queueId, error=e)
            message.succeeded = []
        # The message stays in self.active until its file has left
        # active/, so that recoverActive leaves it alone meanwhile.
        try:
            if not message.deferred:
                self.remove(message)
                return
            if message.unmarked:
                # The file stays: record what the last delivery finished.
                await self.markDone(message, message.unmarked)
                message.unmarked = []
            backoff = min(self.settings.maximalBackoff, max(self.settings.minimalBackoff, age))
            retry = self.now() + backoff
            warned = await self._warnOfDelay(message, age)
            try:
                reasons = {r.address: message.deferred[r.offset]
                           for r in envelope.recipients if r.offset in message.deferred}
                self.store.writeDeferLog(queueId, reasons, warned)
                path = self.store.path("active", queueId)
                os.utime(path, (retry, retry))
                self.store.move(queueId, "active", "deferred")
            except OSError as e:
                log.error("{queueId}: cannot defer: {error}", queueId=queueId, error=e)
        finally:
            del self.active[queueId]

    async def _warnOfDelay(self, message: ActiveMessage, age: float) -> Optional[float]:
        """
        Once the message has waited C{delay_warning_time}, tell the
        sender once which recipients are still waiting (those whose
        NOTIFY does not rule it out).

        @return: when the sender was warned, or C{None} while not yet.
        """
        warned = self.store.deferWarned(message.queueId) if message.wasDeferred else None
        delayWarning = self.settings.delayWarning
        if warned is not None or delayWarning <= 0 or age < delayWarning:
            return warned
        delayed = [(r, message.deferredStatus.get(r.offset, "4.0.0"),
                    message.deferred[r.offset], "delayed")
                   for r in message.envelope.recipients
                   if r.offset in message.deferred and notifies(r.notify, "DELAY")]
        if delayed and message.envelope.sender:
            try:
                await self.notice(message, "delay", delayed)
            except Exception as e:
                log.warn("{queueId}: cannot send the delay notice: {error}",
                         queueId=message.queueId, error=e)
                return None
        return self.now()

    async def bounce(self, message: ActiveMessage) -> None:
        await self.notice(message, "failure",
                          [(r, dsn, reason, "failed") for r, dsn, reason in message.bounced])
        await self.markDone(message, [r for r, _, _ in message.bounced])
        message.bounced = []

    async def notice(self, message: ActiveMessage, kind: str,
                     recipients: List[Tuple[Recipient, str, str, str]]) -> None:
        """
        Have the bounce service send the sender a notice of C{kind}
        (C{failure}, C{success}) about C{recipients}: C{(recipient, dsn,
        reason, action)}.
        """
        bounce = await self.connect("bounce")
        try:
            await bounce.callRemote(
                BounceRecipients,
                queue_id=message.queueId,
                sender=message.envelope.sender,
                recipients=[
                    {"address": r.address, "original": r.original, "dsn": dsn, "reason": reason,
                     "orcpt": r.orcpt, "action": action}
                    for r, dsn, reason, action in recipients
                ],
                kind=kind,
            )
        finally:
            if bounce.transport is not None:
                bounce.transport.loseConnection()
