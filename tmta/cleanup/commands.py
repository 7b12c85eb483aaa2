"""
The AMP commands of the cleanup service.  A message is Begin (with the
first recipients), Recipients (more batches, if any), Content (any number
of chunks of at most 65,535 bytes, message text with LF line ends), then
End (with the last chunk).  Only End is answered, once the message is
safe on disk (or refused): one round trip per message.

One connection carries any number of messages at once, interleaved:
every command names its message by a number the client chose, unique
among that connection's messages in progress.  (An smtpd process with a
thousand clients in DATA thus holds one connection to cleanup, not a
thousand.)
"""

from twisted.protocols import amp

from tmta.wire import RecordList
from tmta.wire.amp import Command

ATTRIBUTES = RecordList([("name", str), ("value", str)])


def _recipients(optional: bool = False) -> RecordList:
    # notify and orcpt: RFC 3461 NOTIFY and ORCPT, when the client gave
    # them.
    return RecordList([("address", str), ("original", str), ("notify", str, ""),
                       ("orcpt", str, "")], optional=optional)


class CleanupBegin(Command):
    """
    Start a message; the first recipients may come with it.  Its queue
    id comes with End's answer.
    """

    arguments = [
        (b"message", amp.Integer()),
        (b"sender", amp.Unicode()),
        (b"attributes", ATTRIBUTES),
        (b"recipients", _recipients(optional=True)),
    ]
    requiresAnswer = False


class CleanupRecipients(Command):
    """
    Envelope recipients, as C{address} (and C{original}, the address the
    client gave, when it differs).
    """

    arguments = [(b"message", amp.Integer()), (b"recipients", _recipients())]
    requiresAnswer = False


class CleanupContent(Command):
    arguments = [(b"message", amp.Integer()), (b"data", amp.String())]
    requiresAnswer = False


class CleanupEnd(Command):
    """
    Finish the message.  C{code} 250 means queued (durably); 4xx and 5xx
    come with an enhanced status code and text in C{reason}.
    """

    arguments = [(b"message", amp.Integer()), (b"data", amp.String(optional=True))]
    response = [(b"code", amp.Integer()), (b"reason", amp.Unicode()), (b"queue_id", amp.Unicode())]


class CleanupMilter(Command):
    """
    A milter connection smtpd lends for the message's content (its
    descriptor, passed over the UNIX socket), with the connection's
    state (L{tmta.milter.client.describe}) and the macros smtpd knows,
    as JSON.  Sent, one per milter and in their order, before End.
    """

    arguments = [
        (b"message", amp.Integer()),
        (b"descriptor", amp.Descriptor()),
        (b"family", amp.Integer()),
        (b"milter", amp.Unicode()),
        (b"macros", amp.Unicode()),
    ]
    requiresAnswer = False


class CleanupAbort(Command):
    arguments = [(b"message", amp.Integer())]
    requiresAnswer = False


def attributeList(attributes: dict) -> list:
    return [{"name": k, "value": v} for k, v in attributes.items()]
