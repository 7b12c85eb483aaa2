"""
Tests for L{tmta.spawn}: what a spawn entry may run, and one
connection relayed to and from a real program.
"""

import os
import pwd

from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import endToEnd, testAccount
from tmta.mail.pipecommand import CommandConfigError
from tmta.spawn import SpawnCommand, SpawnProtocol


def programUser() -> str:
    """
    Who the programs run as: the test account as root, else whoever
    runs the tests (spawn cannot change identity without root).
    """
    return testAccount() if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


class SpawnCommandTests(SynchronousTestCase):
    def test_userAndArgv(self):
        """
        C{user=} and C{argv=}; everything after C{argv=} is the
        program's own arguments, however it looks.
        """
        command = SpawnCommand([f"user={programUser()}", "argv=/bin/echo", "user=x", "-n"])
        self.assertEqual(command.argv, ["/bin/echo", "user=x", "-n"])
        self.assertEqual(command.user, programUser())

    def test_refused(self):
        """
        No program, a relative path, no user, root, or an attribute
        spawn does not know: the entry is refused.
        """
        user = f"user={programUser()}"
        for arguments in ([user], [user, "argv="], [user, "argv=echo"], ["argv=/bin/echo"],
                          ["user=root", "argv=/bin/echo"], [user, "flags=R", "argv=/bin/echo"]):
            with self.assertRaises(CommandConfigError, msg=arguments):
                SpawnCommand(arguments)


class ClosingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.closed = defer.Deferred()

    def loseConnection(self):
        super().loseConnection()
        if not self.closed.called:
            self.closed.callback(None)


class SpawnProtocolTests(TestCase):
    def setUp(self):
        endToEnd()

    def connect(self, argv, timeLimit=30.0):
        command = SpawnCommand([f"user={programUser()}", "argv=" + argv[0]] + argv[1:])
        protocol = SpawnProtocol(command, {"PATH": "/usr/bin:/bin"}, timeLimit, reactor)
        transport = ClosingTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    @defer.inlineCallbacks
    def test_relayed(self):
        """
        What the client sends reaches the program's standard input, what
        the program writes reaches the client, and the client's end of
        the conversation ends the program, which closes the connection.
        """
        protocol, transport = self.connect(["/bin/cat"])
        protocol.dataReceived(b"request=smtpd_access_policy\n\n")
        protocol.connectionLost()
        yield transport.closed
        self.assertEqual(transport.value(), b"request=smtpd_access_policy\n\n")

    @defer.inlineCallbacks
    def test_timeLimit(self):
        """
        A program still running at its time limit is killed, and the
        client's connection closed.
        """
        started = reactor.seconds()
        protocol, transport = self.connect(["/bin/sleep", "30"], timeLimit=0.2)
        yield transport.closed
        self.assertLess(reactor.seconds() - started, 10)
