"""
Coroutines that finish at once without a Deferred.

C{Deferred.fromCoroutine} always builds the machinery of a coroutine
that waits -- two Deferreds, a context copy, the inlineCallbacks loop
and a callback to hand the result on -- even for one that awaits only
Deferreds that have already fired and so never waits at all.  Most of
an SMTP session's commands are of that kind (a recipient whose address
class is cached, restrictions that need no lookup), and smtpd answers
tens of thousands of them a minute.  L{eagerly} runs such a coroutine
to its end straight away and gives its result; only one that really
waits becomes a Deferred, from the point where it waits.
"""

from __future__ import annotations

from typing import Any, Coroutine, Generator, TypeVar, Union

from twisted.internet import defer

T = TypeVar("T")


def eagerly(coroutine: Coroutine[Any, Any, T]) -> Union[T, "defer.Deferred[T]"]:
    """
    Run C{coroutine} until it finishes or first waits on a Deferred that
    has not fired.

    @return: its result, if it finished; a Deferred firing with its
        result, if it waits; a failed Deferred, if it raised before
        waiting (as C{Deferred.fromCoroutine} would give).
    """
    try:
        waitingOn = coroutine.send(None)
    except StopIteration as finished:
        return finished.value
    except Exception:
        return defer.fail()
    return defer.Deferred.fromCoroutine(_resume(coroutine, waitingOn))


def _resume(coroutine: Coroutine[Any, Any, T],
            waitingOn: Any) -> Generator[Any, Any, T]:
    """
    Drive the rest of a started coroutine under C{inlineCallbacks}: each
    Deferred it waits on is yielded, and its result (or failure) passed
    back in.

    The result is passed on from within the Deferred's own callback, as
    C{inlineCallbacks} does for a coroutine: C{Deferred.__await__} reads
    the result from the Deferred itself, and it is still there then.
    """
    while True:
        try:
            result = yield waitingOn
        except BaseException as failure:
            try:
                waitingOn = coroutine.throw(failure)
            except StopIteration as finished:
                return finished.value
        else:
            try:
                waitingOn = coroutine.send(result)
            except StopIteration as finished:
                return finished.value
