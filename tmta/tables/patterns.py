"""
Tables matched by pattern rather than by key: C{regexp:} and C{pcre:}
(Postfix's regexp_table(5) and pcre_table(5), with the engines Postfix
uses, L{tmta.tables.engines}), and C{cidr:} (cidr_table(5)).  Each is
read from its source file, in order, first match wins, and re-read when
the file changes.

A line Postfix would skip is skipped, with a warning naming the file and
the line, and the rest of the table stays in force: one bad line never
drops the table.  A file that cannot be read makes every lookup a
temporary failure (L{TableLookupError}), never an empty table.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from zope.interface import implementer

from tmta.interfaces import ILookupTable, IOwnedTable
from tmta.logging import Logger
from tmta.tables import TableLookupError, fileOwner
from tmta.tables.engines import OBSOLETE_PCRE_FLAGS, PatternError, engine

log = Logger()


class TableSyntaxError(ValueError):
    """
    A line of a table that Postfix would skip.
    """


def _logicalLines(text: str) -> List[Tuple[int, str]]:
    from tmta.tables import readLogicalLines

    return readLogicalLines(text.splitlines())


class _Skipped:
    """
    Collects the warnings a parse gives, each naming the table and line.
    """

    def __init__(self, kind: str, path: str) -> None:
        self.kind, self.path = kind, path
        self.warnings: List[str] = []

    def __call__(self, number: int, text: str) -> None:
        self.warnings.append(f"{self.kind} map {self.path}, line {number}: {text}")


class _SourceFile:
    """
    Rules parsed from a file by C{parse}, parsed again when the file
    changes.  A file that cannot be read fails every lookup until it can
    be.

    The file is read at once, when the table is opened: a process that
    opens its tables and then gives up root (and so the right to reach
    a file under root's home) keeps the rules, and keeps them while it
    cannot look at the file again.
    """

    def __init__(self, kind: str, path: str,
                 parse: Callable[[str, _Skipped], list]) -> None:
        self.kind = kind
        self.path = path
        self._parse = parse
        #: Why the file cannot be used now, or C{None}.
        self.failure: Optional[str] = None
        #: The warnings of the last parse.
        self.warnings: List[str] = []
        #: The file's (mtime, size) when read, "missing", or None.
        self._stamp: Any = None
        self._rules: list = []
        self._blind = False
        self._read()

    def rules(self) -> list:
        """
        The rules now in force.

        @raise TableLookupError: the file cannot be read.
        """
        rules = self._read()
        if self.failure is not None:
            raise TableLookupError(f"{self.kind}:{self.path}: {self.failure}")
        return rules

    def owner(self) -> Optional[int]:
        return fileOwner(self.path)

    def _fail(self, error: OSError) -> list:
        failure = f"cannot open {self.path}: {error.strerror or error}"
        if failure != self.failure:
            log.warn("table {kind}:{path}: {error}", kind=self.kind, path=self.path,
                     error=error.strerror or error)
        self._stamp, self._rules, self.failure = "missing", [], failure
        return self._rules

    def _read(self) -> list:
        try:
            st = os.stat(self.path)
        except PermissionError as e:
            if self._stamp not in (None, "missing"):
                if not self._blind:
                    log.warn("table {path}: {error}: changes to it are not seen until "
                             "restart", path=self.path, error=e.strerror)
                    self._blind = True
                return self._rules
            return self._fail(e)
        except OSError as e:
            return self._fail(e)
        stamp = (st.st_mtime, st.st_size)
        if stamp != self._stamp:
            try:
                with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
            except OSError as e:
                return self._fail(e)
            skipped = _Skipped(self.kind, self.path)
            self._rules = self._parse(text, skipped)
            self.warnings = skipped.warnings
            for text in self.warnings:
                log.warn("{text}", text=text)
            self._stamp, self.failure = stamp, None
        return self._rules


class _InlineSource:
    """
    Rules given in the table's name, Postfix 3.7's
    C{regexp:{ {/pattern/ result}, ... }}: parsed once, each rule a
    line.
    """

    def __init__(self, kind: str, name: str,
                 parse: Callable[[str, _Skipped], list]) -> None:
        from tmta.config import splitList

        self.kind = kind
        self.path = name
        skipped = _Skipped(kind, name)
        self._rules = parse("\n".join(splitList(name.strip()[1:-1])), skipped)
        self.warnings = skipped.warnings
        self.failure: Optional[str] = None
        for text in self.warnings:
            log.warn("{text}", text=text)

    def owner(self) -> Optional[int]:
        return None  # not a file: in main.cf, which root owns

    def rules(self) -> list:
        return self._rules


def _source(kind: str, name: str, parse: Callable[[str, _Skipped], list]):
    """
    Where a pattern table's rules come from: the file it names, or the
    rules themselves in braces.
    """
    stripped = name.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        return _InlineSource(kind, stripped, parse)
    return _SourceFile(kind, name, parse)


# -- regexp and pcre ---------------------------------------------------------

#: A rule's result: literal texts and the numbers of the groups put
#: between them.
Replacement = Tuple[Union[str, int], ...]


def _splitPattern(text: str, allowSecond: bool = False) -> Tuple[bool, str, str, str]:
    """
    C{(negated, pattern, flags, rest)} of C{!/pattern/flags rest}; any
    character may delimit the pattern, and any number of C{!} (with
    white space between) may precede it.

    @param allowSecond: a C{!} ends the flags (regexp's
        C{/pattern1/!/pattern2/}).
    @raise TableSyntaxError: no pattern, or no closing delimiter.
    """
    negated, index = False, 0
    while index < len(text) and (text[index] == "!" or text[index].isspace()):
        negated ^= text[index] == "!"
        index += 1
    if index == len(text):
        raise TableSyntaxError("no regexp: skipping this rule")
    delimiter = text[index]
    start = index = index + 1
    while index < len(text):
        if text[index] == "\\" and index + 1 < len(text):
            index += 1
        elif text[index] == delimiter:
            break
        index += 1
    else:
        raise TableSyntaxError(f'no closing regexp delimiter "{delimiter}": '
                               "skipping this rule")
    pattern = text[start:index]
    end = index = index + 1
    while end < len(text) and not text[end].isspace() and not (allowSecond and text[end] == "!"):
        end += 1
    return negated, pattern, text[index:end], text[end:]


def parseReplacement(text: str) -> Replacement:
    """
    A result's C{$1}, C{${1}}, C{$(1)} and C{$$}, as Postfix's
    C{mac_parse} reads them.

    @raise TableSyntaxError: a C{$} that names no group, or a name that
        is not a number from 1.
    """
    parts: List[Union[str, int]] = []
    literal: List[str] = []
    index = 0
    while index < len(text):
        c = text[index]
        if c != "$":
            literal.append(c)
            index += 1
            continue
        if text[index + 1:index + 2] == "$":
            literal.append("$")
            index += 2
            continue
        index += 1
        opening = text[index:index + 1]
        if opening in ("{", "("):
            closing = "}" if opening == "{" else ")"
            level, end = 1, index + 1
            while level:
                if end == len(text):
                    raise TableSyntaxError("bad replacement syntax: skipping this rule")
                level += (text[end] == opening) - (text[end] == closing)
                end += 1
            name, index = text[index + 1:end - 1], end
        else:
            end = index
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            name, index = text[index:end], end
        if not name:
            raise TableSyntaxError("bad replacement syntax: skipping this rule")
        if not (name.isascii() and name.isdigit()):
            raise TableSyntaxError(f'non-numeric replacement index "{name}": '
                                   "skipping this rule")
        if int(name) < 1:
            raise TableSyntaxError(f'out of range replacement index "{name}": '
                                   "skipping this rule")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(int(name))
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def expandReplacement(replacement: Replacement, groups: Sequence[Optional[str]]) -> str:
    """
    A result with its group numbers replaced by what the groups matched
    (nothing for a group that took no part).
    """
    return "".join(part if isinstance(part, str) else (groups[part] or "")
                   for part in replacement)


class _Condition:
    """
    One pattern of a rule, and whether the rule wants it to match.
    """

    __slots__ = ("negated", "pattern")

    def __init__(self, negated: bool, pattern: Any) -> None:
        self.negated, self.pattern = negated, pattern

    def holds(self, key: str) -> bool:
        return (self.pattern.search(key) is None) == self.negated


@implementer(ILookupTable, IOwnedTable)
class RegexpTable:
    """
    C{regexp:/path} or C{pcre:/path}: C{/pattern/flags result} lines,
    C{!/pattern/} for a key that does not match, C{/p1/!/p2/} (regexp)
    for a key matching one and not the other, and C{if}/C{endif} blocks
    that apply their rules only to keys matching theirs.
    """

    def __init__(self, path: str, pcre: bool = False) -> None:
        self.pcre = pcre
        self.kind = "pcre" if pcre else "regexp"
        self._compile = engine(self.kind)
        self.source = _source(self.kind, path, self._parse)

    def _condition(self, text: str, number: int, skipped: _Skipped,
                   allowSecond: bool = False) -> Tuple[_Condition, str]:
        negated, pattern, flags, rest = _splitPattern(text, allowSecond)
        if self.pcre:
            for flag in sorted(set(flags) & set(OBSOLETE_PCRE_FLAGS)):
                skipped(number, f'ignoring obsolete regexp option "{flag}"')
        try:
            compiled = self._compile(pattern, flags)
        except PatternError as e:
            raise TableSyntaxError(f"{e}: skipping this rule")
        return _Condition(negated, compiled), rest

    def _parse(self, text: str, skipped: _Skipped) -> list:
        # Each rule: (conditions, patterns, replacement); the conditions
        # are the enclosing if blocks', the patterns the rule's own.
        rules: list = []
        stack: List[Tuple[int, _Condition]] = []
        for number, line in _logicalLines(text):
            try:
                word = line[:5].lower()
                if word.startswith("if") and not line[2:3].isalnum():
                    condition, rest = self._condition(line[2:], number, skipped)
                    if rest.strip():
                        skipped(number, f'ignoring extra text after IF statement: '
                                        f'"{rest.strip()}"')
                    stack.append((number, condition))
                    continue
                if word == "endif" and not line[5:6].isalnum():
                    if not stack:
                        skipped(number, "ignoring ENDIF without matching IF")
                        continue
                    if line[5:].strip():
                        skipped(number, "ignoring extra text after ENDIF")
                    stack.pop()
                    continue
                if line[0].isalnum():
                    skipped(number, "ignoring unrecognized request")
                    continue
                rules.append(self._rule(number, line, stack, skipped))
            except TableSyntaxError as e:
                skipped(number, str(e))
        for number, _ in stack:
            skipped(number, "IF has no matching ENDIF")
        return rules

    def _rule(self, number: int, line: str, stack: List[Tuple[int, _Condition]],
              skipped: _Skipped) -> tuple:
        first, rest = self._condition(line, number, skipped, allowSecond=not self.pcre)
        patterns = [first]
        if rest.startswith("!"):
            second, rest = self._condition(rest, number, skipped)
            patterns.append(second)
        result = rest.strip()
        if not result:
            skipped(number, "no replacement text: using empty string")
        replacement = parseReplacement(result)
        wanted = max((p for p in replacement if isinstance(p, int)), default=0)
        if wanted and first.negated:
            raise TableSyntaxError("$number found in negative match replacement text: "
                                   "skipping this rule")
        if wanted > first.pattern.groups:
            raise TableSyntaxError(f'out of range replacement index "{wanted}": '
                                   "skipping this rule")
        return tuple(c for _, c in stack), tuple(patterns), replacement

    def owner(self) -> Optional[int]:
        return self.source.owner()

    def get(self, key: str) -> Optional[str]:
        for conditions, patterns, replacement in self.source.rules():
            if not all(c.holds(key) for c in conditions):
                continue
            first = patterns[0]
            groups = first.pattern.search(key)
            if (groups is None) != first.negated:
                continue
            if len(patterns) > 1 and not patterns[1].holds(key):
                continue
            return expandReplacement(replacement, groups or ())
        return None


# -- cidr ----------------------------------------------------------------------


def _address(text: str):
    """
    An address as C{inet_pton} reads it: IPv6 when it has a colon, IPv4
    (dotted quad) otherwise; C{None} when it is not one.
    """
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address if (address.version == 6) == (":" in text) else None


def parseNetwork(pattern: str):
    """
    A network as Postfix's C{cidr_match_parse} reads it: C{addr/len},
    C{[addr]/len}, C{[addr/len]} or a bare address.

    @raise TableSyntaxError: with Postfix's reason.
    """
    text = pattern
    if text.startswith("["):
        inner, found, after = text[1:].partition("]")
        if not found:
            raise TableSyntaxError("missing ']' character after \"[" + inner + '"')
        if after and not after.startswith("/"):
            raise TableSyntaxError(f'garbage after "[{inner}]"')
        text = inner + after
    address, slash, mask = text.partition("/")
    if not slash:
        parsed = _address(address)
        if parsed is None:
            raise TableSyntaxError(f'bad address pattern: "{address}"')
        return ipaddress.ip_network(parsed)
    bits = 128 if ":" in address else 32
    if not (mask.isascii() and mask.isdigit()):
        raise TableSyntaxError(f'bad mask value in "{address}/{mask}"')
    if int(mask) > bits:
        raise TableSyntaxError(f'bad mask length in "{address}/{mask}"')
    parsed = _address(address)
    if parsed is None:
        raise TableSyntaxError(f'bad network value in "{address}/{mask}"')
    network = ipaddress.ip_network(f"{parsed}/{int(mask)}", strict=False)
    if network.network_address != parsed:
        raise TableSyntaxError(f'non-null host address bits in "{address}/{mask}", perhaps '
                               f'you should use "{network}" instead')
    return network


def _cidrPattern(text: str) -> Tuple[bool, str]:
    negated, index = False, 0
    while index < len(text) and (text[index] == "!" or text[index].isspace()):
        negated ^= text[index] == "!"
        index += 1
    return negated, text[index:]


class _NetworkCondition(_Condition):
    __slots__ = ()

    def holds(self, key: Any) -> bool:
        return _within(key, self.pattern) != self.negated


@implementer(ILookupTable, IOwnedTable)
class CIDRTable:
    """
    C{cidr:/path}: C{network/prefix result} (or a bare address) lines,
    IPv4 and IPv6, C{!network} for addresses outside it, and
    C{if}/C{endif} blocks.  Keys that are not addresses match nothing.
    """

    def __init__(self, path: str) -> None:
        self.source = _source("cidr", path, self._parse)

    def _parse(self, text: str, skipped: _Skipped) -> list:
        rules = []
        stack: List[Tuple[int, _NetworkCondition]] = []
        for number, line in _logicalLines(text):
            try:
                word = line[:5].lower()
                if word.startswith("if") and not line[2:3].isalnum():
                    negated, pattern = _cidrPattern(line[2:])
                    if not pattern:
                        raise TableSyntaxError("no address pattern")
                    stack.append((number, _NetworkCondition(
                        negated, parseNetwork(pattern.strip()))))
                    continue
                if word == "endif" and not line[5:6].isalnum():
                    if line[5:].strip():
                        raise TableSyntaxError("garbage after ENDIF")
                    if not stack:
                        raise TableSyntaxError("ENDIF without IF")
                    stack.pop()
                    continue
                negated, rest = _cidrPattern(line)
                words = rest.split(None, 1)
                pattern, value = words[0] if words else "", words[1].strip() if len(words) > 1 \
                    else ""
                if not pattern:
                    raise TableSyntaxError("no address pattern")
                network = parseNetwork(pattern)
                if not value:
                    raise TableSyntaxError("no lookup result")
                rules.append((tuple(c for _, c in stack), _NetworkCondition(negated, network),
                              value))
            except TableSyntaxError as e:
                skipped(number, f"{e}: skipping this line")
        for number, _ in stack:
            skipped(number, "IF has no matching ENDIF")
        return rules

    def owner(self) -> Optional[int]:
        return self.source.owner()

    def get(self, key: str) -> Optional[str]:
        address = _address(key)
        if address is None:
            return None
        for conditions, rule, result in self.source.rules():
            if all(c.holds(address) for c in conditions) and rule.holds(address):
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
