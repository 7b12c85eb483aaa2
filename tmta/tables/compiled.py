"""
Compiled tables: C{hash:}, C{btree:}, C{lmdb:} and C{cdb:}.

As with Postfix, the table named in main.cf is a text source file
(C{/etc/postfix/transport}, C{/etc/aliases}) and lookups read a
database built from it by C{tmta map build} (postmap) or
C{tmta-newaliases} (newaliases), beside the source, in the files
Postfix's C{postmap} writes (keys lower-cased, keys and values ending
in a NUL byte), so that Postfix reads what tmta builds and tmta what
Postfix built: C{NAME.lmdb} and C{NAME.cdb} are LMDB and CDB files
(through the C{lmdb} and C{pure-cdb} packages), and C{NAME.db} for
C{hash:} and C{btree:} is a Berkeley DB file when the C{berkeleydb}
binding is installed (it is built against the system's libdb, so it is
not a requirement: C{pip install berkeleydb} after Debian's
C{libdb5.3-dev}).  Without it, tmta writes C{NAME.db} as an SQLite file
with one C{(key, value)} table, and reads either kind, telling them
apart by their first bytes.

A database that is missing, older than its source or not one of its
kind is a lookup error (L{TableLookupError}): mail waits, as it does in
Postfix when a table cannot be read, rather than being routed by a
table the operator has since changed.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from typing import Any, Callable, Dict, Optional, Tuple

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
        FORMATS[kind].write(temporary, table)
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


class DatabaseError(Exception):
    """
    A database file is not one of the kind it should be.
    """


class _SQLiteFormat:
    """
    tmta's C{hash:} and C{btree:} files: SQLite, one C{entries} table.
    """

    @staticmethod
    def write(path: str, table: Dict[str, str]) -> None:
        connection = sqlite3.connect(path)
        with connection:
            connection.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            connection.executemany("INSERT INTO entries VALUES (?, ?)", table.items())
        connection.close()

    class Reader:
        def __init__(self, path: str) -> None:
            try:
                self.connection = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True,
                                                  check_same_thread=False)
                self.connection.execute("SELECT 1 FROM entries LIMIT 1").fetchall()
            except sqlite3.Error as e:
                raise DatabaseError(str(e))

        def get(self, key: str) -> Optional[str]:
            try:
                row = self.connection.execute("SELECT value FROM entries WHERE key = ?",
                                              (key,)).fetchone()
            except sqlite3.Error as e:
                raise DatabaseError(str(e))
            return None if row is None else row[0]

        def close(self) -> None:
            self.connection.close()


def _withNul(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") + b"\0"


def _lookup(get: Callable[[bytes], Optional[bytes]], key: str) -> Optional[str]:
    """
    Look C{key} up as Postfix does: with its trailing NUL, as postmap
    writes keys, then without, as some other programs do; the value
    without its NUL.
    """
    value = get(_withNul(key))
    if value is None:
        value = get(key.encode("utf-8", "surrogateescape"))
    if value is None:
        return None
    return (value[:-1] if value.endswith(b"\0") else value).decode("utf-8", "surrogateescape")


class _LMDBFormat:
    """
    C{lmdb:} files as Postfix's C{postmap} writes them (one file, no
    subdirectory; keys and values with a trailing NUL).
    """

    @staticmethod
    def write(path: str, table: Dict[str, str]) -> None:
        import lmdb

        size = sum(len(k) + len(v) + 64 for k, v in table.items())
        environment = lmdb.open(path, subdir=False, lock=False,
                                map_size=max(16 << 20, size * 4))
        try:
            with environment.begin(write=True) as transaction:
                for key, value in table.items():
                    transaction.put(_withNul(key), _withNul(value))
            environment.sync(True)
        finally:
            environment.close()

    class Reader:
        def __init__(self, path: str) -> None:
            import lmdb

            try:
                # Without the lock file: tmta replaces its databases whole,
                # and a reader keeps the file it opened.
                self.environment = lmdb.open(path, subdir=False, readonly=True, lock=False,
                                             map_size=max(16 << 20, os.path.getsize(path)))
            except lmdb.Error as e:
                raise DatabaseError(str(e))

        def get(self, key: str) -> Optional[str]:
            import lmdb

            try:
                with self.environment.begin() as transaction:
                    value = _lookup(transaction.get, key)
            except lmdb.Error as e:
                raise DatabaseError(str(e))
            return value

        def close(self) -> None:
            self.environment.close()


class _CDBFormat:
    """
    C{cdb:} files: D. J. Bernstein's constant database, as Postfix's
    C{postmap} writes it (keys and values with a trailing NUL).
    """

    @staticmethod
    def write(path: str, table: Dict[str, str]) -> None:
        import cdblib

        with open(path, "wb") as f:
            writer = cdblib.Writer(f)
            for key, value in table.items():
                writer.put(_withNul(key), _withNul(value))
            writer.finalize()

    class Reader:
        def __init__(self, path: str) -> None:
            import mmap

            import cdblib

            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < 2048:
                    raise DatabaseError("too short for a CDB file")
                self.map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            try:
                self.reader = cdblib.Reader(self.map)
            except Exception as e:
                self.map.close()
                raise DatabaseError(f"not a CDB file ({e})")

        def get(self, key: str) -> Optional[str]:
            try:
                value = _lookup(self.reader.get, key)
            except Exception as e:
                raise DatabaseError(f"not a CDB file ({e})")
            return value

        def close(self) -> None:
            self.map.close()


def berkeleyDB() -> Any:
    """
    The Berkeley DB binding's C{db} module, or C{None} where the
    C{berkeleydb} package is not installed.
    """
    try:
        from berkeleydb import db
    except ImportError:
        return None
    return db


class _BerkeleyFormat:
    """
    C{hash:} and C{btree:} files as Postfix's C{postmap} writes them
    with Berkeley DB; SQLite where the binding is missing.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _type(self, db: Any) -> int:
        return db.DB_HASH if self.kind == "hash" else db.DB_BTREE

    def write(self, path: str, table: Dict[str, str]) -> None:
        db = berkeleyDB()
        if db is None:
            _SQLiteFormat.write(path, table)
            return
        database = db.DB()
        database.open(path, dbtype=self._type(db), flags=db.DB_CREATE)
        try:
            for key, value in table.items():
                database.put(_withNul(key), _withNul(value))
            database.sync()
        finally:
            database.close()

    def Reader(self, path: str) -> Any:
        with open(path, "rb") as f:
            head = f.read(16)
        if head.startswith(b"SQLite format 3\0"):
            return _SQLiteFormat.Reader(path)
        db = berkeleyDB()
        if db is None:
            raise DatabaseError("a Berkeley DB file, and the berkeleydb package is not "
                                "installed (pip install berkeleydb)")
        return _BerkeleyReader(db, path, self._type(db))


class _BerkeleyReader:
    def __init__(self, db: Any, path: str, dbtype: int) -> None:
        self.db = db
        self.database = db.DB()
        try:
            self.database.open(path, dbtype=dbtype, flags=db.DB_RDONLY)
        except db.DBError as e:
            raise DatabaseError(f"not a Berkeley DB file of this type ({e})")

    def get(self, key: str) -> Optional[str]:
        try:
            value = _lookup(self.database.get, key)
        except self.db.DBError as e:
            raise DatabaseError(str(e))
        return value

    def close(self) -> None:
        self.database.close()


def _preload(kind: str) -> None:
    if kind in ("hash", "btree"):
        berkeleyDB()
    elif kind == "lmdb":
        import lmdb  # noqa: F401
    elif kind == "cdb":
        import mmap  # noqa: F401

        import cdblib  # noqa: F401


#: Each compiled table type's file format.
FORMATS: Dict[str, Any] = {"hash": _BerkeleyFormat("hash"), "btree": _BerkeleyFormat("btree"),
                           "lmdb": _LMDBFormat, "cdb": _CDBFormat}


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
        # The binding is imported now, while the process that opens the
        # table may still read what it imports (a worker gives up root
        # after it has opened its tables).
        _preload(kind)
        self._reader: Any = None
        self._identity: Optional[Tuple[int, int, float]] = None

    def owner(self) -> Optional[int]:
        return fileOwner(self.path, self.source)

    def _open(self):
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
        if identity != self._identity or self._reader is None:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            try:
                reader = FORMATS[self.kind].Reader(self.path)
            except (DatabaseError, OSError) as e:
                raise TableLookupError(f"{spec}: {self.path} is not a database tmta built "
                                       f"({e}); rebuild it with tmta map build")
            self._reader, self._identity = reader, identity
        return self._reader

    def get(self, key: str) -> Optional[str]:
        reader = self._open()
        try:
            return reader.get(key.lower())
        except DatabaseError as e:
            self._identity = None
            raise TableLookupError(f"{self.kind}:{self.source}: {e}")
