"""
Tests for L{tmta.showq}: the listing written to each client as it is
made, and a failure said plainly.
"""

from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from tmta.showq import ShowqProtocol


class ClosingTransport(StringTransport):
    """
    A transport that says when the protocol closes it.
    """

    def __init__(self):
        super().__init__()
        self.closed = defer.Deferred()
        self.writes = []

    def write(self, data):
        self.writes.append(len(data))
        super().write(data)

    def loseConnection(self):
        super().loseConnection()
        if not self.closed.called:
            self.closed.callback(None)


class ShowqProtocolTests(TestCase):
    @defer.inlineCallbacks
    def test_listingInPieces(self):
        """
        A long listing reaches the client whole, in writes of about 64 KB
        made as it is produced, and the connection is closed after it.
        """
        lines = [f"{n:018X}  {'x' * 60}\n" for n in range(5000)]
        transport = ClosingTransport()
        protocol = ShowqProtocol(lambda: iter(lines), reactor)
        protocol.makeConnection(transport)
        yield transport.closed
        self.assertEqual(transport.value().decode(), "".join(lines))
        self.assertGreater(len(transport.writes), 4)
        self.assertLess(max(transport.writes), 65536 + 100)

    @defer.inlineCallbacks
    def test_failureSaid(self):
        """
        A listing that fails tells the client so, and the failure is
        logged.
        """

        def broken():
            yield "the start\n"
            raise OSError("the queue went away")

        transport = ClosingTransport()
        ShowqProtocol(broken, reactor).makeConnection(transport)
        yield transport.closed
        self.assertEqual(transport.value(), b"tmta: cannot list the queue\n")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    @defer.inlineCallbacks
    def test_emptyQueue(self):
        transport = ClosingTransport()
        ShowqProtocol(lambda: iter(()), reactor).makeConnection(transport)
        yield transport.closed
        self.assertEqual(transport.value(), b"")
