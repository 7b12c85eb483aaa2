"""
cleanup's content inspection: C{header_checks} and C{body_checks} as
header_checks(5) describes them.  Each logical header line (with its
continuation lines) and each body line is looked up in the tables --
normally C{regexp:} or C{pcre:} -- and the first table's answer is the
action: C{REJECT}, C{HOLD}, C{DISCARD}, C{WARN}, C{IGNORE},
C{REPLACE}, C{PREPEND}, C{REDIRECT}, C{FILTER}, C{DUNNO} or C{OK}.

C{REDIRECT} and C{FILTER} change the envelope, which cleanup writes
after the header section: they take effect from C{header_checks}; from
C{body_checks} (the envelope is then on disk) the message is refused
with a temporary error and a warning, rather than delivered to the
wrong place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from twisted.logger import Logger

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
    warnings: List[str] = field(default_factory=list)


def _text(line: bytes) -> str:
    return line.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class ContentChecks:
    """
    The checks of one cleanup service.
    """

    def __init__(self, config) -> None:
        self.headerTables = openTables(config.get("header_checks"))
        self.bodyTables = openTables(config.get("body_checks"))
        self.active = bool(self.headerTables or self.bodyTables)

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
        elif action == "IGNORE":
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
        Check each header; return the header section as the actions
        leave it.
        """
        if not self.headerTables:
            return headers
        out: List[bytes] = []
        for header in headers:
            found = self._lookup(self.headerTables, _text(header))
            out += self._apply(verdict, found, header, "header", queueId)
        return out

    def body(self) -> "BodyChecker":
        return BodyChecker(self)


class BodyChecker:
    """
    Checks body lines as they stream through, holding back a partial
    last line until the rest of it arrives.
    """

    def __init__(self, checks: ContentChecks) -> None:
        self.checks = checks
        self.carry = b""

    def feed(self, data: bytes, verdict: Verdict, queueId: str) -> bytes:
        data = self.carry + data
        cut = data.rfind(b"\n") + 1
        self.carry = data[cut:]
        return self._lines(data[:cut], verdict, queueId)

    def end(self, verdict: Verdict, queueId: str) -> bytes:
        rest, self.carry = self.carry, b""
        if not rest:
            return b""
        return self._lines(rest + b"\n", verdict, queueId)[:-1]

    def _lines(self, block: bytes, verdict: Verdict, queueId: str) -> bytes:
        if not block:
            return b""
        out: List[bytes] = []
        for line in block.split(b"\n")[:-1]:
            found = self.checks._lookup(self.checks.bodyTables, _text(line))
            if found is not None and found[0] in ("REDIRECT", "FILTER"):
                verdict.reject = verdict.reject or (
                    451, f"4.3.0 {found[0]} in body_checks is not supported: tmta acts on "
                         f"it in header_checks only")
                log.warn("{queueId}: body_checks: {action} is supported in header_checks "
                         "only; message refused for now", queueId=queueId, action=found[0])
                out.append(line)
                continue
            out += self.checks._apply(verdict, found, line, "body", queueId)
        return b"".join(line + b"\n" for line in out)
