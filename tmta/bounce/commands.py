"""
The AMP command of the bounce service.
"""

from twisted.protocols import amp

from tmta.wire import RecordList
from tmta.wire.amp import Command


class BounceRecipients(Command):
    """
    Send the sender of queue file C{queue_id} (in C{active/}) a notice
    about these recipients: of C{kind} C{failure} (the default),
    C{success}, C{delay}, or C{verify} (the report C{sendmail -bv} asks
    for, each recipient's action C{deliverable} or C{undeliverable}).
    Answers with the notice's queue id (C{""} when none was
    due: the null sender).
    """

    arguments = [
        (b"queue_id", amp.Unicode()),
        (b"sender", amp.Unicode()),
        (
            b"recipients",
            RecordList([("address", str), ("original", str), ("dsn", str), ("reason", str),
                        ("orcpt", str, ""), ("action", str, "failed")]),
        ),
        (b"kind", amp.Unicode(optional=True)),
    ]
    response = [(b"notice_id", amp.Unicode())]
