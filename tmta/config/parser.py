"""
Reading the line structure shared by C{main.cf} and C{master.cf}.

Both files use Postfix's rules: blank lines and lines whose first
non-blank character is C{#} are ignored, a line that starts with white
space continues the previous logical line, and anything else starts a new
logical line.
"""

from __future__ import annotations

from typing import Iterable, Iterator, List, Tuple


class ConfigError(Exception):
    """
    A configuration file could not be understood.

    @ivar path: the file, or C{None} for text that came from elsewhere
        (a command-line override).
    @ivar line: the 1-based line number where the bad logical line starts.
    """

    def __init__(self, path: str | None, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path or "<command line>"
        if self.line is not None:
            where = f"{where}, line {self.line}"
        return f"{where}: {self.reason}"


class ConfigProblems(ConfigError):
    """
    Settings that cannot be honoured or values of the wrong type, found
    before start-up: each names its file and line.
    """

    def __init__(self, problems: List[str]) -> None:
        self.problems = list(problems)
        Exception.__init__(self, str(self))
        self.path, self.line, self.reason = None, None, str(self)

    def __str__(self) -> str:
        return "; ".join(self.problems)


def logicalLines(
    lines: Iterable[str], path: str | None = None, warnings: List[str] | None = None
) -> Iterator[Tuple[int, str]]:
    """
    Join physical lines into logical lines.

    @param lines: the physical lines, with or without line endings.
    @param path: the file name, for error messages.
    @return: C{(lineNumber, text)} for each logical line, where
        C{lineNumber} is that of its first physical line and C{text} has
        its continuation lines joined with single spaces.
    @param warnings: where to note a continuation line that comes before
        any logical line, which is then skipped (as Postfix does with
        main.cf); without it such a line is an error.
    @raise ConfigError: a continuation line comes before any logical line.
    """
    start = 0
    parts: List[str] = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if not parts:
                if warnings is None:
                    raise ConfigError(
                        path, number, "continuation line without a line to continue"
                    )
                warnings.append(f"{path}, line {number}: a logical line must not start "
                                "with white space: skipped")
                continue
            parts.append(stripped)
            continue
        if parts:
            yield start, " ".join(parts)
        start, parts = number, [line.rstrip()]
    if parts:
        yield start, " ".join(parts)


def readLines(path: str) -> List[str]:
    """
    Read a configuration file as text, accepting any byte as Latin-1 so
    that one odd byte in a comment cannot stop start-up.
    """
    with open(path, "rb") as f:
        return linesOf(f.read())


def linesOf(data: bytes) -> List[str]:
    """
    The lines of a configuration file's bytes, as L{readLines} reads
    them.
    """
    # Lines end at LF only, and a CR reads as a space, as Postfix reads
    # them: a file with CR-only line ends is one logical line.
    text = data.decode("utf-8", "surrogateescape").replace("\r", " ")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
