"""
SMTP AUTH (RFC 4954) in an SMTP session, with the credentials checked
by a SASL backend (L{tmta.interfaces.ISASLBackend}).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any, List, Optional

from twisted.internet import defer, task

from tmta.logging import Logger
from tmta.sasl import (
    Authenticated,
    AuthenticationFailed,
    AuthenticationUnavailable,
    Challenge,
    SASLClient,
    filterMechanisms,
)
from tmta.smtpd.session import SessionState

log = Logger()


@dataclass
class SMTPAuth:
    """
    How an smtpd process offers AUTH (C{smtpd_sasl_*}).

    @ivar backend: the L{tmta.interfaces.ISASLBackend}.
    @ivar securityOptions: C{smtpd_sasl_security_options}.
    @ivar tlsSecurityOptions: C{smtpd_sasl_tls_security_options}, for
        sessions under TLS.
    @ivar authOnly: C{smtpd_tls_auth_only}: AUTH only under TLS.
    @ivar authenticatedHeader: C{smtpd_sasl_authenticated_header}.
    @ivar failureDelay: how long a failed attempt waits for its answer.
    """

    backend: Any
    securityOptions: List[str] = field(default_factory=lambda: ["noanonymous"])
    tlsSecurityOptions: List[str] = field(default_factory=lambda: ["noanonymous"])
    mechanismFilter: List[str] = field(default_factory=list)
    authOnly: bool = False
    authenticatedHeader: bool = False
    responseLimit: int = 12288
    failureDelay: float = 1.0
    service: str = "smtp"

    @classmethod
    def fromConfig(cls, config, backend) -> "SMTPAuth":
        """
        @raise ValueError: an unknown security option.
        """
        auth = cls(
            backend=backend,
            securityOptions=config.getList("smtpd_sasl_security_options"),
            tlsSecurityOptions=config.getList("smtpd_sasl_tls_security_options"),
            mechanismFilter=config.getList("smtpd_sasl_mechanism_filter"),
            authOnly=config.getBool("smtpd_tls_auth_only"),
            authenticatedHeader=config.getBool("smtpd_sasl_authenticated_header"),
            responseLimit=config.getInt("smtpd_sasl_response_limit"),
            failureDelay=config.getTime("smtpd_error_sleep_time"),
            service=config.get("smtpd_sasl_service") or "smtp",
        )
        filterMechanisms([], auth.securityOptions + auth.tlsSecurityOptions)
        return auth

    def offered(self, secured: bool):
        """
        The mechanisms to announce: the backend's, less those the
        security options and C{smtpd_sasl_mechanism_filter} exclude.

        @return: a list, or a Deferred firing with one.
        """
        if self.authOnly and not secured:
            return []
        options = self.tlsSecurityOptions if secured else self.securityOptions
        return defer.maybeDeferred(self.backend.mechanisms).addCallback(
            lambda mechanisms: _filtered(filterMechanisms(mechanisms, options),
                                         self.mechanismFilter))


def _filtered(mechanisms: List[str], spec: List[str]) -> List[str]:
    """
    C{smtpd_sasl_mechanism_filter}: C{!NAME} drops one; plain names keep
    only those (C{static:rest} and C{static:all} keep the others too).
    """
    dropped = {s[1:].upper() for s in spec if s.startswith("!")}
    named = {s.upper() for s in spec if not s.startswith("!") and not s.startswith("static:")}
    keepRest = not named or any(s in ("static:rest", "static:all") for s in spec)
    return [m for m in mechanisms
            if m not in dropped and (keepRest or m in named)]


class AuthCommands(SessionState):
    """
    AUTH, for L{tmta.smtpd.protocol.SMTPServer} (whose
    C{settings.sasl} is an L{SMTPAuth}, or C{None} when AUTH is off).

    While an exchange waits for the client's next response, the next
    line is that response (L{authResponseDue}), not a command.

    @ivar saslUsername: the authenticated login name, once there is one.
    @ivar saslMethod: the mechanism it authenticated with.
    """

    saslUsername: Optional[str] = None
    saslMethod: Optional[str] = None
    _exchange: Any = None
    authResponseDue = False

    def authKeywords(self, secured: bool):
        """
        The EHLO keyword for AUTH (C{AUTH PLAIN LOGIN}), or C{None}; a
        Deferred when the backend must be asked.
        """
        sasl = self.settings.sasl
        if sasl is None:
            return None

        def keyword(mechanisms):
            return f"AUTH {' '.join(mechanisms)}" if mechanisms else None

        def unavailable(failure):
            log.warn("SASL: cannot list the mechanisms: {error}",
                     error=failure.getErrorMessage())
            return None

        offered = sasl.offered(secured)
        if isinstance(offered, list):
            return keyword(offered)
        return offered.addCallbacks(keyword, unavailable)

    def smtp_AUTH(self, argument: str):
        sasl = self.settings.sasl
        secured = self.tlsSummary is not None
        if sasl is None or (sasl.authOnly and not secured):
            self._error("503 5.5.1 Error: authentication not enabled")
            return None
        if self.helo is None:
            self._error("503 5.5.1 Error: send HELO/EHLO first")
            return None
        if self.saslUsername is not None:
            self._error("503 5.5.1 Error: already authenticated")
            return None
        if self.sender is not None:
            self._error("503 5.5.1 Error: MAIL transaction in progress")
            return None
        if self.needsTLS():
            return None
        words = argument.split()
        if not words or len(words) > 2:
            self._error("501 5.5.4 Syntax: AUTH mechanism")
            return None
        mechanism = words[0].upper()
        initial: Optional[bytes] = None
        if len(words) == 2:
            initial = self._decodeResponse(words[1])
            if initial is None:
                return None
        if not self.limits("auth"):
            d = defer.maybeDeferred(sasl.offered, secured)
        else:
            async def counted():
                tooMany = await self.limitExceeded("auth")
                if tooMany is not None:
                    return tooMany
                return await defer.maybeDeferred(sasl.offered, secured)

            d = defer.Deferred.fromCoroutine(counted())

        def start(offered):
            if isinstance(offered, str):
                self.reply(offered)
                return None
            if mechanism not in offered:
                self._error("504 5.5.4 Unrecognized authentication type")
                return None
            self._exchange = sasl.backend.begin(mechanism, SASLClient(
                address=self.clientAddress, secured=secured, service=sasl.service,
                localAddress=getattr(self.transport.getHost(), "host", "")))
            self.saslMethod = mechanism
            return self._authStep(initial)

        return d.addCallback(start)

    def _decodeResponse(self, text: str) -> Optional[bytes]:
        if text == "=":
            return b""
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            self._authDone()
            self._error("501 5.5.2 Error: cannot decode response")
            return None

    def _authStep(self, response: Optional[bytes]) -> defer.Deferred:
        d = defer.maybeDeferred(self._exchange.step, response)
        return d.addCallbacks(self._authAnswered, self._authFailed)

    def _authAnswered(self, result) -> None:
        if isinstance(result, Challenge):
            self.authResponseDue = True
            sasl = self.settings.sasl
            self.lineLengthLimit = max(self.settings.lineLengthLimit,
                                       sasl.responseLimit if sasl is not None else 0)
            self.reply("334 " + base64.b64encode(result.data).decode("ascii"))
            return
        if not isinstance(result, Authenticated):
            raise TypeError(f"SASL backend answered {result!r}")
        self.saslUsername = result.username
        self._authDone()
        log.info("{client}: sasl_method={method}, sasl_username={username}",
                 client=self.client, method=self.saslMethod, username=result.username)
        self.reply("235 2.7.0 Authentication successful")

    def _authFailed(self, failure):
        method = self.saslMethod
        self._authDone()
        self.saslMethod = None
        if failure.check(AuthenticationUnavailable):
            log.warn("{client}: SASL {method} authentication aborted: {error}",
                     client=self.client, method=method, error=failure.getErrorMessage())
            self.reply("454 4.7.0 Temporary authentication failure")
            return None
        if not failure.check(AuthenticationFailed):
            return failure
        log.warn("{client}: SASL {method} authentication failed: {error}",
                 client=self.client, method=method, error=failure.getErrorMessage())
        # A wrong password waits for its answer, so that guessing is slow;
        # the failure counts towards the error limits too.
        return task.deferLater(self.clock, self.settings.sasl.failureDelay, self._error,
                               "535 5.7.8 Error: authentication failed")

    def authResponse(self, line: bytes):
        """
        The client's response to a 334 challenge.
        """
        self.authResponseDue = False
        self.lineLengthLimit = self.settings.lineLengthLimit
        if line.strip() == b"*":
            self._authDone()
            self.saslMethod = None
            self._error("501 5.7.0 Authentication aborted")
            return None
        response = self._decodeResponse(line.decode("ascii", "replace").strip())
        if response is None:
            self.saslMethod = None
            return None
        return self._authStep(response)

    def _authDone(self) -> None:
        exchange, self._exchange = self._exchange, None
        self.authResponseDue = False
        self.lineLengthLimit = self.settings.lineLengthLimit
        if exchange is not None:
            exchange.abort()

    def tlsHandshakeReset(self) -> None:
        self._authDone()
        self.saslUsername = self.saslMethod = None

