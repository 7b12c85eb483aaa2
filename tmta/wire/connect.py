"""
Connecting to a service's socket, with writes that go out at once.
"""

from __future__ import annotations

import os

from twisted.internet import endpoints, unix
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from tmta.common.transports import EagerWriteMixin, PlainReadMixin
from tmta.common.twistedcompat import (
    connectorMaking,
)
from tmta.wire.protocol import QuietAMP


def socketPath(queueDirectory: str, service: str, private: bool = True) -> str:
    """
    The UNIX socket of a service: C{private/NAME} or C{public/NAME} under
    the queue directory, as in Postfix.
    """
    return os.path.join(queueDirectory, "private" if private else "public", service)

def connectService(reactor, queueDirectory: str, service: str, private: bool = True,
                   protocol: amp.AMP | None = None, timeout: float = 10):
    """
    Connect to a service's socket under C{queueDirectory}.

    @return: a Deferred firing with the connected AMP protocol.
    """
    path = socketPath(queueDirectory, service, private)
    endpoint = endpoints.UNIXClientEndpoint(_EagerUNIXConnecting(reactor), path, timeout=timeout)
    factory = _OneConnection(protocol or QuietAMP())
    return endpoint.connect(factory)


class _EagerUNIXClient(PlainReadMixin, EagerWriteMixin, unix.Client):
    pass


_EagerUNIXConnector = connectorMaking(_EagerUNIXClient)


class _EagerUNIXConnecting:
    """
    The C{connectUNIX} of a reactor, making connections whose writes go
    out at once (L{EagerWriteMixin}): every command a service sends is
    one write, and the answer is awaited before anything else is sent.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def connectUNIX(self, address, factory, timeout=30, checkPID=0):
        connector = _EagerUNIXConnector(address, factory, timeout, self._reactor, checkPID)
        connector.connect()
        return connector


class _OneConnection(Factory):
    """
    Hands out one given protocol, without logging (Twisted's own
    one-shot factory logs its start and stop).
    """

    noisy = False

    def __init__(self, protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr):
        return self.protocol_
