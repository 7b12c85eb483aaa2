"""
The client side of trivial-rewrite, with a small cache, as Postfix's
clients keep one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from tmta.mail.rewriting import Resolution
from tmta.rewrite.commands import ResolveAddress, RewriteAddress
from tmta.wire import SharedConnection


class RewriteClient:
    """
    Asks the trivial-rewrite service, over one connection shared by all
    requests (closed after C{idle} seconds without one), and remembers
    up to C{size} answers for C{ttl} seconds.  A question already asked
    and not yet answered is not asked again: its askers share the
    answer (a flush of thousands of messages to a few addresses sends a
    few requests, not thousands).
    """

    def __init__(
        self,
        connect: Callable[[], defer.Deferred],
        clock: IReactorTime,
        size: int = 1000,
        ttl: float = 60.0,
        idle: float = 5.0,
    ) -> None:
        self.connection = SharedConnection(connect, clock, idle)
        self.clock = clock
        self.size = size
        self.ttl = ttl
        self._cache: OrderedDict = OrderedDict()
        self._asked: Dict[tuple, List[defer.Deferred]] = {}

    def _cached(self, key):
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock.seconds():
            self._cache.move_to_end(key)
            return hit[1]
        return None

    async def _ask(self, key, command, **kw):
        protocol = await self.connection.acquire()
        try:
            result = await protocol.callRemote(command, **kw)
        finally:
            self.connection.release(protocol)
        if result.get("transport") == "retry":
            # A table that could not be read: asked again next time, so
            # mail moves as soon as the table can be read again.
            return result
        self._cache[key] = (self.clock.seconds() + self.ttl, result)
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return result

    def _askOnce(self, key, command, **kw) -> defer.Deferred:
        """
        @return: a Deferred firing with the answer to C{command}, not in
            the cache: from the same question under way, or asked now.
        """
        answer: defer.Deferred = defer.Deferred()
        waiting = self._asked.get(key)
        if waiting is not None:
            waiting.append(answer)
            return answer
        self._asked[key] = [answer]
        defer.Deferred.fromCoroutine(self._ask(key, command, **kw)).addBoth(
            self._answered, key)
        return answer

    def _answered(self, result, key) -> None:
        for answer in self._asked.pop(key):
            if isinstance(result, Failure):
                answer.errback(result)
            else:
                answer.callback(result)

    def close(self) -> None:
        """
        Drop the connection (it is made again when needed).
        """
        self.connection.close()

    def rewrite(self, address: str) -> defer.Deferred:
        """
        @return: a Deferred firing with the canonical address (at once,
            from the cache, when it is there).
        """
        key = (RewriteAddress, address)
        hit = self._cached(key)
        if hit is not None:
            return defer.succeed(hit["address"])
        return self._askOnce(key, RewriteAddress, address=address).addCallback(
            lambda r: r["address"])

    def resolve(self, address: str, sender: Optional[str] = None,
                verify: bool = False) -> defer.Deferred:
        """
        @param sender: the envelope sender, when the relayhost depends on
            it (C{sender_dependent_relayhost_maps}); C{None} otherwise,
            which lets one answer serve every sender.
        @param verify: route an address verification probe.
        @return: a Deferred firing with a L{Resolution} (at once, from the
            cache, when it is there).
        """
        key = (ResolveAddress, address, sender, verify)
        hit = self._cached(key)
        if hit is not None:
            return defer.succeed(_resolution(hit))
        extra: dict = {} if sender is None else {"sender": sender}
        if verify:
            extra["verify"] = True
        return self._askOnce(key, ResolveAddress, address=address, **extra).addCallback(
            _resolution)


def _resolution(answer) -> Resolution:
    return Resolution(answer["transport"], answer["nexthop"], answer["recipient"],
                      answer["addressClass"])


def connectRewrite(context):
    """
    What connects a daemon (its L{tmta.master.worker} context) to the
    trivial-rewrite service its C{rewrite_service_name} names (a
    watchdog's own rewrite, in mailcow's master.cf).
    """
    name = context.config.get("rewrite_service_name").strip() or "rewrite"
    return lambda: context.connect(name)
