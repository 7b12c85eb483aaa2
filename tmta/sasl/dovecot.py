"""
SASL through Dovecot's authentication service (C{smtpd_sasl_type =
dovecot}): the client side of Dovecot's auth protocol (version 1) on a
UNIX socket, as Postfix speaks it.

One connection per smtpd process carries all its sessions' exchanges,
each under its own request id.  The connection is made when first
needed and again after it is lost; exchanges in flight when it is lost
fail as temporary (454), never as wrong credentials.
"""

from __future__ import annotations

import base64
import itertools
import os
from typing import Any, Dict, List, Optional

from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from tmta.interfaces import ISASLBackend, ISASLExchange
from tmta.logging import Logger
from tmta.sasl import (
    Authenticated,
    AuthenticationFailed,
    AuthenticationUnavailable,
    Challenge,
    SASLClient,
)

log = Logger()

_PROTOCOL_MAJOR = 1


def _escape(value: str) -> str:
    """
    A value as Dovecot's tab-separated protocol carries it.
    """
    return (value.replace("\x01", "\x011").replace("\t", "\x01t").replace("\n", "\x01n")
            .replace("\r", "\x01r"))


def _unescape(value: str) -> str:
    out, i = [], 0
    table = {"1": "\x01", "t": "\t", "n": "\n", "r": "\r", "0": "\0"}
    while i < len(value):
        c = value[i]
        if c == "\x01" and i + 1 < len(value):
            out.append(table.get(value[i + 1], value[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


class DovecotAuthProtocol(LineOnlyReceiver):
    """
    One connection to Dovecot's auth socket.

    @ivar ready: fires with this protocol once Dovecot has listed its
        mechanisms (C{DONE}).
    @ivar mechanisms: what Dovecot offers, upper case.
    """

    transport: Any  # a UNIX connection

    delimiter = b"\n"
    MAX_LENGTH = 65536

    def __init__(self) -> None:
        self.ready: defer.Deferred = defer.Deferred()
        self.mechanisms: List[str] = []
        self._pending: Dict[int, defer.Deferred] = {}
        self._ids = itertools.count(1)
        self._done = False

    def connectionMade(self) -> None:
        self.sendLine(f"VERSION\t{_PROTOCOL_MAJOR}\t2".encode())
        self.sendLine(f"CPID\t{os.getpid()}".encode())

    def lineReceived(self, line: bytes) -> None:
        fields = line.decode("utf-8", "replace").split("\t")
        kind = fields[0]
        if kind == "VERSION":
            if len(fields) < 2 or fields[1] != str(_PROTOCOL_MAJOR):
                log.error("Dovecot auth protocol version {version} is not supported",
                          version="\t".join(fields[1:]))
                self.transport.loseConnection()
        elif kind == "MECH" and len(fields) > 1:
            self.mechanisms.append(fields[1].upper())
        elif kind == "DONE" and not self._done:
            self._done = True
            self.ready.callback(self)
        elif kind in ("OK", "CONT", "FAIL") and len(fields) > 1:
            try:
                d = self._pending.pop(int(fields[1]))
            except (KeyError, ValueError):
                log.warn("Dovecot auth: answer for an unknown request: {line}", line=line)
                return
            d.callback((kind, fields[2:]))

    def lineLengthExceeded(self, line: bytes) -> None:
        log.error("Dovecot auth: overlong line")
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(AuthenticationUnavailable("lost the connection to Dovecot"))
        if not self._done:
            self._done = True
            self.ready.errback(AuthenticationUnavailable(
                "Dovecot closed the connection before its handshake ended"))

    @property
    def usable(self) -> bool:
        """
        Whether requests can go on this connection.
        """
        return bool(self.connected) and not self.transport.disconnecting and self._done

    def request(self, line: str, requestId: Optional[int] = None):
        """
        Send an C{AUTH} (with C{requestId} C{None}, a new id is taken
        and put after the command) or C{CONT} line.

        @return: C{(requestId, Deferred)}; the Deferred fires with the
            answer's kind and fields.
        """
        d: defer.Deferred = defer.Deferred()
        if requestId is None:
            requestId = next(self._ids)
        self._pending[requestId] = d
        self.sendLine(line.format(id=requestId).encode("utf-8"))
        return requestId, d

    def forget(self, requestId: int) -> None:
        self._pending.pop(requestId, None)


@implementer(ISASLBackend)
class DovecotBackend:
    """
    Dovecot's auth service on the UNIX socket C{path}.
    """

    def __init__(self, path: str, reactor) -> None:
        self.path = path
        self.reactor = reactor
        self._protocol: Optional[DovecotAuthProtocol] = None
        self._waiters: List[defer.Deferred] = []

    def connection(self) -> defer.Deferred:
        """
        A Deferred firing with a ready L{DovecotAuthProtocol}, or failing
        with L{AuthenticationUnavailable}.  Callers that ask while a
        connection is being made wait for that one.
        """
        if self._protocol is not None and self._protocol.usable:
            return defer.succeed(self._protocol)
        waiter: defer.Deferred = defer.Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            endpoint = UNIXClientEndpoint(self.reactor, self.path, timeout=10)
            d = endpoint.connect(Factory.forProtocol(DovecotAuthProtocol))
            d.addCallback(lambda protocol: protocol.ready)
            d.addBoth(self._connected)
        return waiter

    def _connected(self, result) -> None:
        waiters, self._waiters = self._waiters, []
        if isinstance(result, DovecotAuthProtocol):
            self._protocol = result
            for waiter in waiters:
                waiter.callback(result)
            return
        reason = result.getErrorMessage()
        log.warn("cannot use Dovecot's auth service at {path}: {error}", path=self.path,
                 error=reason)
        for waiter in waiters:
            waiter.errback(AuthenticationUnavailable(reason))

    def mechanisms(self) -> defer.Deferred:
        return self.connection().addCallback(lambda protocol: list(protocol.mechanisms))

    def begin(self, mechanism: str, client: SASLClient) -> "DovecotExchange":
        return DovecotExchange(self, mechanism, client)


@implementer(ISASLExchange)
class DovecotExchange:
    """
    One AUTH exchange relayed to Dovecot.
    """

    def __init__(self, backend: DovecotBackend, mechanism: str, client: SASLClient) -> None:
        self.backend = backend
        self.mechanism = mechanism
        self.client = client
        self._protocol: Optional[DovecotAuthProtocol] = None
        self._id: Optional[int] = None

    def step(self, response: Optional[bytes]) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._step(response))

    async def _step(self, response: Optional[bytes]):
        encoded = base64.b64encode(response or b"").decode("ascii")
        if self._id is None:
            self._protocol = await self.backend.connection()
            fields = ["AUTH", "{id}", self.mechanism, f"service={_escape(self.client.service)}",
                      "nologin"]
            if self.client.localAddress:
                fields.append(f"lip={_escape(self.client.localAddress)}")
            if self.client.address:
                fields.append(f"rip={_escape(self.client.address)}")
            if self.client.secured:
                fields.append("secured")
            if response is not None:
                fields.append(f"resp={encoded}")
            self._id, answer = self._protocol.request("\t".join(fields))
        else:
            assert self._protocol is not None, "connected by the first step"
            _, answer = self._protocol.request(f"CONT\t{{id}}\t{encoded}", self._id)
        kind, fields = await answer
        if kind == "CONT":
            try:
                return Challenge(base64.b64decode(fields[0] if fields else ""))
            except ValueError:
                raise AuthenticationUnavailable("Dovecot sent a malformed challenge") from None
        values = {}
        flags = set()
        for field in fields:
            name, equals, value = field.partition("=")
            if equals:
                values[name] = _unescape(value)
            else:
                flags.add(name)
        if kind == "OK":
            username = values.get("user")
            if not username:
                raise AuthenticationUnavailable("Dovecot named no user")
            return Authenticated(username)
        if "temp" in flags:
            raise AuthenticationUnavailable(values.get("reason", "temporary failure"))
        raise AuthenticationFailed(values.get("reason", "authentication failed"))

    def abort(self) -> None:
        if self._protocol is not None and self._id is not None:
            self._protocol.forget(self._id)
