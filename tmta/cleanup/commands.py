"""
The AMP commands of the cleanup service.  A connection carries one
message at a time: Begin, Recipients (any number of batches), Content
(any number of chunks of at most 65,535 bytes, message text with LF line
ends), then End, which answers only when the message is safe on disk.
"""

from twisted.protocols import amp

ATTRIBUTES = amp.AmpList([(b"name", amp.Unicode()), (b"value", amp.Unicode())])


class CleanupBegin(amp.Command):
    arguments = [(b"sender", amp.Unicode()), (b"attributes", ATTRIBUTES)]
    response = [(b"queue_id", amp.Unicode())]


class CleanupRecipients(amp.Command):
    """
    Envelope recipients, as C{address} (and C{original}, the address the
    client gave, when it differs).
    """

    arguments = [
        (b"recipients", amp.AmpList([(b"address", amp.Unicode()), (b"original", amp.Unicode())]))
    ]
    requiresAnswer = False


class CleanupContent(amp.Command):
    arguments = [(b"data", amp.String())]
    requiresAnswer = False


class CleanupEnd(amp.Command):
    """
    Finish the message.  C{code} 250 means queued (durably); 4xx and 5xx
    come with an enhanced status code and text in C{reason}.
    """

    arguments = []
    response = [(b"code", amp.Integer()), (b"reason", amp.Unicode()), (b"queue_id", amp.Unicode())]


class CleanupAbort(amp.Command):
    arguments = []
    requiresAnswer = False


def attributeList(attributes: dict) -> list:
    return [{"name": k, "value": v} for k, v in attributes.items()]
