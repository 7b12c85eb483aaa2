"""
Tests for L{tmta.common.twistedcompat}: each use of a Twisted internal
behaves as Twisted's own code does, and a missing internal is named.
"""

import os
import socket

from twisted.internet import abstract, defer, reactor, tcp, unix
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import shortTemporaryDirectory
from tmta.common import twistedcompat


class CheckTests(SynchronousTestCase):
    def test_thisTwistedPasses(self):
        twistedcompat.checkTwisted()

    def test_missingNameNamed(self):
        e = self.assertRaises(twistedcompat.TwistedChanged, twistedcompat._requireAttribute,
                              object(), "_gone", "twisted.somewhere.Thing")
        self.assertIn("twisted.somewhere.Thing._gone", str(e))


class WireUsesCheckedNamesTests(SynchronousTestCase):
    def test_everyAMPInternalChecked(self):
        """
        Every private name of Twisted's AMP that L{tmta.wire} reads or
        overrides is one L{twistedcompat.checkTwisted} looks for.
        """
        import glob
        import os
        import re

        from tmta import wire

        source = ""
        for path in glob.glob(os.path.join(os.path.dirname(wire.__file__), "*.py")):
            with open(path) as f:
                source += f.read()
        names = set(re.findall(r"self\.(_[A-Za-z]\w*)", source)) | set(
            re.findall(r"def (_[A-Za-z]\w*)", source))
        twisteds = {name for name in names
                    if any(hasattr(cls, name) for cls in
                           (amp.BoxDispatcher, amp.CommandLocator, amp.BinaryBoxProtocol))}
        checked = set(twistedcompat.AMP_DISPATCH) | {"_commandDispatch"}
        self.assertEqual(twisteds - checked, set())


class AMPNamingTests(SynchronousTestCase):
    def test_sameNamesAsTwisted(self):
        """
        Arguments reach a responder under the names Twisted's own
        commands give them.
        """
        wireNames = [b"queue-id", b"from", b"x"]

        class Probe(amp.Command):
            arguments = [(name, amp.Unicode()) for name in wireNames]

        box = amp.Box({name: b"v" for name in wireNames})
        theirs = sorted(Probe.parseArguments(box, None))
        ours = sorted(twistedcompat.wireNameToIdentifier(name) for name in wireNames)
        self.assertEqual(ours, theirs)


class WritesIdleTests(SynchronousTestCase):
    def test_followsTwistedsBuffer(self):
        """
        A connected descriptor is idle until Twisted buffers a write;
        after that, and once it is closing, it is not.
        """
        class Descriptor(abstract.FileDescriptor):
            def fileno(self):
                return -1

            def writeSomeData(self, data):
                return 0

            def startWriting(self):
                pass

        d = Descriptor(reactor)
        d.connected = True
        self.assertTrue(twistedcompat.writesIdle(d))
        d.write(b"queued")
        self.assertFalse(twistedcompat.writesIdle(d))
        d = Descriptor(reactor)
        d.connected = True
        d.disconnecting = True
        self.assertFalse(twistedcompat.writesIdle(d))


class ListeningTests(TestCase):
    timeout = 10

    """
    An adopted, shared listening socket keeps listening (and its file
    stays) when the port that served it stops, unlike a port of
    Twisted's own.
    """

    def serveOnce(self, port, connect):
        accepted = defer.Deferred()

        class Accept(Protocol):
            def connectionMade(self):
                accepted.callback(True)
                self.transport.loseConnection()

        port.factory = Factory.forProtocol(Accept)
        port.startListening()
        connect()
        return accepted

    @defer.inlineCallbacks
    def test_tcp(self):
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(5)
        listening.setblocking(False)  # as the master hands it over
        self.addCleanup(listening.close)
        address = listening.getsockname()
        port = twistedcompat.adoptListeningPort(tcp.Port, reactor, listening.fileno(),
                                                socket.AF_INET, Factory())
        twistedcompat.shareListeningSocket(port)
        client = socket.socket()
        self.addCleanup(client.close)
        yield self.serveOnce(port, lambda: client.connect(address))
        yield port.stopListening()
        # Still listening: a new client is queued on the shared socket.
        late = socket.create_connection(address, timeout=5)
        late.close()

    @defer.inlineCallbacks
    def test_unixFileKept(self):
        path = os.path.join(shortTemporaryDirectory(self), "s")
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(path)
        listening.listen(5)
        listening.setblocking(False)
        self.addCleanup(listening.close)
        port = twistedcompat.adoptListeningPort(unix.Port, reactor, listening.fileno(),
                                                socket.AF_UNIX, Factory())
        twistedcompat.shareListeningSocket(port)
        client = socket.socket(socket.AF_UNIX)
        self.addCleanup(client.close)
        yield self.serveOnce(port, lambda: client.connect(path))
        yield port.stopListening()
        self.assertTrue(os.path.exists(path))
        late = socket.socket(socket.AF_UNIX)
        late.connect(path)
        late.close()
