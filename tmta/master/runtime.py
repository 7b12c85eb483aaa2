"""
A worker's side of the process policy: counting clients, pausing the
inherited sockets at the per-process client limit, and leaving after
C{max_use} clients or C{max_idle} idle seconds, or when the master goes.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Tuple

from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IDelayedCall,
    IFileDescriptorReceiver,
    IReactorTime,
    IReadDescriptor,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tmta.common.transports import EagerWriteMixin, PlainReadMixin
from tmta.common.twistedcompat import adoptListeningPort, shareListeningSocket
from tmta.logging import Logger
from tmta.mail.proxyprotocol import (
    HEADER_LIMIT,
    Endpoint,
    ProxyHeaderError,
    parseHeader,
    readHandOverRecord,
)

LISTEN_BACKLOG = 1024


class _CappedPortMixin:
    """
    Accept no more connections in one go than the worker has room for.

    Twisted's ports accept up to C{numberAccepts} connections per
    readiness event; a single-client worker must take exactly one and
    leave the rest to its siblings or to a new worker.
    """

    runtime: "WorkerRuntime"

    def doRead(self):
        self.numberAccepts = max(1, self.runtime.room())
        return super().doRead()


if TYPE_CHECKING:
    _Server = tcp.Server
else:
    _Server = object


class _CountedMixin(_Server):
    """
    A worker's client, counted by the worker's runtime from the moment it
    is accepted until its connection is gone.  (Counting in the
    transport spares every read and write of every client the extra
    layer of a wrapping protocol.)
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        port: "_CappedPortMixin" = self.server  # type: ignore[assignment]
        self._runtime = port.runtime
        # A pass service's hand-over, or a connection until its PROXY
        # header is read, is not a client of its own: what it becomes is.
        self._runtime.clientStarted(
            self, served=not isinstance(getattr(port, "factory", None),
                                        (_PassedConnections, _ProxiedConnections)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self._runtime.clientEnded(self)


class _EagerTCPServer(_CountedMixin, EagerWriteMixin, tcp.Server):
    pass


class _EagerUNIXServer(_CountedMixin, PlainReadMixin, EagerWriteMixin, unix.Server):
    pass


class _CappedTCPPort(_CappedPortMixin, tcp.Port):
    transport = _EagerTCPServer


class _CappedUNIXPort(_CappedPortMixin, unix.Port):
    transport = _EagerUNIXServer


class _PassedTCPServer(EagerWriteMixin, tcp.Server):
    """
    A client connection another process accepted and passed on, counted
    by the worker's runtime until it is gone.

    @ivar proxied: the client's and the server's addresses, when a PROXY
        header gave them (L{getPeer} and L{getHost} then give them).
    """

    _runtime: "WorkerRuntime"
    proxied: Optional[Tuple[Endpoint, Endpoint]] = None

    def getHost(self):
        if self.proxied is None:
            return super().getHost()
        return _address(*self.proxied[1])

    def getPeer(self):
        if self.proxied is None:
            return super().getPeer()
        return _address(*self.proxied[0])

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self._runtime.clientEnded(self)


def _address(host: str, port: int):
    return (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)


@implementer(IFileDescriptorReceiver)
class _HandOver(Protocol):
    """
    One connection to a C{pass} service: it brings a client's descriptor
    and the record that carries it (L{handOverRecord}: the client's
    addresses, when a PROXY header gave them), which is then served as
    if accepted here.
    """

    transport: Any

    def __init__(self, passed: "_PassedConnections") -> None:
        self.passed = passed
        self.descriptor: Optional[int] = None
        self.record = b""

    def fileDescriptorReceived(self, descriptor: int) -> None:
        if self.descriptor is not None:
            os.close(descriptor)
            return
        self.descriptor = descriptor

    def dataReceived(self, data: bytes) -> None:
        self.record += data
        try:
            complete, addresses = readHandOverRecord(self.record)
        except ProxyHeaderError as e:
            self.passed.runtime.log.warn("bad hand-over of a connection: {error}", error=e)
            self.transport.loseConnection()
            return
        if not complete:
            return
        descriptor, self.descriptor = self.descriptor, None
        if descriptor is not None:
            self.passed.serve(descriptor, addresses)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)
            self.descriptor = None


@implementer(IReadDescriptor)
class _ProxyHeader(Protocol):
    """
    A connection to a listener behind a proxy (C{*_upstream_proxy_protocol
    = haproxy}), until its PROXY header is read: peeked at when the
    connection is first readable, parsed, and exactly its bytes taken
    (L{tmta.mail.proxyprotocol}).  The connection is then served, with
    the addresses the header gave, as a passed one is; a header that
    does not come in time or cannot be read closes it.
    """

    transport: Any

    def __init__(self, proxied: "_ProxiedConnections") -> None:
        self.proxied = proxied
        self._timer: Optional[IDelayedCall] = None
        self._watching = False

    def connectionMade(self) -> None:
        reactor = self.proxied.reactor
        self.transport.stopReading()
        self._watching = True
        reactor.addReader(self)
        self._timer = reactor.callLater(self.proxied.timeout, self._give, "timeout error")

    def fileno(self) -> int:
        return self.transport.fileno()

    def logPrefix(self) -> str:
        return "proxy header"

    def doRead(self) -> None:
        sock = self.transport.socket
        try:
            data = sock.recv(HEADER_LIMIT, socket.MSG_PEEK)
            if not data:
                return self._give("EOF")
            length, addresses = parseHeader(data)
            sock.recv(length)
        except BlockingIOError:
            return None
        except (OSError, ProxyHeaderError) as e:
            return self._give(str(e))
        self._stop()
        descriptor = os.dup(self.transport.fileno())
        # Let go of this end without shutting the connection down: the
        # duplicate serves it now.
        self.transport._shouldShutdown = False
        self.transport.loseConnection()
        self.proxied.passed.serve(descriptor, addresses)
        return None

    def _give(self, reason: str) -> None:
        peer = self.transport.getPeer()
        self.proxied.runtime.log.warn("haproxy read: {reason}: from [{address}]:{port}",
                                      reason=reason, address=peer.host, port=peer.port)
        self._stop()
        self.transport.loseConnection()

    def _stop(self) -> None:
        if self._watching:
            self._watching = False
            self.proxied.reactor.removeReader(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def readConnectionLost(self, reason: Failure) -> None:
        self._give("connection lost")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop()


class _ProxiedConnections(Factory):
    """
    The factory of a listener behind a proxy: each connection is first a
    L{_ProxyHeader}, then served by C{passed} with the addresses its
    header gave.
    """

    noisy = False

    def __init__(self, reactor, runtime: "WorkerRuntime", passed: "_PassedConnections",
                 timeout: float) -> None:
        self.reactor = reactor
        self.runtime = runtime
        self.passed = passed
        self.timeout = timeout

    def buildProtocol(self, addr):
        return _ProxyHeader(self)


class _PassedConnections(Factory):
    """
    The factory of a C{pass} service's socket: each descriptor received
    becomes a connection served by C{factory}.
    """

    noisy = False

    def __init__(self, reactor, runtime: "WorkerRuntime", factory) -> None:
        self.reactor = reactor
        self.runtime = runtime
        self.factory = factory

    def buildProtocol(self, addr):
        return _HandOver(self)

    def serve(self, descriptor: int,
              addresses: Optional[Tuple[Endpoint, Endpoint]] = None) -> None:
        """
        Serve the connection on C{descriptor}, as from the client
        C{addresses} names (the client's and the server's, from a PROXY
        header), or from its peer.
        """
        try:
            sock = socket.socket(fileno=descriptor)
        except OSError as e:
            self.runtime.log.warn("cannot take a passed connection: {error}", error=e)
            os.close(descriptor)
            return
        try:
            sock.setblocking(False)
            peer = sock.getpeername()
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                raise OSError(f"not a TCP connection (family {sock.family})")
        except OSError as e:
            # The client left while it was being passed on.
            self.runtime.log.info("passed connection gone: {error}", error=e)
            sock.close()
            return
        if addresses is not None:
            peer = addresses[0]
        protocol = self.factory.buildProtocol(_address(*peer[:2]))
        if protocol is None:
            sock.close()
            return
        transport = _PassedTCPServer(sock, protocol, peer, None,  # type: ignore[arg-type]
                                     peer[1], self.reactor)
        transport.proxied = addresses
        # What Twisted's own servers name themselves by (it has no port).
        transport.repstr = f"<{type(protocol).__name__} passed on {sock.getsockname()[1]}>"
        transport._runtime = self.runtime
        self.runtime.clientStarted(transport)
        protocol.makeConnection(transport)


class WorkerRuntime:
    """
    The bookkeeping of one worker process.

    @ivar capacity: the per-process client limit.
    @ivar maxUse: leave after this many clients (0: never): C{max_use}
        for each client the process can hold at once.  A Postfix process
        serves one client at a time and C{max_use} of them in its life; a
        process that holds C{capacity} clients at once stands in for
        C{capacity} of those, so it serves C{max_use * capacity}.  This
        lets one smtpd really hold up to C{smtpd_process_client_limit}
        sessions, and keeps C{max_use} meaning what it means in Postfix
        for the agents that serve one client at a time.
    @ivar maxIdle: leave after this many seconds without a client
        (0: never).
    @ivar resident: ignore C{maxUse} and C{maxIdle} (qmgr, pickup).
    @ivar abandons: on losing the master, drop the clients in hand
        rather than finish with them (smtpd's: a session that went on
        would acknowledge mail that no master looks after).
    @ivar report: called with C{(available, served)} when the master must
        hear of a change.
    @ivar exit: called once, when the worker should end.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        capacity: int,
        maxUse: int,
        maxIdle: float,
        resident: bool,
        report: Callable[[bool, int], None],
        exit: Callable[[], None],
        abandons: bool = False,
    ) -> None:
        self.clock = clock
        self.capacity = max(1, capacity)
        self.maxUse = 0 if resident else maxUse * self.capacity
        self.maxIdle = 0 if resident else maxIdle
        self.report = report
        self._exit = exit
        self.resident = resident
        self.abandons = abandons
        self._transports: set = set()
        self.clients = 0
        self.served = 0
        #: Requests served over connections that carry many.
        self.requests = 0.0
        self.stopping = False
        self.ports: List = []
        self._reported: Optional[bool] = None
        self._idle: Optional[IDelayedCall] = None
        self._exited = False

    def room(self) -> int:
        """
        How many more clients this worker may take now.
        """
        if self.stopping:
            return 0
        room = self.capacity - self.clients
        if self.maxUse:
            room = min(room, self.maxUse - self.served)
        return max(0, room)

    def adopt(self, reactor, fd: int, family: int, factory, passed: bool = False,
              upstreamProxy: Optional[float] = None) -> None:
        """
        Serve an inherited listening socket with C{factory}.

        @param passed: the socket is a C{pass} service's (Postfix's
            master.cf type): each connection to it brings a client
            connection another process accepted (postscreen), which
            C{factory} then serves.
        @param upstreamProxy: for a TCP socket behind a proxy, the
            seconds a connection has to send its PROXY header; C{None}
            for none.
        """
        portClass = _CappedUNIXPort if family == socket.AF_UNIX else _CappedTCPPort
        if passed:
            factory = _PassedConnections(reactor, self, factory)
        elif upstreamProxy is not None and family != socket.AF_UNIX:
            factory = _ProxiedConnections(reactor, self, _PassedConnections(reactor, self, factory),
                                          upstreamProxy)
        port = adoptListeningPort(portClass, reactor, fd, family, factory)
        port.runtime = self
        # The socket is shared with the master and the other workers.
        shareListeningSocket(port)
        port.backlog = LISTEN_BACKLOG
        port.startListening()
        self.ports.append(port)
        self._sync()

    def start(self) -> None:
        """
        Begin: report in and start the idle timer.
        """
        self._sync(force=True)
        self._armIdle()

    def clientStarted(self, transport=None, served: bool = True) -> None:
        """
        A client came.

        @param served: whether it counts towards C{max_use} (a passed
            connection's hand-over does not: the client it brings does).
        """
        if transport is not None:
            self._transports.add(transport)
        self.clients += 1
        if served:
            self.served += 1
        self._cancelIdle()
        self._sync(force=self.served == 1)

    def requestServed(self, share: float = 1.0) -> bool:
        """
        One request served on a connection that carries many (a
        delivery agent's, from qmgr): it counts against C{max_use} as a
        client does, so that an agent is replaced after as many
        deliveries as Postfix's would be.

        @param share: what it counts for: an agent that serves a batch
            of N requests at once stands in for N of Postfix's processes,
            and so counts each as 1/N (as a process holding N clients
            serves C{max_use} for each).
        @return: whether the worker takes no more: it leaves once its
            connections are closed.
        """
        self.requests += share
        if self.maxUse and self.requests >= self.maxUse and not self.stopping:
            self.shutdown()
        return self.stopping

    def clientEnded(self, transport=None) -> None:
        self._transports.discard(transport)
        self.clients -= 1
        if self.clients == 0:
            if self.stopping or (self.maxUse and self.served >= self.maxUse):
                self.exit()
                return
            self._armIdle()
        self._sync()

    def shutdown(self) -> None:
        """
        Stop taking clients; leave once those in hand are done.
        """
        if self.stopping:
            return
        self.stopping = True
        for port in self.ports:
            port.stopListening()
        self.ports = []
        if self.clients == 0:
            self.exit()

    def masterLost(self) -> None:
        """
        The master has gone (its control channel closed): take no more
        work and leave.  A resident service (qmgr) stops at once, waiting
        only for what it started (the deliveries under way are recorded);
        one that abandons its clients drops them; the others finish with
        the clients in hand.  No new master starts while this process
        lives (L{tmta.master.lock}).
        """
        if self._exited:
            return
        self.log.warn("the master has gone: taking no more work, and leaving")
        if self.resident:
            self.stopping = True
            for port in self.ports:
                port.stopListening()
            self.ports = []
            self.exit()
            return
        self.shutdown()
        if self.abandons:
            for transport in list(self._transports):
                transport.abortConnection()

    def exit(self) -> None:
        if self._exited:
            return
        self._exited = True
        self._cancelIdle()
        self._exit()

    def _sync(self, force: bool = False) -> None:
        """
        Pause or resume the sockets to match the room left, and tell the
        master when that changes.
        """
        available = self.room() > 0
        for port in self.ports:
            if available:
                port.startReading()
            else:
                port.stopReading()
        if force or available != self._reported:
            self._reported = available
            self.report(available, self.served)

    def _armIdle(self) -> None:
        self._cancelIdle()
        if self.maxIdle and not self.stopping:
            self._idle = self.clock.callLater(self.maxIdle, self._idleTimeout)

    def _cancelIdle(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _idleTimeout(self) -> None:
        self._idle = None
        if self.clients == 0:
            self.exit()
