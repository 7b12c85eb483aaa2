"""
Blocking work done in a thread, in batches.

Handing work to a thread and its result back costs two wake-ups, which
on a busy two-core machine cost more than a small fsync or unlink.  A
L{ThreadBatcher} runs one batch at a time: what is asked for while a
batch runs waits and goes in the next one, so under load many items
share one hand-off (and the work function may share costs among them,
such as one directory fsync for many files).
"""

from __future__ import annotations

from typing import Callable, Generic, List, Sequence, Tuple, TypeVar

from twisted.internet import defer, threads
from twisted.python.failure import Failure

Item = TypeVar("Item")
Result = TypeVar("Result")


class ThreadBatcher(Generic[Item, Result]):
    """
    Runs C{work(items)} in the reactor's thread pool, one batch at a
    time.

    @param work: called in a thread with a list of items; returns one
        result per item, in order.  If it raises, every item of the batch
        fails with that error.
    """

    def __init__(self, reactor, work: Callable[[Sequence[Item]], Sequence[Result]]) -> None:
        self.reactor = reactor
        self.work = work
        self._pending: List[Tuple[Item, defer.Deferred]] = []
        self._running = False

    def submit(self, item: Item) -> "defer.Deferred[Result]":
        """
        Queue an item for the next batch.

        @return: a Deferred firing with the item's result.
        """
        d: defer.Deferred = defer.Deferred()
        self._pending.append((item, d))
        if not self._running:
            self._next()
        return d

    def _next(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._running = False
            return
        self._running = True
        items = [item for item, _ in batch]
        done = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self.work, items
        )
        done.addBoth(self._finished, batch)

    def _finished(self, results, batch) -> None:
        # The next batch starts before this one's results are handed out,
        # so that the thread is busy again while they are processed.
        self._next()
        for index, (_, d) in enumerate(batch):
            if isinstance(results, Failure):
                d.errback(results)
            else:
                d.callback(results[index])
