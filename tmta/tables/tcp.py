"""
C{tcp:host:port}: lookups asked of a server in Postfix's simple
tcp_table(5) protocol: the request C{get KEY} and the reply C{200
VALUE}, C{500 reason} (not found) or C{400 reason} (try again), each a
line with C{%XX} quoting of white space, C{%} and unprintable
characters.  Postfix calls the protocol unfit for sites whose servers
might be reached by others: it has no authentication.
"""

from __future__ import annotations

from typing import Optional

from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.tables import TableLookupError
from tmta.tables.remote import (
    ConnectionPool,
    SocketConnection,
    connectSocket,
    refuseReactorThread,
    socketHost,
)

__all__ = ["TCPTable", "hexQuote", "hexUnquote"]

#: The longest reply line, as Postfix reads it.
MAX_LINE = 4096


def hexQuote(text: bytes) -> bytes:
    """
    C{%XX} for C{%}, white space and unprintable bytes, as Postfix's
    C{hex_quote}.
    """
    return b"".join(bytes([c]) if 0x20 < c < 0x7F and c != 0x25 else b"%%%02X" % c
                    for c in text)


def hexUnquote(text: bytes) -> bytes:
    """
    @raise ValueError: a C{%} not followed by two hexadecimal digits.
    """
    out = bytearray()
    index = 0
    while index < len(text):
        if text[index:index + 1] == b"%":
            digits = text[index + 1:index + 3]
            if len(digits) != 2:
                raise ValueError("truncated %XX")
            out.append(int(digits, 16))
            index += 3
        else:
            out.append(text[index])
            index += 1
    return bytes(out)



@implementer(IRemoteTable)
class TCPTable:
    def __init__(self, name: str) -> None:
        self.label = f"tcp:{name}"
        self.pool = ConnectionPool(self.label, [socketHost(f"inet:{name}", f"{self.label}: ")],
                                   lambda host: SocketConnection(connectSocket(host)),
                                   lambda e: isinstance(e, OSError), lambda c: c.close(),
                                   retryInterval=1)

    def get(self, key: str) -> Optional[str]:
        refuseReactorThread(self.label)
        request = b"get " + hexQuote(key.encode("utf-8", "surrogateescape")) + b"\n"

        def ask(connection: SocketConnection) -> bytes:
            connection.sock.sendall(request)
            try:
                return connection.reader.until(b"\n", MAX_LINE)
            except ValueError as e:
                raise TableLookupError(f"read TCP map reply from {self.label}: {e}") from None

        line = self.pool.run(ask)
        try:
            if not (line[:3].isdigit() and line[3:4].isspace()):
                raise ValueError()
            value = hexUnquote(line[4:])
        except ValueError:
            raise TableLookupError(f"read TCP map reply from {self.label}: malformed reply: "
                                   f"{line[:100]!r}") from None
        status = line[:1]
        if status == b"2":
            return value.decode("utf-8", "surrogateescape")
        if status == b"5":
            return None
        if status == b"4":
            raise TableLookupError(f"{self.label}: the server asks to try again: "
                                   f"{value.decode('utf-8', 'replace')[:200]}")
        raise TableLookupError(f"read TCP map reply from {self.label}: bad status code: "
                               f"{line[:100]!r}")


def openTCP(name: str) -> TCPTable:
    return TCPTable(name)
