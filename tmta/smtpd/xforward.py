"""
XFORWARD (Postfix's XFORWARD_README): a content filter, or the smtpd in
front of a before-queue filter, tells the smtpd it hands mail to about
the original client, so that this smtpd's log names it
(C{orig_client=}, C{orig_queue_id=}).  Only clients in
C{smtpd_authorized_xforward_hosts} may; what they say changes what is
logged, never what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Dict, Optional

from tmta.mail.dsn import DSNError, xtextDecode
from tmta.smtpd.session import SessionState
from tmta.tables.networks import inNetworks

#: The attributes, in the order EHLO names them (Postfix's).
ATTRIBUTES = ("NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT")
UNAVAILABLE = "[UNAVAILABLE]"

_HOSTNAME = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_WORD = re.compile(r"^[!-~]{1,64}$")


def _valid(name: str, value: str) -> bool:
    if value.upper() in (UNAVAILABLE, "[TEMPUNAVAIL]") and name != "SOURCE":
        return name == "NAME" or value.upper() == UNAVAILABLE
    if name in ("NAME", "HELO"):
        return bool(_HOSTNAME.match(value)) or (name == "HELO" and bool(_WORD.match(value)))
    if name == "ADDR":
        address = value[5:] if value.upper().startswith("IPV6:") else value
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return False
        return True
    if name == "PORT":
        return value.isdigit() and int(value) < 65536
    if name == "SOURCE":
        return value.upper() in ("LOCAL", "REMOTE", UNAVAILABLE)
    return bool(_WORD.match(value))


class XForwardCommands(SessionState):
    """
    XFORWARD, for L{tmta.smtpd.protocol.SMTPServer}.

    @ivar forwarded: what the XFORWARD commands of this transaction said
        (every attribute C{[UNAVAILABLE]} until given); C{None}: none
        came.
    """

    forwarded: Optional[Dict[str, str]] = None

    def xforwardAllowed(self) -> bool:
        hosts = self.settings.xforwardHosts
        return hosts is not None and inNetworks(self.clientAddress, hosts)

    def smtp_XFORWARD(self, argument: str):
        if self.sender is not None:
            self._error("503 5.5.1 Error: MAIL transaction in progress")
            return
        words = argument.split()
        if not words:
            self._error("501 5.5.4 Syntax: XFORWARD attribute=value...")
            return
        if not self.xforwardAllowed():
            self._error("550 5.7.0 Error: insufficient authorization")
            return
        forwarded = dict(self.forwarded) if self.forwarded is not None else \
            {name: UNAVAILABLE for name in ATTRIBUTES}
        for word in words:
            name, equals, raw = word.partition("=")
            name = name.upper()
            if not equals or not raw:
                self._error("501 5.5.4 Error: attribute=value expected")
                return
            if len(raw) > 255:
                self._error("501 5.5.4 Error: attribute value too long")
                return
            if name not in ATTRIBUTES:
                self._error(f"501 5.5.4 Bad XFORWARD attribute name: {name}")
                return
            try:
                value = xtextDecode(raw)
            except DSNError:
                # Postfix before 2.3 sent values unencoded.
                value = raw
            if not _valid(name, value):
                self._error(f"501 5.5.4 Bad {name} syntax: {value[:100]}")
                return
            if name == "ADDR" and value.upper().startswith("IPV6:"):
                value = value[5:]
            forwarded[name] = value
        self.forwarded = forwarded
        self.reply("250 2.0.0 Ok")

    def forwardedSummary(self) -> str:
        """
        What the queue id's C{client=} line adds for a forwarded client:
        C{, orig_queue_id=...} and C{, orig_client=name[addr]}.
        """
        forwarded = self.forwarded
        if forwarded is None:
            return ""
        text = ""
        if forwarded["IDENT"] != UNAVAILABLE:
            text += f", orig_queue_id={forwarded['IDENT']}"
        if forwarded["NAME"] != UNAVAILABLE or forwarded["ADDR"] != UNAVAILABLE:
            name = forwarded["NAME"] if forwarded["NAME"] != UNAVAILABLE else "unknown"
            address = forwarded["ADDR"] if forwarded["ADDR"] != UNAVAILABLE else "unknown"
            text += f", orig_client={name}[{address}]"
        return text
