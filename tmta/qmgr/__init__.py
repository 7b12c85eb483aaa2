"""
qmgr: the queue manager.

It takes complete messages from C{incoming/} (when cleanup wakes it) and
from C{deferred/} (when their retry time has come) into C{active/},
resolves every pending recipient through trivial-rewrite, and hands them
to the delivery agents named by the resolution over AMP, within
per-transport and per-destination concurrency limits.  A delivered
recipient is marked done in the queue file; permanently failed ones are
handed to bounce (and marked done once the notice is queued); the file is
removed when no recipient is left, and otherwise goes back to
C{deferred/} with its next attempt time as its modification time, backing
off from C{minimal_backoff_time} to C{maximal_backoff_time}.  Mail older
than C{maximal_queue_lifetime} is returned.  At start, mail a crash left
in C{active/} is taken up again.
"""
