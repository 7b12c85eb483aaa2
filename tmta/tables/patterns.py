"""
Tables matched by pattern rather than by key: C{regexp:} and C{pcre:}
(Postfix's regexp_table(5) and pcre_table(5), with the engines Postfix
uses, L{tmta.tables.engines}), and C{cidr:} (cidr_table(5)).  Each is
read from its source file, in order, first match wins, and re-read when
the file changes.

A line Postfix would skip is skipped, with a warning naming the file and
the line, and the rest of the table stays in force: one bad line never
drops the table.  A file that cannot be read makes every lookup a
temporary failure (L{tmta.tables.TableLookupError}), never an empty table.
"""

from __future__ import annotations

from typing import Callable

from tmta.tables.cidr import CIDRTable
from tmta.tables.regexp import RegexpTable


def opener(kind: str) -> Callable[[str], object]:
    """
    The function that opens a table of C{kind} (C{regexp}, C{pcre},
    C{cidr}) from its name, the file's path.
    """
    if kind == "cidr":
        return CIDRTable
    return lambda path: RegexpTable(path, pcre=kind == "pcre")
