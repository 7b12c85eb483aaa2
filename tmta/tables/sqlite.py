"""
C{sqlite:/etc/postfix/file.cf}: lookups in an SQLite database, as
Postfix's sqlite_table(5) describes: C{dbpath} names the database, and
the C{query}, C{result_format}, C{domain} and C{expansion_limit}
settings mean what they mean for every SQL table (L{tmta.tables.sql}).
The database is local and opened read-only, so lookups are made where
they are asked for.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Optional

from zope.interface import implementer

from tmta.interfaces import ILookupTable
from tmta.tables import TableLookupError
from tmta.tables.sql import SQLITE, SQLConfigError, SQLLookup

__all__ = ["SQLiteTable", "SQLiteConfigError"]

#: The name this error had before the SQL tables shared their parser.
SQLiteConfigError = SQLConfigError


@implementer(ILookupTable)
class SQLiteTable:
    def __init__(self, configPath: str) -> None:
        self.lookup = SQLLookup("sqlite", configPath, SQLITE)
        self.configPath = configPath
        self.dbpath = self.lookup.settings.get("dbpath", "")
        if not self.dbpath:
            raise SQLConfigError(f"{configPath}: no dbpath")
        # A connection per thread: lookups may come from a lookup thread.
        self._local = threading.local()

    def _connection(self) -> sqlite3.Connection:
        connection: Optional[sqlite3.Connection] = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{self.dbpath}?mode=ro", uri=True)
            self._local.connection = connection
        return connection

    def get(self, key: str) -> Optional[str]:
        key = key.lower()
        built = self.lookup.statement(key)
        if built is None:
            return None
        sql, params = built
        try:
            rows = self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            self._local.connection = None
            raise TableLookupError(f"{self.lookup.label}: {e}") from None
        return self.lookup.value(key, rows)
