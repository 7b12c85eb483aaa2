"""
Writing a queue file (L{tmta.queue.qfile} says its format): records
appended, the file sealed with its end record and made visible to qmgr
only once it and its directory are fsynced, and several files committed
together (L{commitAll}) so that one journal commit carries them all.
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from tmta.common.durable import fsyncDirectory, startWriteback, writeFully
from tmta.queue.qfile import (
    COMPLETE_MODE,
    HEADER,
    INCOMPLETE_MODE,
    MAX_CHUNK,
    MAX_RECORD,
    REC_ATTRIBUTE,
    REC_CONTENT,
    REC_CONTENT_END,
    REC_END,
    REC_MESSAGE,
    REC_RECIPIENT,
    REC_SENDER,
    REC_TIME,
    REC_VERSION,
    VERSION,
    CorruptQueueFile,
    encodeText,
    readRecords,
)

#: How much content is gathered before one write.
_WRITE_SIZE = 1 << 16

class QueueFileWriter:
    """
    Writes one new queue file.  Only cleanup creates queue files.

    The envelope and content are gathered as they come and written in
    pieces of about 64 KiB (a small message in one system call, with no
    file object around the descriptor); L{commit} then makes the file
    complete and durable: end record, the complete mode bit, fsync of
    the file and of its directory.  L{commit} blocks (it fsyncs): call
    it in a thread.
    """

    def __init__(
        self,
        path: str,
        fsync: Callable[[int], None] = os.fsync,
        mode: int = INCOMPLETE_MODE,
    ) -> None:
        self.path = path
        self._fsync = fsync
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        self._pending: List[bytes] = []
        self._pendingSize = 0
        #: Bytes written so far, pending ones included.
        self._offset = 0
        self.size = 0
        self._inContent = False
        #: Where the content's records begin in C{_pending}, while none
        #: of them has been written to the file.
        self._contentIndex: Optional[int] = None
        self._record(REC_VERSION, VERSION)

    def _record(self, kind: bytes, data: bytes) -> None:
        header = HEADER.pack(kind, len(data))
        self._pending.append(header)
        self._pending.append(data)
        written = len(header) + len(data)
        self._offset += written
        self._pendingSize += written
        if self._pendingSize >= _WRITE_SIZE:
            self.flush()

    def flush(self) -> None:
        """
        Write what is gathered to the file (not durably: see L{commit}).
        """
        if self._pending:
            data = b"".join(self._pending)
            self._pending, self._pendingSize = [], 0
            self._contentIndex = None
            writeFully(self._fd, data)

    def envelope(self, arrival: float, sender: str, attributes: Dict[str, str]) -> None:
        self._record(REC_TIME, repr(float(arrival)).encode())
        self._record(REC_SENDER, encodeText(sender))
        for name, value in attributes.items():
            self._record(REC_ATTRIBUTE, encodeText(f"{name}={value}"))

    def recipient(self, address: str, original: Optional[str] = None, notify: str = "",
                  orcpt: str = "") -> None:
        data = encodeText(address) + b"\0" + encodeText(original or address)
        if notify or orcpt:
            data += b"\0" + encodeText(notify) + b"\0" + encodeText(orcpt)
        self._record(REC_RECIPIENT, data)

    def content(self, data: bytes) -> None:
        """
        Append message text (LF line ends), in bounded records.
        """
        if not self._inContent:
            self._record(REC_MESSAGE, b"")
            self._inContent = True
            self._contentStart = self._offset
            self._contentIndex = len(self._pending)
        for start in range(0, len(data), MAX_CHUNK):
            self._record(REC_CONTENT, data[start : start + MAX_CHUNK])
        self.size += len(data)

    def writtenContent(self) -> Iterator[bytes]:
        """
        The content written so far, read back from the unfinished file:
        for cleanup to copy a message under an envelope it could decide
        only after the content (a REDIRECT from body_checks).  Blocking.
        """
        if not self._inContent:
            return
        self.flush()
        with open(self.path, "rb") as f:
            f.seek(self._contentStart)
            for _, kind, data in readRecords(f, MAX_RECORD):
                if kind != REC_CONTENT:
                    raise CorruptQueueFile(f"unexpected record {kind!r} in content")
                yield data

    def contentText(self) -> bytes:
        """
        The content written so far: from memory while it is all still
        gathered there (a small message), else read back from the file
        (L{writtenContent}).  Blocking in the second case.
        """
        if self._contentIndex is not None:
            return b"".join(self._pending[self._contentIndex + 1::2])
        return b"".join(self.writtenContent())

    def prependContent(self, data: bytes) -> None:
        """
        Put C{data} before the content written so far: headers cleanup
        can make only once it has the whole message (a DKIM signature,
        C{Authentication-Results}).  Without copying while the content is
        all still in memory; else the content is read back and written
        again after C{data}.  Blocking in the second case.
        """
        if not data:
            return
        if not self._inContent:
            self.content(data)
            return
        records: List[bytes] = []
        for start in range(0, len(data), MAX_CHUNK):
            piece = data[start : start + MAX_CHUNK]
            records += [HEADER.pack(REC_CONTENT, len(piece)), piece]
        added = sum(len(r) for r in records)
        if self._contentIndex is None:
            content = self.contentText()
            os.ftruncate(self._fd, self._contentStart)
            os.lseek(self._fd, self._contentStart, os.SEEK_SET)
            self._pending, self._pendingSize = records, added
            self._offset = self._contentStart + added
            self.size += len(data) - len(content)
            self._contentIndex = 0
            self.content(content)
            return
        index = self._contentIndex
        self._pending[index:index] = records
        self._offset += added
        self._pendingSize += added
        self.size += len(data)

    def commit(self) -> None:
        """
        Finish the file and make it durable and visible.  Blocking.

        @raise OSError: the disk is full or failing: the file is removed
            and nothing may be acknowledged.
        """
        error = commitAll([self])[0]
        if error is not None:
            raise error

    def finish(self) -> None:
        """
        Finish the file and fsync it, but not its directory: the file is
        durable only once the directory is fsynced too (L{commit} does
        both; L{commitAll} shares the directory's fsync among files).
        Blocking.

        @raise OSError: the file is removed.
        """
        self.seal()
        self.sync()

    def seal(self) -> None:
        """
        Write the end records and the complete mode bit, not yet durably
        (L{sync} does that).  Blocking.

        @raise OSError: the file is removed.
        """
        try:
            if not self._inContent:
                self._record(REC_MESSAGE, b"")
            self._record(REC_CONTENT_END, b"")
            self._record(REC_END, b"")
            self.flush()
            os.fchmod(self._fd, COMPLETE_MODE)
        except BaseException:
            self.abort()
            raise

    def sync(self) -> None:
        """
        fsync the sealed file (L{seal}) and close it.  Blocking.

        @raise OSError: the file is removed.
        """
        try:
            self._fsync(self._fd)
            self._close()
        except BaseException:
            self.abort()
            raise

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def abort(self) -> None:
        """
        Throw the unfinished file away.
        """
        self._pending, self._pendingSize = [], 0
        try:
            self._close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


def commitAll(writers: Sequence[QueueFileWriter]) -> List[Optional[OSError]]:
    """
    Commit several queue files at once: every file is finished and its
    writeback started (L{startWriteback}), then each is fsynced, then
    each directory they are in is fsynced once for all of them.
    Blocking.

    Each fsync thus finds its data already on its way, and a journalling
    file system (ext4, XFS) commits the batch's blocks and names
    together, where files finished and fsynced one after another would
    cost a journal commit each.

    @return: for each writer, in order, C{None} if its file is durable,
        else the error (that file has been removed).
    """
    errors: List[Optional[OSError]] = []
    several = len(writers) > 1
    for writer in writers:
        try:
            writer.seal()
            if several:
                startWriteback(writer._fd)
            errors.append(None)
        except OSError as e:
            errors.append(e)
    for index, writer in enumerate(writers):
        if errors[index] is None:
            try:
                writer.sync()
            except OSError as e:
                errors[index] = e
    directories: Dict[str, List[int]] = {}
    for index, writer in enumerate(writers):
        if errors[index] is None:
            directories.setdefault(os.path.dirname(writer.path), []).append(index)
    for directory, indexes in directories.items():
        try:
            fsyncDirectory(directory, writers[indexes[0]]._fsync)
        except OSError as e:
            for index in indexes:
                writers[index].abort()
                errors[index] = e
    return errors
