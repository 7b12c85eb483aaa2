"""
A pass over one queue directory that keeps its place, so that qmgr can
take up a few files per turn of the reactor however many wait.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional

#: How many queue files one turn of the reactor looks at (and takes up,
#: when due) before it lets deliveries, answers and requests in: a queue
#: run over thousands of deferred messages not yet due holds nothing up.
FEED_SLICE = 50


class QueueScan:
    """
    One pass over a queue directory, taken up a message at a time, and
    what the pass after it must do.

    A pass lists the directory once and keeps its place, so that a pass
    stopped by a full active queue goes on where it was when room is
    made, and a request made during a pass is a second pass after it.

    @ivar queueName: C{incoming} or C{deferred}.
    @ivar everything: this pass takes every message, due or not, and
        marks it flushed (C{tmta queue flush}).
    """

    def __init__(self, queueName: str) -> None:
        self.queueName = queueName
        self.everything = False
        self._names: Optional[Iterator[str]] = None
        self._again = False
        self._againEverything = False

    @property
    def running(self) -> bool:
        return self._names is not None

    def request(self, lister: Callable[[str], List[str]], everything: bool = False) -> None:
        """
        Ask for a pass: start one now, or one more after the pass under
        way (which a flush also makes take everything from here on).
        """
        if self._names is None:
            self._start(lister, everything)
            return
        self._again = True
        self._againEverything = self._againEverything or everything
        self.everything = self.everything or everything

    def _start(self, lister: Callable[[str], List[str]], everything: bool) -> None:
        self._names = iter(lister(self.queueName))
        self.everything = everything

    def next(self, lister: Callable[[str], List[str]]) -> Optional[str]:
        """
        The next queue id of the pass (the next pass's first, when one
        was asked for), or C{None} once the passes asked for are done.
        """
        while self._names is not None:
            for queueId in self._names:
                return queueId
            self._names = None
            if self._again:
                everything, self._again, self._againEverything = self._againEverything, False, False
                self._start(lister, everything)
        return None
