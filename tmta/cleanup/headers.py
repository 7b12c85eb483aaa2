"""
The header work cleanup does on a message's header section.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime
from email.utils import format_datetime, formatdate
from typing import Dict, List, Optional, Tuple

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")


def splitHeaderSection(block: bytes) -> Tuple[List[bytes], bytes]:
    """
    Split the start of a message into its header lines (continuations
    joined to their header) and the rest.

    The header section ends at the first empty line, or at the first line
    that is neither a header nor a continuation (which then begins the
    body, as in Postfix).
    """
    # Line by line through the header section only: the rest (the whole
    # body, when the block holds a small message) is returned as it is,
    # never split into lines.
    headers: List[bytes] = []
    start = 0
    while True:
        newline = block.find(b"\n", start)
        line = block[start:] if newline < 0 else block[start:newline]
        if line in (b"", b"\r"):
            return headers, block[start:]
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += b"\n" + line
        elif _HEADER_NAME.match(line):
            headers.append(line)
        else:
            return headers, block[start:]
        if newline < 0:
            return headers, b""
        start = newline + 1


def headerNames(headers: List[bytes]) -> Dict[str, int]:
    """
    How many of each header name (lower-cased) there are.
    """
    counts: Dict[str, int] = {}
    for header in headers:
        match = _HEADER_NAME.match(header)
        if match:
            name = match.group(1).decode("ascii", "replace").lower()
            counts[name] = counts.get(name, 0) + 1
    return counts


_UNFIT = re.compile("[\x00-\x20\x7f]")


def _clean(text: str) -> str:
    """
    An attribute fit for a header: what cleanup is told is gossip, so
    control characters and white space never reach the message.
    """
    return _UNFIT.sub("?", text[:255])


@functools.lru_cache(maxsize=8)
def _headerDate(second: int) -> str:
    # The same for every message of a second: formatted once.
    return format_datetime(datetime.fromtimestamp(second).astimezone())


#: A TLS handshake's summary as smtpd reports it
#: (L{tmta.mail.tls.connectionSummary}); nothing else is written.
_TLS_SUMMARY = re.compile(r"^TLSv[0-9.]+ with cipher [A-Za-z0-9_-]+ \(\d+/\d+ bits\)$")


def receivedHeader(
    attributes: Dict[str, str], myhostname: str, queueId: str, recipients: List[str],
    now: Optional[float] = None,
) -> bytes:
    """
    The Received header cleanup prepends, in Postfix's layout.
    """
    when = _headerDate(int(time.time() if now is None else now))
    helo = _clean(attributes.get("helo_name", ""))
    clientName = _clean(attributes.get("client_name", "unknown"))
    clientAddress = _clean(attributes.get("client_address", ""))
    protocol = _clean(attributes.get("protocol", "ESMTP"))
    lines = []
    if clientAddress:
        lines.append(f"Received: from {helo or clientName} ({clientName} [{clientAddress}])")
        tls = attributes.get("tls", "")
        if _TLS_SUMMARY.match(tls):
            lines.append(f"\t(using {tls})")
            lines.append("\t(No client certificate requested)")
        if attributes.get("sasl_header") == "yes" and attributes.get("sasl_username"):
            lines.append(f"\t(Authenticated sender: {_clean(attributes['sasl_username'])})")
        lines.append(f"\tby {myhostname} (tmta) with {protocol} id {queueId}")
    elif attributes.get("uid", "").isdigit():
        # Posted with tmta-sendmail: who posted it, as the file's owner says.
        lines.append(f"Received: by {myhostname} (tmta, from userid {attributes['uid']})")
        lines.append(f"\tid {queueId}")
    else:
        lines.append(f"Received: by {myhostname} (tmta, from local) id {queueId}")
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {when}")
    else:
        lines[-1] += f"; {when}"
    return "\n".join(lines).encode("utf-8", "surrogateescape")


def missingHeaders(
    names: Dict[str, int], sender: str, queueId: str, myhostname: str, now: Optional[float] = None,
    fullName: str = "",
) -> List[bytes]:
    """
    The Date, Message-ID and From headers a message lacks.

    @param fullName: the sender's name (C{sendmail -F}), which the From
        header gives before the address, as Postfix's
        C{hdr_from_format = standard} does.
    """
    now = time.time() if now is None else now
    added = []
    if "date" not in names and "resent-date" not in names:
        added.append(f"Date: {formatdate(now, localtime=True)}")
    if "message-id" not in names and "resent-message-id" not in names:
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        added.append(f"Message-Id: <{stamp}.{queueId}@{myhostname}>")
    if "from" not in names and "resent-from" not in names:
        if sender and fullName.strip():
            added.append(f"From: {_phrase(fullName)} <{sender}>")
        else:
            added.append(f"From: {sender or 'MAILER-DAEMON'}")
    return [h.encode("utf-8", "surrogateescape") for h in added]


def messageId(headers: List[bytes]) -> str:
    """
    The Message-ID of a message, for the log, or C{""}.
    """
    for header in headers:
        if header[:11].lower() == b"message-id:":
            return header[11:].decode("utf-8", "replace").strip()
    return ""


_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")


def _phrase(name: str) -> str:
    """
    A display name as RFC 5322 allows it: as it is when made of atoms and
    spaces, else a quoted string; control characters never pass.
    """
    name = " ".join(_UNFIT_NAME.sub(" ", name).split())[:200]
    if _ATOMS.fullmatch(name):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


_UNFIT_NAME = re.compile("[\x00-\x1f\x7f]")
