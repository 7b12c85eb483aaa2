"""
Content inspection as header_checks(5) describes it: cleanup's
C{header_checks}, C{mime_header_checks}, C{nested_header_checks},
C{body_checks} and C{milter_header_checks}, and the SMTP and LMTP
clients' restricted C{smtp_*_checks} and C{lmtp_*_checks}.  Each
logical header line (with its continuation lines) -- of the message, of
each MIME part, of each attached message -- and each other body line is
looked up in the tables -- normally C{regexp:} or C{pcre:} -- and the
first table's answer is the action: C{REJECT}, C{HOLD}, C{DISCARD},
C{WARN}, C{INFO}, C{IGNORE}, C{STRIP}, C{REPLACE}, C{PREPEND},
C{REDIRECT}, C{FILTER}, C{DUNNO} or C{OK}.

C{REDIRECT} and C{FILTER} change the envelope, which cleanup writes
after the header section: from C{header_checks} they shape it; from the
body (the envelope is then in the file) cleanup writes the message again
under the new envelope before it commits it.  The clients, which deliver
mail already queued, have only the actions that edit what is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from tmta.logging import Logger
from tmta.tables import openTables

log = Logger()


@dataclass
class Verdict:
    """
    What the checks decided for the whole message so far.
    """

    reject: Optional[Tuple[int, str]] = None
    hold: Optional[str] = None
    discard: Optional[str] = None
    redirect: Optional[str] = None
    filter: Optional[str] = None
    #: A REDIRECT or FILTER came from the body, after the envelope was
    #: written: cleanup writes the message again under the new one.
    lateEnvelope: bool = False
    warnings: List[str] = field(default_factory=list)


def _text(line: bytes) -> str:
    return line.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


#: What a delivering client may do: edit what it sends, never change
#: where the mail goes or whether it goes.
CLIENT_ACTIONS = frozenset({"WARN", "INFO", "IGNORE", "STRIP", "REPLACE", "PREPEND", "DUNNO",
                            "OK"})


class ContentChecks:
    """
    The checks of one cleanup service, or of one SMTP or LMTP client.

    @param prefix: C{""} for cleanup's tables; C{smtp_} or C{lmtp_}
        for a client's, which have only L{CLIENT_ACTIONS}.
    """

    def __init__(self, config, prefix: str = "") -> None:
        self.prefix = prefix
        self.headerTables = openTables(config.get(f"{prefix}header_checks"))
        self.mimeTables = openTables(config.get(f"{prefix}mime_header_checks"))
        self.nestedTables = openTables(config.get(f"{prefix}nested_header_checks"))
        self.bodyTables = openTables(config.get(f"{prefix}body_checks"))
        #: C{milter_header_checks}: for the headers milters produce.
        self.milterTables = openTables(config.get("milter_header_checks")) if not prefix \
            else []
        #: Whether the body is looked at at all (MIME part headers too).
        self.inspectsBody = bool(self.bodyTables or self.mimeTables or self.nestedTables)
        #: Whether the message's own headers are looked at.
        self.inspectsHeaders = bool(self.headerTables or self.mimeTables)
        self.active = bool(self.headerTables or self.inspectsBody)

    def _lookup(self, tables, line: str) -> Optional[Tuple[str, str]]:
        for table in tables:
            value = table.get(line)
            if value is not None:
                action, _, text = value.strip().partition(" ")
                return action.upper(), text.strip()
        return None

    def _apply(self, verdict: Verdict, found, line: bytes, where: str,
               queueId: str) -> List[bytes]:
        """
        Act on one table answer for C{line}.

        @return: the lines that replace it in the message.
        """
        if found is None:
            return [line]
        action, text = found
        shown = _text(line)[:200]
        if self.prefix and action not in CLIENT_ACTIONS:
            log.warn("{queueId}: unsupported command in {name} map: {action}",
                     queueId=queueId, name=f"{self.prefix}{where.replace(' ', '_')}_checks",
                     action=action)
            return [line]
        if action == "REJECT":
            if verdict.reject is None:
                verdict.reject = (550, f"5.7.1 {text or 'message content rejected'}")
            log.info("{queueId}: reject: {where} {line}: {text}", queueId=queueId,
                     where=where, line=shown, text=text or "message content rejected")
        elif action == "HOLD":
            verdict.hold = text or "held by content check"
            log.info("{queueId}: hold: {where} {line}: {text}", queueId=queueId, where=where,
                     line=shown, text=verdict.hold)
        elif action == "DISCARD":
            verdict.discard = text or "discarded by content check"
            log.info("{queueId}: discard: {where} {line}: {text}", queueId=queueId,
                     where=where, line=shown, text=verdict.discard)
        elif action == "WARN":
            log.info("{queueId}: warning: {where} {line}: {text}", queueId=queueId,
                     where=where, line=shown, text=text)
        elif action == "INFO":
            log.info("{queueId}: info: {where} {line}: {text}", queueId=queueId,
                     where=where, line=shown, text=text)
        elif action == "IGNORE":
            return []
        elif action == "STRIP":
            log.info("{queueId}: strip: {where} {line}: {text}", queueId=queueId,
                     where=where, line=shown, text=text)
            return []
        elif action == "REPLACE" and text:
            return [_bytes(text)]
        elif action == "PREPEND" and text:
            return [_bytes(text), line]
        elif action == "REDIRECT" and text:
            verdict.redirect = text.strip("<>")
            log.info("{queueId}: redirect: {where} {line}: {text}", queueId=queueId,
                     where=where, line=shown, text=verdict.redirect)
        elif action == "FILTER" and ":" in text:
            verdict.filter = text
            log.info("{queueId}: filter: {where} {line}: {text}", queueId=queueId,
                     where=where, line=shown, text=text)
        elif action in ("DUNNO", "OK", "REPLACE", "PREPEND", "REDIRECT", "FILTER"):
            if action not in ("DUNNO", "OK"):
                log.warn("{queueId}: {where}: {action} without a value ignored",
                         queueId=queueId, where=where, action=action)
        else:
            log.warn("{queueId}: {where}: unknown action {action!r} ignored",
                     queueId=queueId, where=where, action=action)
        return [line]

    def headers(self, headers: List[bytes], verdict: Verdict, queueId: str) -> List[bytes]:
        """
        Check each of the message's own headers -- its MIME headers
        against C{mime_header_checks}, the others against
        C{header_checks}, as Postfix divides them -- and return the
        header section as the actions leave it.
        """
        if not self.inspectsHeaders:
            return headers
        out: List[bytes] = []
        for header in headers:
            mime = isMimeHeader(header)
            tables = self.mimeTables if mime else self.headerTables
            found = self._lookup(tables, _text(header)) if tables else None
            out += self._apply(verdict, found, header, "mime header" if mime else "header",
                               queueId)
        return out

    def milterHeaders(self, headers: List[bytes], produced: List[bytes], verdict: Verdict,
                      queueId: str) -> List[bytes]:
        """
        Check the headers milters produced (C{milter_header_checks}), as
        C{header_checks} checks the message's own -- but for C{PREPEND},
        which Postfix does not implement there either -- and return the
        header section as the actions leave it.
        """
        if not self.milterTables or not produced:
            return headers
        pending = list(produced)
        out: List[bytes] = []
        for header in headers:
            if header not in pending:
                out.append(header)
                continue
            pending.remove(header)
            found = self._lookup(self.milterTables, _text(header))
            if found is not None and found[0] == "PREPEND":
                log.warn("{queueId}: milter_header_checks: PREPEND is not implemented",
                         queueId=queueId)
                found = None
            out += self._apply(verdict, found, header, "milter-header", queueId)
        return out

    def message(self, content: bytes, queueId: str) -> bytes:
        """
        A whole message as the checks leave it, for a client, which
        inspects mail as it sends it: the header section through
        L{headers}, the body through a L{BodyChecker}.  Lines end in LF.
        """
        headers, body = splitMessage(content)
        verdict = Verdict()
        kept = self.headers(headers, verdict, queueId)
        out = b"".join(header + b"\n" for header in kept) + b"\n"
        if not self.inspectsBody:
            return out + body
        checker = self.body(kept)
        return out + checker.feed(body, verdict, queueId) + checker.end(verdict, queueId)

    def body(self, headers: List[bytes]) -> "BodyChecker":
        """
        A checker for the body of a message with these (top-level)
        headers.
        """
        kind = None
        for header in headers:
            kind = contentType(header) or kind
        return BodyChecker(self, kind)


def splitMessage(content: bytes) -> Tuple[List[bytes], bytes]:
    """
    A message's logical header lines (each with its continuation lines,
    joined by LF) and its body, lines ending in LF.
    """
    text = content.replace(b"\r\n", b"\n")
    head, separator, body = text.partition(b"\n\n")
    if not separator and not head.endswith(b"\n"):
        head, body = head + b"\n", b""
    headers: List[bytes] = []
    for line in head.rstrip(b"\n").split(b"\n") if head.strip() else []:
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += b"\n" + line
        else:
            headers.append(line)
    return headers, body


_CONTENT_TYPE = re.compile(rb"^content-type:[ \t]*([^;\s]+)", re.I)
#: The MIME headers, which go to mime_header_checks wherever they are:
#: the message's own, a part's, an attached message's.
_MIME_HEADER = re.compile(rb"^(?:content-(?:description|disposition|id|transfer-encoding|"
                          rb"type)|mime-version)[ \t]*:", re.I)


def isMimeHeader(header: bytes) -> bool:
    return _MIME_HEADER.match(header) is not None
_BOUNDARY = re.compile(rb"boundary[ \t]*=[ \t]*(?:\"([^\"]+)\"|([^;\s]+))", re.I)
_HEADER_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")

BODY, PART_HEADERS, NESTED_HEADERS = "body", "part headers", "nested headers"


def contentType(header: bytes):
    """
    The type and boundary a C{Content-Type:} header gives (lower-case
    type; boundary C{None} when it has none), or C{None} for another
    header.
    """
    match = _CONTENT_TYPE.match(header)
    if match is None:
        return None
    boundary = _BOUNDARY.search(header)
    mediaType = match.group(1).decode("ascii", "replace").lower()
    if boundary is None:
        return mediaType, None
    return mediaType, (boundary.group(1) or boundary.group(2)).decode("utf-8",
                                                                       "surrogateescape")


class BodyChecker:
    """
    Checks the body as it streams through, MIME-aware: the headers of
    each MIME part go to C{mime_header_checks}, those of an attached
    message (C{message/rfc822}) to C{nested_header_checks}, and every
    other line to C{body_checks}.  A partial last line is held back
    until the rest of it arrives.
    """

    def __init__(self, checks: ContentChecks, topType=None) -> None:
        self.checks = checks
        self.carry = b""
        self.boundaries: List[bytes] = []
        self.mode = BODY
        self.pending: List[bytes] = []
        self.partType: Optional[tuple] = None
        self._enter(topType)

    def _enter(self, kind) -> None:
        """
        What follows a header section of type C{kind}.
        """
        if kind is None:
            return
        mediaType, boundary = kind
        if mediaType.startswith("multipart/") and boundary:
            self.boundaries.append(boundary.encode("utf-8", "surrogateescape"))
        elif mediaType == "message/rfc822":
            self.mode = NESTED_HEADERS

    def feed(self, data: bytes, verdict: Verdict, queueId: str) -> bytes:
        data = self.carry + data
        cut = data.rfind(b"\n") + 1
        self.carry = data[cut:]
        return self._lines(data[:cut], verdict, queueId)

    def end(self, verdict: Verdict, queueId: str) -> bytes:
        rest, self.carry = self.carry, b""
        out = self._lines(rest + b"\n", verdict, queueId)[:-1] if rest else b""
        return out + self._flushHeader(verdict, queueId)

    def _boundary(self, line: bytes) -> Optional[bool]:
        """
        Whether C{line} opens a part (C{False}) or closes the multipart
        (C{True}) of an enclosing boundary, or C{None}.
        """
        if not self.boundaries or not line.startswith(b"--"):
            return None
        text = line.rstrip()
        for depth in range(len(self.boundaries) - 1, -1, -1):
            boundary = self.boundaries[depth]
            if text == b"--" + boundary or text == b"--" + boundary + b"--":
                closing = text.endswith(b"--") and text != b"--" + boundary
                del self.boundaries[depth + (0 if closing else 1):]
                return closing
        return None

    def _flushHeader(self, verdict: Verdict, queueId: str) -> bytes:
        if not self.pending:
            return b""
        header = b"\n".join(self.pending)
        self.pending = []
        kind = contentType(header)
        if kind is not None:
            self.partType = kind
        # An attached message's own headers go to nested_header_checks,
        # its MIME headers (and every header of a MIME part) to
        # mime_header_checks.
        nested = self.mode == NESTED_HEADERS and not isMimeHeader(header)
        tables = self.checks.nestedTables if nested else self.checks.mimeTables
        found = self.checks._lookup(tables, _text(header)) if tables else None
        self._late(verdict, found)
        kept = self.checks._apply(verdict, found, header,
                                  "nested header" if nested else "mime header", queueId)
        return b"".join(line + b"\n" for line in kept)

    @staticmethod
    def _late(verdict: Verdict, found) -> None:
        if found is not None and found[0] in ("REDIRECT", "FILTER") and found[1]:
            verdict.lateEnvelope = True

    def _lines(self, block: bytes, verdict: Verdict, queueId: str) -> bytes:
        if not block:
            return b""
        out: List[bytes] = []
        for line in block.split(b"\n")[:-1]:
            closing = self._boundary(line)
            if closing is not None:
                out.append(self._flushHeader(verdict, queueId) + line + b"\n")
                self.mode = BODY if closing else PART_HEADERS
                self.partType = None
                continue
            if self.mode != BODY:
                if line.startswith((b" ", b"\t")) and self.pending:
                    self.pending.append(line)
                    continue
                if _HEADER_LINE.match(line):
                    out.append(self._flushHeader(verdict, queueId))
                    self.pending.append(line)
                    continue
                # The blank line (or anything else) ends the part's headers.
                out.append(self._flushHeader(verdict, queueId))
                kind, self.partType = self.partType, None
                self.mode = BODY
                self._enter(kind)
                if not line.strip():
                    out.append(line + b"\n")
                    continue
            out.append(self._bodyLine(line, verdict, queueId))
        return b"".join(out)

    def _bodyLine(self, line: bytes, verdict: Verdict, queueId: str) -> bytes:
        tables = self.checks.bodyTables
        if not tables:
            return line + b"\n"
        found = self.checks._lookup(tables, _text(line))
        self._late(verdict, found)
        return b"".join(kept + b"\n" for kept in
                        self.checks._apply(verdict, found, line, "body", queueId))
