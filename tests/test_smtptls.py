"""
Tests for the smtp client's TLS (L{tmta.smtp.tls}): each security level
against a private Postfix that offers STARTTLS with a test CA's
certificate, or offers none; and the certificate checks of C{verify} and
C{secure} on their own.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.support import TestCA, sendMessage, waitFor
from tests.test_smtp import RelayHarness
from tmta.config import MainConfig
from tmta.mail.tls import allowedVersions, cipherLists
from tmta.smtp.tls import ClientTLS, TLSPolicies, TLSPolicyError


class TLSPeerTests(RelayHarness, SynchronousTestCase):
    """
    tmta relays through C{relayhost = [localhost]:PORT} to a private
    Postfix, under each TLS security level.
    """

    def setUp(self):
        super().setUp()
        self.ca = TestCA(os.path.join(self.base, "ca"))

    def peer(self, names=("localhost",)):
        """
        Start the private Postfix, with STARTTLS and a certificate for
        C{names} when there are any.
        """
        from tests.support import PrivatePostfix

        main = {}
        if names:
            certFile, keyFile = self.ca.server(*names)
            main = {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": certFile,
                    "smtpd_tls_key_file": keyFile}
        mx = PrivatePostfix(os.path.join(self.base, "postfix"), "remote.example", main)
        self.sinkPort = mx.port
        mx.start()
        self.addCleanup(mx.stop)
        return mx

    def relay(self, level, **more):
        settings = {"relayhost": f"[localhost]:{self.sinkPort}",
                    "smtp_tls_security_level": level, "smtp_tls_CAfile": self.ca.caFile}
        settings.update(more)
        return self.startMaster(**settings)

    def send(self, subject):
        return sendMessage(self.port, "alice@localhost", ["bob@remote.example"], subject)

    def assertDelivered(self, mx, subject):
        waitFor(lambda: [m for m in mx.messages() if f"Subject: {subject}".encode() in m],
                what="the message at Postfix")

    def assertLogged(self, text):
        waitFor(lambda: text in self.master.log(), what=repr(text))

    def assertDeferred(self, queueId, reason):
        waitFor(lambda: f"{queueId}: to=<bob@remote.example>" in self.master.log(),
                what="the delivery attempt")
        line = [logged for logged in self.master.log().splitlines()
                if f"{queueId}: to=<bob@remote.example>" in logged][0]
        self.assertIn("status=deferred", line)
        self.assertIn(reason, line)

    def test_mayWithoutTLSSendsPlaintext(self):
        mx = self.peer(names=())
        self.relay("may")
        queueId = self.send("plain")
        self.assertDelivered(mx, "plain")
        self.assertLogged(f"{queueId}: removed")
        self.assertNotIn("TLS connection established", self.master.log())

    def test_encryptWithoutTLSDefers(self):
        mx = self.peer(names=())
        self.relay("encrypt")
        queueId = self.send("must encrypt")
        self.assertDeferred(queueId, "TLS is required, but was not offered by host")
        self.assertEqual(mx.messages(), [])

    def test_encryptWithTLS(self):
        mx = self.peer(names=("some.other.name",))
        self.relay("encrypt")
        self.send("encrypted")
        self.assertDelivered(mx, "encrypted")
        # encrypt checks no certificate: this one is only Trusted.
        self.assertLogged(f"Trusted TLS connection established to localhost[127.0.0.1]:"
                          f"{self.sinkPort}: TLSv1.")

    def test_verifyWithTheRightName(self):
        mx = self.peer(names=("localhost",))
        self.relay("verify")
        self.send("verified")
        self.assertDelivered(mx, "verified")
        self.assertLogged(f"Verified TLS connection established to localhost[127.0.0.1]:"
                          f"{self.sinkPort}: TLSv1.")
        self.assertIn(" with cipher ", self.master.log())

    def test_verifyWithAnotherNameDefers(self):
        mx = self.peer(names=("mx.elsewhere.example",))
        self.relay("verify")
        queueId = self.send("wrong name")
        self.assertDeferred(queueId, "Server certificate not verified: the certificate names "
                                     "mx.elsewhere.example, none of localhost")
        self.assertLogged("Trusted TLS connection established")
        self.assertEqual(mx.messages(), [])

    def test_verifyWithoutTheCADefers(self):
        mx = self.peer(names=("localhost",))
        other = TestCA(os.path.join(self.base, "other-ca"))
        self.relay("verify", smtp_tls_CAfile=other.caFile)
        queueId = self.send("untrusted")
        self.assertDeferred(queueId, "Server certificate not verified: untrusted issuer")
        self.assertLogged("Untrusted TLS connection established")
        self.assertEqual(mx.messages(), [])

    def test_secureByPolicyMap(self):
        """
        smtp_tls_policy_maps gives the next hop level secure, which checks
        the next-hop name.
        """
        mx = self.peer(names=("localhost",))
        policy = f"inline:{{ [localhost]:{self.sinkPort}=secure }}"
        self.relay("none", smtp_tls_policy_maps=policy)
        self.send("secure")
        self.assertDelivered(mx, "secure")
        self.assertLogged("Verified TLS connection established")


    def test_secureByTextTableWithPort(self):
        """
        A C{[host]:port} key in a texthash: policy table is found (its
        colon is part of the key, as postmap reads it): the mail waits
        for a certificate the policy accepts instead of leaving with
        the weaker default level.
        """
        mx = self.peer(names=("mx.elsewhere.example",))
        policy = os.path.join(self.base, "tls_policy")
        with open(policy, "w") as f:
            f.write(f"[localhost]:{self.sinkPort}  secure\n")
        self.relay("may", smtp_tls_policy_maps=f"texthash:{policy}")
        queueId = self.send("policy from a file")
        self.assertDeferred(queueId, "Server certificate not verified")
        self.assertEqual(mx.messages(), [])


class CertificateMatchTests(SynchronousTestCase):
    """
    Which names C{verify} and C{secure} accept, for mail to C{example.com}
    whose MX is C{mx.hosting.example}.
    """

    def setUp(self):
        self.ca = TestCA(self.mktemp())

    def mismatch(self, level, names, **settings):
        config = MainConfig(dict({"smtp_tls_security_level": level,
                                  "smtp_tls_CAfile": self.ca.caFile}, **settings))
        policy = TLSPolicies(config).forNexthop("example.com")
        tls = ClientTLS(policy, "mx.hosting.example", "example.com", cipherLists(config))
        return tls._nameMismatch(self.ca.certificate(*names))

    def test_verifyMatchesTheMXName(self):
        self.assertIsNone(self.mismatch("verify", ["mx.hosting.example"]))
        self.assertIsNotNone(self.mismatch("verify", ["example.com"]))

    def test_secureMatchesTheNexthop(self):
        # The MX name, which DNS could have forged, does not count.
        self.assertIsNotNone(self.mismatch("secure", ["mx.hosting.example"]))
        self.assertIsNone(self.mismatch("secure", ["example.com"]))
        self.assertIsNone(self.mismatch("secure", ["mx1.example.com"]))
        self.assertIsNotNone(self.mismatch("secure", ["example.com.evil.example"]))

    def test_wildcard(self):
        self.assertIsNone(self.mismatch("verify", ["*.hosting.example"]))
        self.assertIsNotNone(self.mismatch("verify", ["*.example"]))

    def test_explicitMatch(self):
        self.assertIsNone(self.mismatch("secure", ["relay.partner.example"],
                                        smtp_tls_secure_cert_match="relay.partner.example"))


class PolicyTests(SynchronousTestCase):
    """
    The settings and policy table entries, read as Postfix reads them.
    """

    def policies(self, **settings):
        return TLSPolicies(MainConfig(settings))

    def test_defaultIsNone(self):
        self.assertEqual(self.policies().forNexthop("example.com").level, "none")

    def test_olderSwitches(self):
        self.assertEqual(self.policies(smtp_use_tls="yes").default.level, "may")
        self.assertEqual(self.policies(smtp_enforce_tls="yes", smtp_tls_enforce_peername="no")
                         .default.level, "encrypt")

    def test_unsupportedLevelsRefused(self):
        for level in ("fingerprint", "bogus"):
            self.assertRaises(TLSPolicyError, self.policies, smtp_tls_security_level=level)

    def test_daneNeedsDnssec(self):
        """
        DANE without validated DNS: C{dane} is C{may}, with a warning,
        as in Postfix; C{dane-only} stops start-up.
        """
        policies = self.policies(smtp_tls_security_level="dane")
        self.assertEqual(policies.default.level, "may")
        self.assertIn("'may' instead", policies.warnings[0])
        self.assertRaises(TLSPolicyError, self.policies, smtp_tls_security_level="dane-only")
        policies = self.policies(smtp_tls_security_level="dane-only",
                                 smtp_dns_support_level="dnssec")
        self.assertEqual((policies.default.level, policies.warnings), ("dane-only", []))
        self.assertFalse(policies.default.required)
        server = policies.atLevel(policies.default, "dane", ["a TLSA record"])
        self.assertTrue(server.required and server.verifies)
        self.assertEqual(server.servername, "hostname")
        self.assertEqual(policies.atLevel(policies.default, "may", []).level, "may")

    def test_verifyNeedsCAs(self):
        self.assertRaises(TLSPolicyError, self.policies, smtp_tls_security_level="verify")

    def test_policyMapLookupOrder(self):
        policies = self.policies(smtp_tls_policy_maps=(
            "inline:{ example.com=encrypt, .example.com=may, "
            "{ [relay.example]:587 = encrypt protocols=>=TLSv1.2 } }"))
        self.assertEqual(policies.forNexthop("example.com").level, "encrypt")
        self.assertEqual(policies.forNexthop("sub.example.com").level, "may")
        self.assertEqual(policies.forNexthop("other.example").level, "none")
        relay = policies.forNexthop("[relay.example]:587")
        self.assertEqual((relay.level, relay.protocols), ("encrypt", ">=TLSv1.2"))

    def test_unknownAttributeDefersRatherThanIgnored(self):
        policies = self.policies(
            smtp_tls_policy_maps="inline:{ { example.com = encrypt foo=bar } }")
        self.assertRaises(TLSPolicyError, policies.forNexthop, "example.com")

    def test_protocols(self):
        from OpenSSL import SSL

        self.assertEqual(allowedVersions(">=TLSv1.2"), (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION))
        self.assertEqual(allowedVersions("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1"),
                         (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION))
        self.assertEqual(allowedVersions("TLSv1.2"), (SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION))
        self.assertRaises(TLSPolicyError, allowedVersions, ">=TLSv9")

    def test_startupRefusesWhatItCannotHonour(self):
        from tmta.smtp.problems import clientProblems

        for settings in ({"smtp_tls_security_level": "dane-only"},
                         {"smtp_tls_wrappermode": "yes"},
                         {"smtp_tls_security_level": "verify"},
                         {"smtp_tls_policy_maps": "nosuchtype:/etc/x"}):
            self.assertTrue(clientProblems(MainConfig(settings), "smtp"), settings)
        self.assertEqual(clientProblems(MainConfig({"smtp_tls_security_level": "may"}),
                                        "smtp"), [])
