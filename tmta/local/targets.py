"""
What an alias, a C{.forward} file or an C{:include:} file may name, as
aliases(5) describes: addresses, C{/file/name}, C{|command} and
C{:include:/file/name}, separated by commas, a target with commas or
spaces in it quoted (C{"|exec /usr/bin/filter -a, -b"}).

Reading a C{.forward} or include file checks who may have written it:
a file that another user owns, or that others may write to, is refused,
since its commands and files would run with its owner's rights.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import List, Tuple

ADDRESS, FILE, COMMAND, INCLUDE = "address", "file", "command", "include"

#: Larger forward and include files are refused rather than read.
FILE_LIMIT = 1 << 20


@dataclass(frozen=True)
class Target:
    """
    One destination of an expansion.

    @ivar kind: L{ADDRESS}, L{FILE}, L{COMMAND} or L{INCLUDE}.
    @ivar value: the address, path or command line.
    @ivar literal: an address written C{\\name}: the user's own mailbox,
        with no further alias or forward expansion.
    """

    kind: str
    value: str
    literal: bool = False


class TargetFileError(Exception):
    """
    A C{.forward} or include file that may not be used.

    @ivar temporary: whether it may be usable later (an I/O error) rather
        than refused for what it is.
    """

    def __init__(self, reason: str, temporary: bool = False) -> None:
        super().__init__(reason)
        self.temporary = temporary


def _split(text: str) -> List[str]:
    items, current, quoted, escaped = [], [], False, False
    for c in text:
        if escaped:
            current.append(c)
            escaped = False
        elif c == "\\" and quoted:
            current.append(c)
            escaped = True
        elif c == '"':
            quoted = not quoted
            current.append(c)
        elif c in ",\n" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(c)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parseTargets(value: str) -> List[Target]:
    """
    Parse an alias value or the text of a forward or include file
    (comment lines starting with C{#} are skipped).
    """
    lines = [line for line in value.splitlines() if not line.lstrip().startswith("#")]
    targets = []
    for item in _split("\n".join(lines)):
        unquoted = item
        if len(item) >= 2 and item.startswith('"') and item.endswith('"'):
            unquoted = item[1:-1].replace('\\"', '"')
        if unquoted.startswith("|"):
            targets.append(Target(COMMAND, unquoted[1:].strip()))
        elif unquoted.startswith("/"):
            targets.append(Target(FILE, unquoted))
        elif unquoted.lower().startswith(":include:"):
            targets.append(Target(INCLUDE, unquoted[len(":include:"):].strip()))
        elif item.startswith("\\"):
            targets.append(Target(ADDRESS, item[1:], literal=True))
        else:
            # A quoted local part stays quoted: "a b"@example.org.
            targets.append(Target(ADDRESS, item))
    return targets


def readTargetFile(path: str, owners: tuple) -> Tuple[List[Target], int]:
    """
    Read a forward or include file, opened as whoever calls (the local
    agent takes the right identity first).

    @param owners: the uids that may own it (the user and root).
    @return: its targets, and its owner's uid.
    @raise FileNotFoundError: there is no such file.
    @raise TargetFileError: it may not be used, or cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise TargetFileError(f"cannot open {path}: {e.strerror}",
                              temporary=not isinstance(e, PermissionError))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TargetFileError(f"{path} is not a regular file")
        if st.st_uid not in owners:
            raise TargetFileError(f"{path} is owned by uid {st.st_uid}, not by its user: "
                                  "refused")
        if st.st_mode & 0o022:
            raise TargetFileError(f"{path} is writable by others: refused")
        if st.st_size > FILE_LIMIT:
            raise TargetFileError(f"{path} is too large")
        text = f.read(FILE_LIMIT).decode("utf-8", "surrogateescape")
    return parseTargets(text), st.st_uid
