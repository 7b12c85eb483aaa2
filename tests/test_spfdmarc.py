"""
Tests for SPF (C{check_spf}, L{tmta.mail.spf}) and DMARC
(L{tmta.authentication.dmarc}): records served by a twisted.names server
on loopback; each DMARC policy with a spoofed and an aligned sender.
"""

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import freePort, loopbackResolver
from tmta.authentication.domainkeys import generateKey, loadPrivateKey, publicRecord
from tmta.config import MainConfig
from tmta.smtpd.restrictions import RecipientContext, RestrictionEnvironment, RestrictionList

SPF_ZONE = """
zone = [
    SOA('example.test', mname='ns.example.test', rname='root.example.test', serial=1,
        refresh=60, retry=60, expire=60, minimum=60),
    TXT('good.example.test', b'v=spf1 ip4:192.0.2.0/24 include:other.example.test -all'),
    TXT('other.example.test', b'v=spf1 mx -all'),
    MX('other.example.test', 10, 'mail.other.example.test'),
    A('mail.other.example.test', '198.51.100.7'),
    TXT('soft.example.test', b'v=spf1 ip4:192.0.2.1 ~all'),
    TXT('helo.example.test', b'v=spf1 ip4:203.0.113.9 -all'),
    TXT('broken.example.test', b'v=spf1 ip4:192.0.2.1 frobnicate -all'),
    TXT('good.example.test', b'unrelated text'),
]
"""


class CheckSPFTests(TestCase):
    """
    C{check_spf} in a restriction list, against records on loopback.
    """

    def setUp(self):
        self.resolver = loopbackResolver(self, SPF_ZONE)

    def evaluate(self, resolver=None, **values):
        env = RestrictionEnvironment.fromConfig(MainConfig({"myhostname": "mx.example.org"}),
                                                [], resolver=resolver or self.resolver)
        context = RecipientContext(**{"clientAddress": "192.0.2.10", "helo": "client.example",
                                      "sender": "alice@good.example.test",
                                      "recipient": "bob@example.org", **values})
        d = defer.maybeDeferred(RestrictionList("smtpd_recipient_restrictions", "check_spf",
                                                env).evaluate, context)
        return d.addCallback(lambda verdict: (verdict, context.actions))

    @defer.inlineCallbacks
    def test_pass(self):
        (action, reply), actions = yield self.evaluate()
        self.assertEqual((action, reply), ("dunno", None))
        [header] = actions.prepend
        self.assertEqual(header, (
            "Received-SPF: Pass (mx.example.org: domain of good.example.test designates "
            "192.0.2.10 as permitted sender) client-ip=192.0.2.10; "
            'envelope-from="alice@good.example.test"; helo=client.example; '
            'receiver=mx.example.org; mechanism="ip4:192.0.2.0/24"; identity=mailfrom'))
        self.assertEqual(actions.attributes()["spf_result"], "pass")

    @defer.inlineCallbacks
    def test_includeAndMx(self):
        (action, _), actions = yield self.evaluate(clientAddress="198.51.100.7")
        self.assertEqual(action, "dunno")
        self.assertEqual(actions.attributes()["spf_result"], "pass")

    @defer.inlineCallbacks
    def test_failRefused(self):
        (action, reply), actions = yield self.evaluate(clientAddress="203.0.113.50")
        self.assertEqual(action, "reject")
        self.assertEqual(reply, "550 5.7.23 Message rejected due to: SPF fail - not authorized")

    @defer.inlineCallbacks
    def test_softfailAccepted(self):
        (action, _), actions = yield self.evaluate(sender="alice@soft.example.test")
        self.assertEqual(action, "dunno")
        self.assertTrue(actions.prepend[0].startswith("Received-SPF: SoftFail (mx.example.org: "
                                                      "transitioning domain of soft.example.test"))

    @defer.inlineCallbacks
    def test_noRecord(self):
        (action, _), actions = yield self.evaluate(sender="alice@nothing.example.test")
        self.assertEqual(action, "dunno")
        self.assertEqual(actions.attributes()["spf_result"], "none")

    @defer.inlineCallbacks
    def test_heloFailRefused(self):
        """
        A HELO name whose record does not list the client is refused
        whatever the sender, as policyd-spf does by default.
        """
        (action, reply), _ = yield self.evaluate(helo="helo.example.test")
        self.assertEqual(action, "reject")
        self.assertIn("5.7.23", reply)

    @defer.inlineCallbacks
    def test_nullSenderByHelo(self):
        (action, _), actions = yield self.evaluate(sender="", helo="helo.example.test",
                                                   clientAddress="203.0.113.9")
        self.assertEqual(action, "dunno")
        attributes = actions.attributes()
        self.assertEqual((attributes["spf_result"], attributes["spf_scope"]), ("pass", "helo"))

    @defer.inlineCallbacks
    def test_permerrorAccepted(self):
        (action, _), actions = yield self.evaluate(sender="a@broken.example.test")
        self.assertEqual(action, "dunno")
        self.assertEqual(actions.attributes()["spf_result"], "permerror")

    @defer.inlineCallbacks
    def test_dnsFailureIsTemperror(self):
        from twisted.internet import reactor
        from twisted.names import client

        dead = client.Resolver(servers=[("127.0.0.1", freePort())], reactor=reactor)
        dead.timeout = (0.3,)
        (action, _), actions = yield self.evaluate(resolver=dead)
        self.assertEqual(action, "dunno")
        self.assertEqual(actions.attributes()["spf_result"], "temperror")

    @defer.inlineCallbacks
    def test_oncePerTransaction(self):
        env = RestrictionEnvironment.fromConfig(MainConfig({}), [], resolver=self.resolver)
        restrictions = RestrictionList("smtpd_recipient_restrictions", "check_spf", env)
        context = RecipientContext(clientAddress="192.0.2.10", helo="client.example",
                                   sender="alice@good.example.test", recipient="a@example.org")
        yield defer.maybeDeferred(restrictions.evaluate, context)
        context.recipient = "b@example.org"
        yield defer.maybeDeferred(restrictions.evaluate, context)
        self.assertEqual(len(context.actions.prepend), 1)


def dmarcZone(key):
    records = [
        ("_dmarc.reject.test", "v=DMARC1; p=reject"),
        ("_dmarc.quarantine.test", "v=DMARC1; p=quarantine"),
        ("_dmarc.none.test", "v=DMARC1; p=none; rua=mailto:dmarc@none.test"),
        ("_dmarc.sampled.test", "v=DMARC1; p=reject; pct=0"),
        ("_dmarc.strict.test", "v=DMARC1; p=reject; aspf=s; adkim=s"),
        ("_dmarc.parent.test", "v=DMARC1; p=none; sp=reject"),
        ("s1._domainkey.reject.test", publicRecord(key)),
    ]
    text = "".join(f"    TXT({name!r}, *{[value[i:i + 250].encode() for i in range(0, len(value), 250)]!r}),\n"  # noqa: E501
                   for name, value in records)
    return ("zone = [\n    SOA('test', mname='ns.test', rname='root.test', serial=1,\n"
            "        refresh=60, retry=60, expire=60, minimum=60),\n" + text + "]\n")


class DMARCTests(TestCase):
    """
    DMARC in cleanup: for each policy, mail from a spoofed sender and
    from an aligned one.
    """

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        keyPath = os.path.join(self.base, "s1.private")
        with open(keyPath, "wb") as f:
            f.write(generateKey())
        self.key = loadPrivateKey(open(keyPath, "rb").read(), "reject.test", "s1")
        self.resolver = loopbackResolver(self, dmarcZone(self.key))
        self.settings = {"myhostname": "mx.example.org", "mynetworks": "127.0.0.0/8",
                         "dkim_verification": "yes", "dmarc_verification": "yes",
                         "dkim_signing_table": "static:s1key",
                         "dkim_key_table": f"static:reject.test:s1:{keyPath}"}

    def cleanup(self, **settings):
        from twisted.internet import reactor

        from tests.test_cleanup import LocalRewriter
        from tmta.cleanup.state import Cleanup
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore

        directory = self.mktemp()
        createLayout(directory)
        self.store = QueueStore(directory)
        config = MainConfig(dict(self.settings, **settings))
        return Cleanup(reactor, config, self.store, LocalRewriter(config),
                       lambda queueId: defer.succeed(None), resolver=lambda: self.resolver)

    async def _submit(self, cleanup, fromAddress, spf=None, attributes=None, body=b"x\n"):
        from tmta.cleanup.protocol import CleanupProtocol
        from tmta.queue.qfile import iterContent, readEnvelope

        attrs = attributes or {"client_address": "192.0.2.1", "protocol": "ESMTP"}
        if spf:
            result, identity = spf
            attrs = dict(attrs, spf_result=result, spf_scope="mailfrom", spf_identity=identity)
        p = CleanupProtocol(cleanup)
        p.begin(1, "sender@example.net", [{"name": k, "value": v} for k, v in attrs.items()])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": "bob@example.org", "original": "bob@example.org"}])
        p.content(1, b"From: " + fromAddress.encode() + b"\nSubject: s\n\n" + body)
        result = await p.end(1)
        if result["code"] != 250:
            return result, None, None
        for queue in ("incoming", "hold"):
            if os.path.exists(self.store.path(queue, queueId)):
                with self.store.open(queue, queueId) as f:
                    env = readEnvelope(f)
                    return result, queue, b"".join(iterContent(f, env)).decode()
        raise AssertionError("queued nowhere")

    def submit(self, cleanup, fromAddress, **kwargs):
        return defer.Deferred.fromCoroutine(self._submit(cleanup, fromAddress, **kwargs))

    @defer.inlineCallbacks
    def test_rejectPolicy(self):
        cleanup = self.cleanup()
        result, _, _ = yield self.submit(cleanup, "ceo@reject.test",
                                         spf=("pass", "sender@example.net"))
        self.assertEqual((result["code"], result["reason"]),
                         (550, "5.7.1 rejected by DMARC policy for reject.test"))
        # Aligned by SPF: the envelope sender's domain is the From: domain.
        result, queue, text = yield self.submit(cleanup, "ceo@reject.test",
                                                spf=("pass", "bounces@mail.reject.test"))
        self.assertEqual((result["code"], queue), (250, "incoming"))
        self.assertIn("dmarc=pass (p=reject dis=none) header.from=reject.test", text)
        self.assertIn("spf=pass smtp.mailfrom=bounces@mail.reject.test", text)

    @defer.inlineCallbacks
    def test_alignedByDKIM(self):
        """
        Mail this host signed for reject.test passes DMARC by its
        signature, with no SPF result at all.
        """
        cleanup = self.cleanup()
        _, _, signed = yield self.submit(cleanup, "ceo@reject.test",
                                         attributes={"origin": "pickup", "protocol": "local"})
        self.assertIn("d=reject.test", signed)
        result, queue, text = yield self.submit(cleanup, "ceo@reject.test",
                                                body=signed.split("\n\n", 1)[1].encode())
        self.assertEqual(result["code"], 550)  # the body alone carries no signature
        from tmta.cleanup.protocol import CleanupProtocol  # noqa: F401

        result, queue, text = yield defer.Deferred.fromCoroutine(self._submitWhole(
            cleanup, signed.encode()))
        self.assertEqual((result["code"], queue), (250, "incoming"))
        self.assertIn("dkim=pass", text)
        self.assertIn("dmarc=pass (p=reject dis=none) header.from=reject.test", text)

    async def _submitWhole(self, cleanup, message, spf=None):
        from tmta.cleanup.protocol import CleanupProtocol
        from tmta.queue.qfile import iterContent, readEnvelope

        attributes = {"client_address": "192.0.2.1"}
        if spf:
            attributes.update(spf_result=spf[0], spf_scope="mailfrom", spf_identity=spf[1])
        p = CleanupProtocol(cleanup)
        p.begin(1, "sender@example.net", [{"name": k, "value": v} for k, v in attributes.items()])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": "bob@example.org", "original": "bob@example.org"}])
        p.content(1, message)
        result = await p.end(1)
        if result["code"] != 250:
            return result, None, None
        with self.store.open("incoming", queueId) as f:
            env = readEnvelope(f)
            return result, "incoming", b"".join(iterContent(f, env)).decode()

    @defer.inlineCallbacks
    def test_quarantinePolicy(self):
        cleanup = self.cleanup()
        result, queue, text = yield self.submit(cleanup, "ceo@quarantine.test")
        self.assertEqual((result["code"], queue), (250, "hold"))
        self.assertIn("dmarc=fail (p=quarantine dis=quarantine) header.from=quarantine.test",
                      text)
        result, queue, _ = yield self.submit(cleanup, "ceo@quarantine.test",
                                             spf=("pass", "x@quarantine.test"))
        self.assertEqual(queue, "incoming")

    @defer.inlineCallbacks
    def test_nonePolicyTags(self):
        cleanup = self.cleanup()
        result, queue, text = yield self.submit(cleanup, "ceo@none.test")
        self.assertEqual((result["code"], queue), (250, "incoming"))
        self.assertIn("dmarc=fail (p=none dis=none) header.from=none.test", text)
        _, _, text = yield self.submit(cleanup, "ceo@none.test", spf=("pass", "a@none.test"))
        self.assertIn("dmarc=pass (p=none dis=none)", text)

    @defer.inlineCallbacks
    def test_percentSampling(self):
        cleanup = self.cleanup()
        result, queue, text = yield self.submit(cleanup, "ceo@sampled.test")
        self.assertEqual((result["code"], queue), (250, "incoming"))
        self.assertIn("dmarc=fail (p=reject dis=none) header.from=sampled.test", text)

    @defer.inlineCallbacks
    def test_strictAlignment(self):
        cleanup = self.cleanup()
        result, _, _ = yield self.submit(cleanup, "ceo@strict.test",
                                         spf=("pass", "bounces@mail.strict.test"))
        self.assertEqual(result["code"], 550)
        result, _, _ = yield self.submit(cleanup, "ceo@strict.test",
                                         spf=("pass", "bounces@strict.test"))
        self.assertEqual(result["code"], 250)

    @defer.inlineCallbacks
    def test_subdomainPolicy(self):
        """
        A subdomain with no record of its own gets its organizational
        domain's C{sp=}.
        """
        cleanup = self.cleanup()
        result, _, _ = yield self.submit(cleanup, "ceo@news.parent.test")
        self.assertEqual((result["code"], result["reason"]),
                         (550, "5.7.1 rejected by DMARC policy for news.parent.test"))
        _, _, text = yield self.submit(cleanup, "ceo@parent.test")
        self.assertIn("dmarc=fail (p=none dis=none)", text)

    @defer.inlineCallbacks
    def test_operatorChoices(self):
        """
        The operator may have p=reject held, or only tagged.
        """
        held = self.cleanup(dmarc_reject_action="hold")
        result, queue, _ = yield self.submit(held, "ceo@reject.test")
        self.assertEqual((result["code"], queue), (250, "hold"))
        tagged = self.cleanup(dmarc_reject_action="tag", dmarc_quarantine_action="tag")
        for domain in ("reject.test", "quarantine.test"):
            result, queue, text = yield self.submit(tagged, f"ceo@{domain}")
            self.assertEqual((result["code"], queue), (250, "incoming"))
            self.assertIn("dmarc=fail", text)

    @defer.inlineCallbacks
    def test_noPolicy(self):
        _, queue, text = yield self.submit(self.cleanup(), "someone@nopolicy.test")
        self.assertEqual(queue, "incoming")
        self.assertIn("dmarc=none header.from=nopolicy.test", text)

    @defer.inlineCallbacks
    def test_spfAloneReported(self):
        """
        With no check of its own on, cleanup still writes smtpd's SPF
        result into Authentication-Results.
        """
        cleanup = self.cleanup(dkim_verification="no", dmarc_verification="no",
                               dkim_signing_table="")
        _, _, text = yield self.submit(cleanup, "a@example.net", spf=("softfail", "a@x.test"),
                                       body=b"x\n")
        self.assertTrue(text.startswith("Authentication-Results: mx.example.org;\n\t"
                                        "spf=softfail smtp.mailfrom=a@x.test\n"), text[:200])
        # One written in this host's name by someone else is removed.
        _, _, text = yield defer.Deferred.fromCoroutine(self._submitWhole(
            cleanup, b"Authentication-Results: mx.example.org; spf=pass\nFrom: a@example.net\n"
                     b"\nx\n", spf=("fail", "a@x.test")))
        self.assertEqual(text.count("Authentication-Results:"), 1)
        self.assertIn("spf=fail", text)

    def test_badActionRefused(self):
        from tmta.authentication.pipeline import authenticationProblems

        config = MainConfig(dict(self.settings, dmarc_reject_action="bounce"))
        [problem] = authenticationProblems(config)
        self.assertIn("dmarc_reject_action must be one of reject, hold, tag", problem)


class OrganizationalDomainTests(SynchronousTestCase):
    def test_publicSuffixes(self):
        from tmta.authentication.dmarc import aligned, organizationalDomain

        self.assertEqual(organizationalDomain("a.b.example.co.uk"), "example.co.uk")
        self.assertEqual(organizationalDomain("mail.example.com"), "example.com")
        self.assertTrue(aligned("mail.example.com", "example.com", strict=False))
        self.assertFalse(aligned("mail.example.com", "example.com", strict=True))
        self.assertFalse(aligned("example.co.uk", "other.co.uk", strict=False))


class PolicydSPFDifferentialTests(SynchronousTestCase):
    """
    C{check_spf} against policyd-spf (Debian's
    postfix-policyd-spf-python) on the same cases and records, in a
    private namespace (L{tests.spfdriver}): the same decisions and the
    same results.
    """

    def test_sameAsPolicydSPF(self):
        import shutil

        from tests.support.namespace import runNamespaceDriver

        if not shutil.which("policyd-spf"):
            raise self.skipTest("no policyd-spf (Debian's postfix-policyd-spf-python)")
        observed = runNamespaceDriver(self, "spfdriver.py")
        theirs, ours = observed["policyd-spf"], observed["tmta"]
        self.assertEqual(len(ours), 11)
        for case, (their, our) in enumerate(zip(theirs, ours)):
            self.assertEqual(their[0], our[0], f"case {case}: {their} {our}")
            if their[0] == "refused":
                prefix = "550 5.7.23 Message rejected due to: SPF fail - not authorized"
                self.assertTrue(their[1].startswith(prefix) and our[1] == prefix,
                                f"case {case}: {their} {our}")
            else:
                self.assertEqual(their[1], our[1], f"case {case}")
        self.assertEqual([result if decision == "accepted" else decision
                          for decision, result in ours],
                         ["pass", "refused", "softfail", "none", "neutral", "permerror", "pass",
                          "pass", "refused", "pass", "refused"])


class AggregateReportTests(TestCase):
    """
    DMARC aggregate reports: cleanup records each evaluation for a
    domain that asks for reports, and C{tmta dmarc report} queues one
    gzipped XML report per domain to its C{rua} address.
    """

    def setUp(self):
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.history = os.path.join(self.base, "history")
        self.resolver = loopbackResolver(self, dmarcZone(
            loadPrivateKey(generateKey(), "reject.test", "s1")))

    @defer.inlineCallbacks
    def test_reportQueued(self):
        import argparse
        import gzip
        import io
        from email import message_from_bytes

        from tmta.cli.admin import dmarc as command
        from tmta.queue.layout import createLayout
        from tmta.queue.qfile import iterContent, openQueueFile, readEnvelope

        harness = DMARCTests("test_noPolicy")
        harness.mktemp = self.mktemp
        harness.resolver = self.resolver
        harness.settings = {"myhostname": "mx.example.org", "dmarc_verification": "yes",
                            "dmarc_history_file": self.history}
        cleanup = harness.cleanup()
        for spf in (None, ("pass", "a@none.test"), ("pass", "a@none.test")):
            yield harness.submit(cleanup, "ceo@none.test", spf=spf)
        yield harness.submit(cleanup, "ceo@quarantine.test")  # asks for no reports
        with open(self.history) as f:
            self.assertEqual(len(f.readlines()), 3)
        # The report command, on a configuration of its own.
        conf = os.path.join(self.base, "conf")
        queue = os.path.join(self.base, "queue")
        os.makedirs(conf)
        createLayout(queue)
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write(f"queue_directory = {queue}\ndmarc_history_file = {self.history}\n"
                    "mydomain = example.org\n")
        parser = argparse.ArgumentParser()
        command.addParser(parser.add_subparsers())
        options = parser.parse_args(["dmarc", "report", "-c", conf])
        out = io.StringIO()
        self.assertEqual(options.run(options, parser, out), 0)
        self.assertIn("none.test: report none.test.", out.getvalue())
        self.assertFalse(os.path.exists(self.history))
        [name] = [n for n in os.listdir(os.path.join(queue, "maildrop"))]
        with openQueueFile(os.path.join(queue, "maildrop", name)) as f:
            envelope = readEnvelope(f)
            content = b"".join(iterContent(f, envelope))
        self.assertEqual([r.address for r in envelope.recipients], ["dmarc@none.test"])
        self.assertEqual(envelope.sender, "dmarc-reports@example.org")
        message = message_from_bytes(content)
        self.assertTrue(" ".join(str(message["Subject"]).split()).startswith(
            "Report Domain: none.test Submitter: example.org Report-ID: <none.test."))
        [attachment] = [p for p in message.walk() if p.get_filename()]
        self.assertRegex(attachment.get_filename(), r"^example\.org!none\.test!\d+!\d+\.xml\.gz$")
        xml = gzip.decompress(attachment.get_payload(decode=True)).decode()
        self.assertIn("<policy_published><domain>none.test</domain>", xml)
        self.assertIn("<row><source_ip>192.0.2.1</source_ip><count>2</count><policy_evaluated>"
                      "<disposition>none</disposition><dkim>fail</dkim><spf>pass</spf>", xml)
        self.assertIn("<count>1</count><policy_evaluated><disposition>none</disposition>"
                      "<dkim>fail</dkim><spf>fail</spf>", xml)


class ReportAddressTests(SynchronousTestCase):
    def test_otherOrganizationNeedsAuthorization(self):
        from tmta.authentication.dmarcreports import ruaAddresses

        asked = []

        def authorized(domain, target):
            asked.append((domain, target))
            return target == "reports.example.net"

        allowed, refused = ruaAddresses(
            "mailto:d@example.com, mailto:x@reports.example.net!10m, mailto:y@other.example, "
            "https://ignored.example/", "mail.example.com", authorized)
        self.assertEqual((allowed, refused), (["d@example.com", "x@reports.example.net"],
                                              ["y@other.example"]))
        self.assertEqual(asked, [("mail.example.com", "reports.example.net"),
                                 ("mail.example.com", "other.example")])


class TrustedForwarderTests(TestCase):
    """
    A DMARC failure a trusted forwarder's intact ARC chain explains
    (C{dmarc_trusted_arc_sealers}) is let through, as RFC 7489's
    trusted_forwarder override.
    """

    def setUp(self):
        import dkim

        self.listPem = generateKey()
        listKey = loadPrivateKey(self.listPem, "lists.example.net", "arc")
        zone = dmarcZone(listKey).replace(
            "    TXT('s1._domainkey.reject.test'", "    TXT('arc._domainkey.lists.example.net'")
        self.resolver = loopbackResolver(self, zone)
        message = (b"Authentication-Results: lists.example.net; dmarc=pass\r\n"
                   b"From: ceo@reject.test\r\nSubject: via the list\r\n"
                   b"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m@reject.test>\r\n"
                   b"\r\nText.\r\n")
        seal = dkim.arc_sign(message, b"arc", b"lists.example.net", self.listPem,
                             b"lists.example.net")
        self.sealed = (b"".join(seal) + message).replace(b"\r\n", b"\n")

    @defer.inlineCallbacks
    def submit(self, trusted):
        harness = DMARCTests("test_noPolicy")
        harness.mktemp = self.mktemp
        harness.resolver = self.resolver
        harness.settings = {"myhostname": "mx.example.org", "dmarc_verification": "yes",
                            "arc_verification": "yes", "dmarc_trusted_arc_sealers": trusted}
        cleanup = harness.cleanup()
        result = yield defer.Deferred.fromCoroutine(harness._submitWhole(cleanup, self.sealed))
        return result

    @defer.inlineCallbacks
    def test_trustedSealerOverrides(self):
        (result, _, text) = yield self.submit("lists.example.net")
        self.assertEqual(result["code"], 250)
        self.assertIn("arc=pass (i=1)", text)
        self.assertIn("dmarc=fail (p=reject dis=none override=trusted_forwarder) "
                      "header.from=reject.test", text)

    @defer.inlineCallbacks
    def test_otherSealerDoesNot(self):
        (result, _, _) = yield self.submit("other.example")
        self.assertEqual((result["code"], result["reason"]),
                         (550, "5.7.1 rejected by DMARC policy for reject.test"))
