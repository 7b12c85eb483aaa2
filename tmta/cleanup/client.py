"""
The client side of cleanup: how smtpd and bounce hand it messages.

All of a process's messages share one connection (L{SharedConnection}),
each command naming its message by number (see
L{tmta.cleanup.commands}).
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from tmta.cleanup.commands import (
    CleanupAbort,
    CleanupBegin,
    CleanupContent,
    CleanupEnd,
    CleanupMilter,
    CleanupRecipients,
    attributeList,
)
from tmta.wire import SharedConnection

#: The most one AMP value holds.
CHUNK = 65535

#: About how many bytes of recipients go in one command.
_RECIPIENT_BATCH = 30000


@implementer(IPushProducer)
class _Senders:
    """
    The producers of message text (smtpd's client connections in DATA),
    paused together while the connection to cleanup is backed up.

    Registered as the one producer of that connection's transport, it
    passes pause and resume on to all of them.  When the connection is
    lost they are resumed, not stopped: their clients are told of the
    failure at the end of data, in SMTP.
    """

    def __init__(self) -> None:
        self.producers: Set[IPushProducer] = set()
        self.paused = False

    def add(self, producer: IPushProducer) -> None:
        self.producers.add(producer)
        if self.paused:
            producer.pauseProducing()

    def remove(self, producer: IPushProducer) -> None:
        if producer in self.producers:
            self.producers.discard(producer)
            if self.paused:
                producer.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        for producer in list(self.producers):
            producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        for producer in list(self.producers):
            producer.resumeProducing()

    stopProducing = resumeProducing


def connectCleanup(context) -> Callable[[], Any]:
    """
    What connects a daemon (its L{tmta.master.worker} context) to the
    cleanup service its C{cleanup_service_name} names (a submission
    port's own cleanup, with header checks of its own, is named there
    with C{-o}): a L{CleanupClient}'s C{connect}.
    """
    name = context.config.get("cleanup_service_name").strip() or "cleanup"
    return lambda: context.connect(name, private=False)


class CleanupClient:
    """
    Starts messages at cleanup, over one connection shared by all.

    @param connect: makes a new connection: returns a Deferred firing
        with a connected L{tmta.wire.QuietAMP}.
    """

    def __init__(self, connect, clock, idle: float = 5.0) -> None:
        self.connection = SharedConnection(connect, clock, idle)
        self._numbers = itertools.count(1)
        self._senders: Optional[_Senders] = None
        self._registeredOn = None

    async def open(self) -> "CleanupMessage":
        """
        Start a message (nothing is sent until its L{CleanupMessage.begin}).
        """
        protocol = await self.connection.acquire()
        transport = protocol.transport
        if transport is not None and transport is not self._registeredOn:
            self._senders = _Senders()
            self._registeredOn = transport
            transport.registerProducer(self._senders, True)
        return CleanupMessage(self, protocol, next(self._numbers), self._senders)

    async def post(self, sender: str, attributes: dict,
                   recipients: Iterable[Tuple[str, ...]], data: bytes) -> dict:
        """
        Queue one whole message: the envelope and the text (LF line
        ends) in one write, then cleanup's answer.

        @return: cleanup's answer (C{code}, C{reason}, C{queue_id}).
        """
        message = await self.open()
        try:
            with message.together():
                message.begin(sender, attributes, recipients)
                answer = message.end(data)
            return await answer
        finally:
            message.release()

    def _finished(self, message: "CleanupMessage") -> None:
        self.connection.release(message.protocol)


class CleanupMessage:
    """
    One message on its way to cleanup.

    @ivar number: how the commands name it on the shared connection.
    """

    def __init__(self, client: CleanupClient, protocol, number: int,
                 senders: Optional[_Senders]) -> None:
        self.client = client
        self.protocol = protocol
        self.number = number
        self._senders = senders
        self._producer: Optional[IPushProducer] = None
        self._done = False

    @property
    def connected(self) -> bool:
        return self.protocol.transport is not None

    def together(self):
        """
        A context in which the commands sent go out in one write.
        """
        return self.protocol.together()

    def throttle(self, producer: IPushProducer) -> None:
        """
        Pause C{producer} (the client sending the text) while the
        connection to cleanup is backed up, until L{release}.
        """
        if self._senders is not None:
            self._producer = producer
            self._senders.add(producer)

    def begin(self, sender: str, attributes: dict, recipients: Iterable[Tuple[str, ...]]) -> None:
        """
        Send the envelope: C{recipients} as (address, address given)
        pairs, or (address, address given, NOTIFY, ORCPT) when the client
        gave DSN parameters.
        """
        batches: List[list] = []
        batch: list = []
        size = 0
        for recipient in recipients:
            address, original = recipient[0], recipient[1]
            record = {"address": address, "original": original}
            if len(recipient) > 2:
                record["notify"], record["orcpt"] = recipient[2], recipient[3]
                size += len(recipient[2]) + len(recipient[3])
            batch.append(record)
            size += len(address) + len(original) + 20
            if size > _RECIPIENT_BATCH:
                batches.append(batch)
                batch, size = [], 0
        if batch or not batches:
            batches.append(batch)
        call = self.protocol.callRemote
        call(CleanupBegin, message=self.number, sender=sender,
             attributes=attributeList(attributes), recipients=batches[0])
        for batch in batches[1:]:
            call(CleanupRecipients, message=self.number, recipients=batch)

    def content(self, data: bytes) -> None:
        """
        Send message text (LF line ends), in as many commands as it takes.
        """
        call = self.protocol.callRemote
        for start in range(0, len(data), CHUNK):
            call(CleanupContent, message=self.number, data=data[start : start + CHUNK])

    def milter(self, descriptor: int, family: int, description: str,
               macros: Dict[str, str]) -> None:
        """
        Lend cleanup a milter connection for this message's content
        (L{tmta.milter.session.SessionMilters.lend}).
        """
        self.protocol.callRemote(CleanupMilter, message=self.number, descriptor=descriptor,
                                 family=family, milter=description,
                                 macros=json.dumps(macros))

    def end(self, data: bytes = b"") -> defer.Deferred:
        """
        Send the last of the text and finish.

        @return: a Deferred firing with cleanup's answer (C{code},
            C{reason}, C{queue_id}).
        """
        if len(data) > CHUNK:
            cut = len(data) - CHUNK
            self.content(data[:cut])
            data = data[cut:]
        return self.protocol.callRemote(CleanupEnd, message=self.number, data=data)

    def abort(self) -> None:
        """
        Give the message up (cleanup removes what it wrote).
        """
        if self.connected:
            self.protocol.callRemote(CleanupAbort, message=self.number)

    def release(self) -> None:
        """
        The message is done with (answered or aborted): stop throttling
        its producer and let the connection go idle.
        """
        if self._done:
            return
        self._done = True
        if self._producer is not None and self._senders is not None:
            self._senders.remove(self._producer)
            self._producer = None
        self.client._finished(self)
