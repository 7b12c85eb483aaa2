"""
Where a pattern table's rules come from, shared by C{regexp:}, C{pcre:}
and C{cidr:}: the file it names, read when opened and again when it
changes, or the rules themselves in braces (Postfix 3.7's inline form).
A line Postfix would skip is skipped with a warning naming the file and
line; a file that cannot be read fails every lookup until it can be.
"""

from __future__ import annotations

import os
from typing import Any, Callable, List, Optional, Tuple

from tmta.logging import Logger
from tmta.tables import TableLookupError, fileOwner

log = Logger()


class TableSyntaxError(ValueError):
    """
    A line of a table that Postfix would skip.
    """


def logicalLines(text: str) -> List[Tuple[int, str]]:
    from tmta.tables import readLogicalLines

    return readLogicalLines(text.splitlines())


class Skipped:
    """
    Collects the warnings a parse gives, each naming the table and line.
    """

    def __init__(self, kind: str, path: str) -> None:
        self.kind, self.path = kind, path
        self.warnings: List[str] = []

    def __call__(self, number: int, text: str) -> None:
        self.warnings.append(f"{self.kind} map {self.path}, line {number}: {text}")


class SourceFile:
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
                 parse: Callable[[str, Skipped], list]) -> None:
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
            skipped = Skipped(self.kind, self.path)
            self._rules = self._parse(text, skipped)
            self.warnings = skipped.warnings
            for text in self.warnings:
                log.warn("{text}", text=text)
            self._stamp, self.failure = stamp, None
        return self._rules


class InlineSource:
    """
    Rules given in the table's name, Postfix 3.7's
    C{regexp:{ {/pattern/ result}, ... }}: parsed once, each rule a
    line.
    """

    def __init__(self, kind: str, name: str,
                 parse: Callable[[str, Skipped], list]) -> None:
        from tmta.config import splitList

        self.kind = kind
        self.path = name
        skipped = Skipped(kind, name)
        self._rules = parse("\n".join(splitList(name.strip()[1:-1])), skipped)
        self.warnings = skipped.warnings
        self.failure: Optional[str] = None
        for text in self.warnings:
            log.warn("{text}", text=text)

    def owner(self) -> Optional[int]:
        return None  # not a file: in main.cf, which root owns

    def rules(self) -> list:
        return self._rules


def ruleSource(kind: str, name: str, parse: Callable[[str, Skipped], list]):
    """
    Where a pattern table's rules come from: the file it names, or the
    rules themselves in braces.
    """
    stripped = name.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        return InlineSource(kind, stripped, parse)
    return SourceFile(kind, name, parse)


class Condition:
    """
    One pattern of a rule, and whether the rule wants it to match.
    """

    __slots__ = ("negated", "pattern")

    def __init__(self, negated: bool, pattern: Any) -> None:
        self.negated, self.pattern = negated, pattern

    def holds(self, key: str) -> bool:
        return (self.pattern.search(key) is None) == self.negated
