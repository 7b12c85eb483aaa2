"""
The client side of trivial-rewrite, with a small cache, as Postfix's
clients keep one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.protocols import amp

from tmta.rewrite import Resolution
from tmta.rewrite.commands import ResolveAddress, RewriteAddress


class RewriteClient:
    """
    Asks the trivial-rewrite service, over one connection kept while in
    use (closed after C{idle} seconds without a request), and remembers
    up to C{size} answers for C{ttl} seconds.
    """

    def __init__(
        self,
        connect: Callable[[], defer.Deferred],
        clock: IReactorTime,
        size: int = 1000,
        ttl: float = 60.0,
        idle: float = 5.0,
    ) -> None:
        self._connect = connect
        self.clock = clock
        self.size = size
        self.ttl = ttl
        self.idle = idle
        self._cache: OrderedDict = OrderedDict()
        self._protocol: Optional[amp.AMP] = None
        self._connecting: Optional[defer.Deferred] = None
        self._idleTimer = None

    def _cached(self, key):
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock.seconds():
            self._cache.move_to_end(key)
            return hit[1]
        return None

    async def _ask(self, key, command, **kw):
        protocol = await self._getProtocol()
        result = await protocol.callRemote(command, **kw)
        self._armIdle()
        self._cache[key] = (self.clock.seconds() + self.ttl, result)
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return result

    async def _getProtocol(self) -> amp.AMP:
        if self._protocol is not None and self._protocol.transport is not None:
            return self._protocol
        if self._connecting is None:
            self._connecting = self._connect()
            try:
                self._protocol = await self._connecting
            finally:
                self._connecting = None
            return self._protocol
        waiting = defer.Deferred()
        self._connecting.addBoth(lambda r: (waiting.callback(None), r)[1])
        await waiting
        return await self._getProtocol()

    def _armIdle(self) -> None:
        if self._idleTimer is not None and self._idleTimer.active():
            self._idleTimer.reset(self.idle)
        else:
            self._idleTimer = self.clock.callLater(self.idle, self.close)

    def close(self) -> None:
        """
        Drop the connection (it is made again when needed).
        """
        if self._idleTimer is not None and self._idleTimer.active():
            self._idleTimer.cancel()
        self._idleTimer = None
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.loseConnection()
        self._protocol = None

    def rewrite(self, address: str) -> defer.Deferred:
        """
        @return: a Deferred firing with the canonical address (at once,
            from the cache, when it is there).
        """
        key = (RewriteAddress, address)
        hit = self._cached(key)
        if hit is not None:
            return defer.succeed(hit["address"])
        return defer.Deferred.fromCoroutine(
            self._ask(key, RewriteAddress, address=address)
        ).addCallback(lambda r: r["address"])

    def resolve(self, address: str) -> defer.Deferred:
        """
        @return: a Deferred firing with a L{Resolution} (at once, from the
            cache, when it is there).
        """
        key = (ResolveAddress, address)
        hit = self._cached(key)
        if hit is None:
            return defer.Deferred.fromCoroutine(
                self._ask(key, ResolveAddress, address=address)
            ).addCallback(_resolution)
        return defer.succeed(_resolution(hit))


def _resolution(answer) -> Resolution:
    return Resolution(answer["transport"], answer["nexthop"], answer["recipient"],
                      answer["addressClass"])
