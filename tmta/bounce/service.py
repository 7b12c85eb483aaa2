"""
The bounce service.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from tmta.bounce.commands import BounceRecipients
from tmta.cleanup.client import CleanupClient
from tmta.queue.qfile import iterContent, readEnvelope
from tmta.queue.store import QueueStore
from tmta.wire import ServiceAMP

log = Logger()

MAX_HEADERS = 64 * 1024


def originalHeaders(path: str) -> bytes:
    """
    The header section of a queued message, for the notice (blocking).
    """
    data = b""
    with open(path, "rb") as f:
        for chunk in iterContent(f, readEnvelope(f)):
            data += chunk
            end = data.find(b"\n\n")
            if end >= 0:
                return data[: end + 1]
            if len(data) > MAX_HEADERS:
                return data[:MAX_HEADERS] + b"\n"
    return data if data.endswith(b"\n") else data + b"\n"


def noticeText(myhostname: str, sender: str, recipients, headers: bytes) -> bytes:
    """
    The text of a non-delivery notice (headers and body, LF line ends).
    """
    lines = [
        f"From: MAILER-DAEMON@{myhostname} (Mail Delivery System)",
        f"To: {sender}",
        "Subject: Undelivered Mail Returned to Sender",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at host {myhostname}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. The mail system's",
        "reasons are given below, followed by the message's headers.",
        "",
    ]
    for r in recipients:
        lines.append(f"<{r['address']}>: {r['reason']} (status {r['dsn']})")
    lines += ["", "--- Headers of the undelivered message follow ---", ""]
    return "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n" + headers


class BounceProtocol(ServiceAMP):
    def __init__(self, service: "BounceService") -> None:
        super().__init__()
        self.service = service

    @BounceRecipients.responder
    def bounce(self, queue_id, sender, recipients):
        return defer.Deferred.fromCoroutine(self.service.notify(queue_id, sender, recipients))



class BounceService(Service):
    def __init__(self, context) -> None:
        self.context = context
        self.myhostname = context.config.get("myhostname")
        self.store = QueueStore(context.config.get("queue_directory"))
        self.reactor = context.reactor
        self.reactor.getThreadPool()
        self.cleanup = CleanupClient(
            lambda: context.connect("cleanup", private=False), self.reactor,
            idle=context.config.getTime("ipc_idle"),
        )

    async def notify(self, queueId: str, sender: str, recipients) -> dict:
        if not sender:
            log.info("{queueId}: sender non-delivery notification not sent: null sender",
                     queueId=queueId)
            return {"notice_id": ""}
        path = self.store.path("active", queueId)
        try:
            headers = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), originalHeaders, path
            )
        except Exception as e:
            log.warn("{queueId}: cannot read the original headers: {error}", queueId=queueId, error=e)
            headers = b""
        text = noticeText(self.myhostname, sender, recipients, headers)
        message = await self.cleanup.open()
        try:
            with message.together():
                message.begin("", {"protocol": "local", "origin": "bounce"}, [(sender, sender)])
                answer = message.end(text)
            result = await answer
            noticeId = result["queue_id"]
        finally:
            message.release()
        if result["code"] != 250:
            raise RuntimeError(f"cleanup refused the notice: {result['code']} {result['reason']}")
        log.info("{queueId}: sender non-delivery notification: {noticeId}",
                 queueId=queueId, noticeId=noticeId)
        return {"notice_id": noticeId}

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: BounceProtocol(self)))
