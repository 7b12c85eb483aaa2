"""
Rates kept in a store several hosts share (C{anvil_shared_store}), so
that a client spreading its connections, messages or recipients over
several tmta hosts meets one limit: C{redis:inet:host:port} or
C{redis:unix:/path} (Redis), C{memcache:inet:host:port} or
C{memcache:unix:/path} (memcached).

Each count lives under a key naming the event, the client's address and
the time unit it falls in (the time unit of C{anvil_rate_time_unit},
counted from the epoch, the same on every host), and expires after two
units.  Connection counts (how many are open now) stay with each host's
own anvil: only rates are shared.  When the store cannot be reached,
anvil counts on its own and warns, as an smtpd that cannot reach anvil
lets clients in.

Both protocols are spoken here in a few lines of Twisted: the answers
are single lines (integers), and a client library would bring a reactor
or threads of its own.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from tmta.logging import Logger

__all__ = ["SharedRates", "parseSharedStore", "StoreError", "configurationProblems"]

log = Logger()

KEY_PREFIX = "tmta-anvil"


class StoreError(Exception):
    """
    The store answered what it should not have, or went away.
    """


class _LineClient(LineOnlyReceiver):
    """
    Commands written in order, each answered by a known number of
    lines, matched to their Deferreds in order.
    """

    delimiter = b"\r\n"
    MAX_LENGTH = 1024

    def __init__(self) -> None:
        self._waiting: Deque[Tuple[defer.Deferred, int, list]] = deque()

    def ask(self, data: bytes, lines: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((d, lines, []))
        self.transport.write(data)  # type: ignore[union-attr]
        return d

    def lineReceived(self, line: bytes) -> None:
        if not self._waiting:
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        d, lines, got = self._waiting[0]
        got.append(line)
        if len(got) == lines:
            self._waiting.popleft()
            d.callback(got)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason=None) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d, _, _ in waiting:
            d.errback(StoreError("the connection to the store was lost"))


def parseSharedStore(value: str) -> Optional[Tuple[str, str, str, int]]:
    """
    C{anvil_shared_store}: C{(kind, family, host or path, port)}, or
    C{None} when empty.

    @raise ValueError: a value that names no store tmta can use.
    """
    value = value.strip()
    if not value:
        return None
    kind, _, where = value.partition(":")
    if kind not in ("redis", "memcache"):
        raise ValueError(f"anvil_shared_store = {value}: expected redis:... or memcache:...")
    if where.startswith("unix:") and where[5:].startswith("/"):
        return kind, "unix", where[5:], 0
    if where.startswith("inet:"):
        host, _, port = where[5:].rpartition(":")
        if host and port.isdigit():
            return kind, "inet", host.strip("[]"), int(port)
    raise ValueError(f"anvil_shared_store = {value}: expected {kind}:inet:host:port or "
                     f"{kind}:unix:/path")


def configurationProblems(config, entry) -> List[str]:
    """
    An C{anvil_shared_store} that names no store stops start-up: the
    operator asked for limits shared between hosts.
    """
    try:
        parseSharedStore(config.get("anvil_shared_store"))
    except ValueError as e:
        return [str(e)]
    return []


class SharedRates:
    """
    Counts of events per client and time unit in the shared store.
    """

    def __init__(self, reactor, store: Tuple[str, str, str, int], unit: float) -> None:
        self.reactor = reactor
        self.kind, family, where, port = store
        self.unit = max(1, int(unit))
        self.endpoint = (UNIXClientEndpoint(reactor, where, timeout=5) if family == "unix"
                         else TCP4ClientEndpoint(reactor, where, port, timeout=5))
        self._protocol: Optional[_LineClient] = None
        self._connecting: Optional[defer.Deferred] = None
        self._failing = False

    async def _client(self) -> _LineClient:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None and \
                protocol.transport.connected:  # type: ignore[attr-defined]
            return protocol
        if self._connecting is None:
            self._connecting = self.endpoint.connect(Factory.forProtocol(_LineClient))
        connecting = self._connecting
        try:
            connected: Any = await connecting
        finally:
            self._connecting = None
        self._protocol = connected
        return connected

    async def count(self, event: str, address: str) -> int:
        """
        Count one C{event} from C{address}: how many this time unit has
        seen, on every host.

        @raise StoreError: the store failed.
        """
        window = int(self.reactor.seconds() // self.unit)
        key = f"{KEY_PREFIX}:{event}:{address}:{window}".encode("ascii", "replace")
        ttl = 2 * self.unit
        try:
            client = await self._client()
            if self.kind == "redis":
                lines = await client.ask(
                    b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(key), key)
                    + b"*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n" % (
                        len(key), key, len(str(ttl)), ttl), 2)
                line = lines[0]
                if not line.startswith(b":"):
                    raise StoreError(f"unexpected answer {line[:80]!r}")
                return int(line[1:])
            added = await client.ask(b"add %s 0 %d 1\r\n1\r\n" % (key, ttl), 1)
            if added[0] == b"STORED":
                return 1
            incremented = await client.ask(b"incr %s 1\r\n" % key, 1)
            if not incremented[0].isdigit():
                raise StoreError(f"unexpected answer {incremented[0][:80]!r}")
            return int(incremented[0])
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(str(e) or type(e).__name__) from None
