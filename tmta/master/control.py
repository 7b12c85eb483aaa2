"""
The AMP commands between the master and its workers, over the control
channel (a UNIX socketpair on the worker's descriptor
L{tmta.common.contract.CONTROL_FD}).  The wake-up trigger every service
understands is L{tmta.wire.triggers.Wakeup}.
"""

from twisted.protocols import amp

from tmta.wire.amp import Command


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
