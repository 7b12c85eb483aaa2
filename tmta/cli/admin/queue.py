"""
C{tmta queue}: list, flush, hold, release, delete, requeue, deliver
and show mail, as Postfix's C{mailq}, C{postqueue} and C{postsuper} do.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, TextIO, Tuple

from tmta.cli.admin.common import configuration
from tmta.common.syslog import CommandLog
from tmta.config import Configuration
from tmta.queue.listing import QueueUnreadable, queuedMessages, queueListing


def _unreadable() -> int:
    sys.stderr.write("tmta: fatal: cannot read the queue: only root and the mail system may\n")
    return 75  # EX_TEMPFAIL


def listQueueJSON(configuration: Configuration, out: TextIO = sys.stdout) -> int:
    """
    The queue as JSON, one object per message and line, as
    C{postqueue -j} prints it.
    """
    import json

    from tmta.queue.store import QueueStore

    store = QueueStore.fromConfig(configuration.main)
    try:
        for queueName, queueId, envelope in queuedMessages(store):
            reasons = store.readDeferLog(queueId)
            recipients = []
            for r in envelope.pending():
                recipient = {"address": r.address}
                if r.address in reasons:
                    recipient["delay_reason"] = reasons[r.address]
                recipients.append(recipient)
            out.write(json.dumps({
                "queue_name": queueName,
                "queue_id": queueId,
                "arrival_time": int(envelope.arrival),
                "message_size": envelope.size,
                "sender": envelope.sender,
                "recipients": recipients,
            }, ensure_ascii=False) + "\n")
    except QueueUnreadable:
        return _unreadable()
    return 0


def _findMessage(store, queueId: str, queues=("incoming", "active", "deferred", "hold",
                                                "corrupt", "maildrop")):
    for queueName in queues:
        try:
            if os.path.exists(store.path(queueName, queueId)):
                return queueName
        except ValueError:
            return None
    return None


def _checkIds(queueIds: List[str], err: TextIO) -> bool:
    from tmta.queue.qid import isQueueId

    for queueId in queueIds:
        if queueId != "ALL" and not isQueueId(queueId):
            err.write(f"tmta: fatal: invalid queue id: {queueId!r}\n")
            return False
    return True


def _selected(store, queueIds: List[str], queues) -> List[tuple]:
    """
    C{(queueName, queueId)} of the named messages (or every one, for
    C{ALL}) in C{queues}.
    """
    found = []
    for queueName in queues:
        try:
            present = store.list(queueName)
        except OSError:
            continue
        for queueId in present:
            if queueIds == ["ALL"] or queueId in queueIds:
                found.append((queueName, queueId))
    return found


def deleteMessages(configuration: Configuration, queueIds: List[str],
                   queueName: Optional[str] = None, err: TextIO = sys.stderr) -> int:
    """
    Delete messages (C{postsuper -d}), from every queue but C{active/}
    (which the queue manager owns while it delivers) or from one.
    """
    from tmta.queue.store import QueueStore

    if not _checkIds(queueIds, err):
        return 1
    queues: Tuple[str, ...] = ("maildrop", "incoming", "deferred", "hold", "corrupt")
    if queueName is not None:
        if queueName not in queues:
            err.write(f"tmta: fatal: cannot delete from {queueName!r} (one of: "
                      f"{', '.join(queues)})\n")
            return 1
        queues = (queueName,)
    store = QueueStore.fromConfig(configuration.main)
    log = CommandLog(configuration.main, "postsuper")
    deleted = 0
    for name, queueId in _selected(store, queueIds, queues):
        try:
            store.remove(name, queueId)
            store.removeDeferLog(queueId)
            deleted += 1
            log.info(f"{queueId}: removed")
        except OSError as e:
            err.write(f"tmta: warning: {queueId}: cannot delete: {e.strerror}\n")
    if queueIds != ["ALL"]:
        for queueId in queueIds:
            if _findMessage(store, queueId, ("active",)):
                err.write(f"tmta: warning: {queueId}: being delivered (active); "
                          "try again once it is deferred\n")
    err.write(f"tmta: deleted: {deleted} message{'s' if deleted != 1 else ''}\n")
    if deleted:
        log.info(f"Deleted: {deleted} message{'s' if deleted != 1 else ''}")
    return 0


def requeueMessages(configuration: Configuration, queueIds: List[str],
                    err: TextIO = sys.stderr) -> int:
    """
    Requeue messages (like C{postsuper -r}): deferred and held mail goes
    back to C{incoming/}, where the queue manager plans its delivery
    afresh (transport and next hop looked up again).
    """
    from tmta.queue.store import QueueStore

    if not _checkIds(queueIds, err):
        return 1
    store = QueueStore.fromConfig(configuration.main)
    log = CommandLog(configuration.main, "postsuper")
    moved = 0
    for name, queueId in _selected(store, queueIds, ("deferred", "hold")):
        try:
            store.move(queueId, name, "incoming")
            moved += 1
            log.info(f"{queueId}: requeued")
        except OSError as e:
            err.write(f"tmta: warning: {queueId}: cannot requeue: {e.strerror}\n")
    err.write(f"tmta: requeued: {moved} message{'s' if moved != 1 else ''}\n")
    if moved:
        log.info(f"Requeued: {moved} message{'s' if moved != 1 else ''}")
        _wakeQmgr(configuration, "incoming")
    return 0


def _locate(configuration: Configuration, queueId: str, err: TextIO):
    """
    The queue store and the queue that hold one message, or C{None}
    (said on C{err}): a malformed or unknown queue id.
    """
    from tmta.queue.store import QueueStore

    if not _checkIds([queueId], err):
        return None
    store = QueueStore.fromConfig(configuration.main)
    where = _findMessage(store, queueId)
    if where is None:
        err.write(f"tmta: fatal: {queueId}: no such message\n")
        return None
    return store, where


def deliverMessage(configuration: Configuration, queueId: str,
                   err: TextIO = sys.stderr) -> int:
    """
    Try one deferred message now (C{postqueue -i}).
    """

    if queueId == "ALL":
        err.write("tmta: fatal: deliver takes one queue id (flush tries them all)\n")
        return 1
    found = _locate(configuration, queueId, err)
    if found is None:
        return 1
    store, where = found
    if where == "deferred":
        os.utime(store.path("deferred", queueId), (0, 0))
    elif where not in ("incoming", "active"):
        err.write(f"tmta: fatal: {queueId}: in {where}/, not waiting for delivery\n")
        return 1
    if not _wakeQmgr(configuration, "timer"):
        err.write("tmta: fatal: cannot reach qmgr (is tmta running?)\n")
        return 75
    return 0


def showMessage(configuration: Configuration, queueId: str, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr, parts: str = "ehb") -> int:
    """
    Print a queued message as C{postcat -q} does: the envelope, then
    the header section and the body.

    @param parts: which to print, as C{postcat}'s C{-e}, C{-h} and C{-b}
        choose them: C{e} the envelope, C{h} the header section, C{b}
        the body.
    """
    import time as _time

    from tmta.queue.qfile import CorruptQueueFile, iterContent, readEnvelope

    found = _locate(configuration, queueId, err) if queueId != "ALL" else None
    if found is None:
        return 1
    store, where = found
    try:
        with open(store.path(where, queueId), "rb") as f:
            envelope = readEnvelope(f)
            content = b"".join(iterContent(f, envelope))
    except (OSError, CorruptQueueFile) as e:
        err.write(f"tmta: fatal: {queueId}: cannot read: {e}\n")
        return 1
    lines = [f"*** ENVELOPE RECORDS {where}/{queueId} ***",
             f"message_size: {envelope.size}",
             f"message_arrival_time: {_time.ctime(envelope.arrival)}",
             f"sender: {envelope.sender}"]
    lines += [f"named_attribute: {name}={value}" for name, value in envelope.attributes.items()]
    for r in envelope.recipients:
        if r.original != r.address:
            lines.append(f"original_recipient: {r.original}")
        lines.append(f"{'done_recipient' if r.done else 'recipient'}: {r.address}")
    end = content.find(b"\n\n")
    head, body = (content, b"") if end < 0 else (content[: end + 1], content[end + 2:])
    if "e" in parts:
        out.write("\n".join(lines) + "\n")
    if "h" in parts:
        out.write("*** MESSAGE CONTENTS ***\n")
    out.flush()
    raw = getattr(out, "buffer", None)
    for part, title, wanted in ((head, None, "h"),
                                (body, "*** HEADER EXTRACTED / BODY ***", "b")):
        if wanted not in parts:
            continue
        if title:
            out.write(("\n" if "h" in parts else "") + title + "\n")
            out.flush()
        if raw is not None:
            raw.write(part)
            raw.flush()
        else:
            out.write(part.decode("utf-8", "replace"))
    out.write(f"*** END OF MESSAGE {queueId} ***\n")
    return 0


def listQueue(configuration: Configuration, out: TextIO = sys.stdout) -> int:
    """
    Print the queue (mailq).  Root and the mail system read it
    themselves; anyone else asks the showq service.
    """
    from tmta.queue.store import QueueStore

    store = QueueStore.fromConfig(configuration.main)
    active = os.path.join(configuration.main.get("queue_directory"), "active")
    if os.path.isdir(active) and not os.access(active, os.R_OK | os.X_OK):
        # An ordinary user: the queue is not theirs to read, and showq
        # reads it for them -- no warning about what they may not see.
        return _askShowq(configuration, out)
    try:
        for chunk in queueListing(store):
            out.write(chunk)
        return 0
    except QueueUnreadable:
        pass
    return _askShowq(configuration, out)


def _askShowq(configuration: Configuration, out: TextIO) -> int:
    import socket

    from tmta.wire.connect import socketPath

    path = socketPath(configuration.main.get("queue_directory"), "showq", private=False)
    chunks = []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(60)
            sock.connect(path)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
    except OSError as e:
        sys.stderr.write(f"tmta: fatal: cannot read the queue, and the showq service "
                         f"({path}) cannot be reached: {e.strerror or e}; is tmta running?\n")
        return 75  # EX_TEMPFAIL
    out.write(b"".join(chunks).decode("utf-8", "replace"))
    return 0


def flushQueue(configuration: Configuration) -> int:
    """
    Ask qmgr to try every deferred message now (C{postqueue -f}).
    """
    from tmta.wire.connect import socketPath

    if not _wakeQmgr(configuration, "flush"):
        path = socketPath(configuration.main.get("queue_directory"), "qmgr", False)
        sys.stderr.write(f"tmta: fatal: cannot reach qmgr at {path} (is tmta running?)\n")
        return 75  # EX_TEMPFAIL, as postqueue
    return 0


def _wakeQmgr(configuration: Configuration, reason: str) -> bool:
    import socket

    from twisted.protocols import amp

    from tmta.wire.connect import socketPath

    path = socketPath(configuration.main.get("queue_directory"), "qmgr", False)
    box = amp.Box({b"_command": b"Wakeup", b"reason": reason.encode("ascii")})
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(box.serialize())
    except OSError:
        return False
    return True


def holdQueue(configuration: Configuration, queueIds: List[str], release: bool = False,
              err: TextIO = sys.stderr) -> int:
    """
    Put messages on hold (C{postsuper -h}), or release them (C{postsuper
    -H}): held mail stays in C{hold/}, where the queue manager never
    looks, until released into C{deferred/} and tried at once.

    @param queueIds: the messages, or C{["ALL"]}.
    """
    from tmta.queue.qid import isQueueId
    from tmta.queue.store import QueueStore

    main = configuration.main
    store = QueueStore.fromConfig(main)
    log = CommandLog(main, "postsuper")
    verb = "released from hold" if release else "placed on hold"
    sources = ("hold",) if release else ("incoming", "deferred")
    target = "deferred" if release else "hold"
    wanted = None if queueIds == ["ALL"] else set(queueIds)
    for queueId in wanted or ():
        if not isQueueId(queueId):
            err.write(f"tmta: fatal: invalid queue id: {queueId!r}\n")
            return 1
    moved = 0
    for queueName in sources:
        try:
            present = store.list(queueName)
        except OSError as e:
            err.write(f"tmta: fatal: cannot list {queueName}: {e.strerror}\n")
            return 1
        for queueId in present:
            if wanted is not None and queueId not in wanted:
                continue
            if queueName == "incoming" and not store.isComplete(queueName, queueId):
                continue
            try:
                if release:
                    # Due now: the next look at deferred mail takes it.
                    os.utime(store.path(queueName, queueId), (0, 0))
                store.move(queueId, queueName, target)
            except OSError as e:
                err.write(f"tmta: warning: {queueId}: cannot move to {target}: "
                          f"{e.strerror}\n")
                continue
            moved += 1
            log.info(f"{queueId}: {verb}")
            if wanted is not None:
                wanted.discard(queueId)
    for queueId in sorted(wanted or ()):
        err.write(f"tmta: warning: {queueId}: not in the "
                  f"{'hold queue' if release else 'incoming or deferred queue'}\n")
    err.write(f"tmta: {verb}: {moved} message{'s' if moved != 1 else ''}\n")
    if moved:
        log.info(f"{verb.capitalize()}: {moved} message{'s' if moved != 1 else ''}")
    if release and moved:
        _wakeQmgr(configuration, "timer")
    return 0




def addParser(commands) -> None:
    parser = commands.add_parser(
        "queue", help="list the queue, flush it, hold or release mail (mailq, postqueue -f, "
                      "postsuper -h/-H)", add_help=False)
    parser.add_argument("--help", action="help", help="show this help message and exit")
    parser.add_argument("action", choices=["list", "flush", "hold", "release", "delete",
                                           "requeue", "deliver", "show"])
    parser.add_argument("queue_ids", nargs="*", metavar="QUEUE_ID",
                        help="the messages, or ALL (hold, release, delete, requeue); one "
                             "message (deliver, show)")
    parser.add_argument("--json", action="store_true", help="list: one JSON object per message")
    parser.add_argument("--queue", help="delete: only from this queue")
    for flag, part in (("-e", "envelope"), ("-h", "header section"), ("-b", "body")):
        parser.add_argument(flag, dest="parts", action="append_const", const=flag[1],
                            help=f"show: the {part} (postcat {flag}; none of -e -h -b: all)")
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    parser.set_defaults(run=run, listOf="queue_ids")


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    chosen = configuration(options)
    if "-" in options.queue_ids:
        # As postsuper's "-": the queue ids, one per line, from standard
        # input (what "mailq | awk ..." pipelines feed it).
        options.queue_ids = [i for i in options.queue_ids if i != "-"] + [
            word for line in sys.stdin for word in line.split()[:1]]
    if options.action == "list":
        return (listQueueJSON if options.json else listQueue)(chosen)
    if options.action in ("delete", "requeue", "deliver", "show"):
        if not options.queue_ids:
            parser.error(f"queue {options.action}: name the message(s)")
        if options.action == "delete":
            return deleteMessages(chosen, options.queue_ids, options.queue)
        if options.action == "requeue":
            return requeueMessages(chosen, options.queue_ids)
        if len(options.queue_ids) != 1:
            parser.error(f"queue {options.action}: one queue id")
        if options.action == "deliver":
            return deliverMessage(chosen, options.queue_ids[0])
        return showMessage(chosen, options.queue_ids[0], parts="".join(options.parts or "ehb"))
    if options.action in ("hold", "release"):
        if not options.queue_ids:
            parser.error(f"queue {options.action}: name the messages, or ALL")
        return holdQueue(chosen, options.queue_ids, release=options.action == "release")
    return flushQueue(chosen)
