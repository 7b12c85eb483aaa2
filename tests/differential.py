"""
Shared pieces of the differential tests, which hold tmta against a
private Postfix on the same input: finding Postfix's programs, a
configuration directory for them, and the agreement figure each test
reports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Dict, Iterable, List, Optional, Tuple

#: Where Debian's postfix package puts the programs the tests run.
POSTFIX_PROGRAMS = ("/usr/sbin/postmap", "/usr/sbin/postfix", "/usr/sbin/postconf")


def postfixMissing() -> Optional[str]:
    """
    Why the differential tests cannot run here, or C{None}.
    """
    for program in POSTFIX_PROGRAMS:
        if not os.access(program, os.X_OK):
            return f"Postfix is not installed ({program})"
    return None


def postfixHasTableType(kind: str, configDir: str) -> bool:
    """
    Whether the installed Postfix has table type C{kind} (C{pcre} comes
    in a package of its own).
    """
    try:
        out = subprocess.run(["/usr/sbin/postconf", "-c", configDir, "-m"],
                             capture_output=True, text=True,
                             check=False, timeout=30).stdout
    except OSError:
        return False
    return kind in out.split()


def configDirectory(path: str, settings: Optional[Dict[str, str]] = None) -> str:
    """
    Make C{path} a configuration directory Postfix's commands accept.
    """
    os.makedirs(path, exist_ok=True)
    values = {"compatibility_level": "3.6"}
    values.update(settings or {})
    with open(os.path.join(path, "main.cf"), "w") as f:
        for name, value in values.items():
            f.write(f"{name} = {value}\n")
    return path


def postmapQuery(configDir: str, spec: str, keys: Iterable[str]) -> Tuple[Dict[str, str],
                                                                         List[str]]:
    """
    Look every key up with C{postmap -q -}.

    @return: the values found, by key, and the warnings postmap gave.
    """
    keys = list(keys)
    result = subprocess.run(["/usr/sbin/postmap", "-c", configDir, "-q", "-", spec],
                            input="".join(k + "\n" for k in keys).encode("utf-8"),
                            capture_output=True, check=False, timeout=120)
    found: Dict[str, str] = {}
    for line in result.stdout.decode("utf-8", "surrogateescape").splitlines():
        key, _, value = line.partition("\t")
        found.setdefault(key, value)
    warnings = [line for line in result.stderr.decode("utf-8", "replace").splitlines()
                if ": warning: " in line]
    return found, warnings


def postmapBuild(configDir: str, spec: str, aliases: bool = False) -> List[str]:
    """
    Build a table's database with postmap (or postalias).

    @return: the warnings it gave.
    """
    program = "/usr/sbin/postalias" if aliases else "/usr/sbin/postmap"
    result = subprocess.run([program, "-c", configDir, spec], capture_output=True,
                            check=True, timeout=120)
    return [line for line in result.stderr.decode("utf-8", "replace").splitlines()
            if ": warning: " in line]


_LINE = re.compile(r"line (\d+)")


def warnedLines(warnings: Iterable[str]) -> List[int]:
    """
    The line numbers warnings name, sorted, each once.
    """
    return sorted({int(m.group(1)) for w in warnings for m in [_LINE.search(w)] if m})


def copyFile(source: str, directory: str) -> str:
    """
    A copy of C{source} in C{directory}, so each server builds its own
    database beside its own copy.
    """
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, os.path.basename(source))
    shutil.copyfile(source, target)
    return target


class Agreement:
    """
    Counts the cases where tmta and Postfix agree, and keeps those where
    they do not, for the report a test prints and the assertion it makes.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.differences: List[str] = []

    def compare(self, case: str, postfix: object, tmta: object) -> None:
        self.total += 1
        if postfix != tmta:
            self.differences.append(f"{case}: Postfix {postfix!r}, tmta {tmta!r}")

    @property
    def agreed(self) -> int:
        return self.total - len(self.differences)

    def report(self) -> str:
        return f"{self.name}: {self.agreed}/{self.total} agree"
