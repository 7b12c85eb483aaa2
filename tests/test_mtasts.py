"""
Tests for MTA-STS (L{tmta.smtp.mtasts}): policies parsed and matched as
RFC 8461 says, and a sending master applying them to real MX hosts,
the policies served over HTTPS under a test CA, in a private namespace
(L{tests.mtastsdriver}).
"""

from twisted.trial.unittest import SynchronousTestCase

from tmta.smtp.mtasts import PolicyError, _recordId, parsePolicy


class PolicyTests(SynchronousTestCase):
    def test_parse(self):
        policy = parsePolicy("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\n"
                             "mx: *.example.net\r\nmax_age: 604800\r\n", "abc", 10.0)
        self.assertEqual((policy.mode, policy.mx, policy.maxAge, policy.id),
                         ("enforce", ("mx1.example.com", "*.example.net"), 604800, "abc"))
        self.assertTrue(policy.matches("MX1.example.com."))
        self.assertTrue(policy.matches("a.example.net"))
        self.assertFalse(policy.matches("a.b.example.net"))
        self.assertFalse(policy.matches("example.net"))
        self.assertFalse(policy.expired(10.0 + 604799))
        self.assertTrue(policy.expired(10.0 + 604800))

    def test_refused(self):
        for text in ("mode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: sometimes\n"
                     "mx: a\nmax_age: 1", "version: STSv1\nmode: enforce\nmax_age: 1",
                     "version: STSv1\nmode: enforce\nmx: a"):
            self.assertRaises(PolicyError, parsePolicy, text)
        self.assertEqual(parsePolicy("version: STSv1\nmode: none\nmax_age: 1").mx, ())

    def test_maxAgeCapped(self):
        self.assertEqual(parsePolicy("version: STSv1\nmode: none\nmax_age: 99999999999").maxAge,
                         31557600)

    def test_recordId(self):
        self.assertEqual(_recordId([b"v=STSv1; id=20261208"]), "20261208")
        self.assertIsNone(_recordId([b"v=STSv1; id=1", b"v=STSv1; id=2"]))
        self.assertIsNone(_recordId([b"v=spf1 -all"]))
        self.assertIsNone(_recordId([b"v=STSv1; id=not-valid!"]))


class EnforcementTests(SynchronousTestCase):
    def test_policiesApplied(self):
        from tests.support.namespace import runNamespaceDriver

        observed = runNamespaceDriver(self, "mtastsdriver.py")
        outcomes = observed["outcomes"]
        self.assertTrue(outcomes["enforce.test"].startswith("sent"))
        self.assertTrue(outcomes["plain.test"].startswith("sent"))
        # enforce, and the MX host's certificate names another host.
        self.assertEqual(outcomes["wrong.test"],
                         "deferred (Server certificate not verified: the certificate names "
                         "mx.elsewhere.test, none of mx.wrong.test (host "
                         "mx.wrong.test[127.0.0.22]:25))")
        # testing: the same server takes it, and the failure is logged.
        self.assertTrue(outcomes["testing.test"].startswith("sent"))
        self.assertIn("warning: MTA-STS policy of testing.test (testing): "
                      "mx.wrong.test[127.0.0.22]:25: would fail under enforce: Trusted TLS",
                      observed["log"])
        # enforce, and the policy names no MX host the DNS gives.
        self.assertEqual(outcomes["unlisted.test"],
                         "deferred (MTA-STS policy of unlisted.test: none of its MX hosts is one "
                         "the policy names)")
        self.assertIn("Verified TLS connection established to mx.good.test[127.0.0.21]:25",
                      observed["log"])
        # Kept for the other smtp processes, under data_directory.
        self.assertEqual(observed["kept"],
                         ["enforce.test", "testing.test", "unlisted.test", "wrong.test"])
