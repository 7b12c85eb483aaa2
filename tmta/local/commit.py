"""
What makes local's deliveries count: the Maildir group commit of a batch
and the duplicate filter.

A Maildir file counts as delivered once it is renamed into C{new/} and
C{new/} is synced.  A batch writes every file first and finishes them
together at its end -- each file fsynced and renamed, then each
directory synced once -- so that one journal commit carries many
deliveries, as cleanup commits queue files.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

from tmta.common.durable import fsyncDirectory, startWriteback
from tmta.mail.mailbox import MailboxError, WrittenMaildirFile, unlinkQuietly
from tmta.mail.rights import DeliveryError, identity

#: One delivery: its queue id and recipient offset.
Delivering = Tuple[str, int]


class DuplicateFilter:
    """
    What each message was lately delivered to, oldest first: one message
    reaches a mailbox, file or command once, however many of its
    recipients (or their aliases) lead there (C{duplicate_filter_limit}).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._delivered: "OrderedDict[Tuple, None]" = OrderedDict()

    def remember(self, key: Tuple) -> bool:
        """
        Record a delivery; C{False} when it was already made.
        """
        if key in self._delivered:
            return False
        self._delivered[key] = None
        if len(self._delivered) > self.limit:
            self._delivered.popitem(last=False)
        return True

    def forget(self, key: Tuple) -> None:
        """
        Take back a delivery that failed, so that a retry makes it.
        """
        self._delivered.pop(key, None)


class MaildirCommit:
    """
    The Maildir files a batch has written and the directories it must
    sync, finished together by L{settle}.

    @ivar delivering: the delivery under way, which a file written now
        belongs to.
    """

    def __init__(self, duplicates: DuplicateFilter, spoolName: Callable[[str], str],
                 fsync: Callable[[int], None] = os.fsync) -> None:
        """
        @param spoolName: names a path in a failure as the configuration
            does (L{tmta.local.settings.LocalSettings.publicPath}).
        """
        self.duplicates = duplicates
        self.spoolName = spoolName
        self.fsync = fsync
        self.delivering: Delivering = ("", -1)
        self._written: Optional[List[Tuple[WrittenMaildirFile, int, int, Tuple,
                                           Delivering]]] = None
        self._syncs: Dict[Tuple[str, int, int], Tuple[list, list, list]] = {}

    def begin(self) -> None:
        """
        A batch starts: files written from now on wait for L{settle}.
        """
        self._written = []
        self._syncs = {}

    def end(self) -> None:
        """
        The batch is over: files written from now on are finished at once.
        """
        self._written = None
        self._syncs = {}

    def abandon(self) -> None:
        """
        The batch failed: what it wrote and did not finish is removed,
        to be delivered again.
        """
        written, self._written = self._written or [], None
        for entry in written:
            entry[0].discard()
        self._syncs = {}

    def finishLater(self, written: WrittenMaildirFile, uid: int, gid: int,
                    key: Tuple) -> bool:
        """
        Put off the fsync and rename of a written Maildir file to the end
        of the batch under way, as C{uid}:C{gid}; C{key} names the
        mailbox for the duplicate filter.

        @return: C{False} outside a batch: the caller finishes it at once.
        """
        if self._written is None:
            return False
        self._written.append((written, uid, gid, key, self.delivering))
        return True

    def settle(self) -> Dict[Delivering, str]:
        """
        Finish what the batch has written so far: fsync and rename each
        file into C{new/}, then sync each C{new/} once.

        @return: C{{delivery: reason}} for the deliveries that failed.
        """
        failed = self._finishWritten()
        syncs, self._syncs = self._syncs, {}
        self._written = []
        failed.update(self._syncDirectories(syncs))
        return failed

    def _finishWritten(self) -> Dict[Delivering, str]:
        written, self._written = self._written or [], None
        if len(written) > 1:
            for entry in written:
                startWriteback(entry[0].fd)
        failed: Dict[Delivering, str] = {}
        for file, uid, gid, key, delivering in written:
            try:
                with identity(uid, gid):
                    file.complete(self.fsync)
            except (MailboxError, DeliveryError) as e:
                failed[delivering] = str(e)
                self.duplicates.forget(key)
                continue
            deliveries, keys, paths = self._syncs.setdefault((file.new, uid, gid), ([], [], []))
            deliveries.append(delivering)
            keys.append(key)
            paths.append(file.final)
        return failed

    def _syncDirectories(self, syncs) -> Dict[Delivering, str]:
        failed: Dict[Delivering, str] = {}
        for (directory, uid, gid), (deliveries, keys, paths) in syncs.items():
            try:
                with identity(uid, gid):
                    fsyncDirectory(directory, self.fsync)
            except (OSError, DeliveryError) as e:
                reason = self.spoolName(
                    f"cannot sync maildir {directory}: {getattr(e, 'strerror', None) or e}")
                for delivery in deliveries:
                    failed[delivery] = reason
                for key in keys:
                    self.duplicates.forget(key)
                # Deferred, so not left in new/: the retry's copy is the
                # only one.
                with identity(uid, gid):
                    for path in paths:
                        unlinkQuietly(path)
        return failed
