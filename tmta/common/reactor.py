"""
The reactor tmta's workers run on: Twisted's epoll reactor, dispatching
each ready descriptor straight to it.

Twisted's epoll reactor runs every read or write event inside
C{twisted.python.log.callWithLogger}, which pushes a logging context
naming the connection (its C{logPrefix}) for the legacy
C{twisted.python.log} API, catches what escapes, and pops the context
again: four frames and two dictionary copies around every event.  tmta
logs through C{twisted.logger} and tags its lines by process, never by
connection, so a worker has no use for that context, and at a dozen
events per message across its processes the wrapping costs more than
some of the work it wraps.  L{DirectEPollReactor} dispatches with the
same error handling and nothing else.

Linux only, like the epoll reactor it extends; elsewhere workers run on
Twisted's default reactor (see L{install}).
"""

from __future__ import annotations

import errno
from typing import Any

from tmta.logging import Logger

try:
    from twisted.internet.epollreactor import EPollReactor
except ImportError:  # pragma: no cover - not Linux
    EPollReactor = None  # type: ignore[assignment,misc]

log = Logger()


if EPollReactor is not None:

    class DirectEPollReactor(EPollReactor):  # type: ignore[valid-type,misc]
        """
        An epoll reactor that runs a ready descriptor's C{doRead} or
        C{doWrite} without C{callWithLogger}'s logging context around it.

        What the event raises is handled as Twisted handles it: a
        connection whose C{doRead} or C{doWrite} raises is logged and
        disconnected (that happens in C{_doReadOrWrite}, unchanged); an
        error in that handling itself is logged here, and the loop goes
        on with the next descriptor.
        """

        def doPoll(self, timeout: Any) -> None:
            if timeout is None:
                timeout = -1
            try:
                ready = self._poller.poll(timeout, len(self._selectables))
            except OSError as err:
                if err.errno == errno.EINTR:
                    return
                raise
            selectables = self._selectables
            dispatch = self._doReadOrWrite
            for fd, event in ready:
                selectable = selectables.get(fd)
                if selectable is None:
                    continue
                try:
                    dispatch(selectable, fd, event)
                except BaseException:
                    log.failure("while handling an event of {selectable!r}",
                                selectable=selectable)

        doIteration = doPoll


def install() -> Any:
    """
    Install L{DirectEPollReactor} as the global reactor (where epoll
    exists; Twisted's default reactor otherwise).

    @return: the reactor installed.
    @raise twisted.internet.error.ReactorAlreadyInstalledError: a reactor
        is already installed.
    """
    if EPollReactor is None:  # pragma: no cover - not Linux
        from twisted.internet import default

        default.install()
    else:
        from twisted.internet.main import installReactor

        installReactor(DirectEPollReactor())
    from twisted.internet import reactor

    return reactor
