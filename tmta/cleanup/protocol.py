"""
cleanup's side of the AMP conversation with its clients (smtpd, pickup,
bounce, local's forwarding): messages begun, fed and ended by number.
"""

from __future__ import annotations

import json
import os
from typing import Dict

from twisted.internet import defer
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tmta.cleanup.commands import (
    CleanupAbort,
    CleanupBegin,
    CleanupContent,
    CleanupEnd,
    CleanupMilter,
    CleanupRecipients,
)
from tmta.cleanup.message import Message, Rejection
from tmta.cleanup.state import Cleanup
from tmta.logging import Logger
from tmta.mail.address import AddressError, checkAddress
from tmta.milter.client import adoptMilter, restore
from tmta.wire import ServiceAMP

log = Logger()


@implementer(IFileDescriptorReceiver)
class CleanupProtocol(ServiceAMP):
    """
    One client of cleanup (an smtpd process, bounce): any number of
    messages at once, each known by the number the client gave it.

    Unlike tmta's other AMP servers it takes file descriptors: the
    milter connections smtpd lends for a message (L{CleanupMilter}).
    """

    #: Messages in progress on one connection, at most: each holds an
    #: open queue file.
    maxMessages = 1000

    def __init__(self, cleanup: Cleanup) -> None:
        super().__init__()
        self.cleanup = cleanup
        self.messages: Dict[int, Message] = {}

    def _discard(self, number: int) -> None:
        message = self.messages.pop(number, None)
        if message is not None:
            message.abort()

    def _refuse(self, number: int, attributes: Dict[str, str], code: int, reason: str) -> None:
        """
        Take message C{number} in without a queue file: its End gets
        C{code} and C{reason}.
        """
        refused = Message(self.cleanup, "", attributes, createFile=False)
        refused.error = Rejection(code, reason)
        self.messages[number] = refused

    @CleanupBegin.responder
    def begin(self, message: int, sender: str, attributes, recipients=None):
        self._discard(message)
        attrs = {a["name"]: a["value"] for a in attributes}
        if len(self.messages) >= self.maxMessages:
            self._refuse(message, attrs, 451, "4.3.2 Error: too many messages in progress")
            return {}
        try:
            sender = checkAddress(sender) if sender else ""
        except AddressError as e:
            self._refuse(message, attrs, 501, f"5.1.7 Bad sender address syntax: {e}")
            return {}
        self.messages[message] = Message(self.cleanup, sender, attrs)
        if recipients:
            self.recipients(message, recipients)
        return {}

    @CleanupRecipients.responder
    def recipients(self, message: int, recipients):
        inProgress = self.messages.get(message)
        if inProgress is not None:
            good = []
            for r in recipients:
                try:
                    good.append((checkAddress(r["address"]), r["original"] or r["address"],
                                 _dsnNotify(r.get("notify", "")), _printable(r.get("orcpt", ""))))
                except AddressError as e:
                    inProgress.error = Rejection(501, f"5.1.3 Bad recipient address syntax: {e}")
            inProgress.addRecipients(good)
        return {}

    @CleanupContent.responder
    def content(self, message: int, data: bytes):
        inProgress = self.messages.get(message)
        if inProgress is not None:
            inProgress.content(data)
        return {}

    @CleanupEnd.responder
    def end(self, message: int, data=None):
        inProgress = self.messages.pop(message, None)
        if inProgress is None:
            return {"code": 503, "reason": "5.5.1 Error: no message", "queue_id": ""}
        if data:
            inProgress.content(data)

        async def finish():
            code, reason = await inProgress.finish()
            gate = self.cleanup.inFlow
            if code == 250 and gate.mayWait():
                await gate.wait()
            return {"code": code, "reason": reason, "queue_id": inProgress.queueId}

        return defer.Deferred.fromCoroutine(finish())

    @CleanupMilter.responder
    def milter(self, message: int, descriptor: int, family: int, milter: str, macros: str):
        try:
            inProgress = self.messages.get(message)
            if inProgress is not None:
                try:
                    settings, shared = restore(milter)
                    values = json.loads(macros)
                except ValueError as e:
                    log.warn("bad milter from a client: {error}", error=e)
                    inProgress.error = Rejection(451, "4.3.5 Error: internal error")
                else:
                    inProgress.addMilter(adoptMilter(self.cleanup.reactor, settings, shared,
                                                     descriptor, family), values)
        finally:
            os.close(descriptor)
        return {}

    @CleanupAbort.responder
    def abortMessage(self, message: int):
        self._discard(message)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        messages, self.messages = self.messages, {}
        for inProgress in messages.values():
            inProgress.abort()
        super().connectionLost(reason)




def _dsnNotify(value: str) -> str:
    """
    A NOTIFY value as the queue file keeps it: known keywords only (the
    client's text is gossip).
    """
    words = [w for w in value.upper().split(",") if w in ("NEVER", "SUCCESS", "FAILURE", "DELAY")]
    return "NEVER" if "NEVER" in words else ",".join(dict.fromkeys(words))


def _printable(value: str) -> str:
    return "".join(c for c in value if " " < c < "\x7f")[:500]
