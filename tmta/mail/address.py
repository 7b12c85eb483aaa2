"""
Mail addresses as SMTP carries them: parsing a path, splitting it, and
keeping hostile input out.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Optional, Tuple

MAX_PATH = 256
MAX_LOCAL = 64
MAX_DOMAIN = 255

_DOMAIN = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_ADDRESS_LITERAL = re.compile(r"^\[(?:IPv6:[0-9A-Fa-f:.]+|[0-9.]+)\]$", re.I)
# Printable ASCII but the specials that cannot stand unquoted, plus any
# non-ASCII (UTF-8, for SMTPUTF8 mail).
_ATOM_TEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\x80-\U0010ffff]+$")
_QUOTED = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x20-\x7e])*"$')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: SMTP's white space.
_SP = " \t"
# What a local name may be to name a mailbox: it becomes a file name.
_MAILBOX_NAME = re.compile(r"^[a-z0-9_+=-][a-z0-9._+=-]{0,63}$")


class AddressError(ValueError):
    """
    Not an address tmta will accept.
    """


def splitAddress(address: str) -> Tuple[str, str]:
    """
    Split C{local@domain} at the last C{@}; the domain is C{""} when
    there is none.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain


def isIPAddress(text: str) -> bool:
    """
    Whether C{text} is an IPv4 or IPv6 address (no brackets).
    """
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _validLiteral(domain: str) -> bool:
    """
    Whether C{domain} is an address literal holding a real address:
    C{[192.0.2.1]} or C{[IPv6:2001:db8::1]} (C{[300.1.1.1]} is not).
    """
    import ipaddress

    if not _ADDRESS_LITERAL.match(domain):
        return False
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def checkAddress(address: str) -> str:
    """
    Validate an envelope address (without angle brackets).

    @return: the address, with its domain lower-cased and a trailing dot
        removed.
    @raise AddressError: control characters, an over-long part, a
        malformed local part or domain.
    """
    if len(address) > MAX_PATH:
        raise AddressError("address too long")
    if _CONTROL.search(address):
        raise AddressError("control character in address")
    if not address.isascii() and any(unicodedata.category(c)[0] in "ZC"
                                     for c in address if c > "\x7f"):
        # A no-break or ideographic space, a format or C1 control
        # character: no part of an address, whatever SMTPUTF8 allows.
        raise AddressError("space or control character in address")
    local, domain = splitAddress(address)
    if not local:
        raise AddressError("empty local part")
    if len(local.encode("utf-8", "surrogateescape")) > MAX_LOCAL:
        raise AddressError("local part too long")
    if not (_QUOTED.match(local) or (_ATOM_TEXT.match(local) and ".." not in local
                                      and not local.startswith(".") and not local.endswith("."))):
        raise AddressError("malformed local part")
    if "@" in address and not domain:
        raise AddressError("empty domain")
    if domain:
        if len(domain) > MAX_DOMAIN:
            raise AddressError("domain too long")
        if not (_DOMAIN.match(domain) or _validLiteral(domain)):
            raise AddressError("malformed domain")
        domain = domain.rstrip(".").lower()
        return f"{local}@{domain}"
    return local


def parsePath(text: str, strict: bool = False) -> Tuple[Optional[str], str]:
    """
    Parse the path argument of MAIL FROM or RCPT TO (what follows the
    colon): C{<address>} with optional source route, then parameters.

    @param strict: require angle brackets (C{strict_rfc821_envelopes}).
    @return: C{(address, parameters)}; address C{""} for C{<>}.
    @raise AddressError: malformed.
    """
    # Only SMTP's own white space separates (RFC 5321 4.1.1); a Unicode
    # space is part of what it stands in, and found there.
    text = text.strip(_SP)
    if text.startswith("<"):
        end = _closingBracket(text)
        inner, rest = text[1:end], text[end + 1 :]
        if rest and rest[0] not in _SP:
            raise AddressError("garbage after address")
    elif strict:
        raise AddressError("address must be in angle brackets")
    else:
        inner, _, rest = text.partition(" ")
    inner = inner.strip(_SP)
    if inner.startswith("@"):
        # A source route, @a,@b:user@c; RFC 5321 says to ignore it.
        colon = inner.find(":")
        if colon < 0:
            raise AddressError("malformed source route")
        inner = inner[colon + 1 :]
    if inner == "":
        return "", rest.strip(_SP)
    return checkAddress(inner), rest.strip(_SP)


def _closingBracket(text: str) -> int:
    if '"' not in text:
        # No quoted local part (nearly every address): the first ">".
        end = text.find(">", 1)
        if end < 0:
            raise AddressError("missing '>'")
        return end
    quoted = False
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i
        i += 1
    raise AddressError("missing '>'")


def unquoteLocal(local: str) -> str:
    """
    The local part without its quotes, as a mailbox name.
    """
    if len(local) >= 2 and local.startswith('"') and local.endswith('"'):
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def localName(address: str, delimiters: str = "") -> str:
    """
    The name a local address delivers to: its local part unquoted and
    lower-cased, without the extension that follows the first of
    C{delimiters} (C{recipient_delimiter}).
    """
    local, _ = splitAddress(address)
    name = unquoteLocal(local).lower()
    for d in delimiters:
        if d in name:
            name = name.split(d, 1)[0]
    return name


def isSafeMailboxName(name: str) -> bool:
    """
    Whether a local name (from L{localName}) may name a mailbox: letters,
    digits and C{._+=-}, not starting with a dot, no C{..}, at most 64
    characters.  No slash, no pipe, no control or non-ASCII character,
    so that it is safe as a file name and as an alias key.
    """
    return bool(_MAILBOX_NAME.match(name)) and ".." not in name

