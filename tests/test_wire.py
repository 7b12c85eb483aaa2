"""
Tests for L{tmta.wire}: the AMP argument types tmta's processes share.
"""

import os
import socket

from twisted.internet import defer, main
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols import amp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tmta.common.transports import PlainReadMixin
from tmta.wire import QuietAMP, RecordList, serializeBox
from tmta.wire.amp import Command


class RecordListTests(SynchronousTestCase):
    def setUp(self):
        self.argument = RecordList([("address", str), ("offset", int)])

    def test_roundTrip(self):
        records = [{"address": "ü@example.com", "offset": 12}, {"address": "b", "offset": 0}]
        wire = self.argument.toString(records)
        self.assertIsInstance(wire, bytes)
        self.assertEqual(self.argument.fromString(wire), records)

    def test_empty(self):
        self.assertEqual(self.argument.fromString(self.argument.toString([])), [])

    def test_malformedRejected(self):
        """
        Anything but an array of arrays of the declared width and field
        types is refused.
        """
        for wire in (b"", b"{}", b'"x"', b"[1]", b'[["a"]]', b'[["a",1,2]]',
                     b'[[1,1]]', b'[["a","1"]]', b'[["a",true]]', b'[["a",1.5]]', b"\xff"):
            self.assertRaises(ValueError, self.argument.fromString, wire)

    def test_onlyFlatFields(self):
        self.assertRaises(TypeError, RecordList, [("x", float)])


class _Recording(QuietAMP):
    def __init__(self):
        super().__init__()
        self.boxes = []

    def ampBoxReceived(self, box):
        self.boxes.append(dict(box))


class BoxParserTests(SynchronousTestCase):
    """
    L{QuietAMP} parses boxes itself, as Twisted's parser would.
    """

    def setUp(self):
        self.boxes = [
            {b"_command": b"Deliver", b"_ask": b"1", b"queue_id": b"0123456789ABCDEF01"},
            {b"_answer": b"1", b"statuses": b"[]", b"empty": b""},
            {b"k": b"v" * 65535},
        ]
        self.wire = b"".join(amp.AmpBox(box).serialize() for box in self.boxes)

    def receive(self, *chunks):
        protocol = _Recording()
        transport = StringTransport()
        protocol.makeConnection(transport)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        return protocol, transport

    def test_whole(self):
        protocol, _ = self.receive(self.wire)
        self.assertEqual(protocol.boxes, self.boxes)

    def test_splitAnywhere(self):
        small = self.wire[: -len(amp.AmpBox(self.boxes[2]).serialize())]
        for cut in range(len(small) + 1):
            protocol, _ = self.receive(small[:cut], small[cut:])
            self.assertEqual(protocol.boxes, self.boxes[:2])
        protocol, _ = self.receive(*[bytes([b]) for b in small])
        self.assertEqual(protocol.boxes, self.boxes[:2])

    def test_keyTooLong(self):
        """
        A key longer than 255 bytes ends the connection, as Twisted's
        parser does.
        """
        protocol, transport = self.receive(b"\x01\x00" + b"k" * 256 + b"\x00\x01v\x00\x00")
        self.assertEqual(protocol.boxes, [])
        self.assertTrue(transport.disconnecting)


class _CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, data):
        self.writes.append(data)
        super().write(data)


class TogetherTests(SynchronousTestCase):
    def test_oneWrite(self):
        """
        Boxes sent inside L{QuietAMP.together} go out in one write, in
        order, when the block ends (an inner block changes nothing);
        outside it each box is a write of its own.
        """
        protocol = QuietAMP()
        transport = _CountingTransport()
        protocol.makeConnection(transport)
        with protocol.together():
            protocol.sendBox(amp.Box({b"n": b"1"}))
            with protocol.together():
                protocol.sendBox(amp.Box({b"n": b"2"}))
            self.assertEqual(transport.writes, [])
            protocol.sendBox(amp.Box({b"n": b"3"}))
        protocol.sendBox(amp.Box({b"n": b"4"}))
        self.assertEqual(len(transport.writes), 2)
        received = _Recording()
        received.makeConnection(StringTransport())
        received.dataReceived(transport.writes[0])
        self.assertEqual([box[b"n"] for box in received.boxes], [b"1", b"2", b"3"])

    def test_heldWrites(self):
        """
        Inside L{heldWrites}, every connection's boxes are held, also
        across a L{QuietAMP.together} block, and each connection sends
        its own in one write when the outermost hold ends.
        """
        from tmta.wire import heldWrites

        first, second = QuietAMP(), QuietAMP()
        firstTransport, secondTransport = _CountingTransport(), _CountingTransport()
        first.makeConnection(firstTransport)
        second.makeConnection(secondTransport)
        with heldWrites():
            first.sendBox(amp.Box({b"n": b"1"}))
            with heldWrites():
                second.sendBox(amp.Box({b"n": b"a"}))
            with first.together():
                first.sendBox(amp.Box({b"n": b"2"}))
            second.sendBox(amp.Box({b"n": b"b"}))
            self.assertEqual((firstTransport.writes, secondTransport.writes), ([], []))
        self.assertEqual((len(firstTransport.writes), len(secondTransport.writes)), (1, 1))
        received = _Recording()
        received.makeConnection(StringTransport())
        received.dataReceived(firstTransport.writes[0] + secondTransport.writes[0])
        self.assertEqual([box[b"n"] for box in received.boxes], [b"1", b"2", b"a", b"b"])
        first.sendBox(amp.Box({b"n": b"3"}))
        self.assertEqual(len(firstTransport.writes), 2)

    def test_lostInside(self):
        """
        A connection lost inside the block drops what was gathered
        without an error.
        """
        protocol = QuietAMP()
        transport = _CountingTransport()
        protocol.makeConnection(transport)
        with protocol.together():
            protocol.sendBox(amp.Box({b"n": b"1"}))
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(transport.writes, [])

    def test_oneWritePerRead(self):
        """
        What a connection's handlers send while it takes the boxes of one
        read goes out in one write per connection, to it and to others:
        the queue manager's deliveries for a batch of new messages reach
        an agent together, and wake it once.
        """
        other = QuietAMP()
        otherTransport = _CountingTransport()
        other.makeConnection(otherTransport)

        class Forwarding(_QuietResponder):
            def lookup(self, name, records):
                other.sendBox(amp.Box({b"n": name.encode("ascii")}))
                return super().lookup(name, records)
            lookup = Lookup.responder(lookup)

        server = Forwarding()
        transport = _CountingTransport()
        server.makeConnection(transport)
        requests = b"".join(
            serializeBox({b"_command": b"Lookup", b"_ask": tag, b"name": name,
                          b"records": RecordList([("address", str)]).toString([])})
            for tag, name in ((b"1", b"a"), (b"2", b"b")))
        server.dataReceived(requests)
        self.assertEqual((len(transport.writes), len(otherTransport.writes)), (1, 1))
        received = _Recording()
        received.makeConnection(StringTransport())
        received.dataReceived(transport.writes[0] + otherTransport.writes[0])
        self.assertEqual([box.get(b"_answer") or box[b"n"] for box in received.boxes],
                         [b"1", b"2", b"a", b"b"])
        server.dataReceived(requests[: len(requests) // 2 + 3])
        self.assertEqual(len(transport.writes), 2, "the first box is answered on its own")


class _Connection:
    def __init__(self, name):
        self.name = name
        self.transport = self

    def loseConnection(self):
        self.transport = None


class ConnectionPoolTests(SynchronousTestCase):
    def setUp(self):
        from twisted.internet import defer
        from twisted.internet.task import Clock

        from tmta.wire import ConnectionPool

        self.clock = Clock()
        self.made = []

        def connect():
            connection = _Connection(len(self.made))
            self.made.append(connection)
            return defer.succeed(connection)

        self.pool = ConnectionPool(connect, self.clock, idle=5)

    def test_reuse(self):
        """
        A released connection is handed out again, the last released
        first; a new one is made only when none is free.
        """
        a = self.successResultOf(self.pool.acquire())
        b = self.successResultOf(self.pool.acquire())
        self.pool.release(a)
        self.pool.release(b)
        self.assertIs(self.successResultOf(self.pool.acquire()), b)
        self.assertIs(self.successResultOf(self.pool.acquire()), a)
        self.assertEqual(len(self.made), 2)

    def test_idleClosed(self):
        """
        A connection free for C{idle} seconds is closed; one released
        later is kept until its own time, by one timer at a time.
        """
        a = self.successResultOf(self.pool.acquire())
        b = self.successResultOf(self.pool.acquire())
        self.pool.release(a)
        self.clock.advance(3)
        self.pool.release(b)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(2)
        self.assertIsNone(a.transport)
        self.assertIsNotNone(b.transport)
        self.clock.advance(3)
        self.assertIsNone(b.transport)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIsNot(self.successResultOf(self.pool.acquire()), b)

    def test_expiryOnAMovingClock(self):
        """
        However the clock moves while expired connections are closed --
        on, or back -- the next expiry is armed again with a delay of
        zero or more.
        """
        from tmta.wire import ConnectionPool

        class SteppingClock:
            def __init__(self, readings):
                self.readings = iter(readings)
                self.delays = []

            def seconds(self):
                return next(self.readings)

            def callLater(self, delay, f, *a, **kw):
                self.delays.append(delay)
                return delay

        for readings in ([0.0, 4.99999, 5.0, 10.00002], [0.0, 4.0, 5.0, 1.0]):
            clock = SteppingClock(readings)
            pool = ConnectionPool(self.pool._connect, clock, idle=5)
            a = self.successResultOf(pool.acquire())
            b = self.successResultOf(pool.acquire())
            pool.release(a)
            pool.release(b)
            pool._expire()
            self.assertIsNone(a.transport)
            self.assertIsNotNone(b.transport)
            self.assertEqual(len(clock.delays), 2)
            self.assertTrue(all(d >= 0 for d in clock.delays), clock.delays)

    def test_lostSkipped(self):
        """
        A free connection that was lost meanwhile is not handed out.
        """
        a = self.successResultOf(self.pool.acquire())
        self.pool.release(a)
        a.loseConnection()
        self.assertIsNot(self.successResultOf(self.pool.acquire()), a)

    def test_close(self):
        a = self.successResultOf(self.pool.acquire())
        self.pool.release(a)
        self.pool.close()
        self.assertIsNone(a.transport)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class _ConnectionsMadeByTest:
    """
    Connections made when the test says (L{connected}), the connect
    function and the clock for the class under test.
    """

    def setUp(self):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.made = []
        self.pending = []

    def connect(self):
        from twisted.internet import defer

        d = defer.Deferred()
        self.pending.append(d)
        return d

    def connected(self):
        connection = _Connection(len(self.made))
        self.made.append(connection)
        self.pending.pop(0).callback(connection)
        return connection


class MultiplexingPoolTests(_ConnectionsMadeByTest, SynchronousTestCase):
    """
    L{tmta.wire.MultiplexingPool} packs requests onto connections, up to
    a number each.
    """

    def setUp(self):
        from tmta.wire import MultiplexingPool

        super().setUp()
        self.pool = MultiplexingPool(self.connect, self.clock, 2, idle=5)

    def test_packed(self):
        """
        Requests share a connection up to the limit, including one still
        being made; the next needs another connection.
        """
        first, second, third = (self.pool.acquire() for _ in range(3))
        self.assertEqual(len(self.pending), 2)
        a = self.connected()
        b = self.connected()
        self.assertIs(self.successResultOf(first), a)
        self.assertIs(self.successResultOf(second), a)
        self.assertIs(self.successResultOf(third), b)
        self.assertEqual(self.pool.busy, {a: 2, b: 1})

    def test_busiestWithRoomFirst(self):
        """
        A request goes to the connection with the most under way that
        still has room, so that the agent gets batches.
        """
        self.pool.acquire(), self.pool.acquire(), self.pool.acquire()
        a = self.connected()
        b = self.connected()
        self.pool.release(a)
        # a has one, b one: either; then the other one fills.
        c = self.successResultOf(self.pool.acquire())
        self.assertEqual(self.pool.busy[c], 2)
        other = b if c is a else a
        self.assertIs(self.successResultOf(self.pool.acquire()), other)
        self.assertEqual(self.pool.busy, {a: 2, b: 2})

    def test_idleAfterLastRelease(self):
        """
        A connection idles only once its last request is released, then
        is reused before a new one is made, or closed after C{idle}.
        """
        self.pool.acquire(), self.pool.acquire()
        a = self.connected()
        self.pool.release(a)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pool.release(a)
        self.assertEqual(self.pool.busy, {})
        self.assertIs(self.successResultOf(self.pool.acquire()), a)
        self.pool.release(a)
        self.clock.advance(5)
        self.assertIsNone(a.transport)

    def test_failedConnection(self):
        """
        Every request waiting for a connection that could not be made
        fails.
        """
        first, second = self.pool.acquire(), self.pool.acquire()
        self.pending.pop(0).errback(OSError("no socket"))
        self.failureResultOf(first, OSError)
        self.failureResultOf(second, OSError)
        self.assertEqual(self.pool.busy, {})

    def test_discard(self):
        """
        A discarded connection is closed and no longer handed out.
        """
        self.pool.acquire()
        a = self.connected()
        self.pool.discard(a)
        self.assertIsNone(a.transport)
        self.pool.acquire()
        self.assertEqual(len(self.pending), 1)


class SharedConnectionTests(_ConnectionsMadeByTest, SynchronousTestCase):
    def setUp(self):
        from tmta.wire import SharedConnection

        super().setUp()
        self.shared = SharedConnection(self.connect, self.clock, idle=5)

    def test_oneConnectionForAll(self):
        """
        Users asking while the connection is being made all get it when
        it is; later users get it at once; no second one is made.
        """
        first, second = self.shared.acquire(), self.shared.acquire()
        self.assertEqual(len(self.pending), 1)
        self.assertNoResult(first)
        connection = self.connected()
        self.assertIs(self.successResultOf(first), connection)
        self.assertIs(self.successResultOf(second), connection)
        self.assertIs(self.successResultOf(self.shared.acquire()), connection)
        self.assertEqual((self.shared.users, self.pending), (3, []))

    def test_idleClosed(self):
        """
        The connection is closed C{idle} seconds after its last user let
        it go, not while anyone holds it; then a new one is made.
        """
        a = self.shared.acquire()
        connection = self.connected()
        b = self.shared.acquire()
        self.shared.release(self.successResultOf(a))
        self.clock.advance(10)
        self.assertIsNotNone(connection.transport)
        self.shared.release(self.successResultOf(b))
        self.clock.advance(3)
        self.shared.release(self.successResultOf(self.shared.acquire()))
        self.clock.advance(2)
        self.assertIsNotNone(connection.transport)
        self.clock.advance(3)
        self.assertIsNone(connection.transport)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.shared.acquire()
        self.assertEqual(len(self.pending), 1)

    def test_lostReplaced(self):
        """
        A lost connection is replaced at the next request; releasing the
        old one then does not count against the new.
        """
        old = self.successResultOf(self._acquired())
        old.loseConnection()
        d = self.shared.acquire()
        new = self.connected()
        self.assertIs(self.successResultOf(d), new)
        self.shared.release(old)
        self.assertEqual(self.shared.users, 1)

    def _acquired(self):
        d = self.shared.acquire()
        self.connected()
        return d

    def test_failure(self):
        """
        When the connection cannot be made, everyone waiting hears so,
        and the next request tries again.
        """
        first, second = self.shared.acquire(), self.shared.acquire()
        self.pending.pop(0).errback(OSError("no such service"))
        self.failureResultOf(first, OSError)
        self.failureResultOf(second, OSError)
        self.shared.acquire()
        self.assertEqual(len(self.pending), 1)

    def test_close(self):
        connection = self.successResultOf(self._acquired())
        self.shared.release(connection)
        self.shared.close()
        self.assertIsNone(connection.transport)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class Lookup(Command):
    arguments = [(b"name", amp.Unicode()), (b"records", RecordList([("address", str)]))]
    response = [(b"found", amp.Integer()), (b"echo", amp.Unicode(optional=True))]
    errors = {KeyError: b"NO_SUCH_NAME"}
    fatalErrors = {PermissionError: b"GO_AWAY"}


class Note(Command):
    arguments = [(b"text", amp.Unicode())]
    requiresAnswer = False


class _Responder:
    """
    Responders of L{Lookup} and L{Note}, answering at once, later (a
    Deferred) or through a coroutine, as C{self.mode} says.
    """

    mode = "now"

    def __init__(self):
        super().__init__()
        self.notes = []
        self.later = []

    def lookup(self, name, records):
        if name == "missing":
            raise KeyError(name)
        if name == "forbidden":
            raise PermissionError(name)
        if name == "broken":
            raise ValueError(name)
        answer = {"found": len(records), "echo": name}
        if self.mode == "later":
            d = defer.Deferred()
            self.later.append((d, answer))
            return d
        if self.mode == "coroutine":
            async def answerLater():
                return answer
            return answerLater()
        return answer

    def note(self, text):
        self.notes.append(text)
        return {}


class _QuietResponder(_Responder, QuietAMP):
    lookup = Lookup.responder(_Responder.lookup)
    note = Note.responder(_Responder.note)


class _TwistedResponder(_Responder, amp.AMP):
    lookup = Lookup.responder(_Responder.lookup)
    note = Note.responder(_Responder.note)


def _connected(client, server):
    """
    Connect two AMP protocols through string transports: returns a
    function that carries what each wrote to the other until both are
    quiet.
    """
    clientTransport, serverTransport = StringTransport(), StringTransport()
    client.makeConnection(clientTransport)
    server.makeConnection(serverTransport)

    def pump():
        while clientTransport.value() or serverTransport.value():
            toServer, toClient = clientTransport.value(), serverTransport.value()
            clientTransport.clear()
            serverTransport.clear()
            if toServer:
                server.dataReceived(toServer)
            if toClient:
                client.dataReceived(toClient)

    return pump


def caught(d):
    """
    A Deferred with C{d}'s result, failure included, that can be looked
    at later: an AMP request whose failure arrives with nothing to
    handle it drops the connection.
    """
    outcome = defer.Deferred()
    d.addBoth(outcome.callback)
    return outcome


class DirectCommandTests(SynchronousTestCase):
    """
    L{QuietAMP} sends, answers and takes answers of tmta's commands
    itself: to a peer, and to the caller, it is Twisted's AMP.  Each
    case runs with a L{QuietAMP} on one side and Twisted's own AMP on
    the other, both ways round, and with L{QuietAMP} on both sides.
    """

    pairs = [
        (QuietAMP, _QuietResponder),
        (QuietAMP, _TwistedResponder),
        (amp.AMP, _QuietResponder),
    ]

    def each(self, check, mode="now"):
        for clientClass, serverClass in self.pairs:
            client, server = clientClass(), serverClass()
            server.mode = mode
            pump = _connected(client, server)
            try:
                check(client, server, pump)
            except self.failureException as e:
                raise self.failureException(
                    f"{clientClass.__name__} to {serverClass.__name__}: {e}")

    def test_answer(self):
        def check(client, server, pump):
            d = client.callRemote(Lookup, name="bob", records=[{"address": "a"}, {"address": "b"}])
            pump()
            self.assertEqual(self.successResultOf(d), {"found": 2, "echo": "bob"})
        self.each(check)

    def test_answerLater(self):
        """
        A responder's Deferred answers when it fires; answers to requests
        made together find their callers.
        """
        def check(client, server, pump):
            first = client.callRemote(Lookup, name="one", records=[])
            second = client.callRemote(Lookup, name="two", records=[{"address": "a"}])
            pump()
            self.assertNoResult(first)
            (d1, a1), (d2, a2) = server.later
            d2.callback(a2)
            d1.callback(a1)
            pump()
            self.assertEqual(self.successResultOf(first), {"found": 0, "echo": "one"})
            self.assertEqual(self.successResultOf(second), {"found": 1, "echo": "two"})
        self.each(check, mode="later")

    def test_coroutineResponder(self):
        def check(client, server, pump):
            d = client.callRemote(Lookup, name="bob", records=[])
            pump()
            self.assertEqual(self.successResultOf(d), {"found": 0, "echo": "bob"})
        self.each(check, mode="coroutine")

    def test_knownError(self):
        """
        An error the command declares reaches the caller as that error;
        the connection stays up.
        """
        def check(client, server, pump):
            d = caught(client.callRemote(Lookup, name="missing", records=[]))
            pump()
            self.failureResultOf(d, KeyError)
            self.assertFalse(server.transport.disconnecting)
            d = client.callRemote(Lookup, name="bob", records=[])
            pump()
            self.assertEqual(self.successResultOf(d)["found"], 0)
        self.each(check)

    def test_fatalError(self):
        """
        A fatal error the command declares reaches the caller as that
        error, and the answering side drops the connection.
        """
        def check(client, server, pump):
            d = caught(client.callRemote(Lookup, name="forbidden", records=[]))
            pump()
            self.failureResultOf(d, PermissionError)
            self.assertTrue(server.transport.disconnecting)
        self.each(check)

    def test_unknownError(self):
        """
        An error the command does not declare is logged where it
        happened; the caller gets L{amp.UnknownRemoteError} and the
        connection is dropped.
        """
        def check(client, server, pump):
            d = caught(client.callRemote(Lookup, name="broken", records=[]))
            pump()
            self.failureResultOf(d, amp.UnknownRemoteError)
            self.assertTrue(server.transport.disconnecting)
            self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.each(check)

    def test_unhandledCommand(self):
        def check(client, server, pump):
            d = caught(client.callRemote(Lookup, name="bob", records=[]))
            pump()
            self.failureResultOf(d, amp.UnhandledCommand)
        client, server = QuietAMP(), QuietAMP()
        check(client, server, _connected(client, server))

    def test_noAnswer(self):
        """
        A command that asks for no answer gets none, and C{callRemote}
        returns C{None}.
        """
        def check(client, server, pump):
            self.assertIsNone(client.callRemote(Note, text="hello"))
            pump()
            self.assertEqual(server.notes, ["hello"])
            self.assertEqual(server.transport.value(), b"")
        self.each(check)

    def test_badArguments(self):
        """
        A call with an argument missing or unknown fails at once, and
        nothing is sent.
        """
        client = QuietAMP()
        client.makeConnection(StringTransport())
        self.failureResultOf(client.callRemote(Lookup, records=[]), amp.InvalidSignature)
        self.failureResultOf(client.callRemote(Lookup, name="a", records=[], x=1),
                             amp.InvalidSignature)
        self.assertEqual(client.transport.value(), b"")

    def test_connectionLost(self):
        """
        Requests under way when the connection is lost fail with the
        reason; later ones fail at once.
        """
        client = QuietAMP()
        client.makeConnection(StringTransport())
        d = client.callRemote(Lookup, name="bob", records=[])
        client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(d, ConnectionDone)
        self.failureResultOf(client.callRemote(Lookup, name="bob", records=[]), ConnectionDone)


class SerializeBoxTests(SynchronousTestCase):
    def test_asTwisted(self):
        """
        A box serialises to what Twisted's parser reads back as the same
        box.
        """
        box = {b"_command": b"Deliver", b"_ask": b"1f", b"empty": b"", b"big": b"v" * 65535}
        received = _Recording()
        received.makeConnection(StringTransport())
        amp.BinaryBoxProtocol.dataReceived(received, serializeBox(box))
        self.assertEqual(received.boxes, [box])

    def test_limits(self):
        self.assertRaises(amp.TooLong, serializeBox, {b"k" * 256: b""})
        self.assertRaises(amp.TooLong, serializeBox, {b"k": b"v" * 65536})
        self.assertRaises(TypeError, serializeBox, {"k": b"v"})
        self.assertRaises(TypeError, serializeBox, {b"k": "v"})


class _Received(Protocol):
    def __init__(self):
        self.data = []

    def dataReceived(self, data):
        self.data.append(data)


@implementer(IFileDescriptorReceiver)
class _ReceivesDescriptors(_Received):
    def __init__(self):
        super().__init__()
        self.descriptors = []

    def fileDescriptorReceived(self, descriptor):
        self.descriptors.append(descriptor)


class PlainReadTests(SynchronousTestCase):
    """
    L{PlainReadMixin}: the UNIX connections between tmta's processes read
    with C{recv}, except for a protocol that takes descriptors.
    """

    def transport(self, protocol):
        from twisted.internet import unix
        from twisted.internet.testing import MemoryReactor

        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        transportClass = type("Transport", (PlainReadMixin, unix.Server), {})
        transport = transportClass(ours, protocol, None, None, 1, MemoryReactor())
        protocol.makeConnection(transport)
        return transport, theirs

    def refuseRecvmsg(self):
        from twisted.internet import unix

        def refused(*args, **kwargs):
            raise AssertionError("recvmsg used")

        self.patch(unix.sendmsg, "recvmsg", refused)

    def test_plainProtocolReadsWithRecv(self):
        self.refuseRecvmsg()
        protocol = _Received()
        transport, peer = self.transport(protocol)
        peer.send(b"hello")
        self.assertIsNone(transport.doRead())
        self.assertEqual(protocol.data, [b"hello"])
        peer.close()
        self.assertEqual(transport.doRead(), main.CONNECTION_DONE)

    def test_descriptorsStillReceived(self):
        protocol = _ReceivesDescriptors()
        transport, peer = self.transport(protocol)
        passed = os.open(os.devnull, os.O_RDONLY)
        self.addCleanup(os.close, passed)
        socket.send_fds(peer, [b"x"], [passed])
        transport.doRead()
        self.assertEqual(protocol.data, [b"x"])
        self.assertEqual(len(protocol.descriptors), 1)
        os.close(protocol.descriptors[0])

    def test_workerTransportsReadPlainly(self):
        """
        The transports of a worker's accepted UNIX connections and of its
        connections to other services are the plain-reading ones.
        """
        from tmta.master.runtime import _EagerUNIXServer
        from tmta.wire import _EagerUNIXClient

        for transportClass in (_EagerUNIXServer, _EagerUNIXClient):
            self.assertTrue(issubclass(transportClass, PlainReadMixin))

    def test_ampReadsWithRecv(self):
        """
        tmta's AMP takes no descriptors (AMP itself is declared to), so
        its connections read with C{recv}: a box sent is received whole.
        """
        self.refuseRecvmsg()
        protocol = _Recording()
        self.assertFalse(IFileDescriptorReceiver.providedBy(protocol))
        transport, peer = self.transport(protocol)
        peer.send(serializeBox({b"_command": b"Note", b"text": b"hi"}))
        transport.doRead()
        self.assertEqual(protocol.boxes, [{b"_command": b"Note", b"text": b"hi"}])


class RetiringPoolTests(_ConnectionsMadeByTest, SynchronousTestCase):
    """
    A connection whose worker said it takes no more (max_use) gets no
    new request, and is closed once those under way are done.
    """

    def test_multiplexed(self):
        from tmta.wire import MultiplexingPool

        pool = MultiplexingPool(self.connect, self.clock, 3, idle=5)
        pool.acquire(), pool.acquire()
        a = self.connected()
        pool.retire(a)
        self.assertIsNotNone(a.transport)
        # The next request goes to a new connection, not the retired one.
        pool.acquire()
        self.assertEqual(len(self.pending), 1)
        b = self.connected()
        self.assertIsNot(b, a)
        pool.release(a)
        self.assertIsNone(a.transport)
        self.assertEqual(pool.busy, {b: 1})

    def test_single(self):
        from tmta.wire import ConnectionPool

        pool = ConnectionPool(self.connect, self.clock, idle=5)
        pool.acquire()
        a = self.connected()
        pool.retire(a)
        self.assertIsNone(a.transport)
        pool.acquire()
        self.assertEqual(len(self.pending), 1)
