"""
Property-based tests of the SMTP server protocol (hypothesis): random
byte streams and random command sequences, split at random, never make
an exception escape, every reply is a well-formed SMTP reply, and a
message is queued only by a whole valid transaction.
"""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.support.smtpd import SessionHarness
from tmta.cleanup.commands import CleanupBegin, CleanupEnd

_REPLY_LINE = re.compile(r"^[2-5][0-9][0-9]([ -].*)?$")

_COMMANDS = [
    b"HELO client.example", b"EHLO client.example", b"MAIL FROM:<alice@example.com>",
    b"MAIL FROM:<>", b"MAIL FROM:<alice@example.com> SIZE=100 BODY=8BITMIME",
    b"RCPT TO:<bob@localhost>", b"RCPT TO:<x@elsewhere.example>", b"RCPT TO:<bob>",
    b"DATA", b"Subject: hi\r\n\r\nbody\r\n.", b"RSET", b"NOOP", b"VRFY bob", b"HELP",
    b"STARTTLS", b"AUTH PLAIN AGJvYgBzZWNyZXQ=", b"BDAT 5\r\nabcde", b"BDAT 0 LAST",
    b"ETRN example.com", b"QUIT", b"MAIL FROM:<a\x00b@c.d>", b"\xff\xfe", b".", b"",
    b"RCPT TO:<user%remote.example@localhost>", b"X" * 3000,
]


def _split(data: bytes, cuts):
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points + [len(data)]:
        pieces.append(data[last:point])
        last = point
    return [p for p in pieces if p]


class ProtocolPropertyTests(SessionHarness, SynchronousTestCase):
    def run_session(self, pieces):
        self.makeServer(anyLocalName=True)
        for piece in pieces:
            if self.transport.disconnecting:
                break
            self.server.dataReceived(piece)
            # Let cleanup answer and time pass (error sleeps, failed AUTH).
            for _ in range(5):
                while self.cleanup.ends:
                    self.cleanup.finish()
                self.clock.advance(1)
        for _ in range(200):
            if not (self.cleanup.ends or self.clock.getDelayedCalls()):
                break
            while self.cleanup.ends:
                self.cleanup.finish()
            self.clock.advance(5)
        self.assertEqual(self.flushLoggedErrors(), [])
        text = self.transport.value().decode("utf-8", "replace")
        self.assertTrue(text == "" or text.endswith("\r\n"), text[-200:])
        lines = text.split("\r\n")[:-1]
        for line in lines:
            self.assertRegex(line, _REPLY_LINE)
        queued = [line for line in lines if line.startswith("250 2.0.0 Ok: queued as")]
        ends = [kw for c, kw in self.cleanup.calls if c is CleanupEnd]
        self.assertEqual(len(queued), len(ends))
        begins = [kw for c, kw in self.cleanup.calls if c is CleanupBegin]
        for begin in begins:
            self.assertTrue(begin["recipients"], begin)
        return lines

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=8))
    def test_randomBytes(self, data, cuts):
        self.run_session(_split(data, cuts))
        # Random bytes do not make a transaction.
        if b"DATA" not in data.upper() and b"BDAT" not in data.upper():
            self.assertEqual([kw for c, kw in self.cleanup.calls if c is CleanupEnd], [])

    @settings(max_examples=250, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.sampled_from(_COMMANDS), max_size=14),
           st.sampled_from([b"\r\n", b"\n", b"\r"]),
           st.lists(st.integers(min_value=0), max_size=6))
    def test_randomCommands(self, commands, ending, cuts):
        stream = b"".join(c + ending for c in commands)
        lines = self.run_session(_split(stream, cuts))
        if b"\n" not in stream:
            # Bare CR ends no line: no command is read, nothing queued;
            # only the greeting, a timeout or "line too long" is heard.
            self.assertEqual([line for line in lines if not line.startswith(
                ("220 ", "421 4.4.2", "500 5.5.2 Error: line too long"))], [])
