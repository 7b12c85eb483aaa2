"""
The AMP command of the bounce service.
"""

from twisted.protocols import amp


class BounceRecipients(amp.Command):
    """
    Send the sender of queue file C{queue_id} (in C{active/}) a notice
    about these recipients.  Answers with the notice's queue id (C{""}
    when none was due: the null sender).
    """

    arguments = [
        (b"queue_id", amp.Unicode()),
        (b"sender", amp.Unicode()),
        (
            b"recipients",
            amp.AmpList(
                [
                    (b"address", amp.Unicode()),
                    (b"original", amp.Unicode()),
                    (b"dsn", amp.Unicode()),
                    (b"reason", amp.Unicode()),
                ]
            ),
        ),
    ]
    response = [(b"notice_id", amp.Unicode())]
