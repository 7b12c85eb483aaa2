"""
What an SMTP session is about and how it ends: the message and its
recipients (L{Transaction}), the server's replies (L{Reply}), each
stage's time limit (L{Timeouts}) and the failure of a session
(L{SessionFailed}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass
class Reply:
    """
    One SMTP reply: its code and its text (lines joined with spaces).
    """

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def dsn(self) -> str:
        """
        The enhanced status code the reply carries, or one made from its
        code's class.
        """
        match = _ENHANCED.match(self.text)
        if match:
            return ".".join(match.groups())
        return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(self.code // 100, "4.0.0")


class SessionFailed(Exception):
    """
    The session ended before the message was accepted: the server
    refused it as a whole, went silent, or went away.

    @ivar reply: the server's reply, when it gave one; C{None} for a
        time-out or a lost connection.
    @ivar stage: what the client was waiting for.
    """

    def __init__(self, stage: str, reply: Optional[Reply] = None, reason: str = "",
                 tls: bool = False, sasl: bool = False, protocol: bool = False,
                 local: bool = False) -> None:
        self.stage = stage
        self.reply = reply
        self.reason = reason or (str(reply) if reply else "lost connection")
        #: TLS could not give what the session's policy requires (it was
        #: not offered, the handshake failed, or the certificate did not
        #: pass): the next server may do better.
        self.tls = tls
        #: SMTP AUTH failed: the server refused the login, or no
        #: mechanism was allowed.
        self.sasl = sasl
        #: The server broke the protocol (a malformed reply).
        self.protocol = protocol
        #: The client itself decided, from what the server offered (no
        #: SMTPUTF8, a SIZE too small): C{reply} is ours, not the
        #: server's, and C{reason} names the server.
        self.local = local
        super().__init__(f"{self.reason} (in reply to {stage})")


@dataclass
class Timeouts:
    """
    The time limit for each stage, Postfix's C{smtp_*_timeout}.
    """

    greeting: float = 300.0
    helo: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    dataInit: float = 120.0
    dataDone: float = 600.0
    quit: float = 300.0
    starttls: float = 300.0


@dataclass
class Transaction:
    """
    What one session is to send, and what it learned.

    @ivar replies: each recipient's reply by address (only those the
        server answered).
    @ivar final: the server's reply to the end of data, once sent.
    """

    sender: str
    recipients: List[str]
    content: bytes
    #: What each recipient is sent as, when not itself
    #: (C{smtp_generic_maps}); replies are still by the recipient.
    sentAs: Dict[str, str] = field(default_factory=dict)
    replies: Dict[str, Reply] = field(default_factory=dict)
    final: Optional[Reply] = None
    #: RFC 3461 parameters: each recipient's C{(notify, orcpt)}, and
    #: the message's C{RET} and C{ENVID}; sent to a server offering DSN.
    dsn: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    ret: str = ""
    envid: str = ""
    #: Whether the server took the DSN parameters (it offered DSN).
    dsnPassed: bool = False
    #: An address verification probe: the transaction ends after the
    #: recipients are answered, without DATA (and RSET before the next).
    verifyOnly: bool = False
    #: REQUIRETLS (RFC 8689): sent only over TLS that verified the
    #: server, to a server offering REQUIRETLS.
    requireTLS: bool = False
    #: What XFORWARD tells a server that offers it of the message's
    #: original client (L{xforwardAttributes}); empty: nothing.
    xforward: Dict[str, str] = field(default_factory=dict)


def xforwardAttributes(queueId: str, attributes: Dict[str, str]) -> Dict[str, str]:
    """
    XFORWARD's attributes for a queued message, from the envelope
    attributes cleanup wrote (Postfix's C{smtp_send_xforward_command}):
    the original client's name, address, HELO name and protocol, this
    queue id as IDENT, and whether it came from this host (C{LOCAL}).
    """
    address = attributes.get("client_address", "")
    if ":" in address:
        address = "IPV6:" + address
    return {
        "NAME": attributes.get("client_name", "") or "",
        "ADDR": address,
        "PROTO": attributes.get("protocol", ""),
        "HELO": attributes.get("helo_name", ""),
        "IDENT": queueId,
        "SOURCE": "REMOTE" if address else "LOCAL",
    }
