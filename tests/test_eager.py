"""
Tests for L{tmta.common.eager}.
"""

import contextvars

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tmta.common.eager import eagerly


class Boom(Exception):
    pass


class EagerlyTests(SynchronousTestCase):
    def test_finishedAtOnce(self):
        """
        A coroutine that awaits only fired Deferreds (and other
        coroutines) gives its result itself, not a Deferred.
        """
        async def inner():
            return await defer.succeed(2)

        async def outer():
            return await defer.succeed(1) + await inner()

        self.assertEqual(eagerly(outer()), 3)

    def test_raisesAtOnce(self):
        """
        A coroutine that raises before it waits gives a failed Deferred,
        as C{Deferred.fromCoroutine} would.
        """
        async def failing():
            await defer.succeed(None)
            raise Boom()

        self.failureResultOf(eagerly(failing()), Boom)

    def test_failedDeferredAtOnce(self):
        """
        A fired Deferred's failure is raised inside the coroutine, which
        may handle it without waiting.
        """
        async def handling():
            try:
                await defer.fail(Boom())
            except Boom:
                return "handled"

        self.assertEqual(eagerly(handling()), "handled")

    def test_waits(self):
        """
        A coroutine that waits runs up to that point at once; the rest
        runs as each Deferred fires, each passing its own result, and the
        Deferred returned fires with the coroutine's result.
        """
        first, second = defer.Deferred(), defer.Deferred()
        steps = []

        async def waiting():
            steps.append("started")
            a = await first
            steps.append(a)
            b = await defer.succeed("now")
            steps.append(b)
            c = await second
            steps.append(c)
            return a + c

        result = eagerly(waiting())
        self.assertIsInstance(result, defer.Deferred)
        self.assertEqual(steps, ["started"])
        self.assertNoResult(result)
        first.callback("x")
        self.assertEqual(steps, ["started", "x", "now"])
        self.assertNoResult(result)
        second.callback("y")
        self.assertEqual(steps, ["started", "x", "now", "y"])
        self.assertEqual(self.successResultOf(result), "xy")
        # Each Deferred awaited keeps nothing the coroutine still needs.
        self.assertIsNone(self.successResultOf(first))

    def test_failureAfterWaiting(self):
        """
        A Deferred that fails after the coroutine began to wait raises in
        the coroutine, which may handle it; unhandled, it fails the
        Deferred returned.
        """
        handled, unhandled = defer.Deferred(), defer.Deferred()

        async def handling():
            try:
                await handled
            except Boom:
                return "handled"

        async def notHandling():
            await unhandled

        one, two = eagerly(handling()), eagerly(notHandling())
        handled.errback(Boom())
        unhandled.errback(Boom())
        self.assertEqual(self.successResultOf(one), "handled")
        self.failureResultOf(two, Boom)

    def test_cancel(self):
        """
        Cancelling the Deferred returned cancels the one the coroutine
        waits on, and the coroutine sees the cancellation (and may act on
        it: here it lets it through).
        """
        waitedOn = defer.Deferred()
        seen = []

        async def waiting():
            try:
                await waitedOn
            except defer.CancelledError:
                seen.append("cancelled")
                raise

        result = eagerly(waiting())
        result.cancel()
        self.assertEqual(seen, ["cancelled"])
        self.failureResultOf(result, defer.CancelledError)
        self.assertTrue(waitedOn.called)

    def test_contextVariables(self):
        """
        A context variable set before the first wait is still set after
        it, as in a coroutine run by C{Deferred.fromCoroutine}.
        """
        variable = contextvars.ContextVar("variable", default="unset")
        waitedOn = defer.Deferred()

        async def setting():
            variable.set("set")
            await waitedOn
            return variable.get()

        result = eagerly(setting())
        waitedOn.callback(None)
        self.assertEqual(self.successResultOf(result), "set")
