"""
Tests for L{tmta.common.batching}.
"""

import threading

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tmta.common.batching import SerialThread, ThreadBatcher


class _HeldFirstBatch:
    """
    A batcher's work that doubles each item, holding its first batch
    until C{release} is set; C{started} is set when that batch begins
    and C{later} when any later one runs.
    """

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.later = threading.Event()
        self.batches = []

    def __call__(self, items):
        self.batches.append(list(items))
        if len(self.batches) == 1:
            self.started.set()
            self.release.wait(10)
        else:
            self.later.set()
        return [item * 2 for item in items]


class ThreadBatcherTests(TestCase):
    def heldBatcher(self):
        work = _HeldFirstBatch()
        batcher = ThreadBatcher(reactor, work)
        self.addCleanup(batcher.stop)
        return batcher, work

    @defer.inlineCallbacks
    def test_batches(self):
        """
        Items asked for while a batch runs go together in the next one;
        each Deferred gets its own item's result.
        """
        batcher, work = self.heldBatcher()
        first = batcher.submit(1)
        self.assertTrue(work.started.wait(10))
        rest = [batcher.submit(n) for n in (2, 3, 4)]
        work.release.set()
        results = yield defer.gatherResults([first] + rest)
        self.assertEqual(results, [2, 4, 6, 8])
        self.assertEqual(work.batches, [[1], [2, 3, 4]])

    def test_nextBatchWithoutTheReactor(self):
        """
        When a batch is done the thread takes the next one itself: it
        does not wait for the reactor thread (blocked here until the
        second batch has run) to hand it over.
        """
        batcher, work = self.heldBatcher()
        first = batcher.submit(1)
        self.assertTrue(work.started.wait(10))
        second = batcher.submit(2)
        work.release.set()
        self.assertTrue(work.later.wait(10))
        self.assertEqual(work.batches, [[1], [2]])
        return defer.gatherResults([first, second]).addCallback(self.assertEqual, [2, 4])

    @defer.inlineCallbacks
    def test_earlyAnswers(self):
        """
        With C{early}, the work may hand out an item's result while the
        batch goes on; it is not handed out again, and a failure later
        in the batch fails only the items not yet answered.
        """
        held = threading.Event()
        release = threading.Event()
        batches = []

        def work(items, answer):
            batches.append(list(items))
            answer(0, f"early {items[0]}")
            if len(batches) == 1:
                held.set()
                release.wait(10)
            if items[-1] == "boom":
                raise RuntimeError("broken")
            return ["not this"] + [f"{i}!" for i in items[1:]]

        batcher = ThreadBatcher(reactor, work, early=True)
        self.addCleanup(batcher.stop)
        first = batcher.submit("a")
        self.assertEqual((yield first), "early a")
        self.assertTrue(held.wait(10))
        # Asked for while the first batch is held: one batch.
        later = [batcher.submit(x) for x in ("x", "y", "boom")]
        release.set()
        results = yield defer.DeferredList(later, consumeErrors=True)
        self.assertEqual(batches[1:], [["x", "y", "boom"]])
        self.assertEqual(results[0], (True, "early x"))
        self.assertFalse(results[1][0])
        self.assertFalse(results[2][0])

    @defer.inlineCallbacks
    def test_failureFailsTheBatch(self):
        def work(items):
            raise RuntimeError("broken")

        batcher = ThreadBatcher(reactor, work)
        self.addCleanup(batcher.stop)
        d = batcher.submit(1)
        yield self.assertFailure(d, RuntimeError)
        # The batcher is usable afterwards.
        batcher.work = lambda items: list(items)
        self.assertEqual((yield batcher.submit(5)), 5)


    @defer.inlineCallbacks
    def test_resultsHandedOutAround(self):
        """
        A batch's results are handed out inside the C{around} context:
        every callback runs within one entry into it.
        """
        from contextlib import contextmanager

        events = []

        @contextmanager
        def around():
            events.append("enter")
            yield
            events.append("exit")

        def seen(result):
            events.append(result)

        started = threading.Event()
        release = threading.Event()

        def work(items):
            started.set()
            release.wait(10)
            return list(items)

        batcher = ThreadBatcher(reactor, work, around=around)
        self.addCleanup(batcher.stop)
        first = batcher.submit(1)
        self.assertTrue(started.wait(10))
        rest = [batcher.submit(n).addCallback(seen) for n in (2, 3)]
        release.set()
        yield defer.gatherResults([first] + rest)
        yield defer.succeed(None)
        self.assertEqual(events[events.index(2) - 1 :], ["enter", 2, 3])
        self.assertEqual(events[:2], ["enter", "exit"])


class SerialThreadTests(TestCase):
    def setUp(self):
        self.thread = SerialThread(reactor, "test-serial")
        self.addCleanup(self.thread.stop)

    @defer.inlineCallbacks
    def test_inOrderOneAtATime(self):
        """
        Calls run in the order asked for, never two at once, all in one
        thread that is not the reactor's; results come back in the
        reactor thread.
        """
        running = []
        seen = []

        def work(n):
            running.append(n)
            self.assertEqual(len(running), 1)
            seen.append((n, threading.get_ident()))
            running.remove(n)
            return n * 10

        main = threading.get_ident()
        results = yield defer.gatherResults([self.thread.call(work, n) for n in range(20)])
        self.assertEqual(results, [n * 10 for n in range(20)])
        self.assertEqual([n for n, _ in seen], list(range(20)))
        self.assertEqual(len({ident for _, ident in seen}), 1)
        self.assertNotEqual(seen[0][1], main)
        result = yield self.thread.call(threading.get_ident)
        self.assertEqual(result, seen[0][1])

    @defer.inlineCallbacks
    def test_failure(self):
        """
        An exception in the thread fails that call's Deferred; the thread
        goes on with the next call.
        """
        def broken():
            raise OSError("disk full")

        failed = self.thread.call(broken)
        after = self.thread.call(lambda: "next")
        yield self.assertFailure(failed, OSError)
        self.assertEqual((yield after), "next")

    @defer.inlineCallbacks
    def test_postedFailureLogged(self):
        """
        An exception a posted call lets out is logged, and the thread
        goes on with the next call.
        """
        def broken():
            raise OSError("disk full")

        self.thread.post(broken)
        self.assertEqual((yield self.thread.call(lambda: "next")), "next")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_stopWaitsForCalls(self):
        """
        L{SerialThread.stop} returns after the calls already asked for
        have run, and the thread is gone.
        """
        release = threading.Event()
        done = []

        def slow():
            release.wait(10)
            done.append(1)

        self.thread.call(slow)
        self.thread.call(done.append, 2)
        thread = self.thread._thread
        threading.Timer(0.1, release.set).start()
        self.thread.stop()
        self.assertEqual(done, [1, 2])
        self.assertFalse(thread.is_alive())
