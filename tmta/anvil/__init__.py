"""
anvil(8): per-client connection counts and event rates shared by all
smtpd processes, so that C{smtpd_client_*_limit} holds for a client
however its sessions are spread over processes.

One anvil process (master.cf: C{anvil unix - - n - 1 anvil}) keeps, for
each C{service:client-address}, the number of connections open now and
how many connections, messages, recipients, new TLS sessions and AUTH
commands it started in the current C{anvil_rate_time_unit}.  Each smtpd
holds one connection to it; when that connection goes (an smtpd that
exited, or was killed), the connections it had counted are let go.
With C{anvil_shared_store}, the rates are counted in a store several
hosts share (L{tmta.anvil.shared}).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Union

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure

from tmta.anvil.commands import EVENTS, AnvilConnect, AnvilDisconnect, AnvilEvent
from tmta.anvil.shared import SharedRates, parseSharedStore
from tmta.logging import Logger
from tmta.wire import ServiceAMP

log = Logger()

@dataclass
class _Client:
    connections: int = 0
    windowStart: float = 0.0
    rates: Dict[str, int] = field(default_factory=dict)


class AnvilTable:
    """
    The counts, with the time unit as a window that starts at a client's
    first event and starts again once it has passed (as Postfix's anvil
    does).
    """

    def __init__(self, clock, unit: float, sharedRates: Optional[SharedRates] = None) -> None:
        self.clock = clock
        self.unit = unit
        self.clients: Dict[str, _Client] = {}
        #: Where rates are counted for every host, or C{None}.
        self.sharedRates = sharedRates
        self._storeFailing = False

    def shared(self, address: Optional[str], event: str,
               local: int) -> Union[int, defer.Deferred]:
        """
        The rate of C{event} from C{address} on every host sharing the
        store (a Deferred), or C{local} (this host's) at once without
        one; C{local} too while the store fails.
        """
        if self.sharedRates is None or not address:
            return local

        def counted(rate: int) -> int:
            if self._storeFailing:
                log.info("anvil_shared_store answers again")
            self._storeFailing = False
            return rate

        def failed(failure) -> int:
            if not self._storeFailing:
                log.warn("cannot use anvil_shared_store, rates counted on this host only: "
                         "{error}", error=failure.getErrorMessage())
            self._storeFailing = True
            return local

        return defer.Deferred.fromCoroutine(self.sharedRates.count(event, address)).addCallbacks(
            counted, failed)

    def _client(self, ident: str) -> _Client:
        now = self.clock.seconds()
        client = self.clients.get(ident)
        if client is None:
            client = self.clients[ident] = _Client(windowStart=now)
        elif now - client.windowStart >= self.unit:
            client.windowStart, client.rates = now, {}
        return client

    def connect(self, ident: str):
        client = self._client(ident)
        client.connections += 1
        client.rates["connect"] = client.rates.get("connect", 0) + 1
        return client.connections, client.rates["connect"]

    def disconnect(self, ident: str, count: int = 1) -> None:
        client = self.clients.get(ident)
        if client is not None:
            client.connections = max(0, client.connections - count)

    def event(self, ident: str, event: str) -> int:
        client = self._client(ident)
        client.rates[event] = client.rates.get(event, 0) + 1
        return client.rates[event]

    def expire(self) -> None:
        """
        Forget clients with nothing open whose window has passed.
        """
        now = self.clock.seconds()
        for ident in [i for i, c in self.clients.items()
                      if not c.connections and now - c.windowStart >= self.unit]:
            del self.clients[ident]


def _answer(rate: Union[int, defer.Deferred], answer: Callable[[int], Dict]):
    if isinstance(rate, defer.Deferred):
        return rate.addCallback(answer)
    return answer(rate)


class AnvilProtocol(ServiceAMP):
    """
    One smtpd's connection: what it counted is undone when it goes.
    """

    def __init__(self, table: AnvilTable) -> None:
        super().__init__()
        self.table = table
        self.open: Counter = Counter()

    @AnvilConnect.responder
    def connect(self, ident: str, address: Optional[str] = None):
        count, rate = self.table.connect(ident)
        self.open[ident] += 1
        return _answer(self.table.shared(address, "connect", rate),
                       lambda shared: {"count": count, "rate": shared})

    @AnvilDisconnect.responder
    def disconnect(self, ident: str):
        if self.open[ident] > 0:
            self.open[ident] -= 1
            self.table.disconnect(ident)
        return {}

    @AnvilEvent.responder
    def event(self, ident: str, event: str, address: Optional[str] = None):
        if event not in EVENTS:
            raise ValueError(f"unknown anvil event {event!r}")
        rate = self.table.event(ident, event)
        return _answer(self.table.shared(address, event, rate), lambda shared: {"rate": shared})

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        for ident, count in self.open.items():
            if count:
                self.table.disconnect(ident, count)
        self.open.clear()


class AnvilService(Service):
    def __init__(self, context) -> None:
        self.context = context
        unit = context.config.getTime("anvil_rate_time_unit")
        store = parseSharedStore(context.config.get("anvil_shared_store"))
        self.table = AnvilTable(context.reactor, unit,
                                SharedRates(context.reactor, store, unit) if store else None)
        self._expiry: Optional[task.LoopingCall] = None
        self._unit = unit

    def startService(self) -> None:
        super().startService()
        self._expiry = task.LoopingCall(self.table.expire)
        self._expiry.clock = self.context.reactor
        self._expiry.start(self._unit, now=False)
        self.context.listen(Factory.forProtocol(lambda: AnvilProtocol(self.table)))

    def stopService(self):
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()
        return super().stopService()


def makeAnvilService(context) -> AnvilService:
    return AnvilService(context)
