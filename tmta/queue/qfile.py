"""
The queue file format, and reading it (L{tmta.queue.writer} writes it).

A queue file is a sequence of records, each a type byte, a four-byte
big-endian length and that many bytes of data, in this order::

    V  format version
    T  arrival time (seconds since the epoch, decimal)
    F  envelope sender ("" for the null sender)
    A  attribute, "name=value" (client, helo, protocol, ...), any number
    R  recipient, "address NUL original address", one per recipient,
       followed by "NUL notify NUL orcpt" when the client gave DSN
       parameters (RFC 3461 NOTIFY, and ORCPT as "type;address")
    M  start of message content
    C  content: message text with LF line ends, any number of chunks
    X  end of message content
    E  end of file: the file is complete

A recipient that is done (delivered, or bounced with its notice queued)
has its type byte overwritten in place with C{D}, so a crash never
delivers to it again.  A file whose mode lacks the owner-execute bit is
still being written and is invisible to qmgr, as in Postfix.

Readers treat the file as gossip: every length is bounded, every record
type checked, and anything odd raises L{CorruptQueueFile} rather than
crashing the reader.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import BinaryIO, Dict, Iterator, List

from tmta.common.slots import SLOTS

VERSION = b"tmta-queue 1"
HEADER = struct.Struct(">cI")
MAX_RECORD = 1 << 20
MAX_CHUNK = 65535
#: How much a L{QueueFileWriter} gathers before it writes.
COMPLETE_MODE = 0o700
INCOMPLETE_MODE = 0o600

REC_VERSION = b"V"
REC_TIME = b"T"
REC_SENDER = b"F"
REC_ATTRIBUTE = b"A"
REC_RECIPIENT = b"R"
REC_DONE = b"D"
REC_MESSAGE = b"M"
REC_CONTENT = b"C"
REC_CONTENT_END = b"X"
REC_END = b"E"

_INCOMPLETE = "incomplete queue file (no end record)"

#: The attribute (C{verify=yes}) that marks an address verification
#: probe (L{tmta.verify}).
PROBE_ATTRIBUTE = "verify"
#: The value of L{PROBE_ATTRIBUTE} for C{sendmail -bv}: each recipient
#: is verified as a probe's is, and the findings are mailed to the
#: sender as a report.
VERIFY_REPORT = "report"
#: The attribute cleanup adds to a probe whose recipient it already
#: found deliverable (a virtual alias of several addresses, which is
#: not verified address by address), with the reason.
DELIVERABLE_ATTRIBUTE = "verify_deliverable"


class CorruptQueueFile(Exception):
    """
    A queue file is truncated, damaged or not a queue file.
    """


class NotRegularFile(CorruptQueueFile):
    """
    What stands in the queue under a queue file's name is not a regular
    file (a FIFO, a device, a symbolic link, a directory): never opened
    for reading, where it could block or lead elsewhere.
    """

    def __init__(self, path: str = "") -> None:
        super().__init__("not a regular file")
        self.path = path


def decodeText(data: bytes) -> str:
    """
    A record's text, with bytes that are not UTF-8 kept as surrogates.
    """
    return data.decode("utf-8", "surrogateescape")


def encodeText(text: str) -> bytes:
    """
    Text as a record holds it (the inverse of L{decodeText}).
    """
    return text.encode("utf-8", "surrogateescape")


@dataclass(**SLOTS)
class Recipient:
    """
    One envelope recipient.

    @ivar offset: where its record starts in the file, for marking it done.
    @ivar original: the address as the client gave it, before rewriting.
    """

    address: str
    original: str
    offset: int = -1
    done: bool = False
    #: RFC 3461: when to report (C{NEVER}, or some of C{SUCCESS},
    #: C{FAILURE}, C{DELAY}, comma-separated); C{""} when not given.
    notify: str = ""
    #: RFC 3461 ORCPT, C{type;address}, decoded; C{""} when not given.
    orcpt: str = ""


@dataclass(**SLOTS)
class Envelope:
    """
    Everything in a queue file but the message content.

    @ivar contentOffset: where the first content record starts.
    @ivar size: the message content's size in bytes.
    """

    arrival: float
    sender: str
    attributes: Dict[str, str] = field(default_factory=dict)
    recipients: List[Recipient] = field(default_factory=list)
    contentOffset: int = 0
    size: int = 0

    def pending(self) -> List[Recipient]:
        """
        The recipients not yet done.
        """
        return [r for r in self.recipients if not r.done]


# Files up to this size are read with one system call and parsed from
# memory; larger ones record by record.
_READ_WHOLE = 1 << 20


class QueueFileImage(io.BytesIO):
    """
    A whole queue file read into memory, readable as a file.

    @ivar image: the file's bytes, parsed in place (not copied) by the
        readers here.
    """

    def __init__(self, image: bytes) -> None:
        super().__init__(image)
        self.image = image


def openQueueFile(path: str) -> BinaryIO:
    """
    Open a queue file to read: a file of up to 1 MiB is read whole, with
    one system call, into a L{QueueFileImage} (the envelope, the headers
    and the content are then read from memory, however many times); a
    larger one is left on disk.

    @raise NotRegularFile: it is not a regular file.
    @raise OSError: it cannot be opened or read.
    """
    try:
        # Not followed if a link, not waited on if a FIFO: what was
        # opened is looked at before anything is read from it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegularFile(path)
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path)
        size = st.st_size
        if size > _READ_WHOLE:
            return os.fdopen(fd, "rb")
        parts = []
        while True:
            part = os.read(fd, max(size + 1, 4096))
            if not part:
                break
            parts.append(part)
        os.close(fd)
    except BaseException:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    return QueueFileImage(b"".join(parts))


def readRecords(f: BinaryIO, limit: int) -> Iterator[tuple]:
    """
    Yield C{(offset, type, data)} for each record from the file's
    position on, checking lengths.
    """
    offset = f.tell()
    if isinstance(f, QueueFileImage):
        f.seek(0, os.SEEK_END)
        yield from _recordsIn(f.image, 0, limit, offset)
        return
    try:
        remaining = os.fstat(f.fileno()).st_size - offset
    except (AttributeError, OSError, ValueError):
        remaining = _READ_WHOLE + 1
    if remaining <= _READ_WHOLE:
        yield from _recordsIn(f.read(), offset, limit)
        return
    while True:
        offset = f.tell()
        header = f.read(HEADER.size)
        if not header:
            return
        if len(header) < HEADER.size:
            raise CorruptQueueFile(f"truncated record header at offset {offset}")
        kind, length = HEADER.unpack(header)
        if length > limit:
            raise CorruptQueueFile(f"record of {length} bytes at offset {offset}")
        data = f.read(length)
        if len(data) < length:
            raise CorruptQueueFile(f"truncated record at offset {offset}")
        yield offset, kind, data


def _recordsIn(data: bytes, base: int, limit: int, position: int = 0) -> Iterator[tuple]:
    """
    L{readRecords} over bytes read from file offset C{base}, from
    C{position} in them on.
    """
    end, size = len(data), HEADER.size
    unpack = HEADER.unpack_from
    while position < end:
        offset = base + position
        if position + size > end:
            raise CorruptQueueFile(f"truncated record header at offset {offset}")
        kind, length = unpack(data, position)
        if length > limit:
            raise CorruptQueueFile(f"record of {length} bytes at offset {offset}")
        position += size
        if position + length > end:
            raise CorruptQueueFile(f"truncated record at offset {offset}")
        yield offset, kind, data[position:position + length]
        position += length


def readEnvelope(f: BinaryIO, maxRecipients: int = 1_000_000) -> Envelope:
    """
    Read and check a whole queue file, returning its envelope; the
    content is skipped over, not kept.

    @raise CorruptQueueFile: the file is damaged, truncated or incomplete.
    """
    f.seek(0)
    records: Iterator[tuple]
    if isinstance(f, QueueFileImage):
        # Straight from the bytes: one generator rather than two.
        f.seek(0, os.SEEK_END)
        records = _recordsIn(f.image, 0, MAX_RECORD)
    else:
        records = readRecords(f, MAX_RECORD)
    first = next(records, None)
    if first is None or first[1] != REC_VERSION or first[2] != VERSION:
        raise CorruptQueueFile("not a tmta queue file")
    envelope = Envelope(arrival=0.0, sender="")
    recipients = envelope.recipients
    hasTime = hasSender = False
    try:
        # The envelope, up to the start of the content.
        for offset, kind, data in records:
            if kind == REC_RECIPIENT or kind == REC_DONE:
                fields = data.split(b"\0")
                if len(fields) not in (2, 4):
                    raise CorruptQueueFile(f"bad recipient at offset {offset}")
                if len(recipients) >= maxRecipients:
                    raise CorruptQueueFile("too many recipients")
                address = decodeText(fields[0])
                # The original is nearly always the address: one string.
                original = address if fields[1] == fields[0] else decodeText(fields[1])
                recipient = Recipient(address, original, offset, kind == REC_DONE)
                if len(fields) == 4:
                    recipient.notify, recipient.orcpt = decodeText(fields[2]), decodeText(fields[3])
                recipients.append(recipient)
            elif kind == REC_ATTRIBUTE:
                name, eq, value = decodeText(data).partition("=")
                if not eq:
                    raise CorruptQueueFile(f"bad attribute at offset {offset}")
                envelope.attributes[name] = value
            elif kind == REC_TIME:
                envelope.arrival = float(data.decode("ascii"))
                hasTime = True
            elif kind == REC_SENDER:
                envelope.sender = decodeText(data)
                hasSender = True
            elif kind == REC_MESSAGE:
                envelope.contentOffset = offset + HEADER.size + len(data)
                break
            else:
                raise CorruptQueueFile(f"unexpected record {kind!r} at offset {offset}")
        else:
            raise CorruptQueueFile(_INCOMPLETE)
        # The content, up to its end record.
        size = 0
        for offset, kind, data in records:
            if kind == REC_CONTENT:
                size += len(data)
            elif kind == REC_CONTENT_END:
                break
            else:
                raise CorruptQueueFile(f"unexpected record {kind!r} in content")
        else:
            raise CorruptQueueFile(_INCOMPLETE)
        envelope.size = size
        # The end record, and nothing after it.
        last = next(records, None)
        if last is None:
            raise CorruptQueueFile(_INCOMPLETE)
        if last[1] != REC_END:
            raise CorruptQueueFile(f"unexpected record {last[1]!r} after content")
        if next(records, None) is not None:
            raise CorruptQueueFile("data after the end record")
    except ValueError as e:
        raise CorruptQueueFile(str(e))
    if not (hasTime and hasSender):
        raise CorruptQueueFile("no arrival time or sender")
    return envelope


def iterContent(f: BinaryIO, envelope: Envelope) -> Iterator[bytes]:
    """
    Yield the message content in chunks of at most 64 KiB.

    @raise CorruptQueueFile: the content records are damaged.
    """
    f.seek(envelope.contentOffset)
    for _, kind, data in readRecords(f, MAX_RECORD):
        if kind == REC_CONTENT_END:
            return
        if kind != REC_CONTENT:
            raise CorruptQueueFile(f"unexpected record {kind!r} in content")
        yield data
    raise CorruptQueueFile("content has no end")


def markDone(fd: int, recipient: Recipient) -> None:
    """
    Mark a recipient done in place.

    The mark is written, not fsynced: a kill -9 of any process keeps it
    (the page cache survives), and after a power failure the worst case
    is a second delivery, never a lost one.
    """
    if os.pread(fd, 1, recipient.offset) not in (REC_RECIPIENT, REC_DONE):
        raise CorruptQueueFile(f"no recipient record at offset {recipient.offset}")
    os.pwrite(fd, REC_DONE, recipient.offset)
    recipient.done = True
