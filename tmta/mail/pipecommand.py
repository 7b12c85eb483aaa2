"""
Delivering a message to a command: what local(8) does for C{|command}
targets and C{mailbox_command}, and pipe(8) for every recipient.

The command runs as an unprivileged account (never root), in a session
of its own so that a time limit kills it and everything it started.  The
message is written to its standard input while its output (standard
output and error together) is read, so neither side can stall the other;
the first few hundred bytes of output become the reason when it fails.
Its exit status is read as C{sysexits.h} codes, as Postfix does.

Blocking: delivery agents call L{runCommand} from a thread.
"""

from __future__ import annotations

import grp
import os
import pwd
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional

from tmta.delivery import BOUNCED, DEFERRED, SENT


class CommandConfigError(ValueError):
    """
    A master.cf entry that runs a command (pipe, spawn) and cannot be
    run as written.
    """


class CommandAccountError(CommandConfigError):
    """
    The entry's C{user=} names no account (yet).  Stock master.cf files
    carry entries for accounts most machines lack (C{vmail}, C{uucp}):
    as with Postfix, such an entry fails when it is used, not at
    start-up.
    """



def commandAccount(spec: str, component: str):
    """
    The account and group a master.cf C{user=name[:group]} names.

    @return: C{(pwd entry, gid)}.
    @raise CommandAccountError: no such account or group.
    @raise CommandConfigError: root, which commands never run as.
    """
    userName, _, groupName = spec.partition(":")
    try:
        account = pwd.getpwnam(userName)
    except KeyError:
        raise CommandAccountError(f"{component}: user={userName}: no such account")
    gid = account.pw_gid
    if groupName:
        try:
            gid = grp.getgrnam(groupName).gr_gid
        except KeyError:
            raise CommandAccountError(f"{component}: user={spec}: no such group")
    if account.pw_uid == 0 or gid == 0:
        raise CommandConfigError(f"{component}: user={spec}: commands never run as root")
    return account, gid



def commandEntryProblems(parse: Callable[[List[str]], object],
                         arguments: List[str]) -> List[str]:
    """
    What keeps a master.cf entry that runs a command (pipe, spawn) from
    running: C{parse(arguments)} refuses its arguments (no command, no
    C{user=}, root).  An account that does not exist yet is not one: the
    service fails when it is used, as Postfix's does.
    """
    try:
        parse(arguments)
    except CommandAccountError:
        return []
    except CommandConfigError as e:
        return [str(e)]
    return []


#: sysexits.h: the exit status, its enhanced status code and its meaning
#: (as Postfix's sys_exits table has them).  Only 4.x.x codes defer.
SYSEXITS: Dict[int, tuple] = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}

#: How much of a command's output a reason carries.
OUTPUT_LIMIT = 400

DEFAULT_PATH = "/usr/bin:/bin"


@dataclass
class CommandOutcome:
    """
    What became of a delivery to a command: C{status} is L{SENT},
    L{DEFERRED} or L{BOUNCED}, with its enhanced status code and reason.
    """

    status: str
    dsn: str
    reason: str


def shellCommand(command: str, shell: str = "") -> List[str]:
    """
    The argument vector for a C{|command} line: C{local_command_shell}
    when set, else C{/bin/sh -c}.
    """
    if shell.strip():
        return shell.split() + ["-c", command]
    return ["/bin/sh", "-c", command]


def filterValue(value: str, allowed: str) -> str:
    """
    Replace every character of C{value} outside C{allowed}
    (C{command_expansion_filter}) with C{_}: what comes from a message
    never reaches a command or its environment with a character a shell
    would act on.
    """
    return "".join(c if c in allowed else "_" for c in value)


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def runCommand(
    argv: List[str],
    message: Iterable[bytes],
    uid: int,
    gid: int,
    environment: Dict[str, str],
    directory: str = "/",
    timeLimit: float = 1000.0,
) -> CommandOutcome:
    """
    Run C{argv} as C{uid}/C{gid} with C{message} on its standard input.

    @raise ValueError: C{uid} is 0: nothing from the mail system runs a
        command as root.
    """
    if uid == 0:
        raise ValueError("commands are never run as root")
    options: dict = {}
    if os.geteuid() == 0:
        options = {"user": uid, "group": gid, "extra_groups": []}
    elif uid != os.geteuid():
        return CommandOutcome(DEFERRED, "4.3.0",
                              f"cannot run a command as uid {uid} without root privileges")
    if not os.path.isdir(directory):
        directory = "/"
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=environment, cwd=directory, start_new_session=True, close_fds=True,
            **options)
    except OSError as e:
        return CommandOutcome(DEFERRED, "4.3.0", f"cannot run {argv[0]}: {e.strerror or e}")
    output, timedOut = _exchange(process, iter(message), timeLimit)
    if timedOut:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass
    code = process.wait()
    said = _printable(output[:OUTPUT_LIMIT])
    tail = f". Command output: {said}" if said else ""
    if timedOut:
        return CommandOutcome(BOUNCED, "5.3.0", f"command time limit exceeded{tail}")
    if code == 0:
        return CommandOutcome(SENT, "2.0.0", "delivered to command: " + " ".join(argv[-1:]))
    if code < 0:
        return CommandOutcome(DEFERRED, "4.3.0", f"command died with signal {-code}{tail}")
    dsn, meaning = SYSEXITS.get(code, ("5.3.0", "unknown mail system error"))
    status = DEFERRED if dsn.startswith("4") else BOUNCED
    return CommandOutcome(status, dsn, f"command died with status {code}: {meaning}{tail}")


def _exchange(process: subprocess.Popen, chunks, timeLimit: float):
    """
    Feed the message in and read the output until the command closes
    its output or the time limit passes.  A command that does not read
    all of its input is not an error (C{/bin/true} is a valid target).

    @return: (the first output, up to a few kilobytes; whether time ran
        out).
    """
    deadline = time.monotonic() + timeLimit
    selector = selectors.DefaultSelector()
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None and stdout is not None, "the command runs with pipes"
    os.set_blocking(stdin.fileno(), False)
    selector.register(stdin, selectors.EVENT_WRITE)
    selector.register(stdout, selectors.EVENT_READ)
    pending = b""
    output = bytearray()
    inputOpen = outputOpen = True
    try:
        while outputOpen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(output), True
            for key, _ in selector.select(min(remaining, 1.0)):
                if key.fileobj is stdout:
                    data = os.read(stdout.fileno(), 65536)
                    if not data:
                        selector.unregister(stdout)
                        outputOpen = False
                    elif len(output) < 4096:
                        output += data
                elif inputOpen:
                    if not pending:
                        pending = next(chunks, b"")
                        if not pending:
                            selector.unregister(stdin)
                            stdin.close()
                            inputOpen = False
                            continue
                    try:
                        written = os.write(stdin.fileno(), pending)
                        pending = pending[written:]
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, OSError):
                        selector.unregister(stdin)
                        stdin.close()
                        inputOpen = False
        # Output closed: wait (within the limit) for the exit.
        while True:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
                return bytes(output), False
            except subprocess.TimeoutExpired:
                return bytes(output), True
    finally:
        selector.close()
        if inputOpen:
            try:
                stdin.close()
            except OSError:
                pass
        stdout.close()


def commandEnvironment(values: Dict[str, Optional[str]], allowed: str,
                       export: Iterable[str] = ()) -> Dict[str, str]:
    """
    The environment of a command: C{PATH}, the variables named in
    C{export_environment} that tmta itself has, and C{values} (C{HOME},
    C{SENDER}, C{RECIPIENT}, ...), each filtered through
    C{command_expansion_filter}.
    """
    environment = {"PATH": DEFAULT_PATH}
    for name in export:
        if name in os.environ:
            environment[name] = os.environ[name]
    for name, value in values.items():
        if value is not None:
            environment[name] = filterValue(value, allowed)
    return environment
