"""
Log lines in the shape mail operators grep for.

Every tmta process logs through L{twisted.logger}.  A worker writes each
event as one line to its standard error (L{lineObserver}); the master
reads those lines and re-emits them tagged with the worker's service and
pid (L{emitWorkerLine}), so that all processes' lines reach the one log
twistd keeps (a file or syslog) as C{tmta/smtpd[1234]: ...}.

When twistd writes a text log (a file, or standard output), the master
gives it a L{MaillogFileObserver}: the same text, but the lines of a
worker arrive as one event (L{emitWorkerLines}) and are written
together, since re-emitting them one event at a time through twistd's
own observer cost the master more than everything else it does.
"""

from __future__ import annotations

import threading
from typing import List, TextIO

from twisted.python.threadable import isInIOThread
from zope.interface import implementer
from twisted.logger import (
    ILogObserver,
    LogLevel,
    Logger,
    formatEvent,
    formatTime,
    textFileLogObserver,
)

_LEVEL_PREFIX = {
    LogLevel.warn: "warning: ",
    LogLevel.error: "error: ",
    LogLevel.critical: "",
}


def _quickFormat(event: dict) -> str:
    """
    The event's message.  C{str.format_map} renders the formats tmta
    itself uses at C speed; L{formatEvent}, a pure-Python formatter, takes
    over for what it cannot render (Twisted's C{{name()}} call syntax,
    missing fields, events without a format).
    """
    format = event.get("log_format")
    if type(format) is str:
        try:
            return format.format_map(event)
        except Exception:
            pass
    return formatEvent(event)


def formatLine(event: dict) -> str:
    """
    Render one event as a single maillog message (without the program
    tag), with Postfix's C{warning:} and C{error:} prefixes.  A
    traceback, if any, follows on lines of its own.
    """
    text = _quickFormat(event)
    level = event.get("log_level")
    prefix = _LEVEL_PREFIX.get(level, "")
    if prefix and text.startswith(prefix):
        prefix = ""
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}".rstrip()
    return prefix + text


def isTwistedChatter(event: dict) -> bool:
    """
    Whether an event is Twisted's informational chatter (ports starting
    and closing, factories starting), which a maillog does not want.
    """
    namespace = event.get("log_namespace", "")
    return event.get("log_level") in (LogLevel.info, LogLevel.debug) and (
        (namespace.startswith("twisted.") and not namespace.startswith("twisted.plugins."))
        or namespace == "log_legacy"
    )


@implementer(ILogObserver)
class LineObserver:
    """
    Writes each event as one line (a traceback as several) to a stream.

    Until L{batchWith} is called every line is flushed at once.  After
    it, lines wait up to C{delay} seconds (or until C{limit} bytes are
    pending) and go out in one write: the master reads and re-emits them
    in one go, instead of waking for every line or two.  Warnings and
    errors are flushed at once.

    Events may come from any thread (a delivery logs from the thread it
    runs in): the lines waiting are guarded by a lock, and the flush is
    scheduled through the reactor thread.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list = []
        self._pendingSize = 0
        self._reactor = None
        self._delay = 0.0
        self._limit = 0
        self._lock = threading.Lock()

    def batchWith(self, reactor, delay: float = 0.05, limit: int = 32768) -> None:
        """
        Batch lines from now on, flushing them with C{reactor}'s timers
        (scheduled through C{reactor.callFromThread} when an event comes
        from another thread).
        """
        self._reactor = reactor
        self._delay = delay
        self._limit = limit

    def __call__(self, event: dict) -> None:
        if isTwistedChatter(event):
            return
        line = formatLine(event) + "\n"
        reactor = self._reactor
        if reactor is None:
            with self._lock:
                self._write(line)
            return
        with self._lock:
            first = not self._pending
            self._pending.append(line)
            self._pendingSize += len(line)
            urgent = (self._pendingSize >= self._limit
                      or event.get("log_level") in _LEVEL_PREFIX)
        if urgent:
            self.flush()
        elif first:
            if isInIOThread():
                reactor.callLater(self._delay, self.flush)
            else:
                reactor.callFromThread(reactor.callLater, self._delay, self.flush)

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                lines, self._pending, self._pendingSize = "".join(self._pending), [], 0
                self._write(lines)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError:
            pass


def lineObserver(stream: TextIO) -> LineObserver:
    """
    A L{LineObserver} on C{stream}.
    """
    return LineObserver(stream)


def emitWorkerLine(logger: Logger, tag: str, line: str) -> None:
    """
    Re-emit a line a worker wrote, tagged with the worker's
    C{name/service[pid]} as its log system.
    """
    if line.startswith("warning: "):
        emit = logger.warn
    elif line.startswith(("error: ", "fatal: ", "panic: ")):
        emit = logger.error
    else:
        emit = logger.info
    emit("{line}", line=line, log_system=tag)


WORKER_LINES = "tmta_worker_lines"


def _workerLineLevel(line: str) -> LogLevel:
    if line.startswith("warning: "):
        return LogLevel.warn
    if line.startswith(("error: ", "fatal: ", "panic: ")):
        return LogLevel.error
    return LogLevel.info


def emitWorkerLines(logger: Logger, tag: str, lines: List[str]) -> None:
    """
    Re-emit lines a worker wrote, as one event for a
    L{MaillogFileObserver}, tagged with the worker's C{name/service[pid]}
    as its log system and at the level of its most severe line.  Any
    other observer sees the lines as one multi-line message.
    """
    level = max((_workerLineLevel(line) for line in lines),
                key=lambda level: _SEVERITY[level])
    logger.emit(level, "{tmta_worker_text}", tmta_worker_text="\n".join(lines),
                log_system=tag, **{WORKER_LINES: lines})


_SEVERITY = {LogLevel.info: 0, LogLevel.warn: 1, LogLevel.error: 2}


@implementer(ILogObserver)
class MaillogFileObserver:
    """
    twistd's text log: events rendered as twistd's own file observer
    renders them (it is one, L{textFileLogObserver}), except that a batch
    of worker lines (L{emitWorkerLines}) becomes one log line each, in
    the same form, written at once.
    """

    def __init__(self, outFile: TextIO) -> None:
        self._outFile = outFile
        self._text = textFileLogObserver(outFile)
        self._second = None
        self._stamp = ""

    def __call__(self, event: dict) -> None:
        lines = event.get(WORKER_LINES)
        if lines is None:
            self._text(event)
            return
        prefix = f"{self._timestamp(event['log_time'])} [{event.get('log_system', '-')}] "
        self._outFile.write(
            "".join(prefix + line.replace("\n", "\n\t") + "\n" for line in lines)
        )
        self._outFile.flush()

    def _timestamp(self, when: float) -> str:
        # twistd's time format stops at seconds: one rendering per second.
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = formatTime(when)
        return self._stamp
