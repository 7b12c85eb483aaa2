"""
C{socketmap:inet:host:port:name} and C{socketmap:unix:/path:name}:
lookups asked of a server in Sendmail's socketmap protocol, as
Postfix's socketmap_table(5) describes: the request C{name key} and
the reply C{OK value}, C{NOTFOUND }, or C{TEMP}, C{TIMEOUT} or C{PERM}
with a reason, each a netstring.  A connection is kept and reused; one
the server closed is made again once before the lookup fails.
"""

from __future__ import annotations

from typing import Optional

from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.logging import Logger
from tmta.tables import TableLookupError
from tmta.tables.remote import (
    ConnectionPool,
    LineReader,
    SocketConnection,
    connectSocket,
    refuseReactorThread,
    socketHost,
)

__all__ = ["SocketmapTable", "MAX_REPLY"]

log = Logger()

#: The longest reply read, as Postfix's C{socketmap_max_reply_size}.
MAX_REPLY = 100000


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def readNetstring(reader: LineReader, limit: int = MAX_REPLY) -> bytes:
    """
    @raise ValueError: a malformed or too long netstring.
    """
    length = reader.until(b":", 10)
    if not length.isdigit():
        raise ValueError(f"malformed netstring length {length[:20]!r}")
    if int(length) > limit:
        raise ValueError(f"reply of {int(length)} bytes exceeds {limit}")
    data = reader.exactly(int(length) + 1)
    if data[-1:] != b",":
        raise ValueError("netstring not terminated by ','")
    return data[:-1]



@implementer(IRemoteTable)
class SocketmapTable:
    def __init__(self, name: str) -> None:
        server, colon, self.mapName = name.rpartition(":")
        if not colon or not self.mapName or not server:
            raise ValueError(f"socketmap:{name}: expected socketmap:inet:host:port:name or "
                             "socketmap:unix:/path:name")
        self.label = f"socketmap:{name}"
        self.pool = ConnectionPool(self.label, [socketHost(server, f"{self.label}: ")],
                                   lambda host: SocketConnection(connectSocket(host)),
                                   lambda e: isinstance(e, OSError), lambda c: c.close(),
                                   retryInterval=1)

    def get(self, key: str) -> Optional[str]:
        refuseReactorThread(self.label)
        request = netstring(f"{self.mapName} {key}".encode("utf-8", "surrogateescape"))

        def ask(connection: SocketConnection) -> bytes:
            connection.sock.sendall(request)
            try:
                return readNetstring(connection.reader)
            except ValueError as e:
                raise TableLookupError(f"{self.label}: {e}") from None

        reply = self.pool.run(ask).decode("utf-8", "surrogateescape")
        status, _, payload = reply.partition(" ")
        if status == "OK":
            return payload
        if status == "NOTFOUND":
            return None
        kind = {"TEMP": "temporary", "TIMEOUT": "timeout", "PERM": "permanent"}.get(
            status, "unknown")
        reason = payload.strip()[:200]
        log.warn("{label} socketmap server {kind} error{colon}{reason}", label=self.label,
                 kind=kind, colon=": " if reason else "", reason=reason)
        raise TableLookupError(f"{self.label}: socketmap server {kind} error"
                               + (f": {reason}" if reason else ""))


def openSocketmap(name: str) -> SocketmapTable:
    return SocketmapTable(name)
