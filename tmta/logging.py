"""
Log lines in the shape mail operators grep for.

Every tmta process logs through C{twisted.logger}.  A worker writes each
event as one line to its standard error (L{lineObserver}); the master
reads those lines and re-emits them tagged with the worker's service and
pid (L{emitWorkerLine}), so that all processes' lines reach the one log
twistd keeps (a file or syslog) as C{tmta/smtpd[1234]: ...}.

When twistd writes a text log (a file, or standard output), the master
gives it a L{MaillogFileObserver}, which writes Postfix's maillog lines
(C{Dec 07 13:45:01 host tmta/smtpd[1234]: connect from ...}) so that
Postfix's tools (pflogsumm, fail2ban) read them; with C{--syslog}, a
L{tmta.common.syslog.MaillogSyslogObserver} sends the same lines to syslog's mail facility,
each with its own program's tag.  The lines of a worker arrive as one
event (L{emitWorkerLines}) and are written together, since re-emitting
them one event at a time cost the master more than everything else it
does.  Each line carries the time the worker logged it (L{stampLine}),
and the file observer writes lines in that order.
"""

from __future__ import annotations

import heapq
import os
import re
import socket
import threading
import time
from typing import Any, Callable, List, Optional, TextIO, Tuple

from twisted import logger as _twistedLogger
from twisted.logger import (
    ILogObserver,
    LogLevel,
    formatEvent,
)
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

_LEVELS = frozenset(LogLevel.iterconstants())


class Logger(_twistedLogger.Logger):
    """
    C{twisted.logger.Logger}, emitting the same events more cheaply.

    Twisted's C{emit} checks the level against a freshly sorted list of
    every level, for every event; a maillog line or two per message in
    each process made that a measurable part of a worker's CPU.  Here
    the check is a set lookup; an invalid level still goes to Twisted's
    C{emit}, which reports it.
    """

    def emit(self, level: LogLevel, format: Optional[str] = None, **kwargs: Any) -> None:
        if level not in _LEVELS:
            super().emit(level, format, **kwargs)
            return
        kwargs["log_logger"] = self
        kwargs["log_level"] = level
        kwargs["log_namespace"] = self.namespace
        kwargs["log_source"] = self.source
        kwargs["log_format"] = format
        kwargs["log_time"] = time.time()
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))
        self.observer(kwargs)


_LEVEL_PREFIX = {
    LogLevel.warn: "warning: ",
    LogLevel.error: "error: ",
    LogLevel.critical: "",
}


# C0 and C1 controls, DEL, and bytes that were not UTF-8 (surrogate
# escapes): on a terminal, or to a log reader, they could forge or hide
# lines.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udcff]")


def printable(text: str) -> str:
    """
    C{text} with every character that is not printable replaced by
    C{?}, as Postfix does with what it logs: a value from the network
    (a Message-ID, a HELO name, a remote reply) can neither end a log
    line early nor rewrite it on a terminal.
    """
    # str.isprintable is false for every character the pattern matches
    # (and for some it leaves alone): most lines skip the substitution.
    if text.isprintable():
        return text
    return _UNPRINTABLE.sub("?", text)


def _quickFormat(event: dict) -> str:
    """
    The event's message.  C{str.format_map} renders the formats tmta
    itself uses at C speed; C{formatEvent}, a pure-Python formatter, takes
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
    text = printable(_quickFormat(event))
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


class _SerialWriter:
    """
    Text waiting to be written to a stream, written one write at a time.

    Text may be added from any thread, and from a signal handler, which
    runs in the main thread between any two bytecodes (twistd's, on
    SIGTERM, logs): the lock is reentrant, so such a handler never waits
    for the code it interrupted, and a drain that finds another under way
    leaves its text to that one, which goes on until nothing is left.  A
    stream is thus never written to while it writes, and no text is lost
    or written twice.

    @ivar size: how many characters wait.
    """

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._lock = threading.RLock()
        self._waiting: List[str] = []
        self.size = 0
        self._writing = False

    def add(self, text: str) -> bool:
        """
        Queue C{text}.

        @return: whether nothing was waiting before it.
        """
        with self._lock:
            first = not self._waiting
            self._waiting.append(text)
            self.size += len(text)
        return first

    def drain(self) -> None:
        """
        Write what waits, unless a drain is under way (which writes it).
        """
        with self._lock:
            if self._writing:
                return
            self._writing = True
        try:
            while True:
                with self._lock:
                    if not self._waiting:
                        self._writing = False
                        return
                    # Taken before it is joined: text a signal handler
                    # adds meanwhile goes into the list taken.
                    waiting, self._waiting, self.size = self._waiting, [], 0
                self._write("".join(waiting))
        except BaseException:
            with self._lock:
                self._writing = False
            raise


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
    runs in), or from a signal handler: the lines waiting are kept by a
    L{_SerialWriter}, and the flush is scheduled through the reactor
    thread.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._writer = _SerialWriter(self._write)
        self._reactor = None
        self._delay = 0.0
        self._limit = 0

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
        line = stampLine(event.get("log_time"), formatLine(event))
        writer = self._writer
        first = writer.add(line)
        reactor = self._reactor
        if reactor is None or writer.size >= self._limit or \
                event.get("log_level") in _LEVEL_PREFIX:
            writer.drain()
        elif first:
            if isInIOThread():
                reactor.callLater(self._delay, self.flush)
            else:
                reactor.callFromThread(reactor.callLater, self._delay, self.flush)

    def flush(self) -> None:
        self._writer.drain()

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


def _workerLineLevel(line: str) -> LogLevel:
    if line.startswith("warning: "):
        return LogLevel.warn
    if line.startswith(("error: ", "fatal: ", "panic: ")):
        return LogLevel.error
    return LogLevel.info


def emitWorkerLine(logger: Logger, tag: str, line: str) -> None:
    """
    Re-emit a line a worker wrote, tagged with the worker's
    C{name/service[pid]} as its log system.
    """
    logger.emit(_workerLineLevel(line), "{line}", line=line, log_system=tag)


WORKER_LINES = "tmta_worker_lines"


def stampLine(when: Optional[float], text: str) -> str:
    """
    A line as a worker writes it for the master: C{@TIME TEXT}, TIME the
    event's, so that the master's log can keep the order and time in
    which things happened across processes.
    """
    if when is None:
        return text + "\n"
    return f"@{when:.6f} {text}\n"


def unstampLines(lines: List[str], default: float) -> List[Tuple[float, str]]:
    """
    Read lines a worker wrote: C{(time, text)} for each.  A line with no
    time of its own (a traceback's continuation, or something written to
    standard error directly) takes the time of the line before it, the
    first one C{default}.
    """
    read = []
    when = default
    for line in lines:
        if line.startswith("@"):
            stamp, _, text = line.partition(" ")
            try:
                when = float(stamp[1:])
            except ValueError:
                text = line
            else:
                line = text
        read.append((when, line))
    return read


def emitWorkerLines(logger: Logger, tag: str, lines: List[Tuple[float, str]]) -> None:
    """
    Re-emit lines a worker wrote, each with the time it was logged, as
    one event for a L{MaillogFileObserver}, tagged with the worker's
    C{name/service[pid]} as its log system and at the level of its most
    severe line.  Any other observer sees the lines as one multi-line
    message.
    """
    level = max((_workerLineLevel(text) for _, text in lines),
                key=lambda level: _SEVERITY[level])
    logger.emit(level, "{tmta_worker_text}",
                tmta_worker_text="\n".join(text for _, text in lines),
                log_system=tag, **{WORKER_LINES: lines})


_SEVERITY = {LogLevel.info: 0, LogLevel.warn: 1, LogLevel.error: 2}


@implementer(ILogObserver)
class MaillogFileObserver:
    """
    twistd's text log, in the order things happened.

    Events are rendered as twistd's own text observer renders them; a
    batch of worker lines (L{emitWorkerLines}) becomes one log line
    each, stamped with the time the worker logged it.  Workers send
    their lines in batches, so lines reach the master up to a batch
    late: every line waits here C{window} seconds and lines are written
    in time order, so that a message's lines read as in Postfix's log
    (C{status=sent} from local before C{removed} from qmgr).  Before the
    reactor runs, and once it has stopped, lines are written at once.

    @param clock: the reactor, for its time, its timers and whether it
        runs; C{None} to write every line at once.
    """

    def __init__(self, outFile: TextIO, clock=None, window: float = 0.25,
                 host: Optional[str] = None, program: str = "tmta/master") -> None:
        """
        @param host: the host name each line names (its first label),
            by default this machine's.
        @param program: the tag of the master's own lines (its pid is
            added): C{syslog_name/master}.
        """
        self._outFile = outFile
        self._clock = clock
        self.window = window
        self.host = shortHostname(host)
        self.program = program
        self._pending: List[Tuple[float, int, str]] = []
        self._sequence = 0
        self._timer = None
        # Reentrant: a signal handler (twistd's on SIGTERM) logs from the
        # main thread, possibly while that thread is inside this observer.
        self._lock = threading.RLock()
        self._stamp: Tuple[Optional[int], str] = (None, "")
        self._writer = _SerialWriter(self._writeOut)
        #: Whether lines are JSON objects (L{configure}).
        self.json = False
        if clock is not None:
            clock.addSystemEventTrigger("after", "shutdown", self.flush)

    def configure(self, config) -> None:
        """
        Take the master's tag from the configuration (C{syslog_name}),
        and the lines' form (C{maillog_file_format}: C{text}, Postfix's
        lines, or C{json}, L{jsonLine}'s).

        @raise ValueError: another form.
        """
        self.program = f"{config.get('syslog_name')}/master"
        form = config.get("maillog_file_format").strip().lower() or "text"
        if form not in ("text", "json"):
            raise ValueError(f"maillog_file_format = {form}: text or json")
        self.json = form == "json"

    def __call__(self, event: dict) -> None:
        lines = event.get(WORKER_LINES)
        with self._lock:
            if lines is None:
                when = event.get("log_time") or 0.0
                text = formatLine(event)
                if text:
                    self._add(when, self._line(when, f"{self.program}[{os.getpid()}]", text))
            else:
                system = event.get("log_system", "-")
                for when, line in lines:
                    self._add(when, self._line(when, system, line))
        clock = self._clock
        if clock is None or not getattr(clock, "running", False):
            self.flush()
        elif isInIOThread():
            self._wake()
        else:
            clock.callFromThread(self._wake)

    def _line(self, when: float, program: str, text: str) -> str:
        if self.json:
            return jsonLine(when, self.host, program, text) + "\n"
        return f"{self._timestamp(when)} {self.host} {program}: " \
            + text.replace("\n", "\n\t") + "\n"

    def _add(self, when: float, text: str) -> None:
        self._sequence += 1
        heapq.heappush(self._pending, (when, self._sequence, text))

    def _wake(self) -> None:
        # One timer at a time: lines are written in bursts, not one by one.
        if self._timer is None:
            self._timer = self._clock.callLater(self.window, self._drain)

    def _drain(self) -> None:
        """
        Write the lines that have waited long enough; wait for the rest.
        """
        self._timer = None
        now = self._clock.seconds()
        with self._lock:
            cutoff = now - self.window
            due = []
            while self._pending and self._pending[0][0] <= cutoff:
                due.append(heapq.heappop(self._pending)[2])
            nextDue = self._pending[0][0] + self.window - now if self._pending else None
        if due:
            self._write("".join(due))
        if nextDue is not None:
            self._timer = self._clock.callLater(max(nextDue, 0.01), self._drain)

    def flush(self) -> None:
        """
        Write every line waiting, in time order.
        """
        due = []
        with self._lock:
            # One line at a time: a signal handler that flushes meanwhile
            # takes the rest, and no line is taken twice.
            while self._pending:
                due.append(heapq.heappop(self._pending)[2])
        if due:
            self._write("".join(due))

    def _write(self, text: str) -> None:
        self._writer.add(text)
        self._writer.drain()

    def _writeOut(self, text: str) -> None:
        self._outFile.write(text)
        self._outFile.flush()

    def _timestamp(self, when: float) -> str:
        # The format stops at seconds: one rendering per second.
        second = int(when)
        cached, stamp = self._stamp
        if second != cached:
            stamp = maillogTime(when)
            self._stamp = (second, stamp)
        return stamp


_PROGRAM = re.compile(r"^(?P<program>.*?)\[(?P<pid>\d+)\]$")
_QUEUED = re.compile(r"^(?P<id>[0-9A-Za-z]{6,}): (?P<rest>.*)$", re.S)
_FIELD = re.compile(r"(?:^|, )(?P<key>[a-z][a-z_-]*)=(?P<value><[^>]*>|[^,]*?)(?= \(|, |$)")


def jsonLine(when: float, host: str, program: str, text: str) -> str:
    """
    One maillog line as a JSON object, for a log pipeline that should not
    have to parse Postfix's text: C{time} (ISO 8601, UTC), C{host},
    C{program} and C{pid}, C{message} (the text as Postfix's line has
    it), C{queue_id} when the line is about a message, and the
    C{name=value} fields the line carries (C{to}, C{relay}, C{status},
    ...: addresses without their angle brackets), with the C{reason} in
    parentheses after C{status}.
    """
    import json
    from datetime import datetime, timezone

    record: dict = {
        "time": datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds"),
        "host": host,
    }
    match = _PROGRAM.match(program)
    if match:
        record["program"], record["pid"] = match.group("program"), int(match.group("pid"))
    else:
        record["program"] = program
    record["message"] = text
    queued = _QUEUED.match(text)
    if queued and any(c.isdigit() for c in queued.group("id")):
        record["queue_id"] = queued.group("id")
        rest = queued.group("rest")
        for field in _FIELD.finditer(rest):
            value = field.group("value")
            record.setdefault(field.group("key"), value[1:-1] if value.startswith("<")
                              and value.endswith(">") else value)
        status = re.search(r"(?:^|, )status=\S+ \((?P<reason>.*)\)$", rest, re.S)
        if status:
            record["reason"] = status.group("reason")
    return json.dumps(record, ensure_ascii=False)


def maillogTime(when: float) -> str:
    """
    A time as Postfix's maillog writes it: C{Dec 07 13:45:01}, local time.
    """
    return time.strftime("%b %d %H:%M:%S", time.localtime(when))


def shortHostname(host: Optional[str] = None) -> str:
    """
    The first label of C{host} (by default this machine's name), as
    Postfix names the host in its log lines.
    """
    return (host or socket.gethostname()).split(".", 1)[0] or "localhost"
