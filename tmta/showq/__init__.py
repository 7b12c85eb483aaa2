"""
The showq service: the queue listing, for users who cannot read the
queue directory themselves.

As Postfix's showq, it answers each connection with the listing
C{mailq} prints and closes it: C{tmta-mailq} run by an ordinary user
connects to C{public/showq} (the one public socket every user may
reach) and prints what it reads.  The service runs as C{mail_owner},
which may read the queue; it shows envelopes and reasons, never message
content.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.protocol import Factory, Protocol

from tmta.logging import Logger

log = Logger()


class ShowqProtocol(Protocol):
    """
    One connection: the listing, written as it is made, then the close.

    @param listing: makes the listing, in pieces of text; called in a
        thread of C{reactor}'s pool.
    """

    transport: Any  # a UNIX connection

    def __init__(self, listing: Callable[[], Iterable[str]], reactor) -> None:
        self.listing = listing
        self.reactor = reactor

    def _failed(self, failure) -> None:
        log.failure("showq failed", failure)
        self.transport.write(b"tmta: cannot list the queue\n")

    def connectionMade(self) -> None:
        reactor = self.reactor

        def produce() -> None:
            # In a thread: the listing goes out in pieces as it is made,
            # so that a queue of any size costs little memory.
            pending: List[str] = []
            size = 0
            for chunk in self.listing():
                pending.append(chunk)
                size += len(chunk)
                if size >= 65536:
                    reactor.callFromThread(self._write, "".join(pending))
                    pending, size = [], 0
            if pending:
                reactor.callFromThread(self._write, "".join(pending))

        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), produce)
        d.addErrback(self._failed)
        d.addBoth(lambda _: self.transport.loseConnection())

    def _write(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(text.encode("utf-8", "surrogateescape"))


class ShowqService(Service):
    def __init__(self, context) -> None:
        from tmta.queue.listing import queueListing
        from tmta.queue.store import QueueStore

        self.context = context
        store = QueueStore.fromConfig(context.config)

        def warn(warning: str) -> None:
            log.warn("{warning}", warning=warning)

        self.factory = Factory.forProtocol(
            lambda: ShowqProtocol(lambda: queueListing(store, warn), context.reactor))

    def startService(self) -> None:
        super().startService()
        self.context.listen(self.factory)
