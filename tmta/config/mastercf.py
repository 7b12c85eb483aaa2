"""
C{master.cf}: the services table.

Each logical line has eight columns -- service name, type, private,
unpriv, chroot, wakeup, maxproc, command -- followed by the command's
arguments, among them C{-o name=value} parameter overrides.  C{-} in a
column means its default.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .maincf import parseAssignment
from .parser import ConfigError, logicalLines, readLines

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")


@dataclass
class MasterEntry:
    """
    One service in master.cf.

    @ivar maxproc: the process limit; C{None} means C{default_process_limit}
        and C{0} means no limit.
    @ivar wakeup: seconds between wake-up triggers, C{0} for none.
    @ivar wakeupIfUsed: the C{N?} form: wake the service only once it has
        been used.
    @ivar overrides: the C{-o name=value} parameters, in order.
    @ivar args: the remaining command arguments.
    """

    service: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int
    wakeupIfUsed: bool
    maxproc: Optional[int]
    command: str
    args: List[str] = field(default_factory=list)
    overrides: Dict[str, str] = field(default_factory=dict)
    line: Optional[int] = None
    #: The seven columns as written (C{-} kept), and the words after the
    #: command in order, C{-o} settings among them: what L{format}
    #: prints back.
    columns: Tuple[str, ...] = ()
    words: List[str] = field(default_factory=list)

    @property
    def key(self) -> Tuple[str, str]:
        """
        What identifies a service: its name and type, as in Postfix.
        """
        return (self.service, self.type)

    def format(self) -> str:
        """
        Render the entry as a master.cf line, as C{postconf -M} does:
        columns as written and aligned, a value with white space in
        C{{ }}.
        """
        columns = self.columns or (
            self.service, self.type, "y" if self.private else "n",
            "y" if self.unpriv else "n", "y" if self.chroot else "n",
            f"{self.wakeup}{'?' if self.wakeupIfUsed else ''}" if self.wakeup else "-",
            "-" if self.maxproc is None else str(self.maxproc))
        words = self.words or (
            [w for name, value in self.overrides.items() for w in ("-o", f"{name}={value}")]
            + self.args)
        # Each field starts at its column, or one space after a field
        # that ran past it.
        line = ""
        for field_, start in zip(list(columns) + [self.command], (0, 11, 17, 25, 33, 41, 49, 57)):
            if line:
                line += " " * max(1, start - len(line))
            line += field_
        rest = [f"{{{w}}}" if any(c.isspace() for c in w) else w for w in words]
        return " ".join([line] + rest)


def _tokens(text: str, path: Optional[str], line: int) -> List[str]:
    """
    Split a master.cf line into words; C{{ ... }} groups a word that
    contains white space, as in Postfix 3.
    """
    words: List[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise ConfigError(path, line, "missing '}'")
            words.append(text[i + 1 : j - 1].strip())
            i = j
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        words.append(text[i:j])
        i = j
    return words


def _flag(word: str, default: bool, column: str, path, line) -> bool:
    if word == "-":
        return default
    if word in ("y", "n"):
        return word == "y"
    raise ConfigError(path, line, f"{column} column: expected y, n or -, got {word!r}")


def parseMasterCf(lines: Iterable[str], path: Optional[str] = None) -> List[MasterEntry]:
    """
    Parse the text of a master.cf file.

    @raise ConfigError: a malformed line, naming file and line; or two
        entries with the same service name and type.
    """
    entries: List[MasterEntry] = []
    seen = set()
    for number, text in logicalLines(lines, path):
        words = _tokens(text, path, number)
        if len(words) < 8:
            raise ConfigError(
                path, number, f"expected at least 8 columns, found {len(words)}"
            )
        service, kind, private, unpriv, chroot, wakeup, maxproc, command = words[:8]
        if kind not in SERVICE_TYPES:
            raise ConfigError(path, number, f"unknown service type {kind!r}")
        if (service, kind) in seen:
            raise ConfigError(path, number, f"duplicate service {service}/{kind}")
        seen.add((service, kind))
        wakeupIfUsed = wakeup.endswith("?")
        wakeupValue = wakeup.rstrip("?")
        try:
            wakeupSeconds = 0 if wakeupValue == "-" else int(wakeupValue)
            maxprocValue = None if maxproc == "-" else int(maxproc)
        except ValueError:
            raise ConfigError(path, number, "wakeup and maxproc must be numbers or -")
        if wakeupSeconds < 0 or (maxprocValue is not None and maxprocValue < 0):
            raise ConfigError(path, number, "wakeup and maxproc must not be negative")
        overrides: Dict[str, str] = {}
        args: List[str] = []
        written: List[str] = []
        rest = iter(words[8:])
        commandArguments = False
        for word in rest:
            commandArguments = commandArguments or any(a.startswith("argv=") for a in args[-1:])
            if commandArguments:
                # Everything after a pipe or spawn command's argv= is the
                # command's: an -o there is one of its arguments.
                args.append(word)
                written.append(word)
                continue
            if word == "-o":
                assignment = next(rest, None)
                if assignment is None:
                    raise ConfigError(path, number, "-o without name=value")
            elif word.startswith("-o") and "=" in word:
                assignment = word[2:]
            else:
                args.append(word)
                written.append(word)
                continue
            name, value = parseAssignment(assignment, path, number)
            overrides[name] = value
            written += ["-o", f"{name}={value}"]
        entries.append(
            MasterEntry(
                service=service,
                type=kind,
                private=_flag(private, kind != "inet", "private", path, number),
                unpriv=_flag(unpriv, True, "unpriv", path, number),
                chroot=_flag(chroot, False, "chroot", path, number),
                wakeup=wakeupSeconds,
                wakeupIfUsed=wakeupIfUsed,
                maxproc=maxprocValue,
                command=command,
                args=args,
                overrides=overrides,
                line=number,
                columns=tuple(words[:7]),
                words=written,
            )
        )
    return entries


def readMasterCf(path: str) -> List[MasterEntry]:
    """
    Read and parse master.cf at C{path}.

    @raise ConfigError: the file is missing, unreadable or malformed.
    """
    try:
        lines = readLines(path)
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}")
    return parseMasterCf(lines, path)


def parseInetAddress(service: str) -> Tuple[Optional[str], int]:
    """
    Split an inet service name into a host and a port.

    C{host:port}, C{[v6addr]:port}, a bare port number and a service name
    from C{/etc/services} (C{smtp}) are understood; a missing host means
    "every address in C{inet_interfaces}".

    @return: C{(host or None, port)}.
    @raise ValueError: the port is not a number or a known service.
    """
    host: Optional[str] = None
    port = service
    if service.startswith("["):
        end = service.find("]")
        if end < 0 or service[end + 1 : end + 2] != ":":
            raise ValueError(f"bad inet service {service!r}")
        host, port = service[1:end], service[end + 2 :]
    elif ":" in service:
        host, _, port = service.rpartition(":")
        host = host or None
    if port.isdigit():
        number = int(port)
    else:
        try:
            number = socket.getservbyname(port, "tcp")
        except OSError:
            raise ValueError(f"unknown service port {port!r}")
    if not 0 <= number <= 65535:
        raise ValueError(f"port out of range in {service!r}")
    return host, number
