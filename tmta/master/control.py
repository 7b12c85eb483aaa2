"""
The AMP commands between the master and its workers, over the control
channel (a UNIX socketpair on the worker's descriptor 3), and the wake-up
trigger every service understands on its own socket.
"""

from twisted.protocols import amp

from tmta.command import Command


class WorkerStatus(Command):
    """
    Worker to master: whether it can take another client now, and how
    many clients it has accepted so far.
    """

    arguments = [(b"available", amp.Boolean()), (b"served", amp.Integer())]
    requiresAnswer = False


class Shutdown(Command):
    """
    Master to worker: stop accepting clients, finish those in hand, exit.
    """

    arguments = []
    response = []


class Wakeup(Command):
    """
    Anyone to a service: there may be work (Postfix's trigger).  The
    master sends it on a service's wakeup timer; cleanup sends it to qmgr
    with the queue id of each message it queued.
    """

    arguments = [
        (b"reason", amp.Unicode(optional=True)),
        (b"queue_id", amp.Unicode(optional=True)),
    ]
    requiresAnswer = False
