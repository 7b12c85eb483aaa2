"""
The header work cleanup does on a message's header section.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
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
