"""
SMTP AUTH for the smtp client (C{smtp_sasl_*}): the credentials for a
server, from C{smtp_sasl_password_maps}, and the PLAIN and LOGIN
exchanges (RFC 4954, RFC 4616).

Postfix leaves the mechanisms to Cyrus SASL; tmta speaks the two that
smarthosts ask for itself, and honours C{smtp_sasl_security_options}
the way Cyrus applies them to those two: both send the password in
the clear, so C{noplaintext} (Postfix's default, also over TLS unless
C{smtp_sasl_tls_security_options} says otherwise) rules them out, as do
C{noactive}, C{nodictionary} and C{mutual_auth}.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cached_property
from typing import List, Optional, Tuple

from tmta.config import splitList
from tmta.tables import TableError, lookupAny, openTable
from tmta.tables.remote import isRemote

#: The mechanisms tmta speaks, preferred first.
MECHANISMS = ("PLAIN", "LOGIN")

#: Security options PLAIN and LOGIN satisfy.
_SATISFIED = {"noanonymous"}


class SASLFailed(Exception):
    """
    No login could be made: no usable mechanism, or the server refused.
    """


@dataclass
class SASLLogin:
    """
    The credentials for one server, and the mechanisms allowed for them.
    """

    username: str
    password: str
    plainMechanisms: Tuple[str, ...]
    tlsMechanisms: Tuple[str, ...]

    def mechanisms(self, offered: str, encrypted: bool) -> List[str]:
        """
        The mechanisms to try, preferred first: offered by the server
        (its C{AUTH} keyword's value) and allowed for this session.
        """
        offeredSet = {word.upper() for word in offered.replace("=", " ").split()}
        allowed = self.tlsMechanisms if encrypted else self.plainMechanisms
        return [m for m in allowed if m in offeredSet]

    def exchange(self, mechanism: str) -> Tuple[str, List[str]]:
        """
        The AUTH command and the answers to the server's challenges, in
        order.
        """
        if mechanism == "PLAIN":
            token = f"\0{self.username}\0{self.password}".encode("utf-8")
            return f"AUTH PLAIN {_b64(token)}", []
        if mechanism == "LOGIN":
            return "AUTH LOGIN", [_b64(self.username.encode("utf-8")),
                                  _b64(self.password.encode("utf-8"))]
        raise SASLFailed(f"mechanism {mechanism} is not implemented")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def allowedMechanisms(options: str, mechanismFilter: List[str]) -> Tuple[str, ...]:
    """
    The mechanisms of L{MECHANISMS} that C{options} (a security options
    list) and C{mechanismFilter} (C{smtp_sasl_mechanism_filter}, empty
    for all) allow.
    """
    wanted = {o.lower() for o in splitList(options)}
    if wanted - _SATISFIED:
        return ()
    names = [m.upper() for m in mechanismFilter]
    return tuple(m for m in MECHANISMS if not names or m in names)


class SASLPasswords:
    """
    C{smtp_sasl_password_maps} and the options around it.

    @param prefix: C{"smtp"} or C{"lmtp"}.
    """

    def __init__(self, config, prefix: str = "smtp") -> None:
        self.enabled = config.getBool(f"{prefix}_sasl_auth_enable")
        try:
            self.maps = [openTable(spec) for spec in
                         splitList(config.get(f"{prefix}_sasl_password_maps"))] \
                if self.enabled else []
        except TableError as e:
            raise SASLFailed(str(e)) from None
        mechanismFilter = config.getList(f"{prefix}_sasl_mechanism_filter")
        self.plainMechanisms = allowedMechanisms(
            config.get(f"{prefix}_sasl_security_options"), mechanismFilter)
        self.tlsMechanisms = allowedMechanisms(
            config.get(f"{prefix}_sasl_tls_security_options"), mechanismFilter)

    @cached_property
    def remote(self) -> bool:
        """
        Whether a password table waits on another server (L{forServer}
        is then asked in a lookup thread).
        """
        return isRemote(self.maps)

    def forServer(self, nexthop: str, host: str, port: int) -> Optional[SASLLogin]:
        """
        The login for a server: looked up by the next hop as written
        (C{[mail.isp.example]:587}, C{example.com}), then by the
        server's own name, with and without its port.
        """
        if not self.enabled or not self.maps:
            return None
        keys = [nexthop.strip().lower(), f"[{host}]:{port}", host, f"{host}:{port}"]
        for key in dict.fromkeys(k for k in keys if k):
            value = lookupAny(self.maps, key)
            if value is not None:
                username, _, password = value.strip().partition(":")
                return SASLLogin(username, password, self.plainMechanisms,
                                 self.tlsMechanisms)
        return None
