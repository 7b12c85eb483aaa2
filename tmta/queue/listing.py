"""
The queue as C{mailq} lists it: read by C{tmta queue list} (root and
the mail system) and by the showq service (for everybody else).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterator

from tmta.queue.qfile import CorruptQueueFile, NotRegularFile


def _toStandardError(warning: str) -> None:
    sys.stderr.write(f"tmta: warning: {warning}\n")


class QueueUnreadable(Exception):
    """
    No queue directory could be read: only root and the mail system may.
    """


def queuedMessages(store, warn: Callable[[str], None] = _toStandardError) -> Iterator[tuple]:
    """
    C{(queueName, queueId, envelope)} of every finished message in the
    queues C{mailq} shows, active first.  Damaged files are skipped.

    @param warn: told of each queue that cannot be listed and each
        name that is not a regular file.
    @raise QueueUnreadable: none of the queues could be read.
    """
    unreadable = 0
    for queueName in ("active", "incoming", "deferred", "hold"):
        try:
            queueIds = store.list(queueName)
        except FileNotFoundError:
            continue
        except OSError as e:
            warn(f"cannot list {queueName}: {e.strerror}")
            unreadable += 1
            continue
        for queueId in queueIds:
            try:
                if queueName == "incoming" and not store.isComplete(queueName, queueId):
                    continue
                envelope = store.readEnvelope(queueName, queueId)
            except NotRegularFile:
                warn(f"{queueName}/{queueId}: not a regular file")
                continue
            except (OSError, CorruptQueueFile):
                continue
            yield queueName, queueId, envelope
    if unreadable == 4:
        raise QueueUnreadable()


def queueListing(store, warn: Callable[[str], None] = _toStandardError) -> Iterator[str]:
    """
    The queue as Postfix's C{mailq} prints it, in the same columns, a
    message at a time (so that a queue of any size is listed in little
    memory): each message with its size, arrival time and sender, then
    each recipient still to be delivered, after the reason it is
    waiting where that changes.  C{*} marks a message in the active
    queue, C{!} one on hold.

    @param warn: as for L{queuedMessages}.
    @raise QueueUnreadable: the queue directories cannot be read.
    """
    marks = {"active": "*", "hold": "!", "incoming": "", "deferred": ""}
    count = size = 0
    for queueName, queueId, envelope in queuedMessages(store, warn):
        # Postfix's long-queue-id layout (showq_compat.c), column for column.
        yield "\n" if count else (f"{'----Queue ID-----':<17} {'--Size--':>8} "
                                  f"{'---Arrival Time----':<19} --Sender/Recipient------\n")
        count += 1
        size += envelope.size
        arrival = time.asctime(time.localtime(envelope.arrival))[:19]
        lines = [f"{queueId + marks[queueName]:<17} {envelope.size:>8} {arrival:>19} "
                 f"{envelope.sender or 'MAILER-DAEMON'}"]
        reasons = store.readDeferLog(queueId)
        shown = ""
        for recipient in envelope.pending():
            reason = reasons.get(recipient.address, "")
            if reason != shown:
                # As Postfix: a reason line where it changes, right-aligned.
                shown = reason
                lines.append(f"({reason or 'reason unavailable'})".rjust(78))
            lines.append(f"{'':47}{recipient.address}")
        yield "\n".join(lines) + "\n"
    if not count:
        yield "Mail queue is empty\n"
        return
    yield f"\n-- {size // 1024} Kbytes in {count} Request{'s' if count != 1 else ''}.\n"


def formatQueue(store) -> str:
    """
    The whole of L{queueListing}, as one text.

    @raise QueueUnreadable: the queue directories cannot be read.
    """
    return "".join(queueListing(store))
