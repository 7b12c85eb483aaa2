"""
AMP as tmta's processes speak it to each other.
"""

from __future__ import annotations

from twisted.internet import endpoints
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from tmta.queue.layout import socketPath


class QuietAMP(amp.AMP):
    """
    AMP without a log line for every connection made and lost: tmta
    makes connections per message and per delivery, and the maillog is
    for mail.
    """

    def makeConnection(self, transport) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionLost(self, reason) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


def connectService(reactor, queueDirectory: str, service: str, private: bool = True,
                   protocol: amp.AMP | None = None, timeout: float = 10):
    """
    Connect to a service's socket under C{queueDirectory}.

    @return: a Deferred firing with the connected AMP protocol.
    """
    path = socketPath(queueDirectory, service, private)
    endpoint = endpoints.UNIXClientEndpoint(reactor, path, timeout=timeout)
    factory = _OneConnection(protocol or QuietAMP())
    return endpoint.connect(factory)


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
