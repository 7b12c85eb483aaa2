"""
The showq service: the queue listing, for users who cannot read the
queue directory themselves.

As Postfix's showq, it answers each connection with the listing
C{mailq} prints and closes it: C{tmta-mailq} run by an ordinary user
connects to C{public/showq} (the one public socket every user may
reach) and prints what it reads.  The service runs as C{mail_owner},
which may read the queue; it shows envelopes and reasons, never message
content.

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.protocol import Factory, Protocol
from tmta.logging import Logger

log = Logger()

#: Services whose socket in public/ any local user may connect to.
WORLD_REACHABLE = ("showq",)


class ShowqProtocol(Protocol):
    transport: Any  # a UNIX connection

    def __init__(self, listing) -> None:
        self.listing = listing

    def _failed(self, failure) -> None:
        log.failure("showq failed", failure)
        self.transport.write(b"tmta: cannot list the queue\n")

    def connectionMade(self) -> None:
        d = threads.deferToThread(self.listing)
        d.addCallback(lambda text: self.transport.write(text.encode("utf-8",
                                                                    "surrogateescape")))
        d.addErrback(self._failed)
        d.addBoth(lambda _: self.transport.loseConnection())


class ShowqService(Service):
    def __init__(self, context) -> None:
        from tmta.cli.admin import formatQueue
        from tmta.queue.store import QueueStore

        self.context = context
        store = QueueStore.fromConfig(context.config)
        self.factory = Factory.forProtocol(lambda: ShowqProtocol(lambda: formatQueue(store)))

    def startService(self) -> None:
        super().startService()
        self.context.listen(self.factory)
