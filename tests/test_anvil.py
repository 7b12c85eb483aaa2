"""
Tests for L{tmta.anvil}: the counts smtpd processes share, and what a
connection that goes lets go.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tmta.anvil import AnvilProtocol, AnvilTable


class AnvilTableTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.table = AnvilTable(self.clock, 60)

    def test_connectionsAndRate(self):
        """
        Each connection counts as open and as started in the time unit.
        """
        self.assertEqual(self.table.connect("smtp:192.0.2.1"), (1, 1))
        self.assertEqual(self.table.connect("smtp:192.0.2.1"), (2, 2))
        self.assertEqual(self.table.connect("smtp:192.0.2.2"), (1, 1))
        self.table.disconnect("smtp:192.0.2.1")
        self.assertEqual(self.table.connect("smtp:192.0.2.1"), (2, 3))

    def test_windowStartsAgain(self):
        """
        The time unit starts at a client's first event; once it has
        passed, the rates start from nothing while open connections
        stay counted.
        """
        self.table.connect("c")
        self.clock.advance(30)
        self.assertEqual(self.table.event("c", "message"), 1)
        self.assertEqual(self.table.event("c", "message"), 2)
        self.clock.advance(30)
        self.assertEqual(self.table.event("c", "message"), 1)
        self.assertEqual(self.table.connect("c"), (2, 1))

    def test_disconnectNeverBelowZero(self):
        self.table.disconnect("nobody")
        self.table.connect("c")
        self.table.disconnect("c", 5)
        self.assertEqual(self.table.clients["c"].connections, 0)

    def test_expireForgetsIdleClients(self):
        """
        A client with nothing open is forgotten once its window has
        passed; one with a connection open is kept.
        """
        self.table.connect("idle")
        self.table.disconnect("idle")
        self.table.connect("busy")
        self.clock.advance(59)
        self.table.expire()
        self.assertEqual(set(self.table.clients), {"idle", "busy"})
        self.clock.advance(1)
        self.table.expire()
        self.assertEqual(set(self.table.clients), {"busy"})


class AnvilProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.table = AnvilTable(Clock(), 60)

    def test_connectionLostLetsGo(self):
        """
        The connections an smtpd counted are let go when its connection
        to anvil goes (it exited, or was killed); another smtpd's stay.
        """
        first, second = AnvilProtocol(self.table), AnvilProtocol(self.table)
        first.connect("c")
        first.connect("c")
        second.connect("c")
        first.disconnect("c")
        self.assertEqual(self.table.clients["c"].connections, 2)
        first.connectionLost()
        self.assertEqual(self.table.clients["c"].connections, 1)
        second.connectionLost()
        self.assertEqual(self.table.clients["c"].connections, 0)

    def test_disconnectOnlyWhatItCounted(self):
        """
        A disconnect for a client this smtpd did not count changes
        nothing: one process cannot let go of another's connections.
        """
        counted, stranger = AnvilProtocol(self.table), AnvilProtocol(self.table)
        counted.connect("c")
        stranger.disconnect("c")
        self.assertEqual(self.table.clients["c"].connections, 1)

    def test_events(self):
        protocol = AnvilProtocol(self.table)
        self.assertEqual(protocol.event("c", "recipient"), {"rate": 1})
        self.assertEqual(protocol.event("c", "recipient"), {"rate": 2})
        self.assertEqual(protocol.event("c", "auth"), {"rate": 1})
        with self.assertRaises(ValueError):
            protocol.event("c", "nonsense")
