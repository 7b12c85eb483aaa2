"""
STARTTLS (RFC 3207) in an SMTP session, and the handshake of a wrapper
mode (SMTPS) session.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer

from tmta.logging import Logger
from tmta.smtpd.session import SessionState

log = Logger()

MUST_STARTTLS = "530 5.7.0 Must issue a STARTTLS command first"


class TLSCommands(SessionState):
    """
    STARTTLS and what follows the handshake, for
    L{tmta.smtpd.protocol.SMTPServer} (whose C{settings.tls} is a
    L{tmta.smtpd.tls.ServerTLS}, or C{None} when TLS is off).

    After the handshake nothing said before it counts: the client must
    say EHLO again, and the plaintext it pipelined behind STARTTLS was
    thrown away unread, so that nobody on the path can slip commands
    into the protected session (the CVE-2011-0411 class of attack).

    @ivar tlsSummary: once the handshake is done, its protocol and
        cipher (L{tmta.mail.tls.connectionSummary}); C{None} before.
    """

    tlsSummary: Optional[str] = None
    #: The client's certificate, when one was asked for and shown.
    clientCertificate = None
    _handshake: Optional[defer.Deferred] = None

    def tlsOffered(self) -> bool:
        """
        Whether EHLO should announce STARTTLS now.
        """
        tls = self.settings.tls
        return (tls is not None and not tls.wrapper and self.tlsSummary is None
                and self._handshake is None)

    def requireTLSOffered(self) -> bool:
        """
        Whether REQUIRETLS (RFC 8689) is offered now: in a session under
        TLS, when C{requiretls_enable} is on.
        """
        return self.tlsSummary is not None and self.settings.requireTLS

    def needsTLS(self) -> bool:
        """
        Refuse a command that must wait for TLS under the C{encrypt}
        level; C{True} when it was refused.
        """
        tls = self.settings.tls
        if tls is None or not tls.required or self.tlsSummary is not None:
            return False
        self._error(MUST_STARTTLS)
        return True

    def awaitHandshake(self, result):
        """
        In wrapper mode, hold the greeting (C{result} passed on) until the
        handshake is done: a write before it would stall the session.
        """
        tls = self.settings.tls
        if tls is None or not tls.wrapper or self.tlsSummary is not None:
            return result
        self._handshake = defer.Deferred()
        return self._handshake.addCallback(lambda _: result)

    def smtp_STARTTLS(self, argument: str):
        tls = self.settings.tls
        if tls is None or tls.wrapper:
            self._error("502 5.5.1 Error: command not implemented")
            return None
        if argument:
            self._error("501 5.5.4 Syntax: STARTTLS")
            return None
        if self.tlsSummary is not None:
            self._error("554 5.5.1 Error: TLS already active")
            return None
        if self.sender is not None:
            self._error("503 5.5.1 Error: MAIL transaction in progress")
            return None
        if self.limits("newtls"):
            return defer.Deferred.fromCoroutine(self._startTLSCounted(tls))
        return self._startTLS(tls)

    async def _startTLSCounted(self, tls) -> None:
        tooMany = await self.limitExceeded("newtls")
        if tooMany is not None:
            self.reply(tooMany)
            return
        d = self._startTLS(tls)
        await d

    def _startTLS(self, tls):
        self.reply("220 2.0.0 Ready to start TLS")
        if self._buffer:
            log.warn("improper command pipelining after STARTTLS from {client}: "
                     "{count} bytes discarded", client=self.client, count=len(self._buffer))
            self._buffer = b""
        self._handshake = defer.Deferred()
        self.transport.startTLS(tls)
        return self._handshake

    def handshakeCompleted(self) -> None:
        """
        The handshake is done (C{IHandshakeListener}): start afresh, as
        RFC 3207 asks.
        """
        tls = self.settings.tls
        assert tls is not None, "a handshake without TLS settings"
        connection = self.transport.getHandle()
        self.tlsSummary = tls.describe(connection)
        certificate = self.clientCertificate = tls.clientCertificate(connection)
        trust = "Anonymous" if certificate is None else \
            "Trusted" if certificate.trusted else "Untrusted"
        if tls.logLevel >= 1:
            log.info("{trust} TLS connection established from {client}: {summary}",
                     trust=trust, client=self.client, summary=self.tlsSummary)
        if tls.requireCertificate and (certificate is None or not certificate.trusted):
            # smtpd_tls_req_ccert: as Postfix, the session ends here.
            why = "No client certificate presented" if certificate is None else \
                "Client certificate not trusted"
            log.info("NOQUEUE: abort: TLS from {client}: {why}", client=self.client, why=why)
            # Nothing the client sent with or after its handshake is
            # read; the refusal is said once the handshake's own
            # processing is over.
            self._closing = True
            self._buffer = b""
            self.clock.callLater(0, self._refuseAfterHandshake,
                                 f"421 4.7.1 {self.settings.myhostname} Error: {why}")
            self._releaseHandshake()
            return
        if not tls.wrapper:
            self.helo = None
            self.protocolName = "SMTP"
            self._resetTransaction()
            self.tlsHandshakeReset()
        self._releaseHandshake()

    def _refuseAfterHandshake(self, reply: str) -> None:
        transport = self.transport
        transport.write(reply.encode("ascii") + b"\r\n")
        transport.loseConnection()
        # A TLS close waits for the client's close_notify: the session
        # is over whether or not it sends one.
        self.clock.callLater(1, transport.abortConnection)

    def tlsHandshakeReset(self) -> None:
        """
        Forget what else the session learned before the handshake (a
        subclass's hook).
        """

    def tlsConnectionLost(self) -> None:
        """
        The connection ended: say so if it ended in the handshake.
        """
        tls = self.settings.tls
        if tls is not None and self.tlsSummary is None and (
                self._handshake is not None or tls.wrapper):
            log.info("SSL_accept error from {client}: lost connection", client=self.client)
        self._releaseHandshake()

    def _releaseHandshake(self) -> None:
        d, self._handshake = self._handshake, None
        if d is not None:
            d.callback(None)

    def receivedProtocol(self) -> str:
        """
        The protocol as the Received header names it: C{SMTP} or
        C{ESMTP}, with C{S} for TLS (and C{A} for AUTH, RFC 3848);
        C{UTF8SMTP} for a transaction that asked for SMTPUTF8 (RFC 6531
        3.7.3).
        """
        name = self.protocolName
        if name == "ESMTP" and "smtputf8" in getattr(self, "dsnAttributes", {}):
            name = "UTF8SMTP"
        if self.tlsSummary is not None:
            name += "S"
        if getattr(self, "saslUsername", None):
            name += "A"
        return name
