"""
HAProxy's PROXY protocol (versions 1 and 2), server side, as Postfix's
C{smtpd_upstream_proxy_protocol = haproxy} and
C{postscreen_upstream_proxy_protocol = haproxy} read it: a load
balancer in front of smtpd or postscreen opens each connection with a
header naming the client's and the server's addresses, and those are
the addresses the session is about (restrictions, logging, anvil).

Twisted's own support (C{twisted.protocols.haproxy}) starts the wrapped
protocol before the header has been read, so an SMTP server would greet
and check the proxy rather than the client; and it reads past the
header.  Here the header is read as Postfix reads it -- peeked at once
the connection is readable, parsed whole, then exactly its bytes taken
off the socket -- so that what the client sends next (an early talker's
pipelined commands, which postscreen must see) stays in the socket.

The module also holds the record by which postscreen tells smtpd, with
the connection it hands over, the addresses a header gave.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Optional, Tuple

#: The most a header may take (Postfix's limit).
HEADER_LIMIT = 536

_V1_PREFIX = b"PROXY "
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: A host and port.
Endpoint = Tuple[str, int]


class ProxyHeaderError(ValueError):
    """
    What a connection began with is no PROXY header tmta can use.
    """


def parseHeader(data: bytes) -> Tuple[int, Optional[Tuple[Endpoint, Endpoint]]]:
    """
    Parse the PROXY header at the start of C{data}, which must hold all
    of it (a proxy sends it in one piece, before anything else).

    @return: how many bytes the header takes, and the client's and the
        server's C{(address, port)} -- or C{None} for a connection the
        proxy made for itself (v1 C{UNKNOWN}, v2 C{LOCAL} or an
        unspecified family), which is then about the proxy's own
        addresses.
    @raise ProxyHeaderError: a header that is incomplete, malformed,
        or for a protocol other than TCP over IPv4 or IPv6.
    """
    if data[:1] == b"\r":
        return _parseV2(data)
    if data.startswith(_V1_PREFIX) or _V1_PREFIX.startswith(data):
        return _parseV1(data)
    raise ProxyHeaderError("not a PROXY protocol header")


def _endpoint(address: str, port: str, version: int) -> Endpoint:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ProxyHeaderError(f"bad address {address!r}") from None
    if parsed.version != version:
        raise ProxyHeaderError(f"address {address} is not IPv{version}")
    if not port.isdigit() or int(port) > 65535 or (len(port) > 1 and port[0] == "0"):
        raise ProxyHeaderError(f"bad port {port!r}")
    return str(parsed), int(port)


def _parseV1(data: bytes) -> Tuple[int, Optional[Tuple[Endpoint, Endpoint]]]:
    end = data.find(b"\r\n", 0, 108)
    if end < 0:
        raise ProxyHeaderError("incomplete or overlong version 1 header")
    try:
        words = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("version 1 header is not ASCII") from None
    length = end + 2
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return length, None
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("bad version 1 header")
    version = 4 if words[1] == "TCP4" else 6
    return length, (_endpoint(words[2], words[4], version),
                    _endpoint(words[3], words[5], version))


def _parseV2(data: bytes) -> Tuple[int, Optional[Tuple[Endpoint, Endpoint]]]:
    if len(data) < 16 or not data.startswith(_V2_SIGNATURE):
        raise ProxyHeaderError("incomplete version 2 header")
    versionCommand, family, size = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if versionCommand >> 4 != 2:
        raise ProxyHeaderError(f"unknown version {versionCommand >> 4}")
    command = versionCommand & 0x0F
    length = 16 + size
    if length > HEADER_LIMIT or len(data) < length:
        raise ProxyHeaderError("incomplete or overlong version 2 header")
    if command == 0 or family == 0x00:
        return length, None
    if command != 1:
        raise ProxyHeaderError(f"unknown command {command}")
    body = data[16:length]
    if family == 0x11 and size >= 12:
        client, server = (str(ipaddress.IPv4Address(body[0:4])),
                          str(ipaddress.IPv4Address(body[4:8])))
        ports = struct.unpack("!HH", body[8:12])
    elif family == 0x21 and size >= 36:
        client, server = (str(ipaddress.IPv6Address(body[0:16])),
                          str(ipaddress.IPv6Address(body[16:32])))
        ports = struct.unpack("!HH", body[32:36])
    else:
        raise ProxyHeaderError(f"unsupported address family and protocol {family:#04x}")
    return length, ((client, ports[0]), (server, ports[1]))


def upstreamProxy(config, daemon: str) -> Optional[float]:
    """
    C{smtpd_upstream_proxy_protocol} or
    C{postscreen_upstream_proxy_protocol} (C{daemon} is C{smtpd} or
    C{postscreen}): C{None} for none, else the seconds a connection has
    to send its header (C{*_upstream_proxy_timeout}).

    @raise tmta.config.ConfigError: a protocol other than C{haproxy},
        the one Postfix speaks.
    """
    from tmta.config import ConfigError

    name = f"{daemon}_upstream_proxy_protocol"
    value = config.get(name).strip()
    if not value:
        return None
    if value != "haproxy":
        raise ConfigError(config.path, config.lineOf(name),
                          f"{name} = {value}: the protocol supported is haproxy")
    return config.getTime(f"{daemon}_upstream_proxy_timeout")


def handOverRecord(addresses: Optional[Tuple[Endpoint, Endpoint]]) -> bytes:
    """
    What postscreen sends with a connection it hands to smtpd: a NUL
    byte, or, for a connection whose addresses a PROXY header gave,
    those addresses on one line.
    """
    if addresses is None:
        return b"\0"
    (client, clientPort), (server, serverPort) = addresses
    return f"P {client} {clientPort} {server} {serverPort}\n".encode("ascii")


def readHandOverRecord(data: bytes) -> Tuple[bool, Optional[Tuple[Endpoint, Endpoint]]]:
    """
    Read a L{handOverRecord}.

    @return: whether the record is complete, and the addresses it gives.
    @raise ProxyHeaderError: not such a record.
    """
    if data[:1] == b"\0":
        return True, None
    # It may come in pieces: the first byte carries the descriptor.
    if not (data.startswith(b"P ") or b"P ".startswith(data)):
        raise ProxyHeaderError("bad hand-over record")
    end = data.find(b"\n")
    if end < 0:
        if len(data) > 200:
            raise ProxyHeaderError("bad hand-over record")
        return False, None
    words = data[2:end].decode("ascii", "replace").split(" ")
    if len(words) != 4:
        raise ProxyHeaderError("bad hand-over record")
    version = ipaddress.ip_address(words[0]).version if _isAddress(words[0]) else 0
    if version == 0:
        raise ProxyHeaderError("bad hand-over record")
    return True, (_endpoint(words[0], words[1], version), _endpoint(words[2], words[3], version))


def _isAddress(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
