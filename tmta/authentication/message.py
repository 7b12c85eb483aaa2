"""
What an authenticator sees of a message (L{MessageUnderTest}) and what
it reports (L{AuthenticationResult}), and the RFC 8601
C{Authentication-Results} header made of those reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: Characters an RFC 8601 value may hold bare; anything else is quoted.
_TOKEN = re.compile(r"^[!#-'*+\-./0-9=?A-Z^-~]+$")


@dataclass
class AuthenticationResult:
    """
    One method's result (RFC 8601 section 2.2): C{dkim=pass
    header.d=example.com}.

    @ivar method: C{dkim}, C{spf}, C{dmarc}, C{arc}.
    @ivar result: C{pass}, C{fail}, C{none}, C{temperror} ...
    @ivar properties: C{(ptype.property, value)} pairs, in order.
    @ivar reason: why, for a person (C{reason="..."}).
    @ivar comment: a comment after the result, e.g. the key size.
    """

    method: str
    result: str
    properties: List[Tuple[str, str]] = field(default_factory=list)
    reason: str = ""
    comment: str = ""
    #: What a later check may use that the header does not show (the
    #: domains of an ARC chain's sealers, C{arc_sealers}).
    details: Dict[str, Any] = field(default_factory=dict)

    def property(self, name: str) -> Optional[str]:
        for key, value in self.properties:
            if key == name:
                return value
        return None

    def format(self) -> str:
        words = [f"{self.method}={self.result}"]
        if self.comment:
            words.append(f"({_commentText(self.comment)})")
        if self.reason:
            words.append(f"reason={_quoted(self.reason)}")
        words.extend(f"{name}={_value(value)}" for name, value in self.properties)
        return " ".join(words)


def _commentText(text: str) -> str:
    return "".join(c for c in text if c not in "()\\" and 32 <= ord(c) < 127)


def _quoted(text: str) -> str:
    text = "".join(c for c in text if 32 <= ord(c) < 127)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value(text: str) -> str:
    """
    A property value as RFC 8601 writes it: bare when it is a token or
    an address, quoted otherwise.
    """
    if _TOKEN.match(text) or re.match(r"^[^\s\"();@\\]*@[^\s\"();@\\]+$", text):
        return text
    return _quoted(text)


def resultsHeader(authservId: str, results: Sequence[AuthenticationResult]) -> bytes:
    """
    The C{Authentication-Results} header (LF line ends, folded one
    result to a line) of C{results}, or C{none} when there are none.
    """
    parts = [r.format() for r in results] or ["none"]
    return ("Authentication-Results: " + authservId + ";\n\t"
            + ";\n\t".join(parts)).encode("utf-8", "surrogateescape")


def _withoutComments(text: str) -> str:
    out, depth, escaped = [], 0, False
    for c in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(c)
            continue
        if c == "\\":
            escaped = True
        elif c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(c)
    return "".join(out)


def authservIdOf(header: bytes) -> str:
    """
    The authserv-id an C{Authentication-Results} (or
    C{ARC-Authentication-Results}) header names, lower case, comments
    and an C{i=} instance tag left out; empty when it names none.
    """
    _, _, value = header.partition(b":")
    text = _withoutComments(value.decode("utf-8", "replace"))
    first = text.split(";", 1)[0].split()
    if first and first[0].lower().startswith("i="):
        text = text.split(";", 1)[1] if ";" in text else ""
        first = text.split(";", 1)[0].split()
    return first[0].lower() if first else ""


def isResultsHeader(header: bytes) -> bool:
    name = header.split(b":", 1)[0].strip().lower()
    return name == b"authentication-results"


def forgedResults(headers: Sequence[bytes], authservId: str) -> List[int]:
    """
    The indexes of the C{Authentication-Results} headers among
    C{headers} that claim to come from C{authservId}: written by someone
    else, since this host adds its own only after they are removed
    (RFC 8601 section 5).
    """
    ours = authservId.lower()
    return [i for i, h in enumerate(headers) if isResultsHeader(h) and authservIdOf(h) == ours]


@dataclass
class MessageUnderTest:
    """
    One message as the authenticators see it, after cleanup and the
    milters made it what will be queued.

    @ivar headers: the header section, one header an item (continuation
        lines kept, after LF).
    @ivar body: the body, LF line ends.
    @ivar sender: the envelope sender.
    @ivar recipients: the envelope recipients.
    @ivar attributes: what smtpd or pickup said of the client:
        C{client_address}, C{helo_name}, C{sasl_username}, C{origin},
        and the SPF result smtpd found (C{spf_result}, C{spf_domain}).
    @ivar verifying: the message came from outside: its signatures and
        policies are checked.
    @ivar signing: the message came from this site's own clients (a
        local submission, an authenticated client, a host in
        C{dkim_internal_hosts}): it is signed.
    @ivar results: what the authenticators found, in order.
    @ivar prepend: headers to put on top of the message.
    @ivar disposition: C{None}, or what to do with the message:
        C{("reject", code, text)}, C{("defer", code, text)} or
        C{("hold", reason)}.
    """

    headers: List[bytes]
    body: bytes
    sender: str
    recipients: List[str]
    attributes: Dict[str, str]
    verifying: bool
    signing: bool
    queueId: str = ""
    #: The message is passed on by this host (forwarded): it gets an
    #: ARC set vouching for the results this host found on arrival.
    sealing: bool = False
    results: List[AuthenticationResult] = field(default_factory=list)
    prepend: List[bytes] = field(default_factory=list)
    disposition: Optional[tuple] = None
    _wire: Optional[bytes] = None

    def wireText(self) -> bytes:
        """
        The message with CRLF line ends, as signatures are made over
        it (without the headers still to be prepended).
        """
        if self._wire is None:
            text = b"\n".join(self.headers) + b"\n\n" + self.body
            self._wire = text.replace(b"\n", b"\r\n")
        return self._wire

    def headerValues(self, name: str) -> List[str]:
        """
        The values of every C{name} header, unfolded, in order.
        """
        wanted = name.lower().encode()
        values = []
        for header in self.headers:
            key, sep, value = header.partition(b":")
            if sep and key.strip().lower() == wanted:
                values.append(" ".join(value.decode("utf-8", "replace").split()))
        return values


__all__ = ["MessageUnderTest", "AuthenticationResult"]
