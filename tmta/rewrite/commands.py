"""
The AMP commands of the trivial-rewrite service.
"""

from twisted.protocols import amp

from tmta.common.command import Command


class RewriteAddress(Command):
    arguments = [(b"address", amp.Unicode())]
    response = [(b"address", amp.Unicode())]


class ResolveAddress(Command):
    arguments = [(b"address", amp.Unicode())]
    response = [
        (b"transport", amp.Unicode()),
        (b"nexthop", amp.Unicode()),
        (b"recipient", amp.Unicode()),
        (b"addressClass", amp.Unicode()),
    ]
