"""
The AMP commands of the trivial-rewrite service.
"""

from twisted.protocols import amp

from tmta.wire.amp import Command


class RewriteAddress(Command):
    arguments = [(b"address", amp.Unicode())]
    response = [(b"address", amp.Unicode())]


class ResolveAddress(Command):
    #: C{sender}, when given, selects a relayhost by
    #: C{sender_dependent_relayhost_maps}; C{verify} routes an address
    #: verification probe (by the C{address_verify_*} parameters).
    arguments = [(b"address", amp.Unicode()), (b"sender", amp.Unicode(optional=True)),
                 (b"verify", amp.Boolean(optional=True))]
    response = [
        (b"transport", amp.Unicode()),
        (b"nexthop", amp.Unicode()),
        (b"recipient", amp.Unicode()),
        (b"addressClass", amp.Unicode()),
    ]
