"""
C{memcache:/etc/postfix/file.cf}: lookups in a memcached server, as
Postfix's memcache_table(5) describes: C{memcache} names the server
(C{inet:host:port}, the default C{inet:localhost:11211}, or
C{unix:/path}), C{key_format} shapes the key (C{%s}, C{%u}, C{%d},
C{%1}...), C{domain} limits the keys, C{timeout}, C{max_try},
C{retry_pause}, C{line_size_limit} and C{data_size_limit} bound the
exchange, and C{backup} names a table asked when memcached has no
answer, whose answer is then stored in memcached for C{ttl} seconds
(with C{flags}).  A key that would hold white space is not looked up.
"""

from __future__ import annotations

import time
from typing import Optional

from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.logging import Logger
from tmta.tables import TableError, TableLookupError, openTable
from tmta.tables.remote import (
    ConnectionPool,
    SocketConnection,
    connectSocket,
    refuseReactorThread,
    socketHost,
)
from tmta.tables.sql import (
    DomainFilter,
    KeyTemplate,
    SQLConfigError,
    readTableConfig,
    settingNumber,
)

__all__ = ["MemcacheTable"]

log = Logger()



class _ProtocolError(Exception):
    """
    A reply memcached should not have sent: the connection is dropped.
    """


@implementer(IRemoteTable)
class MemcacheTable:
    def __init__(self, configPath: str) -> None:
        where = f"{configPath}: "
        settings = readTableConfig(configPath)
        self.label = f"memcache:{configPath}"
        self.domains = DomainFilter(settings.get("domain", ""), where)
        keyFormat = settings.get("key_format", "%s") or "%s"
        self.keyFormat = None if keyFormat == "%s" else KeyTemplate(keyFormat, where)
        self.ttl = settingNumber(settings, "ttl", 3600, where)
        self.flags = settingNumber(settings, "flags", 0, where)
        self.lineLimit = settingNumber(settings, "line_size_limit", 1024, where)
        self.dataLimit = settingNumber(settings, "data_size_limit", 10240, where)
        self.maxTry = max(1, settingNumber(settings, "max_try", 2, where))
        self.retryPause = settingNumber(settings, "retry_pause", 1, where)
        self.timeout = settingNumber(settings, "timeout", 2, where)
        self.backup = None
        if settings.get("backup"):
            try:
                self.backup = openTable(settings["backup"])
            except TableError as e:
                raise SQLConfigError(f"{where}backup: {e}") from None
        server = socketHost(settings.get("memcache", "") or "inet:localhost:11211", where)
        self.pool = ConnectionPool(self.label, [server], self._connect,
                                   lambda e: isinstance(e, (OSError, _ProtocolError)),
                                   lambda c: c.close(), retryInterval=self.retryPause)

    def _connect(self, host) -> SocketConnection:
        connection = SocketConnection(connectSocket(host, self.timeout))
        connection.sock.settimeout(self.timeout)
        return connection

    def _key(self, key: str) -> Optional[str]:
        """
        The memcached key for C{key}, or C{None} when it is not looked
        up (outside C{domain}, an empty expansion, white space).
        """
        if not key or (self.domains and not self.domains.admits(key)):
            return None
        if self.keyFormat is not None:
            if not self.keyFormat.accepts(key):
                return None
            key = self.keyFormat.expand(key)
        if not key or any(c.isspace() for c in key if c.isascii()):
            return None
        return key

    def _ask(self, work):
        """
        Run C{work} on a connection, as many times as C{max_try} allows
        when memcached cannot be reached.
        """
        for attempt in range(self.maxTry):
            try:
                return self.pool.run(work)
            except TableLookupError:
                if attempt + 1 == self.maxTry:
                    raise
                for host in self.pool.hosts:
                    host.downUntil = 0
                time.sleep(self.retryPause)
        raise AssertionError("unreachable")

    def _get(self, mkey: bytes) -> Optional[str]:
        def get(connection: SocketConnection) -> Optional[bytes]:
            connection.sock.sendall(b"get " + mkey + b"\r\n")
            line = self._line(connection)
            if line == b"END":
                return None
            words = line.split()
            if len(words) != 4 or words[0] != b"VALUE" or not words[3].isdigit():
                raise _ProtocolError(f"unexpected reply {line[:100]!r}")
            size = int(words[3])
            if size > self.dataLimit:
                raise _ProtocolError(f"data of {size} bytes exceeds data_size_limit")
            data = connection.reader.exactly(size + 2)[:-2]
            if self._line(connection) != b"END":
                raise _ProtocolError("no END after the value")
            return data

        found = self._ask(get)
        return None if found is None else found.decode("utf-8", "surrogateescape")

    def _set(self, mkey: bytes, value: str) -> None:
        data = value.encode("utf-8", "surrogateescape")

        def set_(connection: SocketConnection) -> None:
            connection.sock.sendall(b"set %s %d %d %d\r\n%s\r\n" % (
                mkey, self.flags, self.ttl, len(data), data))
            reply = self._line(connection)
            if reply != b"STORED":
                log.warn("{label}: cannot store {key}: {reply}", label=self.label,
                         key=mkey.decode("utf-8", "replace"),
                         reply=reply.decode("utf-8", "replace"))

        try:
            self._ask(set_)
        except TableLookupError as e:
            log.warn("{error}", error=str(e))

    def _line(self, connection: SocketConnection) -> bytes:
        try:
            return connection.reader.until(b"\r\n", self.lineLimit)
        except ValueError as e:
            raise _ProtocolError(str(e)) from None

    def get(self, key: str) -> Optional[str]:
        refuseReactorThread(self.label)
        mkey = self._key(key)
        if mkey is None:
            return None
        encoded = mkey.encode("utf-8", "surrogateescape")
        failure: Optional[TableLookupError] = None
        try:
            value = self._get(encoded)
        except TableLookupError as e:
            failure, value = e, None
        if value is not None or self.backup is None:
            if failure is not None:
                raise failure
            return value
        # memcached has no answer (or could not be asked): the backup
        # decides, and what it finds is kept in memcached.
        value = self.backup.get(key)  # type: ignore[attr-defined]
        if value is not None and failure is None:
            self._set(encoded, value)
        return value


def openMemcache(name: str) -> MemcacheTable:
    try:
        return MemcacheTable(name)
    except (OSError, SQLConfigError) as e:
        raise ValueError(str(e)) from None
