"""
The queue as C{mailq} lists it: read by C{tmta queue list} (root and
the mail system) and by the showq service (for everybody else).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Dict, Iterator, List

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
    The queue as Postfix's C{mailq} prints it, a message at a time (so
    that a queue of any size is listed in little memory): each message
    with its size, arrival time and sender, then each recipient still to
    be delivered, after the reason it is waiting, if any.  C{*} marks a
    message in the active queue, C{!} one on hold.

    @param warn: as for L{queuedMessages}.
    @raise QueueUnreadable: the queue directories cannot be read.
    """
    marks = {"active": "*", "hold": "!", "incoming": "", "deferred": ""}
    count = size = 0
    for queueName, queueId, envelope in queuedMessages(store, warn):
        if not count:
            yield (f"{'-Queue ID-':<20} {'--Size--':>8} {'----Arrival Time----':<21} "
                   "-Sender/Recipient-------\n")
        count += 1
        size += envelope.size
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(envelope.arrival))
        lines = [f"{queueId + marks[queueName]:<20} {envelope.size:>8} {arrival}  "
                 f"{envelope.sender or 'MAILER-DAEMON'}"]
        reasons = store.readDeferLog(queueId)
        byReason: Dict[str, List[str]] = {}
        for recipient in envelope.pending():
            byReason.setdefault(reasons.get(recipient.address, ""), []).append(
                recipient.address)
        for reason, addresses in byReason.items():
            if reason:
                lines.append(f"{'':42}({reason})")
            lines += [f"{'':42}{address}" for address in addresses]
        yield "\n".join(lines) + "\n\n"
    if not count:
        yield "Mail queue is empty\n"
        return
    yield (f"-- {(size + 1023) // 1024} Kbytes in {count} Request"
           f"{'s' if count != 1 else ''}.\n")


def formatQueue(store) -> str:
    """
    The whole of L{queueListing}, as one text.

    @raise QueueUnreadable: the queue directories cannot be read.
    """
    return "".join(queueListing(store))
