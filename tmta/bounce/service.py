"""
The bounce service.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import Optional, Tuple

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


def originalHeaders(path: str) -> Tuple[bytes, float]:
    """
    The header section of a queued message and its arrival time, for
    the notice (blocking).
    """
    data = b""
    with open(path, "rb") as f:
        envelope = readEnvelope(f)
        for chunk in iterContent(f, envelope):
            data += chunk
            end = data.find(b"\n\n")
            if end >= 0:
                return data[: end + 1], envelope.arrival
            if len(data) > MAX_HEADERS:
                return data[:MAX_HEADERS] + b"\n", envelope.arrival
    return (data if data.endswith(b"\n") else data + b"\n"), envelope.arrival


# "host mx.example[192.0.2.1]:25 said: 550 5.1.1 ... (in reply to RCPT TO command)"
_REMOTE = re.compile(r"^host (\S+?)\[[^\]]*\](?::\d+)? said: (\d{3}[ -].*?)"
                     r"(?: \(in reply to .*\))?$")


def _field(value: str) -> str:
    # A header value from the mail system's own text: one line, printable.
    return re.sub(r"[\x00-\x1f\x7f]", " ", value)


def noticeText(myhostname: str, sender: str, recipients, headers: bytes,
               queueId: str = "", arrival: Optional[float] = None,
               sizeLimit: int = 50000) -> bytes:
    """
    The non-delivery notice, RFC 3464's C{multipart/report;
    report-type=delivery-status}: a part for people, a
    C{message/delivery-status} part with one block per recipient (the
    remote server's reply in C{Diagnostic-Code} when it gave one), and
    the original message's headers, within C{bounce_size_limit}.

    @return: the notice's text, LF line ends.
    """
    boundary = f"{queueId or 'notice'}.{int(time.time())}/{myhostname}"
    now = formatdate(localtime=True)
    human = [
        f"This is the mail system at host {myhostname}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
        "",
        "                   The mail system",
        "",
    ]
    blocks = [
        [f"Reporting-MTA: dns; {myhostname}"]
        + ([f"X-Tmta-Queue-ID: {queueId}"] if queueId else [])
        + [f"X-Tmta-Sender: rfc822; {_field(sender)}"]
        + ([f"Arrival-Date: {formatdate(arrival, localtime=True)}"] if arrival else [])
    ]
    for r in recipients:
        address, reason = _field(r["address"]), _field(r["reason"])
        human.append(f"<{address}>: {reason}")
        block = [f"Final-Recipient: rfc822; {address}"]
        original = _field(r.get("original") or "")
        if original and original != address:
            block.append(f"Original-Recipient: rfc822;{original}")
        block += ["Action: failed", f"Status: {_field(r['dsn'])}"]
        remote = _REMOTE.match(reason)
        if remote:
            block += [f"Remote-MTA: dns; {remote.group(1)}",
                      f"Diagnostic-Code: smtp; {remote.group(2)}"]
        else:
            block.append(f"Diagnostic-Code: x-tmta; {reason}")
        blocks.append(block)
    if len(headers) > sizeLimit:
        headers = headers[:sizeLimit]
        headers = headers[: headers.rfind(b"\n") + 1]
    lines = [
        f"From: MAILER-DAEMON@{myhostname} (Mail Delivery System)",
        f"To: {_field(sender)}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {now}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;',
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        *human,
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        *[line for block in blocks for line in block + [""]],
        f"--{boundary}",
        "Content-Description: Undelivered Message Headers",
        "Content-Type: text/rfc822-headers",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    end = f"\n--{boundary}--\n".encode()
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape") + headers + end


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
        self.sizeLimit = context.config.getInt("bounce_size_limit")
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
            headers, arrival = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), originalHeaders, path
            )
        except Exception as e:
            log.warn("{queueId}: cannot read the original headers: {error}", queueId=queueId, error=e)
            headers, arrival = b"", None
        text = noticeText(self.myhostname, sender, recipients, headers, queueId, arrival,
                          self.sizeLimit)
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
