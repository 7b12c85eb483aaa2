"""
What the agents that write mail themselves (local, virtual) share: the
error that ends a recipient's delivery with a status, the identity a
delivery runs as, and reading the queued message.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from tmta.common.credentials import restoreRoot, setEffectiveIdentity
from tmta.delivery import DEFERRED, DeliveryRequest
from tmta.queue.qfile import CorruptQueueFile, openQueueFile, readEnvelope


class DeliveryError(Exception):
    """
    A recipient's delivery ends with C{status}, C{dsn} and C{reason}
    (raised where the agent learns it, answered for the recipient).
    """

    def __init__(self, status: str, dsn: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.dsn, self.reason = status, dsn, reason


@contextmanager
def identity(uid: int, gid: int):
    """
    Run the block with the effective identity of an account (when root),
    and return to root afterwards.  On Linux only the calling thread
    changes identity (L{tmta.common.credentials}): the delivery thread,
    not the reactor thread.

    As Postfix's local does, the account's primary group is its only
    group for the delivery: supplementary groups are not looked up.
    """
    if os.geteuid() != 0:
        yield
        return
    if uid == 0:
        raise DeliveryError(DEFERRED, "4.3.0", "tmta does not deliver as root")
    setEffectiveIdentity(uid, gid, [gid])
    try:
        yield
    finally:
        restoreRoot()


def openQueued(request: DeliveryRequest):
    """
    Open a request's queue file and read its envelope, for an agent that
    then reads the content from it.

    @return: (the open file, its envelope); the caller closes the file.
    @raise DeliveryError: it cannot be read (the recipient waits).
    """
    try:
        queueFile = openQueueFile(request.queuePath)
    except OSError as e:
        raise DeliveryError(DEFERRED, "4.3.0", f"cannot read queue file: {e}")
    try:
        return queueFile, readEnvelope(queueFile)
    except CorruptQueueFile as e:
        queueFile.close()
        raise DeliveryError(DEFERRED, "4.3.0", f"cannot read queue file: {e}")
