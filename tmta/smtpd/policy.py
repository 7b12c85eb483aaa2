"""
C{check_policy_service}: Postfix's policy delegation protocol, so that
existing policy servers (SPF checkers, greylisters, rate limiters) work
unchanged.

smtpd sends C{name=value} lines and an empty line; the server answers
C{action=...} and an empty line, the action being an access(5) result.
One connection per server is kept per smtpd process and reused, one
request at a time, up to C{smtpd_policy_service_max_idle} idle and
C{smtpd_policy_service_max_ttl} in all.  A server that cannot be reached
or does not answer in C{smtpd_policy_service_timeout} gets
C{smtpd_policy_service_default_action} (a temporary refusal by default).
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from twisted.internet import defer, error
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from tmta.interfaces import ISMTPRestriction
from tmta.logging import Logger
from tmta.smtpd.verdicts import RecipientContext, RestrictionEnvironment

log = Logger()


class PolicyError(Exception):
    """
    The policy server could not be asked, or answered nonsense.
    """


class _PolicyProtocol(LineOnlyReceiver):
    transport: Any  # a TCP or UNIX connection

    delimiter = b"\n"
    MAX_LENGTH = 8192

    def __init__(self) -> None:
        self._answer: Optional[defer.Deferred] = None
        self._attributes: Dict[str, str] = {}
        self.bornAt = 0.0
        self.lastUsed = 0.0

    def ask(self, attributes: Dict[str, str]) -> defer.Deferred:
        lines = []
        for name, value in attributes.items():
            clean = value.replace("\n", " ").replace("\r", " ")
            lines.append(f"{name}={clean}".encode("utf-8", "surrogateescape"))
        self._answer = defer.Deferred()
        self._attributes = {}
        self.transport.write(b"\n".join(lines) + b"\n\n")
        return self._answer

    def lineReceived(self, line: bytes) -> None:
        if self._answer is None:
            self.transport.loseConnection()
            return
        if not line.strip():
            answer, self._answer = self._answer, None
            answer.callback(self._attributes)
            return
        name, equals, value = line.decode("utf-8", "replace").partition("=")
        if equals:
            self._attributes[name.strip()] = value.rstrip("\r")

    def lineLengthExceeded(self, line: bytes) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        answer, self._answer = self._answer, None
        if answer is not None:
            answer.errback(PolicyError("the policy server closed the connection"))


class PolicyServer:
    """
    The connection to one policy server, made when needed and reused.
    """

    def __init__(self, address: str, reactor, config) -> None:
        self.address = address
        self.reactor = reactor
        self.timeout = config.getTime("smtpd_policy_service_timeout")
        self.maxIdle = config.getTime("smtpd_policy_service_max_idle")
        self.maxTTL = config.getTime("smtpd_policy_service_max_ttl")
        self.requestLimit = config.getInt("smtpd_policy_service_request_limit")
        self.endpoint = _endpoint(address, reactor, config.get("queue_directory"))
        self._protocol: Optional[_PolicyProtocol] = None
        self._requests = 0
        self._queue: defer.DeferredLock = defer.DeferredLock()

    async def ask(self, attributes: Dict[str, str]) -> Dict[str, str]:
        await self._queue.acquire()
        try:
            return await self._ask(attributes)
        finally:
            self._queue.release()

    async def _ask(self, attributes: Dict[str, str]) -> Dict[str, str]:
        now = self.reactor.seconds()
        protocol = self._protocol
        if protocol is not None and (
                not protocol.connected or now - protocol.lastUsed > self.maxIdle
                or now - protocol.bornAt > self.maxTTL
                or (self.requestLimit and self._requests >= self.requestLimit)):
            protocol.transport.loseConnection()
            protocol = self._protocol = None
        if protocol is None:
            connecting = self.endpoint.connect(Factory.forProtocol(_PolicyProtocol))
            connecting.addTimeout(self.timeout, self.reactor)
            try:
                protocol = await connecting
            except (error.ConnectError, defer.TimeoutError, OSError) as e:
                raise PolicyError(f"cannot connect to {self.address}: {e}") from None
            protocol.bornAt = now
            self._protocol = protocol
            self._requests = 0
        self._requests += 1
        asking = protocol.ask(attributes)
        asking.addTimeout(self.timeout, self.reactor)
        try:
            answer = await asking
        except defer.TimeoutError:
            protocol.transport.loseConnection()
            self._protocol = None
            raise PolicyError(f"{self.address}: no answer in {self.timeout:g}s") from None
        protocol.lastUsed = self.reactor.seconds()
        return answer


def _endpoint(address: str, reactor, queueDirectory: str):
    """
    C{inet:host:port} (C{inet:[v6addr]:port}), or C{unix:path} (relative
    paths under the queue directory, as C{private/policy}).
    """
    kind, _, rest = address.partition(":")
    if kind == "inet":
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"check_policy_service: bad address {address!r}")
        if host.startswith("[") and host.endswith("]"):
            return TCP6ClientEndpoint(reactor, host[1:-1], int(port))
        return TCP4ClientEndpoint(reactor, host, int(port))
    if kind == "unix":
        path = rest
    elif kind in ("private", "public") or "/" in address and ":" not in address:
        path = address
    else:
        raise ValueError(f"check_policy_service: bad address {address!r}")
    if not os.path.isabs(path):
        path = os.path.join(queueDirectory, path)
    return UNIXClientEndpoint(reactor, path)


class PolicyClients:
    """
    The policy servers of one smtpd process, by address.
    """

    def __init__(self, reactor, config) -> None:
        self.reactor = reactor
        self.config = config
        self._servers: Dict[str, PolicyServer] = {}

    def server(self, address: str) -> PolicyServer:
        if address not in self._servers:
            self._servers[address] = PolicyServer(address, self.reactor, self.config)
        return self._servers[address]


def requestAttributes(c: RecipientContext, config) -> Dict[str, str]:
    """
    The request, with the attributes Postfix sends (those tmta knows).
    """
    protocol, _, rest = c.tlsSummary.partition(" with cipher ")
    cipher, _, bits = rest.partition(" (")
    certificate = c.clientCertificate
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": c.stage,
        "protocol_name": c.protocol,
        "helo_name": c.helo,
        "queue_id": c.queueId,
        "sender": c.sender or "",
        "recipient": c.recipient,
        "recipient_count": str(c.recipientCount),
        "client_address": c.clientAddress,
        "client_name": c.clientName,
        "reverse_client_name": c.reverseClientName,
        "instance": c.instance,
        "sasl_method": c.saslMethod,
        "sasl_username": c.saslUsername,
        "sasl_sender": "",
        "size": str(c.size),
        "ccert_subject": certificate.subject if certificate else "",
        "ccert_issuer": certificate.issuer if certificate else "",
        "ccert_fingerprint": certificate.fingerprint if certificate else "",
        "ccert_pubkey_fingerprint": certificate.pubkeyFingerprint if certificate else "",
        "encryption_protocol": protocol if c.tlsSummary else "",
        "encryption_cipher": cipher if c.tlsSummary else "",
        "encryption_keysize": bits.split("/")[0] if c.tlsSummary else "0",
        "etrn_domain": "",
        "stress": "",
        "server_address": c.serverAddress,
        "server_port": str(c.serverPort) if c.serverPort else "",
        "policy_context": config.get("smtpd_policy_service_policy_context"),
        "compatibility_level": config.get("compatibility_level"),
        "mail_version": "3.7.0",
    }
    return attributes


@implementer(ISMTPRestriction)
class PolicyRestriction:
    """
    C{check_policy_service ADDRESS}.
    """

    def __init__(self, address: str, environment: RestrictionEnvironment) -> None:
        self.name = f"check_policy_service {address}"
        self.address = address
        self.environment = environment
        if environment.policies is None:
            environment.policies = PolicyClients(_reactor(), environment.config)
        # The address is checked now, so that a typing error stops start-up.
        self.server = environment.policies.server(address)

    @classmethod
    def fromArgument(cls, argument: str, environment: RestrictionEnvironment):
        return cls(argument, environment)

    def evaluate(self, context: RecipientContext):
        return defer.Deferred.fromCoroutine(self._ask(context))

    async def _ask(self, context: RecipientContext):
        from tmta.smtpd.access import applyAction

        config = self.environment.config
        try:
            answer = await self.server.ask(requestAttributes(context, config))
            action = answer.get("action")
            if not action:
                raise PolicyError(f"{self.address}: answer without an action")
        except PolicyError as e:
            log.warn("problem talking to server {address}: {error}", address=self.address,
                     error=str(e))
            action = config.get("smtpd_policy_service_default_action")
        subject = {"CONNECT": f"<{context.client}>: Client host rejected",
                   "EHLO": f"<{context.helo}>: Helo command rejected",
                   "MAIL": f"<{context.sender or ''}>: Sender address rejected",
                   "DATA": "<DATA>: Data command rejected",
                   "END-OF-MESSAGE": "<END-OF-MESSAGE>: End-of-data rejected",
                   }.get(context.stage, f"<{context.recipient}>: Recipient address rejected")
        result = applyAction(action, self.environment, context, subject, self.name)
        if isinstance(result, defer.Deferred):
            result = await result
        return result


def _reactor():
    from twisted.internet import reactor

    return reactor

