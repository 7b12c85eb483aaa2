"""
C{regexp:} and C{pcre:} tables (Postfix's regexp_table(5) and
pcre_table(5), with the engines Postfix uses, L{tmta.tables.engines}):
first match wins, C{$n} in a result replaced by the match's groups.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

from zope.interface import implementer

from tmta.interfaces import ILookupTable, IOwnedTable
from tmta.tables.engines import OBSOLETE_PCRE_FLAGS, PatternError, engine
from tmta.tables.source import Condition, Skipped, TableSyntaxError, logicalLines, ruleSource

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
        self.source = ruleSource(self.kind, path, self._parse)

    def _condition(self, text: str, number: int, skipped: Skipped,
                   allowSecond: bool = False) -> Tuple[Condition, str]:
        negated, pattern, flags, rest = _splitPattern(text, allowSecond)
        if self.pcre:
            for flag in sorted(set(flags) & set(OBSOLETE_PCRE_FLAGS)):
                skipped(number, f'ignoring obsolete regexp option "{flag}"')
        try:
            compiled = self._compile(pattern, flags)
        except PatternError as e:
            raise TableSyntaxError(f"{e}: skipping this rule")
        return Condition(negated, compiled), rest

    def _parse(self, text: str, skipped: Skipped) -> list:
        # Each rule: (conditions, patterns, replacement); the conditions
        # are the enclosing if blocks', the patterns the rule's own.
        rules: list = []
        stack: List[Tuple[int, Condition]] = []
        for number, line in logicalLines(text):
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

    def _rule(self, number: int, line: str, stack: List[Tuple[int, Condition]],
              skipped: Skipped) -> tuple:
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
