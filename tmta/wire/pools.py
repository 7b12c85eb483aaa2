"""
Connections to a service kept for reuse: one shared by every request
(L{SharedConnection}), one per request at a time (L{ConnectionPool}), or
several requests per connection (L{MultiplexingPool}).
"""

from __future__ import annotations

from typing import Any, Dict, List, Set

from twisted.internet import defer
from twisted.python.failure import Failure


class SharedConnection:
    """
    One connection to a service, used by any number of requests at once.

    AMP matches every answer to its question, so requests in flight
    together need no connection each: the service's worker counts one
    client (a pool would make it one per request in flight, and turn
    its workers over C{max_use} times faster), and the caller holds one
    descriptor.  The connection is made when first wanted, made again
    when it was lost, and closed after C{idle} seconds without a user.
    """

    def __init__(self, connect, clock, idle: float = 5.0) -> None:
        self._connect = connect
        self.clock = clock
        self.idle = idle
        self._protocol = None
        self.users = 0
        self._lastRelease = 0.0
        self._waiting: list = []
        self._timer = None

    def acquire(self):
        """
        @return: a Deferred firing with the connected protocol, for the
            caller to use (among others) until it calls L{release}.
        """
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            self.users += 1
            return defer.succeed(protocol)
        self._protocol = None
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            self._connect().addBoth(self._connected)
        return waiter

    def _connected(self, result) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            for waiter in waiting:
                waiter.errback(result)
            return
        self._protocol, self.users = result, len(waiting)
        for waiter in waiting:
            waiter.callback(result)

    def release(self, protocol) -> None:
        """
        The caller is done with C{protocol} (for now).
        """
        if protocol is not self._protocol:
            return
        self.users -= 1
        if self.users == 0:
            self._lastRelease = self.clock.seconds()
            if self._timer is None:
                self._timer = self.clock.callLater(self.idle, self._expire)

    def _expire(self) -> None:
        self._timer = None
        protocol = self._protocol
        if protocol is None or self.users:
            return
        left = self._lastRelease + self.idle - self.clock.seconds()
        if left > 0:
            self._timer = self.clock.callLater(left, self._expire)
            return
        self._protocol = None
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()


class ConnectionPool:
    """
    Connections to one service, each for one request at a time, kept
    open between uses.

    For services whose workers take one request at a time (delivery
    agents: local changes identity per delivery), where one connection
    cannot carry several (L{SharedConnection}).  Reusing a connection
    spares the worker the cost of a client per request.  Idle
    connections are closed after C{idle} seconds.
    """

    def __init__(self, connect, clock, idle: float = 5.0) -> None:
        self._connect = connect
        self.clock = clock
        self.idle = idle
        # (protocol, when it was released), oldest first.  One timer for
        # the pool closes what has idled too long: a timer per release
        # (set, then cancelled by the next acquire) cost more than the
        # rest of a reuse.
        self._free: list = []
        self._timer = None

    def acquire(self):
        """
        @return: a Deferred firing with a connected protocol for the
            caller's sole use until L{release} or L{discard}.
        """
        while self._free:
            protocol, _ = self._free.pop()
            if protocol.transport is not None:
                return defer.succeed(protocol)
        return self._connect()

    def release(self, protocol) -> None:
        """
        Return a connection that is in a clean state for the next user.
        """
        if protocol.transport is None:
            return
        self._free.append((protocol, self.clock.seconds()))
        if self._timer is None:
            self._timer = self.clock.callLater(self.idle, self._expire)

    def discard(self, protocol) -> None:
        """
        Close a connection whose state is unknown (an error mid-request).
        """
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def retire(self, protocol) -> None:
        """
        In place of L{release}, by a request whose answer said the
        worker at the other end takes no more (it has reached
        C{max_use}): the connection is closed once the requests under
        way on it are done, instead of being kept for reuse.
        """
        self.discard(protocol)

    def _expire(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        cutoff = now - self.idle
        expired = 0
        while expired < len(self._free) and self._free[expired][1] <= cutoff:
            expired += 1
        old, self._free = self._free[:expired], self._free[expired:]
        for protocol, _ in old:
            self.discard(protocol)
        if self._free:
            # Never below zero, however the clock moved meanwhile.
            delay = max(0.0, self._free[0][1] - cutoff)
            self._timer = self.clock.callLater(delay, self._expire)

    def close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for protocol, _ in self._free:
            self.discard(protocol)
        self._free = []


class MultiplexingPool(ConnectionPool):
    """
    Connections to one service, each carrying up to C{perConnection}
    requests at once.

    For delivery agents that serve the requests on a connection
    together, as one batch (local syncs a Maildir's directory once for
    all of them).  A request goes to the connection with the most
    requests under way that still has room: packed, not spread, so
    that the agent has a batch to serve.  A connection with none under
    way idles as in L{ConnectionPool}.
    """

    def __init__(self, connect, clock, perConnection: int, idle: float = 5.0) -> None:
        super().__init__(connect, clock, idle)
        self.perConnection = max(1, perConnection)
        #: Requests under way, by connection.
        self.busy: Dict[Any, int] = {}
        #: Waiters for each connection being made, in the order asked.
        self._making: List[List[defer.Deferred]] = []
        #: Connections whose worker takes no more requests.
        self._retired: Set[Any] = set()

    def acquire(self):
        best = None
        for protocol, users in self.busy.items():
            if users < self.perConnection and protocol.transport is not None and (
                    best is None or users > self.busy[best]) and protocol not in self._retired:
                best = protocol
        if best is not None:
            self.busy[best] += 1
            return defer.succeed(best)
        for waiters in self._making:
            if len(waiters) < self.perConnection:
                waiter: defer.Deferred = defer.Deferred()
                waiters.append(waiter)
                return waiter
        while self._free:
            protocol, _ = self._free.pop()
            if protocol.transport is not None:
                self.busy[protocol] = 1
                return defer.succeed(protocol)
        waiters = [defer.Deferred()]
        self._making.append(waiters)
        self._connect().addBoth(self._made, waiters)
        return waiters[0]

    def _made(self, result, waiters: List[defer.Deferred]) -> None:
        self._making.remove(waiters)
        if isinstance(result, Failure):
            for waiter in waiters:
                waiter.errback(result)
            return
        self.busy[result] = len(waiters)
        for waiter in waiters:
            waiter.callback(result)

    def release(self, protocol) -> None:
        users = self.busy.pop(protocol, 0) - 1
        if users > 0:
            self.busy[protocol] = users
        elif protocol in self._retired:
            self._retired.discard(protocol)
            super().discard(protocol)
        else:
            super().release(protocol)

    def retire(self, protocol) -> None:
        # No new request goes to it; the last one under way closes it.
        self._retired.add(protocol)
        self.release(protocol)

    def discard(self, protocol) -> None:
        self.busy.pop(protocol, None)
        self._retired.discard(protocol)
        super().discard(protocol)
