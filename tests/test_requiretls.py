"""
Tests for REQUIRETLS (RFC 8689): smtpd offers it only under TLS, and a
message that asked for it leaves only over TLS that verifies its server,
to a server that offers REQUIRETLS too -- here a second real master --
or bounces.
"""

import os
import smtplib
import ssl

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    Master,
    TestCA,
    endToEnd,
    freePort,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    waitFor,
)
from tests.test_smtp import MASTER_CF  # with the smtp and relay transports


class RequireTLSTests(SynchronousTestCase):
    def setUp(self):
        endToEnd()
        self.base = shortTemporaryDirectory(self)
        self.ca = TestCA(os.path.join(self.base, "ca"))
        self.certFile, self.keyFile = self.ca.server("localhost")

    def master(self, name, settings):
        port = freePort()
        master = Master(os.path.join(self.base, name), {
            "smtpd_tls_security_level": "may", "smtpd_tls_cert_file": self.certFile,
            "smtpd_tls_key_file": self.keyFile, "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s", "queue_run_delay": "1s",
            **localMaildirs(os.path.join(self.base, name + "-mail") + "/"), **settings},
            MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        return master, port

    def origin(self, peerPort):
        return self.master("origin", {
            "mydestination": "localhost", "relayhost": f"[localhost]:{peerPort}",
            "smtp_tls_security_level": "may", "smtp_tls_CAfile": self.ca.caFile})

    def submit(self, port, requireTLS=True):
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("client.example")
        before = client.has_extn("requiretls")
        client.starttls(context=ssl._create_unverified_context())
        client.ehlo("client.example")
        after = client.has_extn("requiretls")
        options = ["REQUIRETLS"] if requireTLS else []
        client.sendmail("alice@localhost", ["bob@remote.example"],
                        b"From: alice@localhost\r\nSubject: secret\r\n\r\nsecret\r\n", options)
        client.quit()
        return before, after

    def test_offeredOnlyUnderTLS(self):
        _, port = self.master("alone", {"mydestination": "localhost"})
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo("client.example")
        self.assertFalse(client.has_extn("requiretls"))
        code, text = client.mail("alice@localhost", ["REQUIRETLS"])
        self.assertEqual((code, text), (555, b"5.5.4 Unsupported option: REQUIRETLS"))
        client.quit()

    def test_relayedOverVerifiedTLS(self):
        _, peerPort = self.master("peer", {"mydestination": "remote.example"})
        origin, port = self.origin(peerPort)
        self.assertEqual(self.submit(port), (False, True))
        spool = os.path.join(self.base, "peer-mail")
        waitFor(lambda: maildirMessages(spool).get("bob"), what="the relayed message")
        waitFor(lambda: "Verified TLS connection established" in origin.log(),
                what="the TLS log line")
        [message] = maildirMessages(spool)["bob"]
        self.assertIn(b"secret", message)
        # It came to each over TLS, which each Received: says.
        self.assertEqual(message.count(b"(tmta) with ESMTPS id"), 2)

    def test_peerWithoutRequireTLSBounces(self):
        _, peerPort = self.master("peer", {"mydestination": "remote.example",
                                           "requiretls_enable": "no"})
        origin, port = self.origin(peerPort)
        self.submit(port)
        waitFor(lambda: "status=bounced" in origin.log(), what="the bounce")
        self.assertIn("dsn=5.7.30, status=bounced (REQUIRETLS is required, but was not offered "
                      "by host localhost[", origin.log())
        self.assertEqual(maildirMessages(os.path.join(self.base, "peer-mail")), {})
        # The bounce carries the headers only (RFC 8689 section 4.3).
        spool = os.path.join(self.base, "origin-mail")
        waitFor(lambda: maildirMessages(spool).get("alice"), what="the bounce")
        [bounce] = maildirMessages(spool)["alice"]
        self.assertIn(b"text/rfc822-headers", bounce)
        self.assertNotIn(b"\nsecret\n", bounce.replace(b"\r\n", b"\n"))

    def test_unverifiedServerBounces(self):
        """
        A server whose certificate does not verify is not good enough,
        whatever the TLS security level says.
        """
        _, peerPort = self.master("peer", {"mydestination": "remote.example"})
        other = TestCA(os.path.join(self.base, "other-ca"))
        origin, port = self.master("origin", {
            "mydestination": "localhost", "relayhost": f"[localhost]:{peerPort}",
            "smtp_tls_security_level": "may", "smtp_tls_CAfile": other.caFile})
        self.submit(port)
        waitFor(lambda: "status=bounced" in origin.log(), what="the bounce")
        self.assertIn("dsn=5.7.30, status=bounced (REQUIRETLS: the message requires TLS that "
                      "verifies the server, but the session is Untrusted with host localhost[",
                      origin.log())

    def test_withoutRequireTLSUnchanged(self):
        _, peerPort = self.master("peer", {"mydestination": "remote.example",
                                           "requiretls_enable": "no"})
        origin, port = self.origin(peerPort)
        self.submit(port, requireTLS=False)
        waitFor(lambda: maildirMessages(os.path.join(self.base, "peer-mail")).get("bob"),
                what="the relayed message")
