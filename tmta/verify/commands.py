"""
The AMP commands of the verify service, and the address statuses they
carry (numbered as Postfix's recipient statuses, which is also how
C{address_verify_map} records them).
"""

from twisted.protocols import amp

from tmta.wire.amp import Command

#: Deliverable.
OK = 0
#: Undeliverable for now (a 4xx, a server that could not be reached).
DEFER = 1
#: Undeliverable (a 5xx).
BOUNCE = 2
#: Nothing known yet: a probe is under way.
PROBING = 3

STATUSES = (OK, DEFER, BOUNCE, PROBING)


class VerifyQuery(Command):
    """
    What is known of an address; a probe is sent when nothing is, or
    what is known needs refreshing.  C{status} is one of L{STATUSES},
    C{text} the reason.
    """

    arguments = [(b"address", amp.Unicode())]
    response = [(b"status", amp.Integer()), (b"text", amp.Unicode())]


class VerifyUpdate(Command):
    """
    A probe's result, from the queue manager: C{status} is L{OK},
    L{DEFER} or L{BOUNCE}.
    """

    arguments = [(b"address", amp.Unicode()), (b"status", amp.Integer()),
                 (b"text", amp.Unicode())]
    response = []
