"""
The AMP commands smtpd sends anvil (L{tmta.anvil}).
"""

from __future__ import annotations

from twisted.protocols import amp

from tmta.wire.amp import Command

#: The events anvil counts per time unit, besides connections.
EVENTS = ("connect", "message", "recipient", "newtls", "auth")


class AnvilConnect(Command):
    """
    A client connected: count it; answer its connections open now and
    connections started in this time unit.
    """

    #: C{address}: the client's address alone, by which a rate shared
    #: between hosts is counted (C{anvil_shared_store}).
    arguments = [(b"ident", amp.Unicode()), (b"address", amp.Unicode(optional=True))]
    response = [(b"count", amp.Integer()), (b"rate", amp.Integer())]


class AnvilDisconnect(Command):
    arguments = [(b"ident", amp.Unicode())]
    response = []


class AnvilEvent(Command):
    """
    A message, recipient, new TLS session or AUTH command: count it and
    answer how many this time unit has seen.
    """

    arguments = [(b"ident", amp.Unicode()), (b"event", amp.Unicode()),
                 (b"address", amp.Unicode(optional=True))]
    response = [(b"rate", amp.Integer())]
