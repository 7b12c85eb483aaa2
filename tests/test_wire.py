"""
Tests for L{tmta.wire}: the AMP argument types tmta's processes share.
"""

from twisted.trial.unittest import SynchronousTestCase

from tmta.wire import RecordList


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
