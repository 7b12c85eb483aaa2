"""
Tests for L{tmta.wire.amp.Command}: the same boxes as Twisted's
L{amp.Command} for the same schema, both ways.
"""

from twisted.protocols import amp
from twisted.trial.unittest import SynchronousTestCase

from tmta.wire import RecordList
from tmta.wire.amp import Command

SCHEMA = [
    (b"name", amp.Unicode()),
    (b"raw", amp.String()),
    (b"count", amp.Integer()),
    (b"flag", amp.Boolean()),
    (b"ratio", amp.Float()),
    (b"maybe", amp.Unicode(optional=True)),
    (b"from", amp.Unicode()),
    (b"queue-id", amp.Unicode(optional=True)),
    (b"records", RecordList([("address", str), ("offset", int)])),
    (b"boxes", amp.AmpList([(b"a", amp.Integer()), (b"b", amp.Unicode(optional=True))])),
]


class TwistedCommand(amp.Command):
    arguments = SCHEMA
    response = SCHEMA


class FastCommand(Command):
    arguments = SCHEMA
    response = SCHEMA


FULL = {
    "name": "h\u00e9llo",
    "raw": b"\x00\xff",
    "count": -12,
    "flag": True,
    "ratio": 0.25,
    "maybe": "there",
    "From": "keyword",
    "queue_id": "4XyZ",
    "records": [{"address": "a@b", "offset": 7}],
    "boxes": [{"a": 1, "b": "x"}, {"a": 2, "b": None}],
}


class CommandTests(SynchronousTestCase):
    def assertSameBox(self, objects):
        ours = FastCommand.makeArguments(dict(objects), None)
        theirs = TwistedCommand.makeArguments(dict(objects), None)
        self.assertEqual(dict(ours), dict(theirs))
        self.assertIsInstance(ours, amp.Box)
        self.assertEqual(
            FastCommand.parseArguments(amp.Box(theirs), None),
            TwistedCommand.parseArguments(amp.Box(theirs), None),
        )
        response = FastCommand.makeResponse(dict(objects), None)
        self.assertEqual(dict(response), dict(TwistedCommand.makeResponse(dict(objects), None)))
        self.assertEqual(
            FastCommand.parseResponse(amp.Box(response), None),
            TwistedCommand.parseResponse(amp.Box(response), None),
        )
        return FastCommand.parseArguments(amp.Box(ours), None)

    def test_full(self):
        """
        Every kind of argument, a Python keyword and a dashed wire name
        among them, makes the box Twisted makes and reads back as sent.
        """
        self.assertEqual(self.assertSameBox(FULL), FULL)

    def test_optionalLeftOut(self):
        """
        An optional argument left out, or given as C{None}, is not in
        the box and reads back as C{None}.
        """
        objects = dict(FULL)
        del objects["maybe"]
        objects["queue_id"] = None
        parsed = self.assertSameBox(objects)
        self.assertIsNone(parsed["maybe"])
        self.assertIsNone(parsed["queue_id"])
        self.assertNotIn(b"maybe", FastCommand.makeArguments(objects, None))

    def test_unknownArgument(self):
        objects = dict(FULL, extra=1)
        self.assertRaises(amp.InvalidSignature, FastCommand.makeArguments, objects, None)
        self.assertRaises(amp.InvalidSignature, TwistedCommand.makeArguments, objects, None)

    def test_missingArgument(self):
        """
        A required argument missing on either side is an error, as with
        Twisted's commands.
        """
        objects = dict(FULL)
        del objects["count"]
        self.assertRaises(KeyError, FastCommand.makeArguments, objects, None)
        box = FastCommand.makeArguments(dict(FULL), None)
        del box[b"count"]
        self.assertRaises(KeyError, FastCommand.parseArguments, box, None)
        self.assertRaises(KeyError, TwistedCommand.parseArguments, box, None)

    def test_schemaPerClass(self):
        """
        A command derived from another has its own schema.
        """

        class Derived(FastCommand):
            arguments = [(b"only", amp.Integer())]

        FastCommand.makeArguments(dict(FULL), None)
        self.assertEqual(dict(Derived.makeArguments({"only": 3}, None)), {b"only": b"3"})
        self.assertRaises(amp.InvalidSignature, Derived.makeArguments, dict(FULL), None)

    def test_forgotten(self):
        """
        Building a command (as C{callRemote} does) without a required
        argument fails as it does with Twisted's commands.
        """
        objects = dict(FULL)
        del objects["count"], objects["maybe"]
        self.assertRaises(amp.InvalidSignature, FastCommand, **objects)
        self.assertRaises(amp.InvalidSignature, TwistedCommand, **objects)
        objects["count"] = 1
        self.assertEqual(FastCommand(**objects).structured, objects)


class CallRemoteTests(SynchronousTestCase):
    def test_roundTrip(self):
        """
        A command sent over a real AMP connection (in memory) reaches its
        responder with the arguments sent, and its answer comes back.
        """
        from twisted.test.iosim import connectedServerAndClient

        class Server(amp.AMP):
            @FastCommand.responder
            def answer(self, **kw):
                self.received = kw
                return kw

        client, server, pump = connectedServerAndClient(Server, amp.AMP)
        answers = []
        client.callRemote(FastCommand, **FULL).addCallback(answers.append)
        pump.flush()
        self.assertEqual(server.received, FULL)
        self.assertEqual(answers, [FULL])
