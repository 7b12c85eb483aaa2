"""
Tests for L{tmta.logging}, the master's re-emission of workers' lines
(L{tmta.master.spawner.LineLog}) and the choice of log observer made
from twistd's options (L{tap.tmta.maillogObserver}).
"""

import io
import os
import signal
import sys
import time

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from tap.tmta import maillogObserver
from tmta import logging as tmtaLogging
from tmta.common.syslog import MaillogSyslogObserver
from tmta.config import MainConfig
from tmta.logging import (
    WORKER_LINES,
    LineObserver,
    MaillogFileObserver,
    emitWorkerLines,
    maillogTime,
    stampLine,
    unstampLines,
)
from tmta.master.spawner import LineLog

LINES = [
    "4F00AB: to=<bob@localhost>, relay=local, delay=0.05, dsn=2.0.0, status=sent (ok {x})",
    "warning: something {odd} happened",
    "4F00AB: removed",
]


def _logger(observer):
    publisher = LogPublisher(observer)
    return Logger(namespace="tmta.master.spawner", observer=publisher)


class MaillogFileObserverTests(SynchronousTestCase):
    def test_postfixLineFormat(self):
        """
        A worker's lines are written as Postfix's maillog writes them:
        the local time, the host's first label, the worker's tag and
        pid, the text; a continuation line is indented.
        """
        out = io.StringIO()
        maillog = _logger(MaillogFileObserver(out, host="mx.example.org"))
        when = time.mktime((2026, 12, 7, 9, 5, 1, 0, 0, -1))
        emitWorkerLines(maillog, "tmta/local[42]",
                        [(when, "ABC: to=<a@b>, status=sent"), (when, "one\ntwo")])
        self.assertEqual(out.getvalue().splitlines(),
                         ["Dec 07 09:05:01 mx tmta/local[42]: ABC: to=<a@b>, status=sent",
                          "Dec 07 09:05:01 mx tmta/local[42]: one", "\ttwo"])

    def test_jsonLines(self):
        """
        C{maillog_file_format = json}: one JSON object a line, with the
        time, host, program and pid, the text, and the queue id and
        fields of a line about a message; another form is refused.
        """
        import json

        out = io.StringIO()
        observer = MaillogFileObserver(out, host="mx.example.org")
        observer.configure(MainConfig({"maillog_file_format": "json"}))
        when = 1_800_000_000.5
        emitWorkerLines(_logger(observer), "tmta/local[42]", [
            (when, "4F00AB12: to=<bob@localhost>, orig_to=<b@localhost>, relay=local, "
                   "delay=0.05, dsn=2.0.0, status=sent (delivered to maildir)"),
            (when, "warning: something odd\nhappened")])
        first, second = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual(first, {
            "time": "2027-01-15T08:00:00.500+00:00", "host": "mx", "program": "tmta/local",
            "pid": 42, "message": "4F00AB12: to=<bob@localhost>, orig_to=<b@localhost>, "
            "relay=local, delay=0.05, dsn=2.0.0, status=sent (delivered to maildir)",
            "queue_id": "4F00AB12", "to": "bob@localhost", "orig_to": "b@localhost",
            "relay": "local", "delay": "0.05", "dsn": "2.0.0", "status": "sent",
            "reason": "delivered to maildir"})
        self.assertEqual(second["message"], "warning: something odd\nhappened")
        self.assertNotIn("queue_id", second)
        self.assertRaises(ValueError, observer.configure,
                          MainConfig({"maillog_file_format": "xml"}))

    def test_ordinaryEvents(self):
        """
        The master's own events are written the same way, under its tag
        (C{syslog_name/master}) and pid, with Postfix's C{warning:}
        prefix where they warn.
        """
        out = io.StringIO()
        observer = MaillogFileObserver(out, host="mx")
        observer.configure(MainConfig({"syslog_name": "postfix"}))
        when = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
        for level, text in ((LogLevel.info, "daemon started"), (LogLevel.warn, "odd")):
            observer({"log_format": text, "log_time": when, "log_level": level,
                      "log_namespace": "tmta.master.service", "log_system": "-"})
        self.assertEqual(out.getvalue().splitlines(),
                         [f"Jan 02 03:04:05 mx postfix/master[{os.getpid()}]: daemon started",
                          f"Jan 02 03:04:05 mx postfix/master[{os.getpid()}]: warning: odd"])

    def test_timestampPerEvent(self):
        """
        The time rendered is each batch's own, to the second.
        """
        out = io.StringIO()
        observer = MaillogFileObserver(out)
        for when in (1e9, 1e9 + 0.5, 1e9 + 61):
            observer({WORKER_LINES: [(when, "x")], "log_time": 2e9, "log_system": "t"})
        stamps = [line[:15] for line in out.getvalue().splitlines()]
        self.assertEqual(stamps, [maillogTime(1e9), maillogTime(1e9), maillogTime(1e9 + 61)])
        self.assertNotEqual(stamps[1], stamps[2])

    def test_levelOfMostSevere(self):
        events = []
        def stamped(*texts):
            return [(1.0, text) for text in texts]

        emitWorkerLines(_logger(events.append), "t", stamped("a", "warning: b", "c"))
        emitWorkerLines(_logger(events.append), "t", stamped("a", "fatal: b", "warning: c"))
        emitWorkerLines(_logger(events.append), "t", stamped("a"))
        self.assertEqual([e["log_level"] for e in events],
                         [LogLevel.warn, LogLevel.error, LogLevel.info])
        self.assertEqual(events[0]["log_system"], "t")


class _Clock(Clock):
    running = True

    def addSystemEventTrigger(self, phase, event, f):
        self.shutdown = f


class OrderTests(SynchronousTestCase):
    def setUp(self):
        from twisted.python import threadable

        threadable.registerAsIOThread()
        self.clock = _Clock()
        self.clock.advance(1000)
        self.out = io.StringIO()
        self.observer = MaillogFileObserver(self.out, self.clock, window=0.25)

    def worker(self, system, *lines):
        self.observer({WORKER_LINES: list(lines), "log_system": system,
                       "log_time": self.clock.seconds()})

    def written(self):
        return [line.split(": ", 1)[1] for line in self.out.getvalue().splitlines()]

    def test_timeOrder(self):
        """
        Lines are written in the order they were logged, whichever
        worker's batch reached the master first, in bursts, once they are
        C{window} seconds old.
        """
        self.worker("tmta/qmgr[1]", (999.96, "Q: from=<a>"), (1000.0, "Q: removed"))
        self.worker("tmta/local[2]", (999.98, "Q: to=<b>, status=sent"))
        self.worker("tmta/smtpd[3]", (1000.2, "later"))
        self.assertEqual(self.out.getvalue(), "")
        self.clock.advance(0.25)
        self.assertEqual(self.written(), ["Q: from=<a>", "Q: to=<b>, status=sent",
                                          "Q: removed"])
        self.clock.advance(0.2)
        self.assertEqual(self.written()[3:], ["later"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_ordinaryEventsTakePart(self):
        """
        The master's own events are ordered with the workers' lines.
        """
        self.worker("tmta/local[2]", (999.9, "early"))
        self.observer({"log_format": "daemon stopping", "log_time": 999.95,
                       "log_level": LogLevel.info, "log_namespace": "tmta.master.service",
                       "log_system": "-"})
        self.worker("tmta/local[2]", (999.8, "earliest"))
        self.clock.advance(1)
        self.assertEqual(self.written(), ["earliest", "early", "daemon stopping"])

    def test_notRunning(self):
        """
        Before the reactor runs and after it stopped, lines are written
        at once; what waited is written first, at shutdown.
        """
        self.worker("t", (999.99, "waiting"))
        self.clock.running = False
        self.clock.shutdown()
        self.worker("t", (1000.0, "late"))
        self.assertEqual(self.written(), ["waiting", "late"])


class StampTests(SynchronousTestCase):
    def test_roundTrip(self):
        """
        A stamped line reads back with its time; lines without one take
        the time before them.
        """
        lines = [stampLine(12.5, "first").rstrip("\n"), "continued",
                 stampLine(13.25, "@odd text").rstrip("\n"), "@notatime x"]
        self.assertEqual(unstampLines(lines, 1.0),
                         [(12.5, "first"), (12.5, "continued"), (13.25, "@odd text"),
                          (13.25, "@notatime x")])
        self.assertEqual(unstampLines(["plain"], 7.0), [(7.0, "plain")])
        self.assertEqual(stampLine(None, "x"), "x\n")


class LineLogTests(SynchronousTestCase):
    def setUp(self):
        import tmta.master.spawner as spawner

        self.events = []
        self.patch(spawner, "log", _logger(self.events.append))

    def test_batches(self):
        """
        With C{batch}, each read's complete lines are one event; the
        rest waits for its end of line.
        """
        lines = LineLog(lambda: "tmta/smtpd[7]", batch=True)
        lines.dataReceived(b"@100.5 one\ntwo\n\n@101.25 thr")
        lines.dataReceived(b"ee\n")
        lines.connectionLost()
        self.assertEqual([e[WORKER_LINES] for e in self.events],
                         [[(100.5, "one"), (100.5, "two")], [(101.25, "three")]])

    def test_oneByOne(self):
        lines = LineLog(lambda: "tmta/smtpd[7]")
        lines.dataReceived(b"one\n@5.0 warning: two\nrest")
        lines.connectionLost()
        self.assertEqual([(e["line"], e["log_level"]) for e in self.events],
                         [("one", LogLevel.info), ("warning: two", LogLevel.warn),
                          ("rest", LogLevel.info)])


class MaillogObserverChoiceTests(SynchronousTestCase):
    def setUp(self):
        handler = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, handler)

    def test_leftToTwistd(self):
        """
        A --logger of the operator's, or no twistd at all: twistd (or
        nobody) chooses.
        """
        self.assertIsNone(maillogObserver(None))
        self.assertIsNone(maillogObserver({"logger": "my.observer", "logfile": "x"}))
        self.assertIsNone(maillogObserver({"logfile": "-", "nodaemon": False}))

    def test_syslog(self):
        """
        With C{--syslog}, Postfix's lines go to syslog.
        """
        self.assertIsInstance(maillogObserver({"syslog": True, "nodaemon": True}),
                              MaillogSyslogObserver)

    def test_standardOutput(self):
        for options in ({"nodaemon": True, "logfile": None}, {"nodaemon": True, "logfile": "-"}):
            observer = maillogObserver(options)
            self.assertIsInstance(observer, MaillogFileObserver)
            self.assertIs(observer._outFile, sys.stdout)

    def test_file(self):
        """
        A log file is opened as twistd opens it, and SIGUSR1 rotates it
        (unless something else already handles that signal).
        """
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        path = os.path.join(self.mktemp() + "-dir", "tmta.log")
        os.makedirs(os.path.dirname(path))
        observer = maillogObserver({"nodaemon": False, "logfile": path})
        self.addCleanup(observer._outFile.close)
        self.assertIsInstance(observer._outFile, LogFile)
        self.assertEqual(observer._outFile.path, os.path.abspath(path))
        self.assertTrue(callable(signal.getsignal(signal.SIGUSR1)))

    def test_fileRotationBounded(self):
        """
        The maillog rotates at 10 MB and keeps ten old files, not every
        megabyte forever as twistd's default does.
        """
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        path = os.path.join(self.mktemp() + "-dir", "tmta.log")
        os.makedirs(os.path.dirname(path))
        observer = maillogObserver({"nodaemon": False, "logfile": path})
        logFile = observer._outFile
        self.addCleanup(logFile.close)
        self.assertEqual((logFile.rotateLength, logFile.maxRotatedFiles), (10_000_000, 10))
        for _ in range(12):
            logFile.write("x" * 100 + "\n")
            logFile.rotate()
        self.assertEqual(len(logFile.listLogs()), 10)


class _Reactor:
    """
    The timers and thread hand-off of a reactor, recorded.
    """

    def __init__(self):
        self.timers = []
        self.fromThreads = []

    def callLater(self, delay, f, *args):
        self.timers.append((delay, f))

    def callFromThread(self, f, *args):
        self.fromThreads.append((f, args))


class LineObserverTests(SynchronousTestCase):
    def setUp(self):
        # The test runs in the thread that runs (or will run) the reactor.
        from twisted.python import threadable

        threadable.registerAsIOThread()

    def event(self, text, level=LogLevel.info):
        return {"log_format": text, "log_level": level, "log_namespace": "tmta.x"}

    def test_warningFlushedAtOnce(self):
        """
        Batched lines wait for the timer; a warning takes them out at
        once.
        """
        out = io.StringIO()
        reactor = _Reactor()
        observer = LineObserver(out)
        observer.batchWith(reactor)
        observer({"log_format": "a {n}", "n": 1, "log_level": LogLevel.info,
                  "log_namespace": "tmta.x"})
        self.assertEqual(out.getvalue(), "")
        self.assertEqual(len(reactor.timers), 1)
        observer(self.event("b", LogLevel.warn))
        self.assertEqual(out.getvalue(), "a 1\nwarning: b\n")

    def test_fromAnotherThread(self):
        """
        An event from another thread schedules the flush through the
        reactor thread, never on the reactor's timers directly; lines
        from many threads at once are all written, each whole.
        """
        import threading

        out = io.StringIO()
        reactor = _Reactor()
        observer = LineObserver(out)
        observer.batchWith(reactor, limit=1 << 30)

        def log(n):
            for i in range(200):
                observer(self.event(f"thread {n} line {i}"))

        threads = [threading.Thread(target=log, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(reactor.timers, [])
        self.assertEqual(len(reactor.fromThreads), 1)
        f, args = reactor.fromThreads[0]
        f(*args)
        delay, flush = reactor.timers[0]
        flush()
        lines = out.getvalue().splitlines()
        self.assertEqual(sorted(lines),
                         sorted(f"thread {n} line {i}" for n in range(4) for i in range(200)))


class _InterruptingStream(io.StringIO):
    """
    A stream that, in the middle of its first write, runs C{interrupt}
    (standing in for a signal handler that logs), and fails the test if
    it is written to while it writes.
    """

    def __init__(self, interrupt):
        super().__init__()
        self.interrupt = interrupt
        self.writing = False
        self.reentered = False

    def write(self, text):
        if self.writing:
            self.reentered = True
        self.writing = True
        try:
            interrupt, self.interrupt = self.interrupt, None
            if interrupt is not None:
                interrupt()
            return super().write(text)
        finally:
            self.writing = False


def _inThread(testCase, function):
    """
    Run C{function} in a thread and fail (rather than hang) if it has
    not returned within five seconds: a deadlock is the bug looked for.
    """
    import threading

    errors = []

    def run():
        try:
            function()
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    testCase.assertFalse(thread.is_alive(), "the observer deadlocked")
    if errors:
        raise errors[0]


class ReentrancyTests(SynchronousTestCase):
    """
    A signal handler runs in the main thread between any two bytecodes,
    and twistd's own (on SIGTERM) logs: the observers must take a line
    from it while they are busy with another, without deadlocking and
    without writing to their stream while it writes.
    """

    def test_lineObserverWhileWriting(self):
        """
        A worker's observer, interrupted in the middle of writing by an
        urgent line, writes both, one after the other.
        """
        stream = _InterruptingStream(
            lambda: observer({"log_format": "interrupting", "log_level": LogLevel.warn,
                              "log_namespace": "tmta.x"}))
        observer = LineObserver(stream)
        _inThread(self, lambda: observer({"log_format": "first", "log_level": LogLevel.info,
                                          "log_namespace": "tmta.x"}))
        self.assertFalse(stream.reentered)
        self.assertEqual([text for _, text in unstampLines(stream.getvalue().splitlines(), 0)],
                         ["first", "warning: interrupting"])

    def test_maillogWhileWriting(self):
        """
        The master's observer, interrupted in the middle of writing by
        another event, writes both, one after the other.
        """
        stream = _InterruptingStream(
            lambda: observer({"log_format": "interrupting", "log_level": LogLevel.info,
                              "log_namespace": "x", "log_time": 2.0}))
        observer = MaillogFileObserver(stream)
        _inThread(self, lambda: observer({"log_format": "first", "log_level": LogLevel.info,
                                          "log_namespace": "x", "log_time": 1.0}))
        self.assertFalse(stream.reentered)
        lines = stream.getvalue().splitlines()
        self.assertEqual([line.split(": ", 1)[1] for line in lines], ["first", "interrupting"])

    def test_maillogWhileAdding(self):
        """
        The master's observer, interrupted while it files a worker's
        lines (here, by the rendering of a value), takes the interrupting
        event too.
        """
        out = io.StringIO()
        observer = MaillogFileObserver(out)

        class Interrupting:
            def __str__(self):
                observer({"log_format": "interrupting", "log_level": LogLevel.info,
                          "log_namespace": "x", "log_time": 2.0})
                return "value"

        _inThread(self, lambda: observer({"log_format": "first {v}", "v": Interrupting(),
                                          "log_level": LogLevel.info, "log_namespace": "x",
                                          "log_time": 1.0}))
        lines = out.getvalue().splitlines()
        self.assertEqual(sorted(line.split(": ", 1)[1] for line in lines),
                         ["first value", "interrupting"])

    def test_sigtermWhileLogging(self):
        """
        A real SIGTERM, whose handler logs, arriving again and again
        while the process logs through L{MaillogFileObserver}: every
        line of both is written and nothing hangs.
        """
        out = io.StringIO()
        observer = MaillogFileObserver(out)
        handled = []

        def handler(signum, frame):
            handled.append(signum)
            observer({"log_format": "Received SIGTERM", "log_level": LogLevel.info,
                      "log_namespace": "x", "log_time": time.time()})

        previous = signal.signal(signal.SIGTERM, handler)
        self.addCleanup(signal.signal, signal.SIGTERM, previous)
        signal.setitimer(signal.ITIMER_REAL, 0)
        interval = 0.0005

        def alarm(signum, frame):
            os.kill(os.getpid(), signal.SIGTERM)

        previousAlarm = signal.signal(signal.SIGALRM, alarm)
        self.addCleanup(signal.signal, signal.SIGALRM, previousAlarm)
        signal.setitimer(signal.ITIMER_REAL, interval, interval)
        try:
            deadline = time.monotonic() + 3
            count = 0
            while len(handled) < 50 and time.monotonic() < deadline:
                observer({"log_format": "line {n}", "n": count, "log_level": LogLevel.info,
                          "log_namespace": "x", "log_time": time.time()})
                count += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        lines = out.getvalue().splitlines()
        self.assertGreater(len(handled), 0)
        self.assertEqual(sum(1 for line in lines if line.endswith("Received SIGTERM")),
                         len(handled))
        self.assertEqual(sum(1 for line in lines if "]: line " in line), count)


class PrintableTests(SynchronousTestCase):
    def test_valuesFromTheNetworkMadePrintable(self):
        """
        A logged value with a bare CR, a line end, an escape sequence or
        bytes that were not UTF-8 cannot forge or hide a line: each such
        character becomes C{?}, and the event stays one line.
        """
        stream = io.StringIO()
        logger = Logger(observer=LineObserver(stream))
        hostile = "<a@b>\r" + "Nov 29 smtpd[1]: fake\n\x1b[2K\x9b1A" + b"\xff".decode(
            "utf-8", "surrogateescape")
        logger.info("{queueId}: message-id={mid}", queueId="4F00AB", mid=hostile)
        out = stream.getvalue()
        self.assertEqual(out.count("\n"), 1)
        self.assertNotIn("\r", out)
        self.assertNotIn("\x1b", out)
        self.assertIn("message-id=<a@b>?Nov 29 smtpd[1]: fake??[2K?1A?", out)

    def test_printableKept(self):
        from tmta.logging import printable

        self.assertEqual(printable("to=<jürgen@example.org>, tab\there"),
                         "to=<jürgen@example.org>, tab?here")


class LoggerTests(SynchronousTestCase):
    """
    L{tmta.logging.Logger} emits the events Twisted's C{Logger} does.
    """

    def emitted(self, loggerClass, *args, **kwargs):
        events = []
        logger = loggerClass(namespace="tmta.test", observer=events.append)
        logger.info(*args, **kwargs)
        return events

    def test_sameEvent(self):
        """
        The event carries the same keys and values as Twisted's, bar the
        logger itself and the time.
        """
        ours = self.emitted(tmtaLogging.Logger, "{a} and {b}", a=1, b="two")
        theirs = self.emitted(Logger, "{a} and {b}", a=1, b="two")
        self.assertEqual(len(ours), 1)
        for event in ours + theirs:
            del event["log_logger"]
            self.assertLess(abs(event.pop("log_time") - time.time()), 60)
        self.assertEqual(ours, theirs)
        self.assertEqual(ours[0]["log_level"], LogLevel.info)
        self.assertEqual(ours[0]["log_namespace"], "tmta.test")

    def test_invalidLevel(self):
        """
        An invalid level is reported as Twisted reports it, and nothing
        is emitted at it.
        """
        events = []
        logger = tmtaLogging.Logger(observer=events.append)
        logger.emit("loud", "hello")
        self.assertEqual(len(events), 1)
        self.assertIn("invalid log level", events[0]["log_format"])
        self.assertEqual(events[0]["log_level"], LogLevel.critical)

    def test_trace(self):
        """
        An event with C{log_trace} records the logger and its observer.
        """
        events = []
        logger = tmtaLogging.Logger(observer=events.append)
        trace = []
        logger.info("traced", log_trace=trace)
        self.assertEqual(trace, [(logger, events.append)])

    def test_descriptor(self):
        """
        As a class attribute it names the instance as its source, as
        Twisted's does.
        """
        events = []

        class Thing:
            log = tmtaLogging.Logger(observer=events.append)

        thing = Thing()
        thing.log.info("from a thing")
        self.assertIs(events[0]["log_source"], thing)
        self.assertIsInstance(Thing.log, tmtaLogging.Logger)


class SyslogTests(SynchronousTestCase):
    def test_linesAsPostfixSendsThem(self):
        """
        Each line reaches the syslog socket at C{syslog_facility} with the
        severity its prefix says, tagged with its own program and pid.
        """
        import socket as socketModule

        from tests.support import shortTemporaryDirectory

        path = os.path.join(shortTemporaryDirectory(self), "log")
        server = socketModule.socket(socketModule.AF_UNIX, socketModule.SOCK_DGRAM)
        server.bind(path)
        self.addCleanup(server.close)
        observer = MaillogSyslogObserver(path)
        observer.configure(MainConfig({"syslog_name": "postfix", "syslog_facility": "local3"}))
        when = time.mktime((2026, 12, 7, 9, 5, 1, 0, 0, -1))
        observer({WORKER_LINES: [(when, "ABC: removed"), (when, "warning: odd")],
                  "log_system": "postfix/qmgr[7]", "log_time": when})
        observer({"log_format": "daemon started", "log_level": LogLevel.info,
                  "log_namespace": "tmta.master.service", "log_time": when})
        received = [server.recv(9000).decode() for _ in range(3)]
        local3 = 19 * 8
        self.assertEqual(received, [
            f"<{local3 + 6}>Dec  7 09:05:01 postfix/qmgr[7]: ABC: removed",
            f"<{local3 + 4}>Dec  7 09:05:01 postfix/qmgr[7]: warning: odd",
            f"<{local3 + 6}>Dec  7 09:05:01 postfix/master[{os.getpid()}]: daemon started"])

    def test_noSyslogDropsLines(self):
        """
        With nothing listening, lines are dropped, as syslog(3) drops
        them: logging never fails.
        """
        observer = MaillogSyslogObserver("/nonexistent/log")
        observer({WORKER_LINES: [(1.0, "x")], "log_system": "t", "log_time": 1.0})

    def test_unknownFacility(self):
        with self.assertRaises(ValueError):
            MaillogSyslogObserver(facility="nonsense")

    def test_commandLogToSyslog(self):
        """
        A command's lines (postsuper's queue operations) go to syslog at
        C{syslog_facility} when no C{maillog_file} is set, tagged with
        the command and its pid.
        """
        import socket as socketModule

        from tests.support import shortTemporaryDirectory
        from tmta.common.syslog import CommandLog

        path = os.path.join(shortTemporaryDirectory(self), "log")
        server = socketModule.socket(socketModule.AF_UNIX, socketModule.SOCK_DGRAM)
        server.bind(path)
        self.addCleanup(server.close)
        CommandLog(MainConfig({}), "postsuper", path).info("ABC: removed")
        received = server.recv(9000).decode()
        self.assertRegex(received, rf"^<22>\w{{3}} [ \d]\d \d\d:\d\d:\d\d "
                                   rf"tmta/postsuper\[{os.getpid()}\]: ABC: removed$")
