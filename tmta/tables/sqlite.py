"""
C{sqlite:/etc/postfix/file.cf}: lookups in an SQLite database, as
Postfix's sqlite_table(5) describes.  The configuration file names the
database (C{dbpath}) and the C{query}, in which C{%s} is the key, C{%u}
and C{%d} its local part and domain, C{%[1-9]} the domain's labels from
the right, and C{%%} a percent sign; the key goes to SQLite as a bound
parameter, never into the SQL text.  C{result_format} shapes each row's
first column (C{%s}, C{%u}, C{%d}, C{%%}); several rows are joined with
commas.  C{domain} limits lookups to keys in those domains, and
C{expansion_limit} bounds the rows.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Dict, List, Optional

from zope.interface import implementer

from tmta.interfaces import ILookupTable
from tmta.tables import TableLookupError


class SQLiteConfigError(ValueError):
    pass


def readConfig(path: str) -> Dict[str, str]:
    settings: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            name, equals, value = stripped.partition("=")
            if not equals:
                raise SQLiteConfigError(f"{path}, line {number}: expected name = value")
            settings[name.strip()] = value.strip()
    if "dbpath" not in settings:
        raise SQLiteConfigError(f"{path}: no dbpath")
    if "query" not in settings:
        raise SQLiteConfigError(f"{path}: no query (the older table/select_field forms "
                                "are not supported)")
    return settings


def _parts(key: str):
    local, at, domain = key.rpartition("@")
    if not at:
        return key, ""
    return local, domain


@implementer(ILookupTable)
class SQLiteTable:
    def __init__(self, configPath: str) -> None:
        settings = readConfig(configPath)
        self.configPath = configPath
        self.dbpath = settings["dbpath"]
        self.query = settings["query"]
        self.resultFormat = settings.get("result_format", "%s")
        self.domains = {d.strip().lower() for d in re.split(r"[\s,]+",
                                                            settings.get("domain", "")) if d}
        self.expansionLimit = int(settings.get("expansion_limit", "0") or 0)
        self._connection: Optional[sqlite3.Connection] = None

    def _sql(self, key: str):
        """
        The query with each expansion replaced by a parameter, and the
        parameters, or C{None} when an expansion has nothing to give
        (Postfix then makes no query).
        """
        local, domain = _parts(key)
        labels = domain.split(".") if domain else []
        params: List[str] = []

        def expand(match: "re.Match") -> str:
            code = match.group(1)
            if code == "%":
                return "%"
            if code == "s":
                value = key
            elif code == "u":
                value = local
            elif code == "d":
                value = domain
            else:
                index = int(code)
                value = labels[-index] if index <= len(labels) else ""
            if code != "s" and not value:
                raise LookupError()
            params.append(value)
            return "?"

        # Postfix's examples quote the expansions ('%s'): a bound
        # parameter takes the quotes' place.
        query = re.sub(r"'%([sud1-9])'", r"%\1", self.query)
        try:
            return re.sub(r"%([%sud1-9])", expand, query), params
        except LookupError:
            return None

    def get(self, key: str) -> Optional[str]:
        local, domain = _parts(key)
        if self.domains and domain.lower() not in self.domains:
            return None
        built = self._sql(key)
        if built is None:
            return None
        sql, params = built
        if self._connection is None:
            self._connection = sqlite3.connect(f"file:{self.dbpath}?mode=ro", uri=True,
                                               check_same_thread=False)
        rows = self._connection.execute(sql, params).fetchall()
        if not rows:
            return None
        if self.expansionLimit and len(rows) > self.expansionLimit:
            # Postfix fails the lookup (a temporary error), not "not found".
            raise TableLookupError(f"sqlite:{self.configPath}: {len(rows)} results exceed "
                                   f"expansion_limit {self.expansionLimit}")
        values = []
        for row in rows:
            value = "" if row[0] is None else str(row[0])
            vlocal, vdomain = _parts(value)
            values.append(re.sub(r"%([%sud])", lambda m: {"%": "%", "s": value, "u": vlocal,
                                                          "d": vdomain}[m.group(1)],
                                 self.resultFormat))
        return ",".join(values)
