"""
C{mysql:/etc/postfix/file.cf}: lookups in MySQL or MariaDB, as
Postfix's mysql_table(5) describes, through PyMySQL (C{pip install
'tmta[mysql]'}).

The configuration file gives C{hosts} (C{host}, C{host:port},
C{inet:host:port}, C{unix:/path/to/socket}), C{user}, C{password},
C{dbname}, C{charset}, C{option_file} and C{option_group}, TLS to the
server (C{tls_cert_file}, C{tls_key_file}, C{tls_CAfile},
C{tls_CApath}, C{tls_ciphers}, C{tls_verify_cert}),
C{require_result_set}, C{idle_interval} and C{retry_interval}, and the
settings every SQL table has (L{tmta.tables.sql}).  The key goes to the
server as a parameter the driver escapes, never as text of the query.
"""

from __future__ import annotations

import re
import ssl
from typing import Any, Dict, Optional

from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.tables import TableLookupError
from tmta.tables.remote import (
    CONNECT_TIMEOUT,
    LOOKUP_TIMEOUT,
    ConnectionPool,
    Host,
    refuseReactorThread,
    requireDriver,
)
from tmta.tables.sql import MYSQL, SQLConfigError, SQLLookup, settingBoolean, settingNumber

__all__ = ["MySQLTable"]

#: MySQL's error numbers that mean the connection or the server failed,
#: not the query (client errors are 2000 and above).
_CONNECTION_ERRORS = frozenset({1040, 1045, 1053, 1152, 1158, 1159, 1160, 1161, 1927, 4031})


def parseHost(text: str) -> Host:
    """
    A C{hosts} item, as Postfix's mysql client reads one.
    """
    if text.startswith("unix:"):
        return Host(text, local=True, socket=text[5:])
    name = text[5:] if text.startswith("inet:") else text
    host, colon, port = name.rpartition(":")
    if not colon or not host:
        host, port = name, ""
    try:
        number = int(port) if port else 3306
    except ValueError:
        raise SQLConfigError(f"bad port in hosts item {text!r}") from None
    return Host(text, local=False, host=host.strip("[]"), port=number)


def _close(connection: Any) -> None:
    connection.close()


@implementer(IRemoteTable)
class MySQLTable:
    def __init__(self, configPath: str) -> None:
        self.pymysql = requireDriver("pymysql", "mysql", "mysql")
        self.lookup = SQLLookup("mysql", configPath, MYSQL)
        settings = self.lookup.settings
        where = f"{configPath}: "
        if not settings.get("dbname"):
            raise SQLConfigError(f"{configPath}: no dbname")
        self.requireResultSet = settingBoolean(settings, "require_result_set", True, where)
        self.connectArguments: Dict[str, Any] = {
            "user": settings.get("user", "") or None,
            "password": settings.get("password", ""),
            "database": settings["dbname"],
            "charset": settings.get("charset", "") or "utf8mb4",
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": int(LOOKUP_TIMEOUT),
            "write_timeout": int(LOOKUP_TIMEOUT),
            "autocommit": True,
            # Every value as the text the server sends, as Postfix reads it.
            "conv": {},
        }
        if settings.get("option_file"):
            self.connectArguments["read_default_file"] = settings["option_file"]
            self.connectArguments["read_default_group"] = settings.get("option_group",
                                                                       "client") or "client"
        self.tls = self._tls(settings, where)
        hosts = [parseHost(h) for h in re.split(r"[\s,]+", settings.get("hosts", "")) if h]
        self.pool = ConnectionPool(
            self.lookup.label, hosts or [parseHost("localhost")], self._connect,
            self._isConnectionError, _close,
            retryInterval=settingNumber(settings, "retry_interval", 60, where),
            idleInterval=settingNumber(settings, "idle_interval", 60, where))

    @staticmethod
    def _tls(settings: Dict[str, str], where: str) -> Optional[ssl.SSLContext]:
        """
        The TLS context the C{tls_*} settings ask for, or C{None} when
        none is set.
        """
        names = ("tls_cert_file", "tls_key_file", "tls_CAfile", "tls_CApath", "tls_ciphers",
                 "tls_verify_cert")
        if not any(settings.get(n) for n in names):
            return None
        context = ssl.create_default_context(cafile=settings.get("tls_CAfile") or None,
                                             capath=settings.get("tls_CApath") or None)
        verify = settingBoolean(settings, "tls_verify_cert", None, where)
        if verify is False or (verify is None and not (settings.get("tls_CAfile")
                                                       or settings.get("tls_CApath"))):
            # As the MySQL client: without a CA or with verification off,
            # the connection is encrypted but the server not checked.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if settings.get("tls_cert_file"):
            context.load_cert_chain(settings["tls_cert_file"],
                                    settings.get("tls_key_file") or None)
        if settings.get("tls_ciphers"):
            context.set_ciphers(settings["tls_ciphers"])
        return context

    def _connect(self, host: Host):
        arguments = dict(self.connectArguments)
        if "socket" in host.details:
            arguments["unix_socket"] = host.details["socket"]
        else:
            arguments["host"], arguments["port"] = host.details["host"], host.details["port"]
        if self.tls is not None:
            arguments["ssl"] = self.tls
        return self.pymysql.connect(**arguments)

    def _isConnectionError(self, error: BaseException) -> bool:
        err = self.pymysql.err
        if isinstance(error, err.InterfaceError):
            return True
        if isinstance(error, err.OperationalError) and error.args:
            code = error.args[0]
            return isinstance(code, int) and (code >= 2000 or code in _CONNECTION_ERRORS)
        return isinstance(error, OSError)

    def get(self, key: str) -> Optional[str]:
        refuseReactorThread(self.lookup.label)
        key = key.lower()
        built = self.lookup.statement(key)
        if built is None:
            return None
        sql, params = built

        def query(connection):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                if cursor.description is None:
                    if self.requireResultSet:
                        raise TableLookupError(f"{self.lookup.label}: query returned no "
                                               "result set")
                    return []
                return cursor.fetchall()

        rows = self.pool.run(query)
        return self.lookup.value(key, rows)

    def close(self) -> None:
        self.pool.closeAll()


def openMySQL(name: str) -> MySQLTable:
    try:
        return MySQLTable(name)
    except (OSError, SQLConfigError, ssl.SSLError) as e:
        raise ValueError(str(e)) from None
