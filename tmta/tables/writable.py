"""
Caches daemons keep in a table they write (verify's
C{address_verify_map}, postscreen's C{postscreen_cache_map}): read
whole at start, kept in memory, and written through to the table's
file off the reactor thread.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Dict, Iterator, Optional, Tuple

from tmta.common.batching import SerialThread
from tmta.tables.compiled import databasePath

#: The table types a cache can be kept in.
WRITABLE_TYPES = ("btree", "hash", "lmdb")



class MemoryStore:
    """
    Records kept in memory only (the table's name is empty): lost when
    the process exits.
    """

    def __init__(self) -> None:
        self.records: Dict[str, str] = {}

    def get(self, key: str) -> Optional[str]:
        return self.records.get(key)

    def put(self, key: str, raw: str) -> None:
        self.records[key] = raw

    def delete(self, key: str) -> None:
        self.records.pop(key, None)

    def items(self) -> Iterator[Tuple[str, str]]:
        return iter(list(self.records.items()))

    def close(self) -> None:
        pass


class SQLiteStore(MemoryStore):
    """
    Records kept in memory and written through to an SQLite file (the
    database of a C{btree:}, C{hash:} or C{lmdb:} table, as tmta builds
    those tables).  Writes go to a thread of their own, in order, so the
    reactor never waits for the disk; a write lost to a crash costs a
    cache entry, never more.
    """

    def __init__(self, path: str, reactor, threadName: str = "tmta-cache") -> None:
        super().__init__()
        self.path = path
        previous = os.umask(0o077)
        try:
            self._connection = sqlite3.connect(path, check_same_thread=False,
                                               isolation_level=None)
        finally:
            os.umask(previous)
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.records = dict(self._connection.execute("SELECT key, value FROM entries"))
        self._thread = SerialThread(reactor, threadName)

    def put(self, key: str, raw: str) -> None:
        super().put(key, raw)
        self._thread.post(lambda: self._connection.execute(
            "INSERT OR REPLACE INTO entries VALUES (?, ?)", (key, raw)))

    def delete(self, key: str) -> None:
        super().delete(key)
        self._thread.post(lambda: self._connection.execute(
            "DELETE FROM entries WHERE key = ?", (key,)))

    def close(self):
        """
        @return: a Deferred firing once the writes asked for are done.
        """
        return self._thread.call(self._connection.close)


def openWritable(spec: str, reactor, threadName: str = "tmta-cache") -> MemoryStore:
    """
    The store for a cache kept in table C{spec}: in memory alone when
    C{spec} is empty.

    @raise ValueError: a table type or path a cache cannot be kept in.
    """
    spec = spec.strip()
    if spec.startswith("proxy:"):
        # Approved at start-up (tmta.config.safety.proxyWriteProblem).
        spec = spec[len("proxy:"):]
    if not spec:
        return MemoryStore()
    kind, _, path = spec.partition(":")
    if kind.lower() not in WRITABLE_TYPES or not path.startswith("/"):
        raise ValueError(f"{spec}: a cache is kept in a {', '.join(WRITABLE_TYPES)} table "
                         "at an absolute path, or in memory (empty)")
    # The database file is named as tmta names those of compiled tables.
    return SQLiteStore(databasePath(kind.lower(), path), reactor, threadName)


__all__ = ["MemoryStore", "SQLiteStore", "WRITABLE_TYPES", "openWritable"]
