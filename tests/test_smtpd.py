"""
Tests for the SMTP server protocol, L{tmta.smtpd}, over an in-memory
transport with a recording stand-in for cleanup.
"""


from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.support.smtpd import SessionHarness
from tmta.cleanup.client import CleanupClient
from tmta.cleanup.commands import (
    CleanupAbort,
    CleanupBegin,
    CleanupContent,
    CleanupEnd,
)
from tmta.smtpd.data import DataDecoder


class SMTPServerTests(SessionHarness, SynchronousTestCase):
    def test_greetingAndEhlo(self):
        self.makeServer()
        self.assertEqual(self.replies(), ["220 mx.example.org ESMTP tmta"])
        self.send(b"EHLO client.example\r\n")
        self.assertEqual(
            self.replies(),
            ["250-mx.example.org", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY",
             "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN", "250-SMTPUTF8",
             "250 CHUNKING"],
        )

    def test_discardedEhloKeywords(self):
        self.makeServer(smtpd_discard_ehlo_keywords="pipelining, DSN, vrfy")
        self.replies()
        self.send(b"EHLO client.example\r\n")
        self.assertEqual(self.replies(), ["250-mx.example.org", "250-SIZE 10240000",
                                          "250-ENHANCEDSTATUSCODES", "250-8BITMIME",
                                          "250-SMTPUTF8", "250 CHUNKING"])

    def test_starttlsAnnounced(self):
        self.makeServer(smtpd_tls_security_level="may")
        self.replies()
        self.send(b"EHLO client.example\r\n")
        self.assertIn("250-STARTTLS", self.replies())

    def test_starttlsNotOffered(self):
        self.makeServer()
        self.replies()
        self.send(b"EHLO client.example\r\nSTARTTLS\r\n")
        self.assertNotIn("250-STARTTLS", self.replies()[:-1])
        self.makeServer(smtpd_tls_wrappermode="yes")
        self.send(b"STARTTLS\r\n")
        self.assertEqual(self.replies(), [])  # no greeting before the handshake

    def test_encryptNeedsSTARTTLS(self):
        self.makeServer(smtpd_tls_security_level="encrypt")
        self.replies()
        self.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nVRFY bob\r\nETRN example.com\r\n")
        self.assertEqual(self.replies()[-3:], ["530 5.7.0 Must issue a STARTTLS command first"] * 3)

    def test_etrnRefusedPolitely(self):
        self.makeServer()
        self.replies()
        self.send(b"ETRN example.com\r\nEHLO c\r\nETRN\r\nETRN example.com\r\n"
                  b"MAIL FROM:<a@x.example>\r\nETRN example.com\r\n")
        self.assertEqual([r[:3] for r in self.replies() if r[3] == " "],
                         ["503", "250", "500", "459", "250", "503"])

    def test_mailTransaction(self):
        self.makeServer()
        self.replies()
        self.send(b"HELO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<bob@mx.example.org>\r\nDATA\r\n")
        self.assertEqual(self.replies(), ["250 mx.example.org", "250 2.1.0 Ok", "250 2.1.5 Ok",
                                          "354 End data with <CR><LF>.<CR><LF>"])
        self.send(b"Subject: t\r\n\r\n..dot\r\nbare\nlf\r\n.\r\n")
        # No 250 until cleanup says the message is stored.
        self.assertEqual(self.replies(), [])
        self.cleanup.finish()
        self.assertEqual(self.replies(), ["250 2.0.0 Ok: queued as 0123456789ABCDEF01"])
        # The session no longer holds the cleanup connection, nor is
        # paused with it.
        self.assertEqual(self.server.cleanupClient.connection.users, 0)
        self.assertEqual(self.cleanup.transport.producer.producers, set())
        self.assertEqual(self.cleanup.content(), b"Subject: t\n\n.dot\nbare\nlf\n")
        self.assertEqual(self.cleanup.recipients(), ["bob@mx.example.org"])
        begin = [kw for c, kw in self.cleanup.calls if c is CleanupBegin][0]
        attrs = {a["name"]: a["value"] for a in begin["attributes"]}
        self.assertEqual(attrs["client_address"], "127.0.0.1")
        self.assertEqual(begin["sender"], "a@x.example")

    def test_pipeliningRepliesInOrder(self):
        self.makeServer()
        self.replies()
        self.send(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<bob@localhost>\r\n"
                  b"RCPT TO:<nobody@localhost>\r\nRCPT TO:<postmaster@localhost>\r\n"
                  b"DATA\r\nhi\r\n.\r\nNOOP\r\nQUIT\r\n")
        self.cleanup.finish()
        replies = [r for r in self.replies() if not r.startswith("250-")]
        self.assertEqual(
            [r[:3] for r in replies],
            ["250", "250", "250", "550", "250", "354", "250", "250", "221"],
        )
        self.assertTrue(self.transport.disconnecting)

    def test_manyCachedAnswersInOneWrite(self):
        """
        Recipients answered at once (cached lookups), thousands in one
        write, each get their reply: synchronous answers do not nest.
        """
        self.makeServer(smtpd_recipient_limit="5000")
        self.replies()
        self.send(b"EHLO c\r\nMAIL FROM:<>\r\n" + b"RCPT TO:<bob@localhost>\r\n" * 3000
                  + b"NOOP\r\n")
        replies = [r for r in self.replies() if not r.startswith("250-")]
        self.assertEqual(len(replies), 3003)
        self.assertEqual(replies[-1], "250 2.0.0 Ok")

    def test_inputHeldWhileAnswerPending(self):
        """
        While a reply is outstanding, the session reads no further than
        a bound: past it, it stops reading until the answer comes.
        """
        self.makeServer(smtpd_junk_command_limit="100000")
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nhi\r\n.\r\n")
        self.replies()
        self.assertEqual(self.transport.producerState, "producing")
        self.send(b"NOOP\r\n" * 20000)
        self.assertEqual(self.transport.producerState, "paused")
        self.cleanup.finish()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.replies()), 20001)

    def test_repliesBackedUp(self):
        """
        A client that does not read its replies is not read from either.
        """
        self.makeServer()
        self.transport.producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.transport.producer.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_unsafeLocalNamesRefusedAtRcpt(self):
        """
        Names local would refuse as mailbox names are refused at RCPT,
        from any client, never accepted and then bounced; so are
        non-ASCII addresses, since SMTPUTF8 is not offered.
        """
        self.makeServer(client="192.0.2.1", anyLocalName=True)
        self.send(b"EHLO c\r\nMAIL FROM:<victim@example.com>\r\n")
        self.replies()
        for address in ['"a/b"', '"../x"', '"|cmd"', '".."', '".hidden"', "a..b", '"a b"']:
            self.send(f"RCPT TO:<{address}@localhost>\r\n".encode())
            [reply] = self.replies()
            self.assertTrue(reply.startswith("550 5.1.3") or reply.startswith("501 5.1.3"),
                            (address, reply))
        self.send("RCPT TO:<jürgen@localhost>\r\n".encode())
        self.assertEqual(self.replies(),
                         ["553 5.6.7 Must declare SMTPUTF8 to send unicode address"])
        self.send(b"RCPT TO:<carol.smith+tag@localhost>\r\n")
        self.assertEqual(self.replies(), ["250 2.1.5 Ok"])
        self.send(b"DATA\r\nx\r\n.\r\n")
        self.cleanup.finish()
        self.assertEqual(self.cleanup.recipients(), ["carol.smith+tag@localhost"])

    def test_unicodeSenderRefused(self):
        self.makeServer()
        self.send("EHLO c\r\nMAIL FROM:<jürgen@example.com>\r\n".encode())
        self.assertEqual(self.replies()[-1],
                         "553 5.6.7 Must declare SMTPUTF8 to send unicode address")

    def test_freeSpaceAtMail(self):
        """
        MAIL is refused with 452 4.3.1 when the queue lacks room for
        queue_minfree plus one and a half times the declared SIZE.
        """
        free = [0]
        self.makeServer(freeSpace=lambda: free[0])
        self.replies()
        self.send(b"EHLO c\r\nMAIL FROM:<a@b.c> SIZE=5000000\r\n")
        self.assertEqual(self.replies()[-1], "452 4.3.1 Insufficient system storage")
        self.send(b"MAIL FROM:<a@b.c>\r\n")
        self.assertEqual(self.replies(), ["250 2.1.0 Ok"])
        self.send(b"RSET\r\n")
        free[0] = 7500000
        self.send(b"MAIL FROM:<a@b.c> SIZE=5000000\r\n")
        self.assertEqual(self.replies(), ["250 2.0.0 Ok", "250 2.1.0 Ok"])

        self.makeServer(freeSpace=lambda: 500000, queue_minfree="1000000")
        self.replies()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\n")
        self.assertEqual(self.replies()[-1], "452 4.3.1 Insufficient system storage")

    def test_refusedMessageNotLoggedAsAccepted(self):
        """
        A message cleanup refuses (a full disk) is logged as refused,
        with no C{client=} line, and the client hears cleanup's reply.
        """
        from twisted.logger import globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nx\r\n.\r\n")
        self.replies()
        self.cleanup.finish(452, "4.3.1 Insufficient system storage")
        self.assertEqual(self.replies(), ["452 4.3.1 Insufficient system storage"])
        from tmta.logging import formatLine

        lines = [formatLine(e) for e in events if e.get("log_namespace", "").startswith("tmta")]
        self.assertFalse([line for line in lines if "client=" in line], lines)
        self.assertTrue([line for line in lines
                         if "reject: END-OF-MESSAGE" in line and "452 4.3.1" in line], lines)

    def test_disconnectSummary(self):
        """
        The disconnect line counts the session's commands as Postfix's
        does: each command's successes, with how many were sent where
        some failed, unknown ones apart, and the total.
        """
        from twisted.logger import globalLogPublisher

        from tmta.logging import formatLine

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.makeServer(client="192.0.2.1")
        self.send(b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<nobody@elsewhere.example>\r\n"
                  b"RCPT TO:<bob@localhost>\r\nDATA\r\nx\r\n.\r\n")
        self.cleanup.finish()
        self.send(b"FROB\r\nQUIT\r\n")
        self.replies()
        self.server.connectionLost()
        [line] = [formatLine(e) for e in events
                  if formatLine(e).startswith("disconnect from")]
        self.assertEqual(line, "disconnect from localhost[192.0.2.1] ehlo=1 mail=1 rcpt=1/2 "
                               "data=1 quit=1 unknown=0/1 commands=5/7")

    def test_onlyCRLFDotCRLFEndsData(self):
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.replies()
        self.send(b"line\n.\nstill data\r\n")
        self.send(b"x\r.\r\nmore\r\n")
        self.assertEqual(self.cleanup.ends, [])
        self.send(b".\r\n")
        self.assertEqual(len(self.cleanup.ends), 1)
        self.cleanup.finish()
        self.assertEqual(self.cleanup.content(), b"line\n.\nstill data\nx\r.\nmore\n")

    def test_endMarkerSplitAcrossPackets(self):
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nbody\r")
        for byte in b"\n.\r\n":
            self.send(bytes([byte]))
        self.assertEqual(len(self.cleanup.ends), 1)

    def test_longCommandLine(self):
        self.makeServer()
        self.replies()
        self.send(b"HELO " + b"x" * 3000 + b"\r\nNOOP\r\n")
        self.assertEqual(self.replies(), ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"])
        # Also when the long line arrives in pieces.
        self.send(b"NOOP " + b"y" * 2500)
        self.send(b"y" * 2500 + b"\r\nNOOP\r\n")
        self.assertEqual(self.replies(), ["500 5.5.2 Error: line too long", "250 2.0.0 Ok"])

    def test_longMessageLinesKept(self):
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        line = b"z" * 100000
        self.send(b"Subject: long\r\n\r\n" + line + b"\r\n.\r\n")
        self.cleanup.finish()
        self.assertEqual(self.cleanup.content(), b"Subject: long\n\n" + line + b"\n")
        self.assertTrue(all(len(kw["data"]) <= 65535 for c, kw in self.cleanup.calls
                            if c in (CleanupContent, CleanupEnd)))

    def test_sizeLimit(self):
        self.makeServer(message_size_limit="1000")
        self.replies()
        self.send(b"EHLO c\r\nMAIL FROM:<a@b.c> SIZE=5000\r\n")
        self.assertEqual(self.replies()[-1], "552 5.3.4 Message size exceeds fixed limit")
        self.send(b"MAIL FROM:<a@b.c> SIZE=500\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.send(b"x" * 600 + b"\r\n" + b"y" * 600 + b"\r\n.\r\nNOOP\r\n")
        self.assertEqual(self.replies()[-2:], ["552 5.3.4 Message size exceeds fixed limit",
                                               "250 2.0.0 Ok"])
        self.assertNotIn(CleanupEnd, [c for c, kw in self.cleanup.calls])
        self.assertEqual(self.cleanup.ends, [])

    def test_relayDenied(self):
        self.makeServer(client="127.0.0.2")
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@elsewhere.example>\r\n"
                  b"RCPT TO:<bob@localhost>\r\n")
        replies = self.replies()
        self.assertEqual(replies[-2], "454 4.7.1 <x@elsewhere.example>: Relay access denied")
        self.assertEqual(replies[-1], "250 2.1.5 Ok")

    def test_relayRejectCode(self):
        self.makeServer(client="10.1.2.3", smtpd_relay_restrictions="reject_unauth_destination")
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n")
        replies = self.replies()
        self.assertEqual(replies[-2], "554 5.7.1 <x@elsewhere.example>: Relay access denied")
        self.assertEqual(replies[-1], "554 5.5.1 Error: no valid recipients")
        self.assertEqual(self.cleanup.calls, [])

    def test_relayFromMynetworks(self):
        self.makeServer(client="127.0.0.1")
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<x@elsewhere.example>\r\n")
        self.assertEqual(self.replies()[-1], "250 2.1.5 Ok")

    def test_unknownLocalUser(self):
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<nosuch@mx.example.org>\r\n"
                  b"RCPT TO:<BOB@MX.example.org>\r\n")
        replies = self.replies()
        self.assertEqual(replies[-2], "550 5.1.1 <nosuch@mx.example.org>: Recipient address "
                                      "rejected: User unknown in local recipient table")
        self.assertEqual(replies[-1], "250 2.1.5 Ok")

    def test_recipientLimit(self):
        self.makeServer(smtpd_recipient_limit="2")
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\n" + b"RCPT TO:<bob@localhost>\r\n" * 3)
        self.assertEqual(self.replies()[-1], "452 4.5.3 Error: too many recipients")
        self.assertEqual(self.server.errors, 0)

    def test_recipientOvershootLimit(self):
        """
        Past smtpd_recipient_overshoot_limit extra recipients, each
        counts as an error, until the hard limit ends the session.
        """
        self.makeServer(smtpd_recipient_limit="2", smtpd_recipient_overshoot_limit="3",
                        smtpd_hard_error_limit="2")
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\n" + b"RCPT TO:<bob@localhost>\r\n" * 8)
        replies = self.replies()
        # Two accepted, three over the limit freely, two more as errors;
        # the command after the second error ends the session.
        self.assertEqual(replies[-6:], ["452 4.5.3 Error: too many recipients"] * 5
                         + ["421 4.7.0 mx.example.org Error: too many errors"])

    def test_hardErrorLimit(self):
        self.makeServer(smtpd_hard_error_limit="3")
        self.replies()
        self.send(b"BOGUS\r\nBOGUS\r\nBOGUS\r\nNOOP\r\n")
        # As Postfix: the error that reaches the limit is answered, and
        # the next command ends the session.
        self.assertEqual(self.replies(), [
            "500 5.5.2 Error: command not recognized",
            "500 5.5.2 Error: command not recognized",
            "500 5.5.2 Error: command not recognized",
            "421 4.7.0 mx.example.org Error: too many errors",
        ])
        self.assertTrue(self.transport.disconnecting)

    def test_badInput(self):
        self.makeServer()
        self.replies()
        self.send(b"HELO a\0b\r\nMAIL FROM:<a\x01b@c.d>\r\nHELO \xff\xfe\r\n"
                  b"MAIL FROM:<a@b.c> FOO=BAR\r\nRCPT TO:<bob@localhost>\r\nMAIL TO:<x>\r\n")
        self.assertEqual(self.replies(), [
            "500 5.5.2 Error: bad syntax",
            "500 5.5.2 Error: bad syntax",
            "500 5.5.2 Error: bad UTF-8 syntax",
            "555 5.5.4 Unsupported option: FOO=BAR",
            "503 5.5.1 Error: need MAIL command",
            "501 5.5.4 Syntax: MAIL FROM:<address>",
        ])

    def test_dsnSyntax(self):
        """
        RFC 3461 parameters are kept when well formed and refused, each
        with its reason, when not.
        """
        self.makeServer()
        self.replies()
        self.send(b"MAIL FROM:<a@b.c> RET=SOME\r\nMAIL FROM:<a@b.c> ENVID=a+zz\r\n"
                  b"MAIL FROM:<a@b.c> RET=hdrs ENVID=x+2By\r\n"
                  b"RCPT TO:<bob@localhost> NOTIFY=NEVER,SUCCESS\r\n"
                  b"RCPT TO:<bob@localhost> ORCPT=bob@localhost\r\n"
                  b"RCPT TO:<bob@localhost> NOTIFY=success,delay ORCPT=rfc822;b+40x\r\n")
        self.assertEqual(self.replies(), [
            "501 5.5.4 Bad RET parameter syntax",
            "501 5.5.4 Bad ENVID parameter syntax",
            "250 2.1.0 Ok",
            "501 5.5.4 Bad NOTIFY parameter syntax",
            "501 5.5.4 Bad ORCPT parameter syntax",
            "250 2.1.5 Ok",
        ])
        self.assertEqual(self.server.dsnAttributes, {"dsn_ret": "HDRS", "dsn_envid": "x+y"})
        self.assertEqual(self.server.recipientDSN, [("SUCCESS,DELAY", "rfc822;b@x")])

    def test_sequenceErrors(self):
        self.makeServer(smtpd_helo_required="yes")
        self.replies()
        self.send(b"MAIL FROM:<a@b.c>\r\nHELO c\r\nDATA\r\nMAIL FROM:<a@b.c>\r\n"
                  b"MAIL FROM:<a@b.c>\r\nDATA\r\nRSET\r\nRCPT TO:<bob@localhost>\r\n")
        self.assertEqual(self.replies(), [
            "503 5.5.1 Error: send HELO/EHLO first",
            "250 mx.example.org",
            "503 5.5.1 Error: need MAIL command",
            "250 2.1.0 Ok",
            "503 5.5.1 Error: nested MAIL command",
            "554 5.5.1 Error: no valid recipients",
            "250 2.0.0 Ok",
            "503 5.5.1 Error: need MAIL command",
        ])

    def test_badHelo(self):
        self.makeServer()
        self.replies()
        self.send(b"HELO a\rb\r\nEHLO x y\r\nEHLO " + b"h" * 300 + b"\r\nHELO ok.example\r\n")
        replies = self.replies()
        # A bare CR is a control character: the command is refused whole.
        self.assertEqual([r[:9] for r in replies], ["500 5.5.2", "501 5.5.2", "501 5.5.2",
                                                    "250 mx.ex"])

    def test_connectionLostInData(self):
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\npartial")
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.server.connectionLost(Failure(ConnectionLost()))
        # Nothing had reached cleanup yet, so there is nothing to abort.
        self.assertEqual(self.cleanup.calls, [])
        self.assertEqual(self.server.cleanupClient.connection.users, 0)
        self.assertEqual(self.cleanup.ends, [])

    def test_connectionLostInLongData(self):
        """
        A client that goes away after some of a long message reached
        cleanup: the message there is aborted.
        """
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.send((b"x" * 100 + b"\r\n") * 1000 + b"partial")
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.server.connectionLost(Failure(ConnectionLost()))
        calls = [c for c, kw in self.cleanup.calls]
        self.assertEqual(calls[0], CleanupBegin)
        self.assertEqual(calls[-1], CleanupAbort)
        self.assertEqual(self.cleanup.ends, [])

    def test_envelopeWithData(self):
        """
        The envelope goes to cleanup with the message, in one write: for
        a short message, with the end of data.
        """
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.assertEqual(self.cleanup.calls, [])
        self.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(self.cleanup.writes, [[CleanupBegin, CleanupEnd]])
        self.cleanup.finish()
        self.assertEqual(self.cleanup.recipients(), ["bob@localhost"])
        self.assertEqual(self.cleanup.calls[0][1]["sender"], "a@b.c")

    def test_forbiddenCommand(self):
        self.makeServer()
        self.replies()
        self.send(b"GET / HTTP/1.0\r\n")
        self.assertEqual(self.replies(), ["221 2.7.0 Error: I can break rules, too. Goodbye."])
        self.assertTrue(self.transport.disconnecting)

    def test_vrfyAndHelp(self):
        self.makeServer()
        self.replies()
        self.send(b"VRFY <bob@localhost>\r\nVRFY nosuch@localhost\r\nHELP\r\n")
        replies = self.replies()
        self.assertEqual(replies[0], "252 2.0.0 bob@localhost")
        self.assertTrue(replies[1].startswith("550 5.1.1"))
        self.assertTrue(replies[2].startswith("214 2.0.0"))
        self.makeServer(disable_vrfy_command="yes")
        self.replies()
        self.send(b"VRFY bob\r\n")
        self.assertEqual(self.replies(), ["502 5.5.1 VRFY command is disabled"])

    def test_errorSleep(self):
        """
        Past smtpd_soft_error_limit errors every answer waits
        smtpd_error_sleep_time; at smtpd_hard_error_limit the session
        ends.
        """
        self.makeServer(smtpd_soft_error_limit="2", smtpd_error_sleep_time="1s",
                        smtpd_hard_error_limit="5")
        self.replies()
        self.send(b"BOGUS\r\n" * 2 + b"NOOP\r\n" + b"BOGUS\r\n" * 3 + b"NOOP\r\n")
        self.assertEqual(len(self.replies()), 2)
        self.clock.advance(0.9)
        self.assertEqual(self.replies(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.replies(), ["250 2.0.0 Ok"])
        self.clock.advance(1)
        self.assertEqual(len(self.replies()), 1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.replies(), ["500 5.5.2 Error: command not recognized"] * 2)
        self.clock.advance(1)
        self.assertEqual(self.replies(), ["421 4.7.0 mx.example.org Error: too many errors"])
        self.assertTrue(self.transport.disconnecting)

    def test_junkCommandLimit(self):
        """
        Past smtpd_junk_command_limit, each NOOP, RSET or VRFY counts as
        an error; a delivered message starts the counts again.
        """
        self.makeServer(smtpd_junk_command_limit="3", smtpd_soft_error_limit="100",
                        smtpd_hard_error_limit="3")
        self.replies()
        self.send(b"HELO c\r\nNOOP\r\nRSET\r\nNOOP\r\nNOOP\r\n")
        self.assertEqual(self.server.errors, 1)
        self.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nx\r\n.\r\n")
        self.cleanup.finish()
        self.assertEqual((self.server.errors, self.server.junkCommands), (0, 0))
        self.replies()
        self.send(b"NOOP\r\n" * 8)
        self.assertEqual(self.replies()[-1], "421 4.7.0 mx.example.org Error: too many errors")
        self.assertTrue(self.transport.disconnecting)

    def test_tricklingClientKeptByDefault(self):
        """
        By default (as Postfix's), smtpd_timeout limits the time between
        reads: a byte every 50 seconds keeps a session.
        """
        self.makeServer()
        self.replies()
        for byte in b"NOOP\r":
            self.send(bytes([byte]))
            self.clock.advance(50)
        self.assertFalse(self.transport.disconnecting)

    def test_perRequestDeadline(self):
        """
        With smtpd_per_request_deadline, a command trickled a byte at a
        time must be complete within smtpd_timeout.
        """
        self.makeServer(smtpd_per_request_deadline="yes")
        self.replies()
        for byte in b"NOOP\r":
            self.send(bytes([byte]))
            self.clock.advance(10)
        self.clock.advance(11)
        self.assertEqual(self.replies()[-1], "421 4.4.2 mx.example.org Error: timeout exceeded")
        self.assertTrue(self.transport.disconnecting)

    def test_perRequestDeadlineData(self):
        """
        With smtpd_per_request_deadline the message text has smtpd_timeout
        plus a second for every smtpd_min_data_rate bytes it sent.
        """
        self.makeServer(smtpd_per_request_deadline="yes", smtpd_min_data_rate="100")
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.replies()
        self.clock.advance(30)
        self.send(b"x" * 1000 + b"\r\n")  # earns 10 seconds
        self.clock.advance(30)
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(self.transport.disconnecting)

    def test_perRecordDeadlineIsPerRequest(self):
        """
        smtpd_per_record_deadline, Postfix's older name, sets
        smtpd_per_request_deadline, as in Postfix 3.7.
        """
        self.makeServer(smtpd_per_record_deadline="yes")
        self.assertEqual(self.server.deadline, "request")

    def test_timeout(self):
        self.makeServer()
        self.replies()
        self.clock.advance(59)
        self.send(b"NOOP\r\n")
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertEqual(self.replies()[-1], "421 4.4.2 mx.example.org Error: timeout exceeded")
        self.assertTrue(self.transport.disconnecting)

    def test_cleanupFailure(self):
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nx\r\n.\r\n")
        self.replies()
        self.cleanup.finish(451, "4.3.0 Error: queue file write error")
        self.assertEqual(self.replies(), ["451 4.3.0 Error: queue file write error"])

    def test_sessionsShareCleanup(self):
        """
        Sessions in DATA at once send their messages over one connection
        to cleanup, each under its own number, are paused together while
        that connection is backed up, and each gets its own answer.
        """
        first = self.makeServer()
        firstTransport = self.transport
        second = self.makeServer(cleanupClient=first.cleanupClient)
        secondTransport = self.transport
        for server in (first, second):
            server.dataReceived(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\n"
                                b"DATA\r\n")
        senders = self.cleanup.transport.producer
        senders.pauseProducing()
        self.assertEqual([firstTransport.producerState, secondTransport.producerState],
                         ["paused", "paused"])
        senders.resumeProducing()
        second.dataReceived(b"two\r\n.\r\n")
        first.dataReceived(b"one\r\n.\r\n")
        numbers = [kw["message"] for c, kw in self.cleanup.calls if c is CleanupEnd]
        self.assertEqual(len(set(numbers)), 2)
        self.cleanup.finish(reason="2.0.0 Ok: queued as SECOND")
        self.cleanup.finish(reason="2.0.0 Ok: queued as FIRST")
        self.assertIn(b"queued as FIRST", firstTransport.value())
        self.assertIn(b"queued as SECOND", secondTransport.value())
        self.assertEqual(first.cleanupClient.connection.users, 0)

    def test_cleanupLostInData(self):
        """
        When the connection to cleanup goes while a client is sending its
        message, the client is not cut off (nor left paused): it hears
        451 at the end of data.
        """
        self.makeServer()
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.replies()
        self.send((b"x" * 100 + b"\r\n") * 1000)
        senders = self.cleanup.transport.producer
        senders.pauseProducing()
        senders.stopProducing()
        self.cleanup.transport = None
        self.assertEqual(self.transport.producerState, "producing")
        self.send(b".\r\n")
        self.assertEqual(self.replies(), ["451 4.3.0 Error: queue file write error"])
        self.assertFalse(self.transport.disconnecting)

    def test_cleanupUnreachable(self):
        self.makeServer()
        self.server.cleanupClient = CleanupClient(lambda: defer.fail(OSError("no cleanup")),
                                                  self.clock)
        self.send(b"HELO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\nNOOP\r\n")
        self.assertEqual(self.replies()[-2:], ["451 4.3.0 Error: queue file write error",
                                               "250 2.0.0 Ok"])


class DataDecoderTests(SynchronousTestCase):
    def decode(self, *chunks):
        d = DataDecoder()
        out, buf = b"", b""
        for c in chunks:
            text, buf = d.feed(buf + c)
            out += text
            if d.done:
                return out, buf
        return out, None

    def test_byteAtATime(self):
        message = b"a\r\n..b\r\nc\nd\r\n.\r\nQUIT\r\n"
        whole = self.decode(message)
        pieces = self.decode(*[bytes([b]) for b in message])
        self.assertEqual(whole, (b"a\n.b\nc\nd\n", b"QUIT\r\n"))
        self.assertEqual(pieces[0], whole[0])

    def test_emptyMessage(self):
        self.assertEqual(self.decode(b".\r\n"), (b"", b""))

    def test_dotLinesAmongPlainLines(self):
        """
        Lines with and without a leading dot, in one chunk and in many,
        decode the same; a lone dot after a bare LF is text, not the end.
        """
        message = b"one\r\ntwo\r\n.three\r\nfour\nfive\n.\r\nsix\r\r\n\r\n.\r\nNOOP\r\n"
        expected = (b"one\ntwo\nthree\nfour\nfive\n.\nsix\r\n\n", b"NOOP\r\n")
        self.assertEqual(self.decode(message), expected)
        for cut in range(len(message) - len(b"NOOP\r\n")):
            self.assertEqual(self.decode(message[:cut], message[cut:]), expected)


class ChunkingTests(SessionHarness, SynchronousTestCase):
    """
    BDAT (RFC 3030) and the other late extensions: SMTPUTF8, and the
    defences against pipelining without leave and bare newlines.
    """

    def transaction(self, **params):
        self.makeServer(**params)
        self.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<bob@localhost>\r\n")
        self.replies()

    def test_ehloAnnounces(self):
        self.makeServer()
        self.replies()
        self.send(b"EHLO c\r\n")
        replies = self.replies()
        self.assertIn("250-SMTPUTF8", replies)
        self.assertIn("250 CHUNKING", replies)

    def test_chunks(self):
        self.transaction()
        self.send(b"BDAT 14\r\nSubject: x\r\n\r")
        self.send(b"\nBDAT 10 LAST\r\n.body\r\n.\r\n")
        self.assertEqual(self.replies(), ["250 2.0.0 Ok: 14 bytes"])
        self.assertEqual(self.cleanup.content(), b"Subject: x\n\n.body\n.\n")
        self.cleanup.finish()
        self.assertEqual(self.replies(), ["250 2.0.0 Ok: queued as 0123456789ABCDEF01"])

    def test_chunkWithoutTransactionIsRead(self):
        self.makeServer()
        self.replies()
        self.send(b"EHLO c\r\nBDAT 12 LAST\r\nNOOP\r\nNOOP\r\nQUIT\r\n")
        replies = self.replies()
        self.assertEqual(replies[-2:], ["503 5.5.1 Error: need MAIL command", "221 2.0.0 Bye"])

    def test_badBdatEndsSession(self):
        self.transaction()
        self.send(b"BDAT lots\r\n")
        self.assertEqual(self.replies(), ["521 5.5.4 Syntax: BDAT count [LAST]"])
        self.assertTrue(self.transport.disconnecting)

    def test_binaryMimeRefused(self):
        self.makeServer()
        self.replies()
        self.send(b"EHLO c\r\nMAIL FROM:<a@example.com> BODY=BINARYMIME\r\n")
        self.assertEqual(self.replies()[-1], "555 5.5.4 Unsupported option: BODY=BINARYMIME")

    def test_dataAfterBdatRefused(self):
        self.transaction()
        self.send(b"BDAT 3\r\nabcDATA\r\n")
        self.assertEqual(self.replies(), ["250 2.0.0 Ok: 3 bytes",
                                          "503 5.5.1 Error: BDAT in progress"])

    def test_smtputf8(self):
        self.makeServer(anyLocalName=True)
        self.replies()
        self.send("EHLO c\r\nMAIL FROM:<jürgen@example.com>\r\n".encode())
        self.assertEqual(self.replies()[-1],
                         "553 5.6.7 Must declare SMTPUTF8 to send unicode address")
        self.send("MAIL FROM:<jürgen@example.com> SMTPUTF8\r\nRCPT TO:<bob@localhost>\r\n"
                  "DATA\r\nSubject: ü\r\n\r\n.\r\n".encode())
        [begin] = [kw for c, kw in self.cleanup.calls if c is CleanupBegin]
        attributes = {a["name"]: a["value"] for a in begin["attributes"]}
        self.assertEqual(attributes["smtputf8"], "yes")
        self.assertEqual(begin["sender"], "jürgen@example.com")
        # RFC 6531 3.7.3: the Received header says UTF8SMTP.
        self.assertEqual(attributes["protocol"], "UTF8SMTP")

    def test_unauthPipeliningForbidden(self):
        self.makeServer(smtpd_forbid_unauth_pipelining="yes")
        self.replies()
        self.send(b"HELO c\r\nMAIL FROM:<a@example.com>\r\n")
        self.assertEqual(self.replies(), ["554 5.5.0 Error: SMTP protocol synchronization"])
        self.assertTrue(self.transport.disconnecting)
        # After EHLO's PIPELINING, a group may be sent at once.
        self.makeServer(smtpd_forbid_unauth_pipelining="yes")
        self.replies()
        self.send(b"EHLO c\r\n")
        self.replies()
        self.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.assertEqual(self.replies()[-1], "354 End data with <CR><LF>.<CR><LF>")

    def test_bareNewlineReject(self):
        self.transaction(smtpd_forbid_bare_newline="reject")
        self.send(b"DATA\r\nSubject: x\r\n\r\nline\n.\r\n")
        self.assertEqual(self.replies(), ["354 End data with <CR><LF>.<CR><LF>",
                                          "550 5.5.2 mx.example.org Error: bare <LF> received"])
        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn(CleanupEnd, [c for c, kw in self.cleanup.calls])
        self.makeServer(smtpd_forbid_bare_newline="reject")
        self.replies()
        self.send(b"EHLO c\n")
        self.assertEqual(self.replies(), ["550 5.5.2 mx.example.org Error: bare <LF> received"])

    def test_bareNewlineExclusions(self):
        self.transaction(smtpd_forbid_bare_newline="reject",
                         smtpd_forbid_bare_newline_exclusions="127.0.0.0/8")
        self.send(b"DATA\r\nSubject: x\r\n\r\nline\n.\r\n")
        self.assertEqual(self.replies(), ["354 End data with <CR><LF>.<CR><LF>"])

    def test_earlyTalker(self):
        """
        A client that talks before the greeting is cut off.
        """
        lookup = defer.Deferred()
        self.makeServer(lookup=lambda a: lookup, smtpd_forbid_unauth_pipelining="yes")
        self.send(b"EHLO impatient.example\r\n")
        lookup.callback("localhost")
        self.assertEqual(self.replies(), ["554 5.5.0 Error: SMTP protocol synchronization"])
        self.assertTrue(self.transport.disconnecting)


class XForwardTests(SessionHarness, SynchronousTestCase):
    """
    XFORWARD from a content filter: offered to and taken from
    C{smtpd_authorized_xforward_hosts} only, outside a transaction, and
    logged with the queue id as Postfix logs it.
    """

    def test_forwardedClientLogged(self):
        from twisted.logger import globalLogPublisher

        lines = []

        def observe(event):
            if "client=" in str(event.get("log_format", "")):
                from twisted.logger import formatEvent

                lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.makeServer(smtpd_authorized_xforward_hosts="127.0.0.0/8")
        self.replies()
        self.send(b"EHLO filter.example\r\n")
        self.assertIn("250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT", self.replies())
        self.send(b"XFORWARD NAME=spike.example ADDR=192.0.2.7 PORT=40123\r\n"
                  b"XFORWARD HELO=spike.example IDENT=6620E0000000000001 PROTO=ESMTP\r\n"
                  b"XFORWARD ADDR=nonsense\r\n"
                  b"XFORWARD COLOR=red\r\n"
                  b"MAIL FROM:<a@x.example>\r\nXFORWARD NAME=late.example\r\n"
                  b"RCPT TO:<bob@mx.example.org>\r\nDATA\r\nSubject: t\r\n\r\nx\r\n.\r\n")
        self.cleanup.finish()
        self.assertEqual(self.replies(), [
            "250 2.0.0 Ok", "250 2.0.0 Ok", "501 5.5.4 Bad ADDR syntax: nonsense",
            "501 5.5.4 Bad XFORWARD attribute name: COLOR", "250 2.1.0 Ok",
            "503 5.5.1 Error: MAIL transaction in progress", "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as 0123456789ABCDEF01"])
        self.assertIn("0123456789ABCDEF01: client=localhost[127.0.0.1], "
                      "orig_queue_id=6620E0000000000001, orig_client=spike.example[192.0.2.7]",
                      lines)
        # Forgotten with the transaction.
        self.assertIsNone(self.server.forwarded)

    def test_unauthorized(self):
        self.makeServer(smtpd_authorized_xforward_hosts="192.0.2.0/24")
        self.replies()
        self.send(b"EHLO filter.example\r\n")
        self.assertFalse([r for r in self.replies() if "XFORWARD" in r])
        self.send(b"XFORWARD NAME=spike.example\r\n")
        self.assertEqual(self.replies(), ["550 5.7.0 Error: insufficient authorization"])
