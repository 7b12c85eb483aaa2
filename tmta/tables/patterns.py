"""
Tables matched by pattern rather than by key: C{regexp:} and C{pcre:}
(Postfix's regexp_table(5) and pcre_table(5), both with Python's C{re}),
and C{cidr:} (cidr_table(5)).  Each is read from its source file, in
order, first match wins, and re-read when the file changes.
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Callable, List, Optional, Tuple

from tmta.logging import Logger
from zope.interface import implementer

from tmta.interfaces import ILookupTable

log = Logger()


class TableSyntaxError(ValueError):
    pass


def _logicalLines(text: str) -> List[Tuple[int, str]]:
    """
    Lines with their numbers: comments and blank lines dropped, lines
    starting with white space joined to the one before.
    """
    lines: List[Tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1].isspace() and lines:
            lines[-1] = (lines[-1][0], lines[-1][1] + " " + stripped)
        else:
            lines.append((number, stripped))
    return lines


class _SourceFile:
    """
    Rules parsed from a file by C{parse}, parsed again when the file
    changes.  A file that cannot be read or parsed gives no rules,
    warned about.

    The file is read at once, when the table is opened: a process that
    opens its tables and then gives up root (and so the right to reach
    a file under root's home) keeps the rules, and keeps them while it
    cannot look at the file again.
    """

    def __init__(self, path: str, parse: Callable[[str], list]) -> None:
        self.path = path
        self._parse = parse
        #: The file's (mtime, size) when read, "missing", or None.
        self._stamp: Any = None
        self._rules: list = []
        self._blind = False
        self.rules()

    def rules(self) -> list:
        try:
            st = os.stat(self.path)
        except PermissionError as e:
            if self._stamp not in (None, "missing"):
                if not self._blind:
                    log.warn("table {path}: {error}: changes to it are not seen until "
                             "restart", path=self.path, error=e.strerror)
                    self._blind = True
                return self._rules
            if self._stamp != "missing":
                log.warn("table {path}: {error}", path=self.path, error=e.strerror)
            self._stamp, self._rules = "missing", []
            return self._rules
        except OSError as e:
            if self._stamp != "missing":
                log.warn("table {path}: {error}", path=self.path, error=e.strerror)
            self._stamp, self._rules = "missing", []
            return self._rules
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            try:
                with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                    self._rules = self._parse(f.read())
            except (OSError, TableSyntaxError) as e:
                log.warn("table {path}: {error}; table ignored", path=self.path, error=e)
                self._rules = []
            self._stamp = stamp
        return self._rules


# -- regexp and pcre ---------------------------------------------------------


def _splitPattern(text: str, number: int) -> Tuple[bool, str, str, str]:
    """
    C{(negated, pattern, flags, rest)} of C{/pattern/flags rest}; any
    character may delimit the pattern.
    """
    negated = text.startswith("!")
    if negated:
        text = text[1:]
    if not text or text[0].isalnum() or text[0].isspace():
        raise TableSyntaxError(f"line {number}: a pattern must start with a delimiter")
    delimiter = text[0]
    index, escaped = 1, False
    while index < len(text):
        c = text[index]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == delimiter:
            break
        index += 1
    else:
        raise TableSyntaxError(f"line {number}: no closing {delimiter}")
    pattern = text[1:index]
    rest = text[index + 1:]
    flags = re.match(r"[A-Za-z]*", rest).group(0)  # type: ignore[union-attr]
    return negated, pattern, flags, rest[len(flags):].strip()


def _compile(pattern: str, flags: str, number: int, pcre: bool) -> "re.Pattern":
    options = re.IGNORECASE  # Postfix's default; the i flag toggles it
    if not pcre:
        # POSIX regular expressions without REG_NEWLINE: "." and "[^x]"
        # match a newline too (a folded header is one string).
        options |= re.DOTALL
    for flag in flags:
        if flag == "i":
            options ^= re.IGNORECASE
        elif flag == "m":
            options |= re.MULTILINE
            if not pcre:
                options &= ~re.DOTALL  # REG_NEWLINE
        elif flag == "s" and pcre:
            options |= re.DOTALL
        elif flag == "x" and pcre:
            options |= re.VERBOSE
        elif flag == "x":
            pass  # regexp: toggles POSIX extended syntax; Python's is always extended
        elif flag in "AEUX" and pcre:
            pass  # anchoring and greediness toggles Python's re lacks: accepted
        else:
            raise TableSyntaxError(f"line {number}: unknown flag {flag!r}")
    try:
        return re.compile(pattern, options)
    except re.error as e:
        raise TableSyntaxError(f"line {number}: bad pattern: {e}")


def expandResult(result: str, match: "re.Match") -> str:
    """
    C{$1}, C{${1}} and C{$$} in a result, from the match's groups (an
    unmatched group gives nothing).
    """
    def group(m: "re.Match") -> str:
        if m.group(0) == "$$":
            return "$"
        number = int(m.group(1) or m.group(2))
        try:
            return match.group(number) or ""
        except IndexError:
            return ""

    return re.sub(r"\$\$|\$\{(\d+)\}|\$(\d)", group, result)


@implementer(ILookupTable)
class RegexpTable:
    """
    C{regexp:/path} or C{pcre:/path}: C{/pattern/flags result} lines,
    C{!/pattern/} for a key that does not match, and C{if}/C{endif}
    blocks that apply their rules only to keys matching theirs.
    """

    def __init__(self, path: str, pcre: bool = False) -> None:
        self.pcre = pcre
        self.source = _SourceFile(path, self._parse)

    def _parse(self, text: str) -> list:
        # Each rule: (conditions, negated, regex, result); conditions are
        # the enclosing if blocks' (negated, regex).
        rules = []
        stack: List[Tuple[bool, "re.Pattern"]] = []
        for number, line in _logicalLines(text):
            word = line.split(None, 1)[0].lower()
            if word == "endif":
                if not stack:
                    raise TableSyntaxError(f"line {number}: endif without if")
                stack.pop()
                continue
            if word == "if":
                negated, pattern, flags, rest = _splitPattern(line[2:].strip(), number)
                if rest:
                    raise TableSyntaxError(f"line {number}: text after the if pattern")
                stack.append((negated, _compile(pattern, flags, number, self.pcre)))
                continue
            negated, pattern, flags, result = _splitPattern(line, number)
            if not result:
                raise TableSyntaxError(f"line {number}: no result")
            rules.append((tuple(stack), negated, _compile(pattern, flags, number, self.pcre),
                          result))
        if stack:
            raise TableSyntaxError("if without endif")
        return rules

    def get(self, key: str) -> Optional[str]:
        for conditions, negated, regex, result in self.source.rules():
            if any(bool(c.search(key)) == n for n, c in conditions):
                continue
            match = regex.search(key)
            if negated:
                if match is None:
                    return result
            elif match is not None:
                return expandResult(result, match)
        return None


# -- cidr ----------------------------------------------------------------------


def _network(text: str, number: int):
    try:
        return ipaddress.ip_network(text.strip("[]"), strict=True)
    except ValueError as e:
        raise TableSyntaxError(f"line {number}: bad network {text!r}: {e}")


@implementer(ILookupTable)
class CIDRTable:
    """
    C{cidr:/path}: C{network/prefix result} (or a bare address) lines,
    IPv4 and IPv6, C{!network} for addresses outside it, and
    C{if}/C{endif} blocks.  Keys that are not addresses match nothing.
    """

    def __init__(self, path: str) -> None:
        self.source = _SourceFile(path, self._parse)

    def _parse(self, text: str) -> list:
        rules = []
        stack: List[Tuple[bool, object]] = []
        for number, line in _logicalLines(text):
            words = line.split(None, 1)
            first = words[0].lower()
            if first == "endif":
                if not stack:
                    raise TableSyntaxError(f"line {number}: endif without if")
                stack.pop()
                continue
            if first == "if":
                target = words[1].strip() if len(words) > 1 else ""
                negated = target.startswith("!")
                stack.append((negated, _network(target.lstrip("!"), number)))
                continue
            if len(words) < 2:
                raise TableSyntaxError(f"line {number}: no result")
            negated = words[0].startswith("!")
            rules.append((tuple(stack), negated, _network(words[0].lstrip("!"), number),
                          words[1].strip()))
        if stack:
            raise TableSyntaxError("if without endif")
        return rules

    def get(self, key: str) -> Optional[str]:
        try:
            address = ipaddress.ip_address(key.strip("[]"))
        except ValueError:
            return None
        for conditions, negated, network, result in self.source.rules():
            if any(_within(address, c) == n for n, c in conditions):
                continue
            if _within(address, network) != negated:
                return result
        return None


def _within(address, network) -> bool:
    return address.version == network.version and address in network


def opener(kind: str) -> Callable[[str], object]:
    """
    The function that opens a table of C{kind} (C{regexp}, C{pcre},
    C{cidr}) from its name, the file's path.
    """
    if kind == "cidr":
        return CIDRTable
    return lambda path: RegexpTable(path, pcre=kind == "pcre")
