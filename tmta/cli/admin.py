"""
C{tmta}: the operator's command, with subcommands in the manner of
Postfix's C{postconf}, C{postqueue} and C{postsuper}.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, TextIO, Tuple

from tmta.config import ConfigError, Configuration, MainConfig, configDirectoryFromEnvironment
from tmta.config.loader import defaultDataDirectory, loadConfiguration, prepareEmbedded
from tmta.queue.listing import QueueUnreadable, queuedMessages, queueListing


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
    deleted = 0
    for name, queueId in _selected(store, queueIds, queues):
        try:
            store.remove(name, queueId)
            store.removeDeferLog(queueId)
            deleted += 1
        except OSError as e:
            err.write(f"tmta: warning: {queueId}: cannot delete: {e.strerror}\n")
    if queueIds != ["ALL"]:
        for queueId in queueIds:
            if _findMessage(store, queueId, ("active",)):
                err.write(f"tmta: warning: {queueId}: being delivered (active); "
                          "try again once it is deferred\n")
    err.write(f"tmta: deleted: {deleted} message{'s' if deleted != 1 else ''}\n")
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
    moved = 0
    for name, queueId in _selected(store, queueIds, ("deferred", "hold")):
        try:
            store.move(queueId, name, "incoming")
            moved += 1
        except OSError as e:
            err.write(f"tmta: warning: {queueId}: cannot requeue: {e.strerror}\n")
    err.write(f"tmta: requeued: {moved} message{'s' if moved != 1 else ''}\n")
    if moved:
        _wakeQmgr(configuration, "incoming")
    return 0


def deliverMessage(configuration: Configuration, queueId: str,
                   err: TextIO = sys.stderr) -> int:
    """
    Try one deferred message now (C{postqueue -i}).
    """
    from tmta.queue.store import QueueStore

    if not _checkIds([queueId], err) or queueId == "ALL":
        if queueId == "ALL":
            err.write("tmta: fatal: deliver takes one queue id (flush tries them all)\n")
        return 1
    store = QueueStore.fromConfig(configuration.main)
    where = _findMessage(store, queueId)
    if where is None:
        err.write(f"tmta: fatal: {queueId}: no such message\n")
        return 1
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
                err: TextIO = sys.stderr) -> int:
    """
    Print a queued message as C{postcat -q} does: the envelope, then
    the header section and the body.
    """
    import time as _time

    from tmta.queue.qfile import CorruptQueueFile, iterContent, readEnvelope
    from tmta.queue.store import QueueStore

    if not _checkIds([queueId], err) or queueId == "ALL":
        return 1
    store = QueueStore.fromConfig(configuration.main)
    where = _findMessage(store, queueId)
    if where is None:
        err.write(f"tmta: fatal: {queueId}: no such message\n")
        return 1
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
    text = "\n".join(lines) + "\n*** MESSAGE CONTENTS ***\n"
    out.write(text)
    out.flush()
    raw = getattr(out, "buffer", None)
    for part, title in ((head, None), (body, "*** HEADER EXTRACTED / BODY ***")):
        if title:
            out.write("\n" + title + "\n")
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
    try:
        for chunk in queueListing(store):
            out.write(chunk)
        return 0
    except QueueUnreadable:
        pass
    return _askShowq(configuration, out)


def _askShowq(configuration: Configuration, out: TextIO) -> int:
    import socket

    from tmta.queue.layout import socketPath

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


def queryMap(spec: str, keys: List[str], out: TextIO = sys.stdout,
             err: TextIO = sys.stderr, allWithKeys: bool = False) -> int:
    """
    Look keys up in a table, as C{postmap -q} does: each value found is
    printed (with its key when there are several keys, or with
    C{allWithKeys}, as C{postmap -q -} prints them); the exit status is
    1 when none is found.
    """
    from tmta.tables import TableError, openTable

    try:
        table = openTable(spec)
    except TableError as e:
        err.write(f"tmta: fatal: {e}\n")
        return 2
    found = False
    for key in keys:
        value = table.get(key)
        if value is not None:
            found = True
            out.write(f"{key}\t{value}\n" if len(keys) > 1 or allWithKeys else f"{value}\n")
    return 0 if found else 1


def buildMaps(specs: List[str], defaultType: str = "hash", err: TextIO = sys.stderr,
              aliases: bool = False) -> int:
    """
    Build the database of each table source, as C{postmap} (or, with
    C{aliases}, C{postalias}) does: C{FILE} or C{type:FILE}, the type
    defaulting to C{default_database_type}.  Each database is replaced
    whole, so lookups never see a partly built table.  The lines Postfix
    warns about are warned about, each with its file and line.
    """
    from tmta.tables import parseTextTable
    from tmta.tables.compiled import SUFFIXES, build

    status = 0
    for spec in specs:
        kind, sep, source = spec.partition(":")
        if not sep or "/" in kind:
            kind, source = defaultType, spec
        if kind not in SUFFIXES:
            err.write(f"tmta: fatal: {spec}: tmta builds databases only for "
                      f"{', '.join(sorted(SUFFIXES))} tables\n")
            status = 1
            continue
        try:
            with open(source, encoding="utf-8", errors="surrogateescape") as f:
                warnings: List[str] = []
                table = parseTextTable(f.read().splitlines(), aliases, source, warnings)
            for warning in warnings:
                err.write(f"tmta: warning: {warning}\n")
            build(kind, source, table)
        except OSError as e:
            err.write(f"tmta: fatal: {spec}: {e.strerror or e}\n")
            status = 1
        except ValueError as e:
            err.write(f"tmta: fatal: {spec}: {e}\n")
            status = 1
    return status


def buildAliases(configuration: Configuration, err: TextIO = sys.stderr) -> int:
    """
    C{tmta-newaliases}: build every table in C{alias_database}.  Types
    with nothing to build (C{texthash:}, C{regexp:}, ...) are skipped,
    as newaliases does.
    """
    from tmta.config import splitList
    from tmta.tables.compiled import SUFFIXES

    main = configuration.main
    specs = [spec for spec in splitList(main.get("alias_database"))
             if spec.partition(":")[0] in SUFFIXES or ":" not in spec]
    return buildMaps(specs, main.get("default_database_type"), err, aliases=True)


#: What install-compat links: the name other programs run, where they
#: look for it, and tmta's command behind it.
COMPAT_LINKS = (("sbin/sendmail", "tmta-sendmail"), ("bin/mailq", "tmta-mailq"),
                ("bin/newaliases", "tmta-newaliases"))


def installCompat(prefix: str, force: bool = False, scripts: Optional[str] = None,
                  err: TextIO = sys.stderr) -> int:
    """
    Link C{sendmail}, C{mailq} and C{newaliases} under C{prefix} to tmta's commands, so
    that cron and mail programs post through tmta.  Another MTA's files
    are not replaced unless C{force}, and then kept beside as
    C{NAME.pre-tmta}.
    """
    import shutil

    if scripts is None:
        found = shutil.which("tmta-sendmail")
        scripts = os.path.dirname(found) if found else os.path.dirname(sys.argv[0])
    planned = []
    for relative, command in COMPAT_LINKS:
        target = os.path.abspath(os.path.join(scripts, command))
        if not os.access(target, os.X_OK):
            err.write(f"tmta: fatal: {target} is not installed\n")
            return 1
        link = os.path.join(prefix, relative)
        if os.path.lexists(link):
            if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(target):
                continue
            if not force:
                err.write(f"tmta: fatal: {link} exists and is not tmta's (another MTA?); "
                          "--force replaces it, keeping it as "
                          f"{os.path.basename(link)}.pre-tmta\n")
                return 1
        planned.append((link, target))
    for link, target in planned:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.replace(link, link + ".pre-tmta")
        os.symlink(target, link)
        err.write(f"tmta: {link} -> {target}\n")
    return 0


def manageUsers(configuration: Configuration, action: str, names: List[str],
                passwordStdin: bool = False, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr) -> int:
    """
    C{tmta user}: add, change (passwd), remove or list the users of
    tmta's own SASL password table (C{smtpd_sasl_type = tmta}).  A
    password is read from standard input with C{--password-stdin}, else
    asked for twice at the terminal; it never appears on a command line.
    """
    import getpass

    from tmta.sasl import passwordFile
    from tmta.sasl.passwords import PasswordTableError, changeTable, listUsers

    main = configuration.main
    path = passwordFile(main)
    if action == "list":
        for name in listUsers(path):
            out.write(name + "\n")
        return 0
    group = None
    if os.geteuid() == 0:
        from tmta.common.accounts import mailOwner

        group = mailOwner(main, configuration.embedded).pw_gid
    for name in names:
        password = None
        if action in ("add", "passwd"):
            if passwordStdin:
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = getpass.getpass(f"Password for {name}: ")
                if getpass.getpass("Again: ") != password:
                    err.write("tmta: fatal: the passwords differ\n")
                    return 1
            if not password:
                err.write("tmta: fatal: empty password\n")
                return 1
        try:
            changeTable(path, name, password, group=group,
                        mustExist=action != "add")
        except (PasswordTableError, OSError) as e:
            err.write(f"tmta: fatal: {path}: {e}\n")
            return 1
        done = {"add": "added", "passwd": "changed", "remove": "removed"}[action]
        err.write(f"tmta: {path}: {name} {done}\n")
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
    queue.add_argument("action", choices=["list", "flush", "hold", "release", "delete",
                                          "requeue", "deliver", "show"])
    queue.add_argument("queue_ids", nargs="*", metavar="QUEUE_ID",
                       help="the messages, or ALL (hold, release, delete, requeue); one "
                            "message (deliver, show)")
    queue.add_argument("--json", action="store_true", help="list: one JSON object per message")
    queue.add_argument("--queue", help="delete: only from this queue")
    queue.add_argument("-c", "--config", default=argparse.SUPPRESS,
                       help="configuration directory")
    tables = commands.add_parser(
        "map", help="build a table's database (postmap FILE) or look keys up (postmap -q)")
    tables.add_argument("action", choices=["query", "build"])
    tables.add_argument("table", help="type:name, as in main.cf (build: [type:]FILE)")
    tables.add_argument("keys", nargs="*", metavar="KEY",
                        help="query: the keys (- reads them from standard input); "
                             "build: more files")
    tables.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    users = commands.add_parser(
        "user", help="add, change, remove or list SMTP AUTH users (smtpd_sasl_type = tmta)")
    users.add_argument("action", choices=["add", "passwd", "remove", "list"])
    users.add_argument("names", nargs="*", metavar="NAME")
    users.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input, one line per name")
    users.add_argument("-c", "--config", default=argparse.SUPPRESS,
                       help="configuration directory")
    compat = commands.add_parser(
        "install-compat", help="link sendmail, mailq and newaliases to tmta's commands")
    compat.add_argument("--prefix", default="/usr", help="where they go (default /usr)")
    compat.add_argument("--force", action="store_true",
                        help="replace another MTA's files (kept as NAME.pre-tmta)")
    # Options may come between a subcommand's words ("user add
    # --password-stdin NAME"): argparse ends a list positional at the
    # first option, so the words after it are the list's too.
    options, extras = parser.parse_known_args(argv)
    listOf = {"config": "names", "queue": "queue_ids", "map": "keys", "user": "names"}
    if extras:
        if any(word.startswith("-") for word in extras) or options.command not in listOf:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        name = listOf[options.command]
        setattr(options, name, getattr(options, name) + extras)
    if options.command == "install-compat":
        return installCompat(options.prefix, options.force)
    if options.command == "map" and options.action == "query":
        if not options.keys:
            parser.error("map query: name the keys, or - to read them from standard input")
        keys = options.keys
        if keys == ["-"]:
            # As postmap -q -: one key a line, each found one printed
            # with its key.
            keys = [line.rstrip("\r\n") for line in sys.stdin]
            return queryMap(options.table, keys, allWithKeys=True)
        return queryMap(options.table, keys)
    try:
        configuration = _configuration(options)
        if options.command == "map":
            return buildMaps([options.table] + options.keys,
                             configuration.main.get("default_database_type"))
        if options.command == "user":
            if options.action != "list" and not options.names:
                parser.error(f"user {options.action}: name the user(s)")
            return manageUsers(configuration, options.action, options.names,
                               options.password_stdin)
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
                return (listQueueJSON if options.json else listQueue)(configuration)
            if options.action in ("delete", "requeue", "deliver", "show"):
                if not options.queue_ids:
                    parser.error(f"queue {options.action}: name the message(s)")
                if options.action == "delete":
                    return deleteMessages(configuration, options.queue_ids, options.queue)
                if options.action == "requeue":
                    return requeueMessages(configuration, options.queue_ids)
                if len(options.queue_ids) != 1:
                    parser.error(f"queue {options.action}: one queue id")
                if options.action == "deliver":
                    return deliverMessage(configuration, options.queue_ids[0])
                return showMessage(configuration, options.queue_ids[0])
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
