"""
The milter protocol's packets and codes.

Every packet is a 32-bit length in network order (counting what follows
it), one command byte, and the command's data.  Strings in the data end
in NUL.  The codes are the protocol's own (Sendmail's C{mfdef.h}); the
names follow it too, so that they can be looked up there.
"""

from __future__ import annotations

import struct
from typing import Iterable, List, Optional, Tuple

# What the MTA sends (SMFIC_*).
ABORT = b"A"
BODY = b"B"
CONNECT = b"C"
MACRO = b"D"
BODYEOB = b"E"
HELO = b"H"
HEADER = b"L"
MAIL = b"M"
EOH = b"N"
OPTNEG = b"O"
QUIT = b"Q"
RCPT = b"R"
DATA = b"T"
UNKNOWN = b"U"
QUIT_NC = b"K"

# What a milter answers (SMFIR_*).
ADDRCPT = b"+"
DELRCPT = b"-"
ADDRCPT_PAR = b"2"
SHUTDOWN = b"4"
ACCEPT = b"a"
REPLBODY = b"b"
CONTINUE = b"c"
DISCARD = b"d"
CHGFROM = b"e"
CONN_FAIL = b"f"
ADDHEADER = b"h"
INSHEADER = b"i"
SETSYMLIST = b"l"
CHGHEADER = b"m"
PROGRESS = b"p"
QUARANTINE = b"q"
REJECT = b"r"
SKIP = b"s"
TEMPFAIL = b"t"
REPLYCODE = b"y"

#: The replies that change the message, allowed at the end of it only.
EDITS = frozenset({ADDRCPT, DELRCPT, ADDRCPT_PAR, REPLBODY, CHGFROM, ADDHEADER, INSHEADER,
                   CHGHEADER, QUARANTINE})

# What a milter may ask to do (SMFIF_*), offered in the negotiation.
ADDHDRS = 0x01
CHGBODY = 0x02
ADDRCPTS = 0x04
DELRCPTS = 0x08
CHGHDRS = 0x10
QUARANTINES = 0x20
CHGFROMS = 0x40
ADDRCPTS_PAR = 0x80
SETSYMLISTS = 0x100
ALL_ACTIONS = 0x1FF

# Steps a milter may do without (SMFIP_*): events not sent to it, and
# events it does not answer.
NOCONNECT = 1 << 0
NOHELO = 1 << 1
NOMAIL = 1 << 2
NORCPT = 1 << 3
NOBODY = 1 << 4
NOHDRS = 1 << 5
NOEOH = 1 << 6
NR_HDR = 1 << 7
NOUNKNOWN = 1 << 8
NODATA = 1 << 9
SKIPS = 1 << 10
RCPT_REJ = 1 << 11
NR_CONN = 1 << 12
NR_HELO = 1 << 13
NR_MAIL = 1 << 14
NR_RCPT = 1 << 15
NR_DATA = 1 << 16
NR_UNKN = 1 << 17
NR_EOH = 1 << 18
NR_BODY = 1 << 19
HDR_LEADSPC = 1 << 20

#: Everything the MTA can do without, and what it can do on request
#: (RCPT_REJ: tell of recipients refused; HDR_LEADSPC), as offered to a
#: version 6 milter.
ALL_STEPS = ((NR_BODY << 1) - 1) | HDR_LEADSPC

#: For each event: the flag by which a milter says it does not want it,
#: and the flag by which it says it will not answer it.
EVENT_FLAGS = {
    CONNECT: (NOCONNECT, NR_CONN),
    HELO: (NOHELO, NR_HELO),
    MAIL: (NOMAIL, NR_MAIL),
    RCPT: (NORCPT, NR_RCPT),
    DATA: (NODATA, NR_DATA),
    UNKNOWN: (NOUNKNOWN, NR_UNKN),
    HEADER: (NOHDRS, NR_HDR),
    EOH: (NOEOH, NR_EOH),
    BODY: (NOBODY, NR_BODY),
    BODYEOB: (0, 0),
}

# Where a macro list applies (SMFIM_*), in a SETSYMLIST request, and
# the event each is sent with.
MACRO_STAGES = {0: CONNECT, 1: HELO, 2: MAIL, 3: RCPT, 4: DATA, 5: BODYEOB, 6: EOH}

# The address families of CONNECT (SMFIA_*).
FAMILY_UNKNOWN = b"U"
FAMILY_UNIX = b"L"
FAMILY_INET = b"4"
FAMILY_INET6 = b"6"

#: The largest BODY chunk (libmilter's MILTER_CHUNK_SIZE).
CHUNK_SIZE = 65535
#: The largest packet accepted from a milter: a replaced body comes in
#: chunks, and nothing else comes near this.
MAX_PACKET = 1 << 20

_LENGTH = struct.Struct("!I")
_WORD = struct.Struct("!I")


class ProtocolError(Exception):
    """
    A milter broke the protocol: a packet too long or too short, or data
    that does not parse.
    """


def packet(command: bytes, data: bytes = b"") -> bytes:
    """
    One packet: C{command}'s code and its data, after their length.
    """
    return _LENGTH.pack(len(data) + 1) + command + data


def strings(*values: str) -> bytes:
    """
    NUL-terminated strings, as the protocol's data carries them.  A NUL
    inside a value would end it early: it is dropped.
    """
    return b"".join(value.encode("utf-8", "surrogateescape").replace(b"\0", b"") + b"\0"
                    for value in values)


def word(value: int) -> bytes:
    return _WORD.pack(value)


def optionNegotiation(version: int, actions: int, steps: int) -> bytes:
    return packet(OPTNEG, word(version) + word(actions) + word(steps))


def macros(event: bytes, values: Iterable[Tuple[str, str]]) -> bytes:
    """
    The MACRO packet sent before C{event}: each name and value.
    """
    return packet(MACRO, event + b"".join(strings(name, value) for name, value in values))


def connectData(hostname: str, family: bytes, port: int, address: str) -> bytes:
    """
    CONNECT's data: the client's name, and its address family, port and
    address (none for an unknown family).
    """
    data = strings(hostname) + family
    if family != FAMILY_UNKNOWN:
        data += struct.pack("!H", port) + strings(address)
    return data


class PacketParser:
    """
    Splits what a milter sends into packets, whatever the reads' sizes.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> List[Tuple[bytes, bytes]]:
        """
        @return: the C{(command, data)} packets completed by C{data}.
        @raise ProtocolError: a packet that is empty or too long.
        """
        self._buffer += data
        found = []
        while len(self._buffer) >= 4:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length < 1 or length > MAX_PACKET:
                raise ProtocolError(f"bad packet length {length}")
            if len(self._buffer) < 4 + length:
                break
            found.append((self._buffer[4:5], self._buffer[5:4 + length]))
            self._buffer = self._buffer[4 + length:]
        return found


def splitStrings(data: bytes, count: int, optional: int = 0) -> List[str]:
    """
    The first C{count} NUL-terminated strings of a reply's data; the last
    C{optional} of them may be missing (returned empty).

    @raise ProtocolError: fewer strings than that.
    """
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    else:
        # Data not ending in NUL: the last string is unterminated.
        raise ProtocolError("string not terminated")
    if len(parts) < count - optional:
        raise ProtocolError(f"expected {count} strings, got {len(parts)}")
    parts += [b""] * (count - len(parts))
    return [p.decode("utf-8", "surrogateescape") for p in parts[:count]]


def indexed(data: bytes) -> Tuple[int, str, str]:
    """
    The data of CHGHEADER and INSHEADER: an index, a name and a value.
    """
    if len(data) < 4:
        raise ProtocolError("index missing")
    (index,) = _WORD.unpack_from(data)
    name, value = splitStrings(data[4:], 2)
    return index, name, value


def negotiated(data: bytes) -> Tuple[int, int, int, List[Tuple[int, str]]]:
    """
    A milter's OPTNEG answer: its version, the actions and steps it
    asks for, and the macro lists it asks for by stage (version 6).
    """
    if len(data) < 12:
        raise ProtocolError("short option negotiation")
    version, actions, steps = struct.unpack_from("!III", data)
    lists = []
    rest = data[12:]
    while len(rest) >= 4:
        (stage,) = _WORD.unpack_from(rest)
        end = rest.find(b"\0", 4)
        if end < 0:
            raise ProtocolError("macro list not terminated")
        lists.append((stage, rest[4:end].decode("ascii", "replace")))
        rest = rest[end + 1:]
    return version, actions, steps, lists


def replyText(data: bytes) -> Optional[str]:
    """
    REPLYCODE's text, when it is a well-formed 4xx or 5xx reply (the
    enhanced status code, if any, of the same class); else C{None}.
    """
    try:
        [text] = splitStrings(data, 1)
    except ProtocolError:
        return None
    if (len(text) < 4 or text[0] not in "45" or not text[1:3].isdigit()
            or text[3] not in " -"):
        return None
    if len(text) > 4 and text[4].isdigit() and text[4] != text[0]:
        return None
    return text
