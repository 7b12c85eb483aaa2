"""
C{pgsql:/etc/postfix/file.cf}: lookups in PostgreSQL, as Postfix's
pgsql_table(5) describes, through psycopg (C{pip install
'tmta[pgsql]'}).

The configuration file gives C{hosts} (C{host}, C{host:port},
C{inet:host:port}, C{unix:/socket/directory}, or a
C{postgresql://...} connection URI, which is how TLS to the server is
asked for: C{?sslmode=verify-full&sslrootcert=...}), C{user},
C{password}, C{dbname}, and the settings every SQL table has
(L{tmta.tables.sql}); and, as for C{mysql:} (Postfix's pgsql client
waits a fixed minute), C{retry_interval} and C{idle_interval}.  The key
is a bound parameter; values are the
text PostgreSQL sends, as Postfix reads them.  Client encoding is
UTF-8 (Postfix 3.8's C{encoding} default).
"""

from __future__ import annotations

import re
from typing import Any, Optional

from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.tables.remote import (
    CONNECT_TIMEOUT,
    LOOKUP_TIMEOUT,
    ConnectionPool,
    Host,
    refuseReactorThread,
    requireDriver,
)
from tmta.tables.sql import PGSQL, SQLConfigError, SQLLookup, settingNumber

__all__ = ["PostgreSQLTable"]


def parseHost(text: str) -> Host:
    """
    A C{hosts} item, as Postfix's pgsql client reads one.
    """
    if text.startswith("postgresql:"):
        return Host(text, local=False, conninfo=text)
    name = text[5:] if text.startswith(("unix:", "inet:")) else text
    if not name or name.startswith("/"):
        return Host(text, local=True, host=name or None, port=None)
    host, colon, port = name.rpartition(":")
    if not colon or not host:
        host, port = name, ""
    return Host(text, local=False, host=host.strip("[]"), port=port or None)


def _close(connection: Any) -> None:
    connection.close()


@implementer(IRemoteTable)
class PostgreSQLTable:
    def __init__(self, configPath: str) -> None:
        self.psycopg = requireDriver("psycopg", "pgsql", "pgsql")
        self.lookup = SQLLookup("pgsql", configPath, PGSQL)
        settings = self.lookup.settings
        if not settings.get("dbname") and not any(
                h.startswith("postgresql:") for h in re.split(r"[\s,]+", settings.get("hosts",
                                                                                   ""))):
            raise SQLConfigError(f"{configPath}: no dbname")
        hosts = [parseHost(h) for h in re.split(r"[\s,]+", settings.get("hosts", "")) if h]
        self.user = settings.get("user", "")
        self.password = settings.get("password", "")
        self.dbname = settings.get("dbname", "")
        where = f"{configPath}: "
        self.pool = ConnectionPool(self.lookup.label, hosts or [parseHost("localhost")],
                                   self._connect, self._isConnectionError, _close,
                                   retryInterval=settingNumber(settings, "retry_interval", 60,
                                                               where),
                                   idleInterval=settingNumber(settings, "idle_interval", 60,
                                                              where))

    def _connect(self, host: Host):
        options = f"-c statement_timeout={int(LOOKUP_TIMEOUT * 1000)}"
        if "conninfo" in host.details:
            return self.psycopg.connect(host.details["conninfo"], autocommit=True,
                                        connect_timeout=CONNECT_TIMEOUT,
                                        client_encoding="UTF8", options=options)
        settings = {"host": host.details["host"], "port": host.details["port"],
                    "dbname": self.dbname, "user": self.user or None,
                    "password": self.password or None}
        return self.psycopg.connect(autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                    client_encoding="UTF8", options=options,
                                    **{k: v for k, v in settings.items() if v})

    def _isConnectionError(self, error: BaseException) -> bool:
        return isinstance(error, (self.psycopg.OperationalError, self.psycopg.InterfaceError))

    def get(self, key: str) -> Optional[str]:
        refuseReactorThread(self.lookup.label)
        key = key.lower()
        built = self.lookup.statement(key)
        if built is None:
            return None
        sql, params = built

        def query(connection):
            cursor = connection.execute(sql, params)
            result = cursor.pgresult
            if result is None:
                return []
            return [[result.get_value(row, column) for column in range(result.nfields)]
                    for row in range(result.ntuples)]

        rows = self.pool.run(query)
        return self.lookup.value(key, rows)

    def close(self) -> None:
        self.pool.closeAll()


def openPostgreSQL(name: str) -> PostgreSQLTable:
    try:
        return PostgreSQLTable(name)
    except (OSError, SQLConfigError) as e:
        raise ValueError(str(e)) from None

