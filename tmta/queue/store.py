"""
The queue directories as an L{IQueue}: creating, listing, moving and
removing queue files, with Postfix's discipline.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Callable, Dict, List, Optional, Tuple

from zope.interface import implementer

from tmta.interfaces import IQueue
from tmta.logging import Logger
from tmta.queue.layout import QUEUES
from tmta.queue.qfile import Envelope, openQueueFile, readEnvelope
from tmta.queue.qid import QueueIdGenerator, hashDirectory, isQueueId
from tmta.queue.writer import QueueFileWriter

log = Logger()

#: Postfix's default hash_queue_names.
HASHED_QUEUES = ("deferred", "defer")


class QueueError(Exception):
    """
    A queue operation failed on a well-formed request (disk full,
    permissions): the caller answers with a temporary error.

    @ivar errno: the system's error number, when there was one.
    """

    def __init__(self, message: str, errno: Optional[int] = None) -> None:
        super().__init__(message)
        self.errno = errno


@implementer(IQueue)
class QueueStore:
    """
    The queue under C{queue_directory}.

    @ivar fsync: the fsync function, injectable so that tests can see
        when durability is asked for.
    """

    def __init__(
        self,
        directory: str,
        fsync: Callable[[int], None] = os.fsync,
        hashDepth: int = 1,
        ids: Optional[QueueIdGenerator] = None,
        hashedQueues=HASHED_QUEUES,
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.hashDepth = max(0, min(hashDepth, 4))
        self.ids = ids or QueueIdGenerator()
        self.hashedQueues = frozenset(hashedQueues) if self.hashDepth else frozenset()
        # Each queue's directory with its separator, by queue name: a
        # queue file's name is then one concatenation (qmgr names each
        # message's file five times).
        self._flat = {name: os.path.join(directory, name, "")
                      for name in QUEUES if name not in self.hashedQueues}

    @classmethod
    def fromConfig(cls, config, **kw) -> "QueueStore":
        """
        The queue as C{queue_directory}, C{hash_queue_depth} and
        C{hash_queue_names} say: every process must see the same layout.
        """
        return cls(config.get("queue_directory"), hashDepth=config.getInt("hash_queue_depth"),
                   hashedQueues=config.getList("hash_queue_names"), **kw)

    def path(self, queueName: str, queueId: str) -> str:
        """
        The file name of a queue file.

        @raise ValueError: an unknown queue or a malformed id (which could
            otherwise name a file outside the queue).
        """
        flat = self._flat.get(queueName)
        if flat is not None and isQueueId(queueId):
            return flat + queueId
        if queueName not in QUEUES or not isQueueId(queueId):
            raise ValueError(f"bad queue file name {queueName}/{queueId!r}")
        if queueName in self.hashedQueues:
            return os.path.join(
                self.directory, queueName, hashDirectory(queueId, self.hashDepth), queueId
            )
        return os.path.join(self.directory, queueName, queueId)

    def _deferLogPath(self, queueId: str, hashed: Optional[bool] = None) -> str:
        if not isQueueId(queueId):
            raise ValueError(f"bad queue id {queueId!r}")
        if hashed is None:
            hashed = "defer" in self.hashedQueues
        if hashed:
            return os.path.join(self.directory, "defer",
                                hashDirectory(queueId, self.hashDepth), queueId)
        return os.path.join(self.directory, "defer", queueId)

    def _existingDeferLog(self, queueId: str) -> str:
        # A log written before hash_queue_names changed is still found.
        path = self._deferLogPath(queueId)
        if not os.path.exists(path):
            other = self._deferLogPath(queueId, hashed="defer" not in self.hashedQueues)
            if os.path.exists(other):
                return other
        return path

    def writeDeferLog(self, queueId: str, reasons: Dict[str, str],
                      warned: Optional[float] = None) -> None:
        """
        Record why each recipient of a deferred message is waiting (what
        C{tmta queue list} shows), replacing what was recorded before.
        Informational: not fsynced.

        @param warned: when the sender was told the mail is delayed, if
            they were.
        """
        path = self._deferLogPath(queueId)
        temporary = path + ".tmp"
        self.ensureDirectory(os.path.dirname(path))
        with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as f:
            for address, reason in reasons.items():
                f.write(json.dumps({"recipient": address, "reason": reason}) + "\n")
            if warned is not None:
                f.write(json.dumps({"warned": warned}) + "\n")
        os.rename(temporary, path)

    def _deferLogRecords(self, queueId: str):
        """
        The well-formed records of a defer log (none when it is missing).
        """
        try:
            with open(self._existingDeferLog(queueId), encoding="utf-8",
                      errors="surrogateescape") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict):
                        yield record
        except OSError:
            return

    def deferWarned(self, queueId: str) -> Optional[float]:
        """
        When the sender of a deferred message was warned of the delay
        (L{writeDeferLog}'s C{warned}), or C{None}.
        """
        for record in self._deferLogRecords(queueId):
            try:
                return float(record["warned"])
            except (KeyError, ValueError, TypeError):
                continue
        return None

    def readDeferLog(self, queueId: str) -> Dict[str, str]:
        """
        The reasons recorded by L{writeDeferLog}, by recipient; none when
        there are none.
        """
        return {str(record["recipient"]): str(record["reason"])
                for record in self._deferLogRecords(queueId)
                if "recipient" in record and "reason" in record}

    def removeDeferLog(self, queueId: str) -> None:
        try:
            os.unlink(self._existingDeferLog(queueId))
        except OSError:
            pass

    def create(self, queueName: str = "incoming") -> Tuple[str, QueueFileWriter]:
        """
        Start a new queue file.

        @return: its queue id and writer.
        @raise QueueError: the file cannot be created.
        """
        for _ in range(10):
            queueId = self.ids.next()
            path = self.path(queueName, queueId)
            try:
                return queueId, QueueFileWriter(path, self.fsync)
            except FileExistsError:
                continue
            except FileNotFoundError as e:
                if queueName not in self.hashedQueues:
                    raise QueueError(f"cannot create queue file: {e.strerror}", e.errno)
                # A hashed subdirectory made on first use.
                try:
                    self.ensureDirectory(os.path.dirname(path))
                    return queueId, QueueFileWriter(path, self.fsync)
                except OSError as e:
                    raise QueueError(f"cannot create queue file: {e.strerror}", e.errno)
            except OSError as e:
                raise QueueError(f"cannot create queue file: {e.strerror}", e.errno)
        raise QueueError("cannot find an unused queue id")

    def ensureDirectory(self, directory: str) -> None:
        """
        Make a hashed queue subdirectory (and its parents) if missing.
        Made by root -- C{tmta queue} run by the operator -- they are
        given to the owner of their queue, so the mail system can still
        use them.
        """
        os.makedirs(directory, 0o700, exist_ok=True)
        if os.geteuid() != 0:
            return
        relative = os.path.relpath(directory, self.directory).split(os.sep)
        if relative[0] in (os.pardir, os.curdir):
            return
        top = os.path.join(self.directory, relative[0])
        owner = os.stat(top)
        path = top
        for part in relative[1:]:
            path = os.path.join(path, part)
            st = os.stat(path)
            if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
                os.chown(path, owner.st_uid, owner.st_gid)

    def open(self, queueName: str, queueId: str, writable: bool = False):
        """
        Open a queue file (read-write to mark recipients done).
        """
        return open(self.path(queueName, queueId), "r+b" if writable else "rb")

    def readEnvelope(self, queueName: str, queueId: str) -> Envelope:
        """
        Read a queue file's envelope.

        @raise CorruptQueueFile: it is damaged.
        @raise OSError: it cannot be read.
        """
        with openQueueFile(self.path(queueName, queueId)) as f:
            return readEnvelope(f)

    def move(self, queueId: str, fromQueue: str, toQueue: str) -> None:
        """
        Move a queue file between queues; the rename is atomic.
        """
        target = self.path(toQueue, queueId)
        try:
            os.rename(self.path(fromQueue, queueId), target)
        except FileNotFoundError as e:
            if not os.path.isdir(os.path.dirname(target)):
                self.ensureDirectory(os.path.dirname(target))
                os.rename(self.path(fromQueue, queueId), target)
            else:
                raise e

    def remove(self, queueName: str, queueId: str) -> None:
        try:
            os.unlink(self.path(queueName, queueId))
        except FileNotFoundError:
            pass

    def corrupt(self, queueName: str, queueId: str, reason: str) -> None:
        """
        Move a damaged file aside into C{corrupt/} for the operator.
        """
        log.warn(
            "{queueId}: corrupt queue file moved to corrupt/: {reason}",
            queueId=queueId,
            reason=reason,
        )
        try:
            self.move(queueId, queueName, "corrupt")
        except OSError as e:
            log.error("{queueId}: cannot move to corrupt/: {error}", queueId=queueId, error=e)

    def isRegular(self, queueName: str, queueId: str) -> bool:
        """
        Whether what is there is a regular file (not a link, a FIFO, a
        directory or a device), without following or opening it.  A
        name that is gone counts as regular: there is nothing to set
        aside.
        """
        try:
            return stat.S_ISREG(os.lstat(self.path(queueName, queueId)).st_mode)
        except FileNotFoundError:
            return True
        except OSError:
            return False

    def isComplete(self, queueName: str, queueId: str) -> bool:
        """
        Whether a file is finished (cleanup sets the execute bit last).
        """
        try:
            mode = os.stat(self.path(queueName, queueId)).st_mode
        except OSError:
            return False
        return stat.S_IMODE(mode) & stat.S_IXUSR == stat.S_IXUSR

    def list(self, queueName: str) -> List[str]:
        """
        The well-formed queue ids in a queue, oldest first.  Other names
        (an operator's stray file) are ignored.
        """
        top = os.path.join(self.directory, queueName)
        found: List[str] = []

        def failed(error: OSError) -> None:
            # A queue that cannot be read is not an empty queue.
            raise error

        for root, dirs, files in os.walk(top, onerror=failed):
            found.extend(name for name in files if isQueueId(name))
        found.sort()
        return found

    def removeStale(self, queueName: str, olderThan: float, now: Optional[float] = None) -> None:
        """
        Remove files that were never completed (their writer crashed
        before the client heard 250) once they are older than
        C{olderThan} seconds.
        """
        now = time.time() if now is None else now
        for queueId in self.list(queueName):
            path = self.path(queueName, queueId)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not st.st_mode & stat.S_IXUSR and now - st.st_mtime > olderThan:
                log.info("{queueId}: removing unfinished queue file", queueId=queueId)
                self.remove(queueName, queueId)

