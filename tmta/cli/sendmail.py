"""
C{tmta-sendmail}: the Sendmail-compatible posting command, and
C{tmta-mailq}.

It is not set-uid: it runs as the user who posts.  The message goes into
C{maildrop/} (world-writable and sticky; new files take the mail
owner's group from the directory) as a queue file only that user and
the mail system can read, written under a temporary name, fsynced and
then renamed.  pickup takes it from there, deciding the sender from the
file's owner; mail posted while tmta is stopped waits there until it
runs.
"""

from __future__ import annotations

import os
import sys
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import BinaryIO, List, Optional, Tuple

from tmta.cli.maildrop import Posting, post, wakePickup

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_TEMPFAIL = 75

USAGE = "usage: tmta-sendmail [options] [recipient ...]"

#: Options that take a value, as Sendmail's and Postfix's parse them.
_WITH_VALUE = set("BCFLNRVXbfhmopqr")


class UsageError(Exception):
    pass


def parseArguments(argv: List[str]) -> Posting:
    """
    Parse Sendmail's command line.  Options Sendmail users pass that mean
    nothing here (C{-oem}, C{-odb}, C{-v}, ...) are accepted and ignored,
    as Postfix does.

    @raise UsageError: an option that cannot be honoured or is malformed.
    """
    posting = Posting()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            posting.recipients += args
            break
        if not arg.startswith("-") or arg == "-":
            posting.recipients.append(arg)
            continue
        flag, value = arg[1], arg[2:]
        if flag in _WITH_VALUE and not value and flag not in "bq" and flag != "o":
            if not args:
                raise UsageError(f"option -{flag} requires a value")
            value = args.pop(0)
        if flag == "b":
            if value not in ("m", "p", "s", "i", "d", "D", "v"):
                raise UsageError(f"-b{value} is not supported")
            if value in ("d", "D"):
                raise UsageError(f"-b{value} is not implemented yet")
            posting.mode = value
        elif flag == "t":
            posting.extract = True
        elif flag == "i":
            posting.dotEnds = False
        elif flag == "f" or flag == "r":
            posting.sender = value.strip().strip("<>") if value.strip() != "<>" else ""
        elif flag == "F":
            posting.fullName = value
        elif flag == "C":
            posting.configDirectory = value
        elif flag == "N":
            posting.notify = _checked(value.upper(), _notifyValue, "bad -N option value")
        elif flag == "R":
            posting.ret = _checked(value.upper(), lambda v: v in ("FULL", "HDRS"),
                                   "bad -R option value")
        elif flag == "V":
            posting.envid = _checked(value, lambda v: len(v) <= 100 and v.isprintable(),
                                     "bad -V option value")
        elif flag == "G":
            # Gateway submission: header addresses are left as they are,
            # which is what tmta does with mail posted here already.
            pass
        elif flag == "L":
            pass  # the logging label: syslog_name says it
        elif flag == "q":
            posting.queueRun = True
        elif flag == "o":
            # -oi as -i; the rest (-oem, -odb, -oQ...) mean nothing here.
            option = value or (args.pop(0) if args and not args[0].startswith("-") else "")
            if option == "i":
                posting.dotEnds = False
            elif option.startswith("Q") and len(option) > 1:
                posting.configDirectory = option[1:]
        elif flag == "v":
            posting.verbose = True
        elif flag in "menUABhX":
            # -v, -m, -e*, -n, -U, -A*, -B*, -h*, -X*: accepted, ignored.
            if flag in _WITH_VALUE and not value and args:
                args.pop(0)
        else:
            raise UsageError(f"unknown option -{flag}")
    if posting.mode == "v":
        # As Postfix: a verification report is about the recipients
        # given, and asks for no notices of its own.
        for given, option in ((posting.extract, "-t"), (posting.notify, "-N"),
                              (posting.ret, "-R"), (posting.verbose, "-v")):
            if given:
                raise UsageError(f"{option} option cannot be used with -bv")
    if posting.notify:
        from tmta.mail.dsn import parseNotify

        posting.notify = parseNotify(posting.notify)
    return posting


def _notifyValue(value: str) -> bool:
    from tmta.mail.dsn import DSNError, parseNotify

    try:
        parseNotify(value)
    except DSNError:
        return False
    return True


def _checked(value: str, valid, warning: str) -> str:
    """
    C{value} when C{valid(value)}; else C{""} (not given), with Postfix's warning
    that the option is ignored (a program passing an odd DSN option still
    gets its mail sent).
    """
    if valid(value):
        return value
    sys.stderr.write(f"tmta-sendmail: warning: {warning} -- ignored\n")
    return ""


def readMessage(source: BinaryIO, dotEnds: bool) -> bytes:
    """
    The message from standard input, line ends made LF; without C{-i} a
    line with a lone dot ends it, as in Sendmail.
    """
    lines = []
    for line in source:
        line = line.rstrip(b"\n").rstrip(b"\r")
        if dotEnds and line == b".":
            break
        lines.append(line)
    return b"".join(line + b"\n" for line in lines)


def extractRecipients(content: bytes) -> Tuple[List[str], bytes]:
    """
    C{-t}: the recipients in To, Cc and Bcc (Resent- ones when there are
    any), and the message with its Bcc headers removed.
    """
    headers = BytesHeaderParser().parsebytes(content)
    resent = any(name.lower().startswith("resent-") for name in headers.keys())
    names = ("resent-to", "resent-cc", "resent-bcc") if resent else ("to", "cc", "bcc")
    values = [value for name in names for value in headers.get_all(name, [])]
    recipients = [address for _, address in getaddresses([str(v) for v in values]) if address]
    return recipients, _withoutBcc(content)


def _withoutBcc(content: bytes) -> bytes:
    end = content.find(b"\n\n")
    head, body = (content, b"") if end < 0 else (content[: end + 1], content[end + 1:])
    kept, skipping = [], False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = name in (b"bcc", b"resent-bcc")
        if not skipping:
            kept.append(line)
    return b"".join(kept) + body


def main(argv: Optional[List[str]] = None, stdin: Optional[BinaryIO] = None) -> int:
    from tmta.config import ConfigError
    from tmta.config.loader import commandConfiguration

    argv = sys.argv[1:] if argv is None else argv
    try:
        posting = parseArguments(argv)
    except UsageError as e:
        sys.stderr.write(f"tmta-sendmail: fatal: {e}\n{USAGE}\n")
        return EX_USAGE
    try:
        # Only a message posted makes the user's embedded default: the
        # queue is then the user's own tmta's, which picks it up.
        posts = posting.mode not in ("p", "i") and not posting.queueRun
        configuration = commandConfiguration(posting.configDirectory, create=posts)
    except ConfigError as e:
        sys.stderr.write(f"tmta-sendmail: fatal: {e}\n")
        return EX_TEMPFAIL
    from tmta.cli.admin import buildAliases, flushQueue, listQueue

    if posting.mode == "p":
        return listQueue(configuration)
    if posting.queueRun:
        return flushQueue(configuration)
    if posting.mode == "i":
        return buildAliases(configuration) and EX_SOFTWARE
    queueDirectory = configuration.main.get("queue_directory")
    if configuration.embedded:
        # The user's own tmta, which may not have run yet: its queue is
        # the user's to make, and it picks the message up when it runs.
        from tmta.queue.layout import createLayout

        try:
            createLayout(queueDirectory)
        except OSError as e:
            sys.stderr.write(f"tmta-sendmail: fatal: cannot make the queue {queueDirectory}: "
                             f"{e.strerror or e}\n")
            return EX_TEMPFAIL
    if posting.mode == "s":
        from tmta.cli.smtpstdio import StdioSMTP

        def postOne(one, content):
            queueId = post(one, content, queueDirectory)
            wakePickup(queueDirectory)
            return queueId

        return StdioSMTP(stdin or sys.stdin.buffer, sys.stdout.buffer,
                         configuration.main.get("myhostname"), posting, postOne,
                         configuration.main.getInt("message_size_limit")).run()
    if posting.mode == "v":
        content = verificationRequest(posting)
    else:
        content = readMessage(stdin or sys.stdin.buffer, posting.dotEnds)
    if posting.extract:
        found, content = extractRecipients(content)
        posting.recipients += found
    if not posting.recipients:
        sys.stderr.write("tmta-sendmail: fatal: no recipients specified\n")
        return EX_USAGE
    from tmta.mail.address import AddressError, checkAddress

    for recipient in posting.recipients:
        try:
            checkAddress(recipient)
        except AddressError as e:
            # Refused now, while someone reads the answer: cleanup would
            # refuse it later and the message end in corrupt/.
            sys.stderr.write(f"tmta-sendmail: fatal: bad recipient address "
                             f"{recipient!r}: {e}\n")
            return EX_DATAERR
    try:
        queueId = post(posting, content, queueDirectory)
    except OSError as e:
        sys.stderr.write(f"tmta-sendmail: fatal: cannot write the message into "
                         f"{queueDirectory}/maildrop: {e.strerror or e}\n")
        return EX_TEMPFAIL
    wakePickup(queueDirectory)
    if posting.mode == "v":
        sys.stdout.write("Mail Delivery Status Report will be mailed to "
                         f"<{posting.sender or _login()}>.\n")
    elif posting.verbose:
        sys.stderr.write(f"tmta-sendmail: queued as {queueId}\n")
    return 0


def verificationRequest(posting: Posting) -> bytes:
    """
    The message C{-bv} posts in place of one read from standard input:
    nothing is delivered, and the report quotes these headers.
    """
    lines = []
    if posting.sender:
        lines.append(f"From: {posting.sender}")
    lines.append("Subject: probe")
    if posting.recipients:
        lines.append("To: " + ",\n\t".join(posting.recipients))
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogateescape")


def _login() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def newaliases(argv: Optional[List[str]] = None) -> int:
    """
    C{tmta-newaliases}: build the alias databases (C{alias_database}).
    """
    return main(["-bi"] + list(sys.argv[1:] if argv is None else argv))


def mailq(argv: Optional[List[str]] = None) -> int:
    """
    C{tmta-mailq}: the queue, as C{mailq} prints it.
    """
    return main(["-bp"] + list(sys.argv[1:] if argv is None else argv))
