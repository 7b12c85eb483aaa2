"""
The contract between the master and a worker: the descriptors a worker
starts with and its command line.

A worker's descriptors are standard input (C{/dev/null}), standard
output and error (its log, a socket the master reads), the control
channel on L{CONTROL_FD} (AMP over a UNIX socketpair) and, from
L{FIRST_LISTENER_FD} on, the service's listening sockets.  Its command
line is a L{WorkerArguments}.
"""

from __future__ import annotations

import socket
import sys
from typing import List, NoReturn, Tuple

CONTROL_FD = 3
FIRST_LISTENER_FD = 4

FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}


def workerDescriptors(stdin: int, log: int, control: int, listeners: List[int]) -> List[int]:
    """
    The descriptors to give a worker, in order: the one at index N
    becomes the worker's descriptor N.
    """
    return [stdin, log, log, control] + list(listeners)


class WorkerArguments:
    """
    A worker's command line, as the master writes it::

        NAME/TYPE -c DIR [--accepted DIR] [--embedded] [-o NAME=VALUE]...
            [--listen FAMILY:FD]...

    @ivar service: C{NAME/TYPE} from master.cf.
    @ivar config: the configuration directory.
    @ivar accepted: where the master keeps the main.cf and master.cf it
        accepted (C{""}: read C{config}'s own).
    @ivar overrides: C{NAME=VALUE} parameter overrides.
    @ivar embedded: the master runs on its embedded default.
    @ivar listen: C{FAMILY:FD}, FAMILY C{inet}, C{inet6} or C{unix}.
    """

    def __init__(self, service: str = "", config: str = "", embedded: bool = False) -> None:
        self.service = service
        self.config = config
        self.accepted = ""
        self.overrides: List[str] = []
        self.embedded = embedded
        self.listen: List[str] = []

    def addListener(self, familyName: str) -> None:
        """
        Pass the next listening socket, of family C{familyName} (C{inet},
        C{inet6} or C{unix}).
        """
        self.listen.append(f"{familyName}:{FIRST_LISTENER_FD + len(self.listen)}")

    def listeners(self) -> List[Tuple[int, socket.AddressFamily]]:
        """
        The listening sockets as C{(descriptor, address family)}.
        """
        found = []
        for spec in self.listen:
            family, _, fd = spec.partition(":")
            found.append((int(fd), FAMILIES[family]))
        return found

    def toArgv(self) -> List[str]:
        """
        The command line that L{parseArguments} reads back.
        """
        argv = [self.service, "-c", self.config]
        if self.accepted:
            argv += ["--accepted", self.accepted]
        if self.embedded:
            argv.append("--embedded")
        for override in self.overrides:
            argv += ["-o", override]
        for spec in self.listen:
            argv += ["--listen", spec]
        return argv


def parseArguments(argv: List[str]) -> WorkerArguments:
    """
    Read a worker's command line.

    Every worker is started with one, so this is a plain loop rather
    than argparse, whose parser costs a worker a few milliseconds of
    start-up to build.

    @raise SystemExit: the command line is not one the master writes.
    """
    parsed = WorkerArguments()
    withValue = {"-c": "config", "--config": "config", "--accepted": "accepted"}
    appended = {"-o": parsed.overrides, "--listen": parsed.listen}
    words = iter(argv)
    for word in words:
        if word == "--embedded":
            parsed.embedded = True
        elif word in withValue or word in appended:
            value = next(words, None)
            if value is None:
                _usage(f"{word} needs a value")
            if word in withValue:
                setattr(parsed, withValue[word], value)
            else:
                appended[word].append(value)
        elif word.startswith("-") or parsed.service:
            _usage(f"unexpected argument {word!r}")
        else:
            parsed.service = word
    if not parsed.service:
        _usage("no service given")
    if not parsed.config:
        _usage("no configuration directory given (-c DIR)")
    return parsed


def _usage(problem: str) -> NoReturn:
    sys.stderr.write(
        "usage: tmta-worker NAME/TYPE -c DIR [--embedded] [-o NAME=VALUE]... "
        f"[--listen FAMILY:FD]...\ntmta-worker: error: {problem}\n"
    )
    raise SystemExit(2)


