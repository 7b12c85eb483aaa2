"""
Tests for L{tmta.common.reactor}: tmta's epoll reactor, first on its own
terms, then under Twisted's own reactor test suites for TCP, UNIX
sockets, timers and threads, which every reactor Twisted ships must
pass.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import error
from twisted.python import context
from twisted.python import log as legacyLog
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tmta.common import reactor as directreactor

if directreactor.EPollReactor is None:  # pragma: no cover - not Linux
    raise SkipTest("no epoll here")


class _Descriptor:
    """
    A readable end of a socket pair that records what the reactor asks
    of it, and raises from C{doRead} when told to.
    """

    def __init__(self, sock: socket.socket, fail: bool = False) -> None:
        self.sock = sock
        self.fail = fail
        self.reads = 0
        self.lost = []
        self.contexts = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return "descriptor"

    def doRead(self):
        self.reads += 1
        self.contexts.append(context.get(legacyLog.ILogContext))
        self.sock.recv(100)
        if self.fail:
            raise RuntimeError("reading failed")

    def connectionLost(self, reason) -> None:
        self.lost.append(reason)


class DirectDispatchTests(SynchronousTestCase):
    """
    L{directreactor.DirectEPollReactor.doPoll} runs a ready descriptor's
    handler, without a logging context, and handles what it raises as
    Twisted's epoll reactor does.
    """

    def setUp(self) -> None:
        self.reactor = directreactor.DirectEPollReactor()
        self.addCleanup(self.reactor._poller.close)
        for fd in (self.reactor.waker.i, self.reactor.waker.o):
            self.addCleanup(os.close, fd)

    def readable(self, fail: bool = False) -> _Descriptor:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        descriptor = _Descriptor(ours, fail)
        self.reactor.addReader(descriptor)
        self.addCleanup(self.reactor.removeReader, descriptor)
        theirs.send(b"x")
        return descriptor

    def test_dispatches(self) -> None:
        """
        A descriptor with data waiting is read from once per poll, outside
        any logging context of its own.
        """
        descriptor = self.readable()
        self.reactor.doIteration(0)
        self.assertEqual(descriptor.reads, 1)
        self.assertEqual(descriptor.lost, [])
        self.assertEqual(descriptor.contexts[0]["system"], "-")

    def test_failureDisconnects(self) -> None:
        """
        A descriptor whose C{doRead} raises is logged and disconnected;
        the others ready in the same poll are still served.
        """
        failing = self.readable(fail=True)
        working = self.readable()
        self.reactor.doIteration(0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(failing.lost), 1)
        failing.lost[0].trap(RuntimeError)
        self.assertEqual(working.reads, 1)
        self.assertEqual(working.lost, [])

    def test_failureWhileDisconnecting(self) -> None:
        """
        When disconnecting the failed descriptor raises too, that is
        logged and the loop goes on.
        """
        failing = self.readable(fail=True)

        def brokenLost(reason):
            raise ValueError("and so did disconnecting")

        failing.connectionLost = brokenLost  # type: ignore[method-assign]
        working = self.readable()
        self.reactor.doIteration(0)
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertEqual(working.reads, 1)

    def test_unknownDescriptor(self) -> None:
        """
        An event for a descriptor no longer tracked is ignored.
        """
        descriptor = self.readable()
        self.reactor._selectables.pop(descriptor.fileno())
        self.reactor.doIteration(0)
        self.assertEqual(descriptor.reads, 0)
        self.reactor._selectables[descriptor.fileno()] = descriptor


class InstallTests(SynchronousTestCase):
    """
    L{directreactor.install} refuses to replace a reactor already there.
    """

    def test_alreadyInstalled(self) -> None:
        from twisted.internet import reactor

        self.assertIsNotNone(reactor)

        self.assertRaises(error.ReactorAlreadyInstalledError, directreactor.install)


def _skipped(reason: str):
    def test(self):
        raise SkipTest(reason)

    return test


def _twistedSuites() -> dict:
    """
    Twisted's reactor conformance tests, built for L{DirectEPollReactor}
    alone.  They need Twisted's test dependencies (hamcrest); without
    them these tests are not collected, and the tests above still run.
    """
    try:
        from twisted.internet.test import (
            test_core,
            test_tcp,
            test_threads,
            test_time,
            test_unix,
        )
    except ImportError:  # pragma: no cover - Twisted's test extras missing
        return {}
    name = f"{directreactor.__name__}.DirectEPollReactor"
    builders = [
        test_core.SystemEventTestsBuilder,
        test_tcp.TCP4ClientTestsBuilder,
        test_tcp.TCPPortTestsBuilder,
        test_tcp.TCPConnectionTestsBuilder,
        test_tcp.TCPTransportTestsBuilder,
        test_tcp.AdoptStreamConnectionTestsBuilder,
        test_threads.ThreadTestsBuilder,
        test_time.TimeTestsBuilder,
        test_unix.UNIXTestsBuilder,
        test_unix.UNIXPortTestsBuilder,
    ]
    # What the reactor leaves out on purpose: the legacy log context
    # naming the connection an event is for.
    omitted = {"test_logPrefix": "no per-event log context (tmta.common.reactor)"}
    suites = {}
    for builder in builders:
        attributes = {"_reactors": [name]}
        for test, reason in omitted.items():
            if hasattr(builder, test):
                attributes[test] = _skipped(reason)
        subclass = type(builder.__name__, (builder,), attributes)
        suites.update(subclass.makeTestCaseClasses())
    return suites


globals().update(_twistedSuites())
