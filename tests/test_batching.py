"""
Tests for L{tmta.batching}.
"""

import threading

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tmta.batching import ThreadBatcher


class ThreadBatcherTests(TestCase):
    @defer.inlineCallbacks
    def test_batches(self):
        """
        Items asked for while a batch runs go together in the next one;
        each Deferred gets its own item's result.
        """
        release = threading.Event()
        batches = []

        def work(items):
            batches.append(list(items))
            if len(batches) == 1:
                release.wait(10)
            return [item * 2 for item in items]

        batcher = ThreadBatcher(reactor, work)
        first = batcher.submit(1)
        rest = [batcher.submit(n) for n in (2, 3, 4)]
        release.set()
        results = yield defer.gatherResults([first] + rest)
        self.assertEqual(results, [2, 4, 6, 8])
        self.assertEqual(batches, [[1], [2, 3, 4]])

    @defer.inlineCallbacks
    def test_failureFailsTheBatch(self):
        def work(items):
            raise RuntimeError("broken")

        batcher = ThreadBatcher(reactor, work)
        d = batcher.submit(1)
        yield self.assertFailure(d, RuntimeError)
        # The batcher is usable afterwards.
        batcher.work = lambda items: list(items)
        self.assertEqual((yield batcher.submit(5)), 5)
