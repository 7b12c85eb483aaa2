"""
C{tmta}: the operator's command, with subcommands in the manner of
Postfix's C{postconf}, C{postqueue} and C{postsuper}.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, TextIO

from tmta.config import ConfigError, Configuration, MainConfig, configDirectoryFromEnvironment
from tmta.config.loader import defaultDataDirectory, loadConfiguration, prepareEmbedded


def _configuration(options: argparse.Namespace) -> Configuration:
    directory = options.config or configDirectoryFromEnvironment()
    # Like postconf, show what is written even where twistd tmta would
    # refuse to start with it.
    if directory:
        return loadConfiguration(directory, check=False)
    return loadConfiguration(prepareEmbedded(defaultDataDirectory()), embedded=True,
                             check=False)


def showConfig(
    configuration: Configuration,
    names: List[str],
    nonDefault: bool = False,
    services: bool = False,
    defaults: bool = False,
    expand: bool = False,
    unimplemented: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """
    Print parameters as C{name = value} lines, or the services table, as
    C{postconf} does.

    @return: the exit status: 1 when a named parameter is unknown.
    """
    if services:
        wanted = set(names)
        for entry in configuration.services:
            if not wanted or entry.service in wanted or f"{entry.service}/{entry.type}" in wanted:
                out.write(entry.format() + "\n")
        return 0
    main = configuration.main
    status = 0
    if unimplemented:
        for name, line in main.unimplementedParameters():
            where = f"{main.path}, line {line}" if line else "command line"
            out.write(f"{name} = {main.raw(name)}  # {where}: not implemented yet\n")
        return 0
    if names:
        selected = names
    elif nonDefault:
        selected = sorted(main.explicit)
    else:
        selected = main.names()
    defaultsOnly = MainConfig({"config_directory": main.get("config_directory")})
    for name in selected:
        if not main.isKnown(name) and name not in main.explicit:
            sys.stderr.write(f"tmta: warning: {name}: unknown parameter\n")
            status = 1
            continue
        if defaults:
            value = main.defaultOf(name) or ""
            if expand:
                value = defaultsOnly.get(name)
        elif expand:
            value = main.get(name)
        else:
            value = main.raw(name) or ""
        out.write(f"{name} = {value}".rstrip() + "\n" if value else f"{name} =\n")
    return status


def listQueue(configuration: Configuration, out: TextIO = sys.stdout) -> int:
    """
    Print the queue as Postfix's C{mailq} does: each message with its
    size, arrival time and sender, then each recipient still to be
    delivered, after the reason it is waiting, if any.  C{*} marks a
    message in the active queue, C{!} one on hold.
    """
    import time as _time

    from tmta.queue.qfile import CorruptQueueFile
    from tmta.queue.store import QueueStore

    main = configuration.main
    store = QueueStore.fromConfig(main)
    marks = {"active": "*", "hold": "!", "incoming": "", "deferred": ""}
    count = size = 0
    lines: List[str] = []
    for queueName in ("active", "incoming", "deferred", "hold"):
        try:
            queueIds = store.list(queueName)
        except OSError as e:
            sys.stderr.write(f"tmta: warning: cannot list {queueName}: {e.strerror}\n")
            continue
        for queueId in queueIds:
            try:
                if queueName == "incoming" and not store.isComplete(queueName, queueId):
                    continue
                envelope = store.readEnvelope(queueName, queueId)
            except (OSError, CorruptQueueFile):
                continue
            count += 1
            size += envelope.size
            arrival = _time.strftime("%a %b %d %H:%M:%S", _time.localtime(envelope.arrival))
            lines.append(f"{queueId + marks[queueName]:<20} {envelope.size:>8} {arrival}  "
                         f"{envelope.sender or 'MAILER-DAEMON'}")
            reasons = store.readDeferLog(queueId)
            byReason: Dict[str, List[str]] = {}
            for recipient in envelope.pending():
                byReason.setdefault(reasons.get(recipient.address, ""), []).append(
                    recipient.address)
            for reason, addresses in byReason.items():
                if reason:
                    lines.append(f"{'':42}({reason})")
                lines += [f"{'':42}{address}" for address in addresses]
            lines.append("")
    if not count:
        out.write("Mail queue is empty\n")
        return 0
    out.write(f"{'-Queue ID-':<20} {'--Size--':>8} {'----Arrival Time----':<21} "
              "-Sender/Recipient-------\n")
    out.write("\n".join(lines) + "\n")
    out.write(f"-- {(size + 1023) // 1024} Kbytes in {count} Request"
              f"{'s' if count != 1 else ''}.\n")
    return 0


def flushQueue(configuration: Configuration) -> int:
    """
    Ask qmgr to try every deferred message now (C{postqueue -f}).
    """
    from tmta.queue.layout import socketPath

    if not _wakeQmgr(configuration, "flush"):
        path = socketPath(configuration.main.get("queue_directory"), "qmgr", False)
        sys.stderr.write(f"tmta: fatal: cannot reach qmgr at {path} (is tmta running?)\n")
        return 75  # EX_TEMPFAIL, as postqueue
    return 0


def _wakeQmgr(configuration: Configuration, reason: str) -> bool:
    import socket

    from twisted.protocols import amp

    from tmta.queue.layout import socketPath

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
            if wanted is not None:
                wanted.discard(queueId)
    for queueId in sorted(wanted or ()):
        err.write(f"tmta: warning: {queueId}: not in the "
                  f"{'hold queue' if release else 'incoming or deferred queue'}\n")
    verb = "released from hold" if release else "placed on hold"
    err.write(f"tmta: {verb}: {moved} message{'s' if moved != 1 else ''}\n")
    if release and moved:
        _wakeQmgr(configuration, "timer")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tmta", description="tmta administration")
    parser.add_argument(
        "-c", "--config", help="configuration directory (default: $MAIL_CONFIG, else ~/.tmta)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="show parameters or services (postconf)")
    config.add_argument("-n", action="store_true", help="only parameters set in main.cf")
    config.add_argument("-M", action="store_true", help="show master.cf services")
    config.add_argument("-d", action="store_true", help="show default values")
    config.add_argument("-x", action="store_true", help="expand $name references")
    config.add_argument("--unimplemented", action="store_true",
                        help="list parameters set that tmta does not act on yet")
    # Like postconf, -c may also follow the subcommand.
    config.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    config.add_argument("names", nargs="*")
    queue = commands.add_parser(
        "queue", help="list the queue, flush it, hold or release mail (mailq, postqueue -f, "
                      "postsuper -h/-H)")
    queue.add_argument("action", choices=["list", "flush", "hold", "release"])
    queue.add_argument("queue_ids", nargs="*", metavar="QUEUE_ID",
                       help="for hold and release: the messages, or ALL")
    queue.add_argument("-c", "--config", default=argparse.SUPPRESS,
                       help="configuration directory")
    options = parser.parse_args(argv)
    try:
        configuration = _configuration(options)
        if options.command == "config":
            return showConfig(
                configuration,
                options.names,
                nonDefault=options.n,
                services=options.M,
                defaults=options.d,
                expand=options.x,
                unimplemented=options.unimplemented,
            )
        if options.command == "queue":
            if options.action == "list":
                return listQueue(configuration)
            if options.action in ("hold", "release"):
                if not options.queue_ids:
                    parser.error(f"queue {options.action}: name the messages, or ALL")
                return holdQueue(configuration, options.queue_ids,
                                 release=options.action == "release")
            return flushQueue(configuration)
    except ConfigError as e:
        sys.stderr.write(f"tmta: fatal: {e}\n")
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
