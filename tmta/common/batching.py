"""
Blocking work done in a thread of its own, one call at a time, and in
batches.

Handing work to a thread and its result back costs two wake-ups, which
on a busy two-core machine cost more than a small fsync or unlink.
Twisted's thread pool adds its own bookkeeping to each hand-off (a team
coordinator, a worker queue, a context copy): about 170 CPU-microseconds
a round trip here, against about 105 for a L{SerialThread}, one thread
fed through a C{queue.SimpleQueue}.  A service that does its blocking
work one piece at a time anyway -- local delivers one message at a
time, cleanup commits one batch at a time -- needs nothing more.

A L{ThreadBatcher} runs one batch at a time: what is asked for while a
batch runs waits and goes in the next one, so under load many items
share one hand-off (and the work function may share costs among them,
such as one directory fsync for many files).  Its thread takes the next
batch itself as soon as one is done, rather than waiting for the reactor
thread to hand it over: a busy thread is never put to sleep and woken
again, and only the results cross back.
"""

from __future__ import annotations

import queue
import threading
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Generic, List, Optional, Sequence, Tuple, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from tmta.logging import Logger

log = Logger()

Item = TypeVar("Item")
Result = TypeVar("Result")

# A call for the thread: the function, its arguments, and the Deferred for
# its result (None when nothing is to come back).  None alone ends it.
_Call = Tuple[Callable[..., Any], tuple, Optional[defer.Deferred]]


class SerialThread:
    """
    One thread that runs blocking calls in the order they are asked for,
    one at a time, and hands each result back to the reactor thread.

    The thread starts with the first call and is stopped (after the
    calls already asked for) when the reactor shuts down, or by
    L{stop}.
    """

    def __init__(self, reactor, name: str = "tmta-blocking") -> None:
        self.reactor = reactor
        self.name = name
        self._calls: "queue.SimpleQueue[Optional[_Call]]" = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._trigger = None

    def call(self, function: Callable[..., Result], *args: Any) -> "defer.Deferred[Result]":
        """
        Run C{function(*args)} in the thread.

        @return: a Deferred firing, in the reactor thread, with its
            result or its failure.
        """
        self._start()
        d: defer.Deferred = defer.Deferred()
        self._calls.put((function, args, d))
        return d

    def post(self, function: Callable[[], Any]) -> None:
        """
        Run C{function()} in the thread, and nothing more: no result
        comes back (an error it lets out is logged, and the thread goes
        on).
        """
        self._start()
        self._calls.put((function, (), None))

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
            self._trigger = self.reactor.addSystemEventTrigger(
                "during", "shutdown", self._reactorShutdown
            )

    def _run(self) -> None:
        callFromThread = self.reactor.callFromThread
        while True:
            call = self._calls.get()
            if call is None:
                return
            function, args, d = call
            if d is None:
                try:
                    function(*args)
                except BaseException:
                    log.failure("{name}: posted call failed", name=self.name)
                continue
            try:
                result = function(*args)
            except BaseException:
                callFromThread(d.errback, Failure())
            else:
                callFromThread(d.callback, result)

    def stop(self) -> None:
        """
        Let the calls already asked for finish, then end the thread.
        """
        thread, self._thread = self._thread, None
        if thread is None:
            return
        if self._trigger is not None:
            self.reactor.removeSystemEventTrigger(self._trigger)
            self._trigger = None
        self._calls.put(None)
        thread.join()

    def _reactorShutdown(self) -> None:
        self._trigger = None
        self.stop()


class ThreadBatcher(Generic[Item, Result]):
    """
    Runs C{work(items)} in a L{SerialThread}, one batch at a time.

    @param work: called in a thread with a list of items; returns one
        result per item, in order.  If it raises, every item of the batch
        fails with that error.
    @param around: a context in which a batch's results are handed out
        (such as L{tmta.wire.heldWrites}, so that what is sent in answer
        goes out together).
    @param early: C{work} is called as C{work(items, answer)}, and may
        hand out an item's result before the batch ends with
        C{answer(index, result)} (from its thread); the results it
        returns for those are not handed out again.
    """

    def __init__(self, reactor, work: Callable[..., Sequence[Result]],
                 around: Optional[Callable[[], ContextManager[Any]]] = None,
                 early: bool = False) -> None:
        self.reactor = reactor
        self.work = work
        self.around = around or nullcontext
        self.early = early
        # Shared with the thread: the items waiting for the next batch,
        # and whether the thread is (or has been asked to start) taking
        # them.
        self._lock = threading.Lock()
        self._pending: List[Tuple[Item, defer.Deferred]] = []
        self._draining = False
        self.thread = SerialThread(reactor, "tmta-batch")

    def submit(self, item: Item) -> "defer.Deferred[Result]":
        """
        Queue an item for the next batch.

        @return: a Deferred firing with the item's result.
        """
        d: defer.Deferred = defer.Deferred()
        with self._lock:
            self._pending.append((item, d))
            if self._draining:
                return d
            self._draining = True
        self.thread.post(self._drain)
        return d

    def _drain(self) -> None:
        """
        In the thread: run batches until none waits, handing each one's
        results to the reactor thread and going straight on to the next.
        """
        callFromThread = self.reactor.callFromThread
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._draining = False
                    return
            results: Any
            items = [item for item, _ in batch]
            try:
                if self.early:
                    def answer(index: int, result: Any, batch=batch) -> None:
                        callFromThread(self._handOutOne, batch, index, result)

                    results = self.work(items, answer)
                else:
                    results = self.work(items)
            except BaseException:
                results = Failure()
            callFromThread(self._handOut, results, batch)

    def _handOutOne(self, batch, index: int, result) -> None:
        d = batch[index][1]
        if not d.called:
            with self.around():
                d.callback(result)

    def _handOut(self, results, batch) -> None:
        with self.around():
            for index, (_, d) in enumerate(batch):
                if d.called:
                    continue  # answered early
                if isinstance(results, Failure):
                    d.errback(results)
                else:
                    d.callback(results[index])

    def stop(self) -> None:
        """
        Stop the thread, after the batch under way.
        """
        self.thread.stop()
