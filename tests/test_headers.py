"""
Tests for L{tmta.cleanup.headers} and L{tmta.mail.received}: what
cleanup reads of a header section and the headers it adds.
"""

import time

from twisted.trial.unittest import SynchronousTestCase

from tmta.cleanup.headers import (
    headerNames,
    messageId,
    missingHeaders,
    splitHeaderSection,
)
from tmta.mail.received import receivedHeader


class SplitTests(SynchronousTestCase):
    def test_headersAndBody(self):
        headers, rest = splitHeaderSection(
            b"Subject: a\nX-Long: one\n\ttwo\n  three\nFrom: x@y\n\nbody\n\nmore\n")
        self.assertEqual(headers, [b"Subject: a", b"X-Long: one\n\ttwo\n  three", b"From: x@y"])
        self.assertEqual(rest, b"\nbody\n\nmore\n")

    def test_nonHeaderLineStartsTheBody(self):
        """
        A line that is neither a header nor a continuation ends the
        header section, as in Postfix: it is the body's first line.
        """
        headers, rest = splitHeaderSection(b"Subject: a\nnot a header\nX: y\n")
        self.assertEqual(headers, [b"Subject: a"])
        self.assertEqual(rest, b"not a header\nX: y\n")

    def test_leadingContinuationIsBody(self):
        headers, rest = splitHeaderSection(b" indented\nSubject: a\n")
        self.assertEqual(headers, [])
        self.assertEqual(rest, b" indented\nSubject: a\n")

    def test_crlfEmptyLineEnds(self):
        headers, rest = splitHeaderSection(b"Subject: a\r\n\r\nbody")
        self.assertEqual(headers, [b"Subject: a\r"])
        self.assertEqual(rest, b"\r\nbody")

    def test_allHeaders(self):
        self.assertEqual(splitHeaderSection(b"A: 1\nB: 2"), ([b"A: 1", b"B: 2"], b""))

    def test_namesCounted(self):
        self.assertEqual(headerNames([b"Received: a", b"received : b", b"To: c", b"junk"]),
                         {"received": 2, "to": 1})


class AddedHeaderTests(SynchronousTestCase):
    def test_missingHeaders(self):
        now = time.mktime((2026, 12, 7, 12, 0, 0, 0, 0, -1))
        added = missingHeaders({}, "alice@example.com", "ABC", "mx.example", now)
        self.assertEqual([h.split(b":")[0] for h in added], [b"Date", b"Message-Id", b"From"])
        self.assertIn(b".ABC@mx.example>", added[1])
        self.assertEqual(added[2], b"From: alice@example.com")
        self.assertEqual(missingHeaders({"resent-date": 1, "message-id": 1, "from": 1},
                                        "", "ABC", "mx.example", now), [])
        self.assertEqual(missingHeaders({"date": 1, "message-id": 1}, "", "ABC", "mx"),
                         [b"From: MAILER-DAEMON"])

    def test_fullNameInFrom(self):
        """
        C{sendmail -F}'s full name goes before the address in the From
        header cleanup adds, quoted where RFC 5322 wants it, never with
        a line break.
        """
        def fromHeader(name, sender="cron@example.org"):
            [header] = [h for h in missingHeaders({"date": 1, "message-id": 1}, sender, "Q",
                                                  "mx", 0, name)]
            return header.decode()

        self.assertEqual(fromHeader("Cron Daemon"), "From: Cron Daemon <cron@example.org>")
        self.assertEqual(fromHeader('Dr. "Who"'), 'From: "Dr. \\"Who\\"" <cron@example.org>')
        self.assertEqual(fromHeader("evil\r\nBcc: x@y"), 'From: "evil Bcc: x@y" <cron@example.org>')
        self.assertEqual(fromHeader("  "), "From: cron@example.org")
        self.assertEqual(fromHeader("Cron", sender=""), "From: MAILER-DAEMON")

    def test_receivedFromTheNetwork(self):
        tls = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
        header = receivedHeader({"helo_name": "client.example", "client_name": "c.example",
                                 "client_address": "192.0.2.1", "protocol": "ESMTPS",
                                 "tls": tls}, "mx.example", "ABC", ["bob@example.org"], 0)
        lines = header.decode().split("\n")
        self.assertEqual(lines[0], "Received: from client.example (c.example [192.0.2.1])")
        self.assertEqual(lines[1],
                         "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))")
        self.assertEqual(lines[3], "\tby mx.example (tmta) with ESMTPS id ABC")
        self.assertTrue(lines[4].startswith("\tfor <bob@example.org>; "))

    def test_receivedNeverCarriesWhatTheClientMade(self):
        """
        What the client said (its HELO name) and what smtpd was told
        cannot break the header: white space and control characters
        become C{?}, an unexpected TLS summary is left out.
        """
        header = receivedHeader({"helo_name": "evil\r\nX-Injected: yes", "client_name": "c",
                                 "client_address": "192.0.2.1", "tls": "anything\nX: y"},
                                "mx.example", "ABC", ["a@b", "c@d"], 0)
        self.assertNotIn(b"\r", header)
        self.assertNotIn(b"X-Injected: yes", header)
        self.assertNotIn(b"anything", header)
        self.assertIn(b"evil??X-Injected:?yes", header)
        self.assertNotIn(b"for <", header)

    def test_receivedLocal(self):
        posted = receivedHeader({"uid": "1000"}, "mx.example", "ABC", ["a@b"], 0)
        self.assertTrue(posted.startswith(b"Received: by mx.example (tmta, from userid 1000)"))
        internal = receivedHeader({"uid": "x"}, "mx.example", "ABC", ["a@b", "c@d"], 0)
        self.assertTrue(internal.startswith(b"Received: by mx.example (tmta, from local) id ABC;"))

    def test_messageId(self):
        self.assertEqual(messageId([b"Subject: a", b"Message-ID:  <x@y> "]), "<x@y>")
        self.assertEqual(messageId([b"Subject: a"]), "")
