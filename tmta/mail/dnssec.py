"""
DNS lookups that say whether the answer is DNSSEC-validated, for DANE
(RFC 7672) under C{smtp_dns_support_level = dnssec}.

As Postfix does, tmta validates nothing itself: it asks the resolvers
of C{/etc/resolv.conf} -- which must be a validating resolver on this
host, such as Unbound -- with the AD bit set, and trusts the AD bit of
their answers (RFC 6840, section 5.7).  twisted.names' client cannot
set the AD bit in a query, nor report it of an answer, so the queries
are made here, over UDP (TCP when the answer is truncated), with
twisted.names' message classes.

L{ValidatingResolver} answers the lookups L{tmta.smtp.nexthop.HostFinder}
makes, as a twisted.names resolver does, and keeps, for each name and
type it was asked, whether the answer was validated.
"""

from __future__ import annotations

import random
import struct
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from twisted.internet import defer, protocol
from twisted.names import dns
from twisted.names import error as dnserror

#: DNS type of TLSA records (RFC 6698).
TLSA = 52

#: Seconds each server has to answer, per round.
TIMEOUTS = (2, 5)


def resolvConfServers(path: str = "/etc/resolv.conf") -> List[Tuple[str, int]]:
    """
    The name servers C{path} lists, or this host's, as the C library
    falls back to.
    """
    servers = []
    try:
        with open(path) as f:
            for line in f:
                words = line.split()
                if len(words) >= 2 and words[0] == "nameserver":
                    servers.append((words[1], 53))
    except OSError:
        pass
    return servers or [("127.0.0.1", 53)]


class TLSARecord(NamedTuple):
    """
    One TLSA record: certificate usage, selector, matching type and the
    association data.
    """

    usage: int
    selector: int
    matchingType: int
    data: bytes

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.matchingType} {self.data.hex()}"


def parseTLSA(rdata: bytes) -> TLSARecord:
    """
    @raise ValueError: too short to be a TLSA record.
    """
    if len(rdata) < 3:
        raise ValueError("malformed TLSA record")
    return TLSARecord(rdata[0], rdata[1], rdata[2], bytes(rdata[3:]))


class _UDPQuery(protocol.DatagramProtocol):
    transport: Any

    def __init__(self, message: bytes, ident: int, server: Tuple[str, int]) -> None:
        self.message, self.ident, self.server = message, ident, server
        self.answer: defer.Deferred = defer.Deferred()

    def startProtocol(self) -> None:
        self.transport.connect(*self.server)
        self.transport.write(self.message)

    def datagramReceived(self, data: bytes, address) -> None:
        reply = dns.Message()
        try:
            reply.fromStr(data)
        except Exception:
            return  # not an answer: wait for one
        if reply.id == self.ident and not self.answer.called:
            self.answer.callback(reply)

    def connectionRefused(self) -> None:
        if not self.answer.called:
            self.answer.errback(dnserror.DNSServerError("connection refused"))


class _TCPQuery(protocol.Protocol):
    transport: Any

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.buffer = b""
        self.answer: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(struct.pack("!H", len(self.message)) + self.message)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= 2:
            size = struct.unpack("!H", self.buffer[:2])[0]
            if len(self.buffer) >= 2 + size and not self.answer.called:
                reply = dns.Message()
                reply.fromStr(self.buffer[2:2 + size])
                self.answer.callback(reply)
                self.transport.loseConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if not self.answer.called:
            self.answer.errback(dnserror.DNSServerError("connection closed"))


class ValidatingResolver:
    """
    Lookups whose answers say whether they were validated.

    @ivar secure: for each C{(name, type)} asked, whether its answer
        (records, or that there are none) carried the AD bit.
    """

    def __init__(self, reactor, servers: Optional[List[Tuple[str, int]]] = None) -> None:
        self.reactor = reactor
        self.servers = servers if servers is not None else resolvConfServers()
        self.secure: Dict[Tuple[str, int], bool] = {}

    async def query(self, name: str, rrtype: int) -> Tuple[List[dns.RRHeader], bool]:
        """
        Ask for C{name}'s records of C{rrtype}.

        @return: the answer's records, and whether it was validated.
        @raise twisted.names.error.DNSNameError: the name does not exist
            (its validation is still in L{secure}).
        @raise twisted.names.error.DNSServerError: no server could
            answer (SERVFAIL: a bogus answer, among others).
        """
        ident = random.randrange(1, 65535)
        message = dns.Message(id=ident, recDes=1, authenticData=1)
        message.queries = [dns.Query(name, rrtype)]
        wire = message.toStr()
        reply: Optional[dns.Message] = None
        failure: Exception = dnserror.DNSServerError(f"no answer for {name}")
        for timeout in TIMEOUTS:
            for server in self.servers:
                try:
                    reply = await self._ask(wire, ident, server, timeout)
                except Exception as e:
                    failure = e
                    continue
                break
            if reply is not None:
                break
        if reply is None:
            raise failure
        key = (name.rstrip(".").lower(), rrtype)
        self.secure[key] = bool(reply.authenticData)
        if reply.rCode == dns.ENAME:
            raise dnserror.DNSNameError(reply)
        if reply.rCode != dns.OK:
            raise dnserror.DNSServerError(reply)
        return list(reply.answers), bool(reply.authenticData)

    async def _ask(self, wire: bytes, ident: int, server: Tuple[str, int],
                   timeout: float) -> dns.Message:
        udp = _UDPQuery(wire, ident, server)
        port = self.reactor.listenUDP(0, udp, interface="::" if ":" in server[0] else "")
        try:
            udp.answer.addTimeout(timeout, self.reactor)
            reply = await udp.answer
        finally:
            port.stopListening()
        if not reply.trunc:
            return reply
        tcp = _TCPQuery(wire)
        connector = protocol.ClientCreator(self.reactor, lambda: tcp)
        await connector.connectTCP(server[0], server[1], timeout=timeout)
        tcp.answer.addTimeout(timeout, self.reactor)
        return await tcp.answer

    # -- what HostFinder asks of a twisted.names resolver

    async def _lookup(self, name: str, rrtype: int):
        answers, _ = await self.query(name, rrtype)
        return answers, [], []

    def lookupMailExchange(self, name: str) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._lookup(name, dns.MX))

    def lookupAddress(self, name: str) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._lookup(name, dns.A))

    def lookupIPV6Address(self, name: str) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._lookup(name, dns.AAAA))

    async def lookupTLSA(self, host: str, port: int) -> Tuple[List[TLSARecord], bool]:
        """
        The TLSA records of C{_PORT._tcp.HOST}, and whether they were
        validated; none for a name that does not exist.

        @raise twisted.names.error.DNSServerError: the lookup failed.
        """
        name = f"_{port}._tcp.{host.rstrip('.')}"
        try:
            answers, secure = await self.query(name, TLSA)
        except dnserror.DNSNameError:
            return [], self.secure.get((name.lower(), TLSA), False)
        records = []
        for answer in answers:
            if answer.type == TLSA:
                try:
                    records.append(parseTLSA(getattr(answer.payload, "data", b"")))
                except ValueError:
                    continue
        return records, secure

    def validated(self, name: str, rrtype: int) -> bool:
        """
        Whether the answer about C{name}'s C{rrtype} records was
        validated (C{False} when it was not asked).
        """
        return self.secure.get((name.rstrip(".").lower(), rrtype), False)
