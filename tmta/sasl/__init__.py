"""
SMTP AUTH's credential checks: the types smtpd and its SASL backends
(L{tmta.interfaces.ISASLBackend}) exchange, the PLAIN and LOGIN
mechanisms for backends that check passwords themselves, and choosing
a backend by C{smtpd_sasl_type}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

from twisted.internet import defer
from zope.interface import implementer

from tmta.interfaces import ISASLExchange

__all__ = [
    "Authenticated", "AuthenticationFailed", "AuthenticationUnavailable", "Challenge",
    "SASLClient", "PasswordExchange",
]


@dataclass(frozen=True)
class SASLClient:
    """
    Who is authenticating: what a backend may log or check.
    """

    address: str
    secured: bool
    service: str = "smtp"
    localAddress: str = ""


@dataclass(frozen=True)
class Challenge:
    """
    The server's next challenge (raw bytes; smtpd encodes it).
    """

    data: bytes


@dataclass(frozen=True)
class Authenticated:
    """
    The exchange succeeded for C{username}.
    """

    username: str


class AuthenticationFailed(Exception):
    """
    The credentials are wrong, or the exchange was malformed (535).
    """


class AuthenticationUnavailable(Exception):
    """
    The backend cannot check credentials now (454).
    """


#: The mechanisms L{PasswordExchange} runs.
PASSWORD_MECHANISMS = ("PLAIN", "LOGIN")


@implementer(ISASLExchange)
class PasswordExchange:
    """
    PLAIN (RFC 4616) or LOGIN, run in smtpd, for a backend that only
    checks a name and a password.

    @param check: C{check(authcid, password)} returns a Deferred firing
        with whether they match.
    """

    def __init__(self, mechanism: str,
                 check: Callable[[str, str], "defer.Deferred[bool]"]) -> None:
        if mechanism not in PASSWORD_MECHANISMS:
            raise ValueError(f"unsupported mechanism {mechanism}")
        self.mechanism = mechanism
        self._check = check
        self._username: Optional[str] = None
        self._steps = 0

    def step(self, response: Optional[bytes]) -> defer.Deferred:
        self._steps += 1
        try:
            if self.mechanism == "PLAIN":
                if response is None:
                    if self._steps > 1:
                        raise AuthenticationFailed("no response")
                    return defer.succeed(Challenge(b""))
                return self._verify(*_parsePlain(response))
            # LOGIN: "Username:", then "Password:".
            if self._username is None:
                if response is None:
                    if self._steps > 1:
                        raise AuthenticationFailed("no response")
                    return defer.succeed(Challenge(b"Username:"))
                self._username = _text(response)
                return defer.succeed(Challenge(b"Password:"))
            if response is None:
                raise AuthenticationFailed("no response")
            return self._verify(self._username, _text(response))
        except AuthenticationFailed:
            return defer.fail()

    def _verify(self, username: str, password: str) -> defer.Deferred:
        if not username or "\0" in username or "\0" in password:
            return defer.fail(AuthenticationFailed("malformed credentials"))

        def checked(ok: bool):
            if not ok:
                raise AuthenticationFailed("wrong credentials")
            return Authenticated(username)

        return self._check(username, password).addCallback(checked)

    def abort(self) -> None:
        pass


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthenticationFailed("credentials are not UTF-8") from None


def _parsePlain(response: bytes):
    parts = response.split(b"\0")
    if len(parts) != 3:
        raise AuthenticationFailed("malformed PLAIN response")
    authzid, authcid, password = (_text(p) for p in parts)
    if authzid and authzid != authcid:
        # Acting for another user is not something a password grants.
        raise AuthenticationFailed("authorization identity differs")
    return authcid, password


#: smtpd_sasl_type values tmta implements.
BACKEND_TYPES = ("dovecot", "tmta")


def passwordFile(config) -> str:
    """
    The password table of C{smtpd_sasl_type = tmta}: C{smtpd_sasl_path}
    when it names a file, else C{$config_directory/sasl_passwd}.
    """
    import os

    path = config.get("smtpd_sasl_path").strip()
    if not path or path == "smtpd":
        return os.path.join(config.get("config_directory"), "sasl_passwd")
    return path


def dovecotSocket(config, path: str) -> str:
    """
    Dovecot's socket: C{smtpd_sasl_path}, relative to the queue
    directory unless absolute (C{private/auth}, as Postfix reads it).
    """
    import os

    if os.path.isabs(path):
        return path
    return os.path.join(config.get("queue_directory"), path)


def filterMechanisms(offered: List[str], options: List[str]) -> List[str]:
    """
    The mechanisms C{smtpd_sasl_security_options} (or the TLS variant)
    allow: C{noanonymous} drops ANONYMOUS; C{noplaintext} and
    C{nodictionary} drop PLAIN and LOGIN (open to a passive or a
    dictionary attack); C{noactive}, C{mutual_auth} and
    C{forward_secrecy} leave what is left only if it qualifies, which
    for these mechanisms means nothing.

    @raise ValueError: an option that is not one of Postfix's.
    """
    result = [m.upper() for m in offered]
    for option in options:
        option = option.lower()
        if option == "noanonymous":
            result = [m for m in result if m != "ANONYMOUS"]
        elif option in ("noplaintext", "nodictionary"):
            result = [m for m in result if m not in ("PLAIN", "LOGIN")]
        elif option in ("noactive", "mutual_auth", "forward_secrecy"):
            result = [m for m in result if m not in ("PLAIN", "LOGIN", "ANONYMOUS",
                                                     "CRAM-MD5", "DIGEST-MD5")]
        elif option:
            raise ValueError(f"unknown SASL security option {option!r}")
    return result
