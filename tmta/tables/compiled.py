"""
Compiled tables: C{hash:}, C{btree:}, C{lmdb:} and C{cdb:}.

As with Postfix, the table named in main.cf is a text source file
(C{/etc/postfix/transport}, C{/etc/aliases}) and lookups read a
database built from it by C{tmta map build} (postmap) or
C{tmta-newaliases} (newaliases).  The database is an SQLite file beside
the source -- C{NAME.db} for C{hash:} and C{btree:}, C{NAME.lmdb} and
C{NAME.cdb} for the others -- with one C{(key, value)} table: the
Python standard library has no Berkeley DB, and SQLite gives lookups
that do not load the table into memory, from a file that is replaced
whole by a rename.

A database that is missing, older than its source or not one tmta
built is a lookup error (L{TableLookupError}): mail waits, as it does
in Postfix when a table cannot be read, rather than being routed by a
table the operator has since changed.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from typing import Dict, Optional, Tuple

from zope.interface import implementer

from tmta.common.durable import fsyncName
from tmta.interfaces import ILookupTable, IOwnedTable
from tmta.tables import TableLookupError, fileOwner

SUFFIXES = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}


def databasePath(kind: str, source: str) -> str:
    return source + SUFFIXES[kind]


def build(kind: str, source: str, table: Dict[str, str]) -> str:
    """
    Write C{table} as the database of C{source}: into a temporary file
    beside it, fsync'ed, then renamed over the old database, so that a
    reader sees the old table or the new one and never a part.  The
    database gets the source file's owner and permissions (the local
    agent runs commands from an alias database as its owner).

    @return: the database's path.
    """
    target = databasePath(kind, source)
    temporary = f"{target}.{os.getpid()}.tmp"
    try:
        os.unlink(temporary)
    except FileNotFoundError:
        pass
    try:
        connection = sqlite3.connect(temporary)
        with connection:
            connection.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            connection.executemany("INSERT INTO entries VALUES (?, ?)", table.items())
        connection.close()
        st = os.stat(source)
        os.chmod(temporary, (stat.S_IMODE(st.st_mode) & 0o644) | 0o600)
        if os.geteuid() == 0:
            os.chown(temporary, st.st_uid, st.st_gid)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    fsyncName(target)
    return target


@implementer(ILookupTable, IOwnedTable)
class CompiledTable:
    """
    Lookups in the database built from a source file.  The database is
    opened again whenever it is replaced; each lookup costs a C{stat} of
    the source and of the database.
    """

    def __init__(self, kind: str, source: str) -> None:
        self.kind = kind
        self.source = source
        self.path = databasePath(kind, source)
        self._connection: Optional[sqlite3.Connection] = None
        self._identity: Optional[Tuple[int, int, float]] = None

    def owner(self) -> Optional[int]:
        return fileOwner(self.path, self.source)

    def _open(self) -> sqlite3.Connection:
        spec = f"{self.kind}:{self.source}"
        try:
            db = os.stat(self.path)
        except OSError as e:
            raise TableLookupError(f"{spec}: cannot open {self.path}: {e.strerror} "
                                   f"(build it with tmta map build)")
        try:
            source = os.stat(self.source)
        except FileNotFoundError:
            source = None
        if source is not None and source.st_mtime > db.st_mtime:
            raise TableLookupError(f"{spec}: database {self.path} is older than its source "
                                   f"file; rebuild it with tmta map build")
        identity = (db.st_dev, db.st_ino, db.st_mtime)
        if identity != self._identity or self._connection is None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            try:
                connection = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True,
                                             check_same_thread=False)
                connection.execute("SELECT 1 FROM entries LIMIT 1").fetchall()
            except sqlite3.Error as e:
                raise TableLookupError(f"{spec}: {self.path} is not a database tmta built "
                                       f"({e}); rebuild it with tmta map build")
            self._connection, self._identity = connection, identity
        return self._connection

    def get(self, key: str) -> Optional[str]:
        connection = self._open()
        try:
            row = connection.execute("SELECT value FROM entries WHERE key = ?",
                                     (key.lower(),)).fetchone()
        except sqlite3.Error as e:
            self._identity = None
            raise TableLookupError(f"{self.kind}:{self.source}: {e}")
        return None if row is None else row[0]
