"""
The wake-up trigger: how one part tells another that there may be work,
as Postfix's triggers do.
"""

from twisted.protocols import amp

from tmta.wire.amp import Command


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
