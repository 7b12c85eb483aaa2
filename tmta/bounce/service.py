"""
The bounce service.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Dict, Optional

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.protocol import Factory

from tmta.bounce.commands import BounceRecipients
from tmta.bounce.settings import BounceSettings
from tmta.cleanup.client import CleanupClient, connectCleanup
from tmta.logging import Logger
from tmta.queue.qfile import iterContent, readEnvelope
from tmta.queue.store import QueueStore
from tmta.wire import ServiceAMP

log = Logger()

MAX_HEADERS = 64 * 1024


@dataclass
class Original:
    """
    What a notice needs of the message it is about.

    @ivar text: the message, or its first C{limit} bytes.
    @ivar headerEnd: where its header section ends in C{text}.
    @ivar complete: whether C{text} is the whole message.
    """

    text: bytes
    headerEnd: int
    complete: bool
    arrival: float
    attributes: Dict[str, str]

    @property
    def headers(self) -> bytes:
        return self.text[: self.headerEnd]


def readOriginal(path: str, limit: int) -> Original:
    """
    The queued message's first C{limit} bytes (at least its header
    section, up to L{MAX_HEADERS}), arrival time and attributes, for a
    notice (blocking).
    """
    data = b""
    with open(path, "rb") as f:
        envelope = readEnvelope(f)
        complete = True
        for chunk in iterContent(f, envelope):
            data += chunk
            if len(data) > max(limit, MAX_HEADERS):
                complete = False
                break
    end = data.find(b"\n\n")
    headerEnd = end + 1 if end >= 0 else min(len(data), MAX_HEADERS)
    if complete and len(data) > limit:
        complete = False
    if not data.endswith(b"\n"):
        data += b"\n"
    return Original(data, headerEnd, complete, envelope.arrival, dict(envelope.attributes))


# "host mx.example[192.0.2.1]:25 said: 550 5.1.1 ... (in reply to RCPT TO command)"
_REMOTE = re.compile(r"^host (\S+?)\[[^\]]*\](?::\d+)? said: (\d{3}[ -].*?)"
                     r"(?: \(in reply to .*\))?$")


def _field(value: str) -> str:
    # A header value from the mail system's own text: one line, printable.
    return re.sub(r"[\x00-\x1f\x7f]", " ", value)


_HUMAN = {
    "failure": [
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
    ],
    "delay": [
        "####################################################################",
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
        "####################################################################",
        "",
        "Your message could not be delivered for some time.",
        "It will be retried until it is too old.",
    ],
    "verify": [
        "Enclosed is the mail delivery report that you requested.",
    ],
    "success": [
        "Your message was successfully delivered to the destination(s)",
        "listed below. If the message was delivered to mailbox you will",
        "receive no further notifications. Otherwise you may still receive",
        "notifications of mail delivery errors from other systems.",
    ],
}

_SUBJECTS = {
    "failure": "Undelivered Mail Returned to Sender",
    "success": "Successful Mail Delivery Report",
    "verify": "Mail Delivery Status Report",
    "delay": "Delayed Mail (still being retried)",
    "2bounce": "Postmaster Copy: Undelivered Mail",
    "postmaster-failure": "Postmaster Copy: Undelivered Mail",
    "postmaster-delay": "Postmaster Warning: Delayed Mail",
}


def noticeText(myhostname: str, sender: str, recipients, headers: bytes,
               queueId: str = "", arrival: Optional[float] = None,
               sizeLimit: int = 50000, kind: str = "failure",
               original: Optional[bytes] = None, envid: str = "",
               to: Optional[str] = None, subject: Optional[str] = None,
               international: bool = False) -> bytes:
    """
    A delivery status notification, RFC 3464's C{multipart/report;
    report-type=delivery-status}: a part for people, a
    C{message/delivery-status} part with one block per recipient (the
    remote server's reply in C{Diagnostic-Code} when it gave one), and
    the original message (C{message/rfc822}, when C{original} is given:
    the whole message fits in C{bounce_size_limit} and RET does not ask
    for headers only) or its headers (C{text/rfc822-headers}).

    @param kind: C{failure}, C{success}, C{delay}, C{verify} (a report
        C{sendmail -bv} asked for), or C{2bounce} (a failure notice
        about a notice, to the postmaster).
    @param to: whom the notice goes to, if not the sender.
    @param subject: the Subject, if not the kind's own (a postmaster's
        copy).
    @param international: the message was SMTPUTF8 mail: the notice is
        RFC 6533's (C{message/global-delivery-status}, C{utf-8}
        addresses, C{message/global} for the message).
    @return: the notice's text, LF line ends.
    """
    boundary = f"{queueId or 'notice'}.{int(time.time())}/{myhostname}"
    now = formatdate(localtime=True)
    human = [f"This is the mail system at host {myhostname}.", ""]
    human += _HUMAN.get(kind, _HUMAN["failure"])
    human += ["", "                   The mail system", ""]
    blocks = [
        [f"Reporting-MTA: dns; {myhostname}"]
        + ([f"Original-Envelope-Id: {_field(envid)}"] if envid else [])
        + ([f"X-Tmta-Queue-ID: {queueId}"] if queueId else [])
        + [f"X-Tmta-Sender: {_addressType(sender, international)}; {_field(sender)}"]
        + ([f"Arrival-Date: {formatdate(arrival, localtime=True)}"] if arrival else [])
    ]
    for r in recipients:
        address, reason = _field(r["address"]), _field(r["reason"])
        given = _field(r.get("original") or "")
        if given and given.lower() != address.lower():
            human.append(f"<{address}> (expanded from <{given}>): {reason}")
        else:
            human.append(f"<{address}>: {reason}")
        block = [f"Final-Recipient: {_addressType(address, international)}; {address}"]
        orcpt = _field(r.get("orcpt") or "")
        if orcpt and ";" in orcpt:
            kindOf, value = orcpt.split(";", 1)
            block.append(f"Original-Recipient: {kindOf};{value}")
        elif given and given != address:
            block.append(f"Original-Recipient: {_addressType(given, international)};{given}")
        default = {"success": "delivered", "delay": "delayed"}.get(kind, "failed")
        action = _field(r.get("action") or default)
        block += [f"Action: {action}", f"Status: {_field(r['dsn'])}"]
        remote = _REMOTE.match(reason)
        if remote:
            block += [f"Remote-MTA: dns; {remote.group(1)}",
                      f"Diagnostic-Code: smtp; {remote.group(2)}"]
        elif re.match(r"^[245]\d\d ", reason):
            block.append(f"Diagnostic-Code: smtp; {reason}")
        else:
            block.append(f"Diagnostic-Code: x-tmta; {reason}")
        blocks.append(block)
    if original is not None:
        returned = [
            "Content-Description: Undelivered Message" if kind != "success"
            else "Content-Description: Delivered Message",
            "Content-Type: message/global" if international else "Content-Type: message/rfc822",
            "Content-Transfer-Encoding: 8bit",
            "",
        ]
        body = original
    else:
        if len(headers) > sizeLimit:
            headers = headers[:sizeLimit]
            headers = headers[: headers.rfind(b"\n") + 1]
        returned = [
            "Content-Description: Undelivered Message Headers"
            if kind not in ("success", "verify") else "Content-Description: Message Headers",
            "Content-Type: message/global-headers" if international
            else "Content-Type: text/rfc822-headers",
            "Content-Transfer-Encoding: 8bit",
            "",
        ]
        body = headers
    lines = [
        f"From: MAILER-DAEMON@{myhostname} (Mail Delivery System)",
        f"To: {_field(to or sender)}",
        f"Subject: {subject or _SUBJECTS.get(kind, _SUBJECTS['failure'])}",
        f"Date: {now}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
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
        "Content-Type: message/global-delivery-status" if international
        else "Content-Type: message/delivery-status",
        "",
        *[line for block in blocks for line in block + [""]],
        f"--{boundary}",
        *returned,
    ]
    if not body.endswith(b"\n"):
        body += b"\n"
    end = f"\n--{boundary}--\n".encode()
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape") + body + end


def _addressType(address: str, international: bool) -> str:
    """
    The address type of a DSN field: C{utf-8} (RFC 6533) for a non-ASCII
    address of SMTPUTF8 mail, C{rfc822} otherwise.
    """
    return "utf-8" if international and not address.isascii() else "rfc822"


class BounceProtocol(ServiceAMP):
    def __init__(self, service: "BounceService") -> None:
        super().__init__()
        self.service = service

    @BounceRecipients.responder
    def bounce(self, queue_id, sender, recipients, kind=None):
        return defer.Deferred.fromCoroutine(
            self.service.notify(queue_id, sender, recipients, kind or "failure"))


class BounceService(Service):
    def __init__(self, context) -> None:
        self.context = context
        self.settings = BounceSettings.fromConfig(context.config)
        self.store = QueueStore.fromConfig(context.config)
        self.reactor = context.reactor
        self.reactor.getThreadPool()
        self.cleanup = CleanupClient(
            connectCleanup(context), self.reactor,
            idle=self.settings.ipcIdle,
        )

    async def notify(self, queueId: str, sender: str, recipients,
                     kind: str = "failure") -> dict:
        path = self.store.path("active", queueId)
        try:
            original = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), readOriginal, path,
                self.settings.sizeLimit)
        except Exception as e:
            log.warn("{queueId}: cannot read the original message: {error}",
                     queueId=queueId, error=e)
            original = Original(b"", 0, False, 0.0, {})
        to, noticeKind = sender, kind
        if not sender:
            # Nobody to tell: a notice about a notice (or other mail from
            # the null sender) goes to the postmaster only when
            # notify_classes asks for double bounces, and never about a
            # postmaster copy itself.
            if (kind != "failure" or "2bounce" not in self.settings.notifyClasses
                    or original.attributes.get("origin") == "2bounce"):
                log.info("{queueId}: sender {what} notification not sent: null sender",
                         queueId=queueId,
                         what="delivery status" if kind == "success" else "non-delivery")
                return {"notice_id": ""}
            to, noticeKind = self.settings.doubleBounceRecipient, "2bounce"
        attributes = original.attributes
        # RFC 8689 section 4.3: a notice of REQUIRETLS mail carries its
        # headers only, whatever RET= asked.
        full = (original.complete and attributes.get("dsn_ret", "FULL") == "FULL"
                and attributes.get("requiretls") != "yes"
                and kind not in ("delay", "verify") and original.text)
        noticeId = await self._send(queueId, sender, recipients, original, to, noticeKind,
                                    full)
        # notify_classes: the postmaster hears of each bounce (bounce)
        # and each delay (delay), with the headers only.
        copyTo = {"failure": ("bounce", self.settings.bounceRecipient),
                  "delay": ("delay", self.settings.delayRecipient)}.get(noticeKind)
        if sender and copyTo is not None and copyTo[0] in self.settings.notifyClasses:
            await self._send(queueId, sender, recipients, original, copyTo[1],
                             f"postmaster-{noticeKind}", False)
        return {"notice_id": noticeId}

    async def _send(self, queueId: str, sender: str, recipients, original, to: str,
                    noticeKind: str, full) -> str:
        attributes = original.attributes
        text = noticeText(self.settings.myhostname, sender, recipients, original.headers, queueId,
                          original.arrival or None, self.settings.sizeLimit,
                          noticeKind.replace("postmaster-", ""),
                          original.text if full else None, attributes.get("dsn_envid", ""),
                          to=to, subject=_SUBJECTS.get(noticeKind),
                          international=attributes.get("smtputf8") == "yes")
        toPostmaster = noticeKind == "2bounce" or noticeKind.startswith("postmaster-")
        # A notice to the postmaster that bounces is not reported again
        # (origin 2bounce).
        postAttributes = {"protocol": "local",
                          "origin": "2bounce" if toPostmaster else "bounce"}
        if attributes.get("smtputf8") == "yes":
            postAttributes["smtputf8"] = "yes"  # RFC 6533 notices go as SMTPUTF8 mail
        if attributes.get("requiretls") == "yes":
            # RFC 8689 section 4.3: the notice asks for REQUIRETLS in turn.
            postAttributes["requiretls"] = "yes"
        result = await self.cleanup.post("", postAttributes, [(to, to)], text)
        noticeId = result["queue_id"]
        if result["code"] != 250:
            raise RuntimeError(f"cleanup refused the notice: {result['code']} {result['reason']}")
        what = {"success": "sender delivery status notification",
                "verify": "sender delivery status notification",
                "delay": "sender delay notification",
                "2bounce": "postmaster non-delivery notification",
                "postmaster-failure": "postmaster copy of non-delivery notification",
                "postmaster-delay": "postmaster copy of delay notification"}.get(
                    noticeKind, "sender non-delivery notification")
        log.info("{queueId}: {what}: {noticeId}", queueId=queueId, what=what, noticeId=noticeId)
        return noticeId

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: BounceProtocol(self)))
