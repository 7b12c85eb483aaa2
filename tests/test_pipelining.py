"""
A property of the SMTP server (L{tmta.smtpd}): however valid and invalid
commands are mixed in one pipelined write, each gets exactly one reply,
in order.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests import test_smtpd

#: Commands and the reply code each must get wherever it stands, or
#: C{None} where the code depends on what came before.
COMMANDS = [
    (b"NOOP", "250"),
    (b"HELP", "214"),
    (b"BOGUS", "500"),
    (b"RSET", "250"),
    (b"HELO client.example", "250"),
    (b"EHLO client.example", "250"),
    (b"MAIL FROM:<alice@example.com>", None),
    (b"MAIL FROM:<broken", None),
    (b"RCPT TO:<bob@localhost>", None),
    (b"RCPT TO:<nobody@localhost>", None),
    (b'RCPT TO:<"a/b"@localhost>', None),
    (b"RCPT TO:<bob@elsewhere.example>", None),
    (b"VRFY bob@localhost", "252"),
    (b"MAIL", None),
    (b"", "500"),
    (b"\x00NUL", "500"),
    (b"x" * 3000, "500"),
    ("RCPT TO:<jürgen@localhost>".encode(), None),
]


class PipelinedSessionTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=100),
           st.sampled_from([b"\r\n", b"\n"]))
    def test_oneReplyPerCommandInOrder(self, commands, lineEnd):
        harness = test_smtpd.SMTPServerTests("test_greetingAndEhlo")
        harness.makeServer(smtpd_hard_error_limit="1000", smtpd_soft_error_limit="1000",
                           smtpd_junk_command_limit="1000")
        harness.replies()
        harness.send(b"".join(command + lineEnd for command, _ in commands))
        replies = [r for r in harness.replies() if r[3:4] != "-"]
        self.assertEqual(len(replies), len(commands), (commands, replies))
        for (command, code), reply in zip(commands, replies):
            if code is not None:
                self.assertEqual(reply[:3], code, (command, reply))
