"""
RFC 3461 delivery status notification parameters: NOTIFY and ORCPT on
RCPT TO, RET and ENVID on MAIL FROM, and the xtext they travel in.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")

_XTEXT_CHAR = re.compile(r"\+([0-9A-F]{2})")


class DSNError(ValueError):
    """
    A malformed DSN parameter: the text is the SMTP reply's.
    """


def xtextDecode(text: str) -> str:
    """
    Decode RFC 3461 xtext (C{+XX} for an octet in hex).

    @raise DSNError: not xtext.
    """
    if any(not ("!" <= c <= "~") or c == "=" for c in text):
        raise DSNError("bad xtext")
    if re.search(r"\+(?![0-9A-F]{2})", text):
        raise DSNError("bad xtext")
    return _XTEXT_CHAR.sub(lambda m: chr(int(m.group(1), 16)), text)


def xtextEncode(text: str) -> str:
    """
    Encode as RFC 3461 xtext: C{+}, C{=} and anything outside printable
    ASCII as C{+XX}.
    """
    out = []
    for c in text:
        if "!" <= c <= "~" and c not in "+=":
            out.append(c)
        else:
            out.extend(f"+{b:02X}" for b in c.encode("utf-8"))
    return "".join(out)


def parseNotify(value: str) -> str:
    """
    A NOTIFY value, normalised: C{NEVER}, or some of C{SUCCESS},
    C{FAILURE} and C{DELAY} joined with commas.

    @raise DSNError: anything else (NEVER with others, unknown words).
    """
    words = [w.strip().upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or any(w not in NOTIFY_KEYWORDS for w in words):
        raise DSNError("501 5.5.4 Bad NOTIFY parameter syntax")
    return ",".join(w for w in NOTIFY_KEYWORDS if w in words)


def parseOrcpt(value: str) -> str:
    """
    An ORCPT value, decoded: C{type;address}.

    @raise DSNError: no type, or bad xtext.
    """
    kind, semicolon, address = value.partition(";")
    if not semicolon or not re.fullmatch(r"[A-Za-z0-9-]+", kind):
        raise DSNError("501 5.5.4 Bad ORCPT parameter syntax")
    try:
        decoded = xtextDecode(address)
    except DSNError:
        raise DSNError("501 5.5.4 Bad ORCPT parameter syntax") from None
    if not decoded or len(decoded) > 500:
        raise DSNError("501 5.5.4 Bad ORCPT parameter syntax")
    return f"{kind.lower()};{decoded}"


def parseRet(value: str) -> str:
    ret = value.upper()
    if ret not in ("FULL", "HDRS"):
        raise DSNError("501 5.5.4 Bad RET parameter syntax")
    return ret


def parseEnvid(value: str) -> str:
    try:
        envid = xtextDecode(value)
    except DSNError:
        raise DSNError("501 5.5.4 Bad ENVID parameter syntax") from None
    if not envid or len(envid) > 100 or not all(" " <= c <= "~" for c in envid):
        raise DSNError("501 5.5.4 Bad ENVID parameter syntax")
    return envid


def notifies(notify: str, event: str) -> bool:
    """
    Whether a recipient with C{notify} (as the queue file keeps it)
    wants a notice for C{event} (C{SUCCESS}, C{FAILURE}, C{DELAY}).
    Without NOTIFY, failures and delays are reported, not successes.
    """
    if not notify:
        return event in ("FAILURE", "DELAY")
    return event in notify.split(",")


def splitOrcpt(orcpt: str) -> Optional[Tuple[str, str]]:
    """
    C{(type, address)} of a stored ORCPT, or C{None}.
    """
    kind, semicolon, address = orcpt.partition(";")
    return (kind, address) if semicolon and address else None
