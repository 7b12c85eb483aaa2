"""
Tests for MTA-STS (L{tmta.smtp.mtasts}): policies parsed and matched as
RFC 8461 says, and a sending master applying them to real MX hosts,
the policies served over HTTPS under a test CA, in a private namespace
(L{tests.mtastsdriver}).
"""

import json

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

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
        # The same, when the message says TLS-Required: No: delivered.
        self.assertTrue(observed["tls-required-no"].startswith("sent"),
                        observed["tls-required-no"])
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
        # The TLS reports tmta tlsrpt report would send (RFC 8460), to
        # the address each domain's _smtp._tls record names.
        reports = {}
        for block in observed["tlsrpt"].split("\n}\n"):
            header, _, body = block.partition("\n")
            if body:
                reports[header.split(":")[0]] = (header, json.loads(body + "\n}"))
        self.assertEqual(sorted(reports), ["enforce.test", "testing.test", "wrong.test"])
        self.assertTrue(reports["wrong.test"][0].endswith(" to tlsrpt@wrong.test"))
        [policy] = reports["enforce.test"][1]["policies"]
        self.assertEqual(policy["summary"], {"total-successful-session-count": 1,
                                             "total-failure-session-count": 0})
        self.assertEqual(policy["policy"]["policy-string"],
                         ["version: STSv1", "mode: enforce", "mx: mx.good.test",
                          "max_age: 86400"])
        for domain in ("wrong.test", "testing.test"):
            [policy] = reports[domain][1]["policies"]
            self.assertEqual(policy["failure-details"], [
                {"result-type": "certificate-host-mismatch",
                 "receiving-mx-hostname": "mx.wrong.test", "receiving-ip": "127.0.0.22",
                 "failed-session-count": 1}])


class ReportMessageTests(SynchronousTestCase):
    def test_message(self):
        import gzip
        from email import message_from_bytes

        from tmta.authentication.tlsreports import reportJSON, reportMessage, ruaOf

        self.assertEqual(ruaOf([b"v=TLSRPTv1; rua=mailto:a@x.example,https://r.example/x"]),
                         ["a@x.example"])
        self.assertEqual(ruaOf([b"v=TLSRPTv1; rua=mailto:a@x", b"v=TLSRPTv1; rua=mailto:b@x"]),
                         [])
        report = reportJSON([{"policy_domain": "x.example", "policy_type": "sts",
                              "policy_string": ["mode: enforce"], "mx_host": "mx.x.example",
                              "receiving_ip": "192.0.2.1", "result": "success",
                              "time": 0}], "sender.example", "r@sender.example", "id1", 0, 86400)
        message = message_from_bytes(reportMessage("x.example", report, "sender.example",
                                                   "r@sender.example", ["a@x.example"], "id1",
                                                   0, 86400))
        self.assertEqual(message["TLS-Report-Domain"], "x.example")
        [attachment] = [p for p in message.walk() if p.get_filename()]
        self.assertEqual(attachment.get_content_type(), "application/tlsrpt+gzip")
        self.assertEqual(attachment.get_filename(), "sender.example!x.example!0!86400.json.gz")
        body = json.loads(gzip.decompress(attachment.get_payload(decode=True)))
        self.assertEqual(body["date-range"], {"start-datetime": "1970-01-01T00:00:00Z",
                                              "end-datetime": "1970-01-02T00:00:00Z"})


class RecheckTests(TestCase):
    """
    A domain's TXT record is asked once an hour, not for every message.
    """

    @defer.inlineCallbacks
    def test_askedOncePerHour(self):
        from twisted.internet import reactor

        from tests.support import loopbackResolver
        from tmta.smtp.mtasts import RECHECK, PolicyFinder

        resolver = loopbackResolver(self, "zone = [\n    SOA('example.test', mname='ns', "
                                          "rname='root', serial=1, refresh=1, retry=1, "
                                          "expire=1, minimum=1),\n]\n")
        asked = []
        lookupText = resolver.lookupText

        def counting(name, *args, **kwargs):
            asked.append(name)
            return lookupText(name, *args, **kwargs)

        resolver.lookupText = counting
        now = [1000.0]
        finder = PolicyFinder(reactor, resolver, self.mktemp(), clock=lambda: now[0])
        for _ in range(3):
            self.assertIsNone((yield finder.find("example.test")))
        self.assertEqual(asked, ["_mta-sts.example.test"])
        now[0] += RECHECK
        yield finder.find("example.test")
        self.assertEqual(len(asked), 2)
