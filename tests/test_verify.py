"""
Tests for address verification (L{tmta.verify}, C{reject_unverified_sender}
and C{reject_unverified_recipient}): the cache's rules with a fake clock,
the restrictions against a verify client the test answers for, the
probe's path through the queue manager and the agents, and the whole
of it in a real master probing a private Postfix.
"""

import os
import smtplib

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import (
    Master,
    PrivatePostfix,
    freePort,
    localMaildirs,
    shortTemporaryDirectory,
    waitFor,
)
from tmta.config import MainConfig
from tmta.smtpd.restrictions import (
    DEFER,
    DEFER_IF_PERMIT,
    DUNNO,
    PERMIT,
    REJECT,
    RecipientContext,
    RestrictionEnvironment,
    RestrictionList,
)
from tmta.tables.writable import MemoryStore, SQLiteStore
from tmta.verify.cache import (
    IN_PROGRESS,
    PROBE_TTL,
    AddressCache,
    CacheTimes,
    VerifyRecord,
    openStore,
)
from tmta.verify.commands import BOUNCE, OK, PROBING
from tmta.verify.commands import DEFER as V_DEFER
from tmta.verify.service import Verifier, probeSender

DAY = 86400


def _times(**changes) -> CacheTimes:
    times = CacheTimes.fromConfig(MainConfig({}))
    for name, value in changes.items():
        setattr(times, name, value)
    return times


class CacheTests(SynchronousTestCase):
    """
    When an address is probed, and what is remembered of it.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000_000)
        self.cache = AddressCache(MemoryStore(), _times(), self.clock)

    def test_unknownProbedOnce(self):
        """
        An unknown address is in progress and probed; asked again while
        the probe is under way it is not probed again, until the probe
        is taken for lost.
        """
        self.assertEqual(self.cache.query("a@x.example"), (PROBING, IN_PROGRESS, True))
        self.clock.advance(10)
        self.assertEqual(self.cache.query("A@X.example"), (PROBING, IN_PROGRESS, False))
        self.clock.advance(PROBE_TTL)
        self.assertEqual(self.cache.query("a@x.example")[2], True)

    def test_resultsAndRefresh(self):
        """
        A result is answered until it needs refreshing: then it is still
        answered, and a probe goes out.
        """
        self.cache.query("a@x.example")
        self.cache.update("a@x.example", OK, "250 2.1.5 Ok")
        self.assertEqual(self.cache.query("a@x.example"), (OK, "250 2.1.5 Ok", False))
        self.clock.advance(7 * DAY + 1)
        self.assertEqual(self.cache.query("a@x.example"), (OK, "250 2.1.5 Ok", True))
        # Past its expiry with no probe under way: unknown again.
        self.clock.advance(31 * DAY)
        self.assertEqual(self.cache.query("a@x.example"), (PROBING, IN_PROGRESS, True))

    def test_failureDoesNotClobberDeliverable(self):
        """
        A failed probe of an address known deliverable is ignored: the
        address stays deliverable until it expires.
        """
        self.cache.update("a@x.example", OK, "ok")
        self.cache.update("a@x.example", BOUNCE, "550 no")
        self.assertEqual(self.cache.query("a@x.example")[:2], (OK, "ok"))
        self.cache.update("b@x.example", V_DEFER, "451 later")
        self.cache.update("b@x.example", BOUNCE, "550 no\x07")
        self.assertEqual(self.cache.query("b@x.example")[:2], (BOUNCE, "550 no?"))
        self.clock.advance(3 * 3600 + 1)
        self.assertTrue(self.cache.query("b@x.example")[2], "negative refresh")

    def test_noNegativeCache(self):
        """
        Without address_verify_negative_cache, failures are not kept: the
        address stays in progress, and each query probes.
        """
        cache = AddressCache(MemoryStore(), _times(negativeCache=False), self.clock)
        cache.query("a@x.example")
        cache.update("a@x.example", BOUNCE, "550 no")
        self.assertEqual(cache.query("a@x.example"), (PROBING, IN_PROGRESS, True))
        self.assertEqual(cache.query("a@x.example"), (PROBING, IN_PROGRESS, True))
        cache.update("a@x.example", OK, "ok")
        self.assertEqual(cache.query("a@x.example")[:2], (OK, "ok"))

    def test_malformedIsUnknown(self):
        self.cache.store.put("a@x.example", "9:0:0:nonsense")
        self.assertEqual(self.cache.query("a@x.example"), (PROBING, IN_PROGRESS, True))
        self.assertIsNone(VerifyRecord.parse("0:x:1:t"))
        self.assertIsNone(VerifyRecord.parse("0:0:0:t"))
        self.assertEqual(VerifyRecord.parse("0:0:5:a:b").text, "a:b")

    def test_clean(self):
        self.cache.update("old@x.example", BOUNCE, "no")
        self.clock.advance(4 * DAY)
        self.cache.update("new@x.example", BOUNCE, "no")
        self.cache.store.put("bad@x.example", "garbage")
        self.assertEqual(self.cache.clean(), 2)
        self.assertEqual([k for k, _ in self.cache.store.items()], ["new@x.example"])

    def test_badUpdateRefused(self):
        self.assertRaises(ValueError, self.cache.update, "a@x.example", PROBING, "")


class StoreTests(TestCase):
    @defer.inlineCallbacks
    def test_persistsAcrossProcesses(self):
        """
        A btree: address_verify_map is a file that outlives the verify
        process: what one wrote, the next reads.
        """
        from twisted.internet import reactor

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        store = openStore(f"btree:{directory}/verify_cache", reactor)
        self.assertIsInstance(store, SQLiteStore)
        store.put("a@x.example", "0:0:5:ok")
        store.put("b@x.example", "2:0:5:no")
        store.delete("b@x.example")
        yield store.close()
        again = openStore(f"btree:{directory}/verify_cache", reactor)
        self.assertEqual(list(again.items()), [("a@x.example", "0:0:5:ok")])
        self.assertEqual(os.stat(f"{directory}/verify_cache.db").st_mode & 0o077, 0)
        yield again.close()

    def test_unwritableTypesRefused(self):
        self.assertIsInstance(openStore("", None), MemoryStore)
        for spec in ("sqlite:/etc/x.cf", "proxy:texthash:/x", "texthash:/x",
                     "btree:relative"):
            self.assertRaises(ValueError, openStore, spec, None)


class ProbeTests(SynchronousTestCase):
    def test_sender(self):
        self.assertEqual(probeSender(MainConfig({}), 0), "double-bounce")
        self.assertEqual(probeSender(MainConfig({"address_verify_sender": "<>"}), 0), "")
        config = MainConfig({"address_verify_sender": "probe@x.example",
                             "address_verify_sender_ttl": "1h"})
        first, later = probeSender(config, 3600 * 31), probeSender(config, 3600 * 62)
        self.assertEqual(first, "probe10@x.example")
        self.assertNotEqual(first, later)
        self.assertRaises(ValueError, probeSender,
                          MainConfig({"address_verify_sender": "@x.example"}), 0)

    def test_queryPostsOneProbe(self):
        """
        A query for an unknown address queues one probe: no text, one
        recipient, flagged as a probe; a refused probe is logged.
        """
        posted = []

        def post(sender, attributes, recipients, data):
            posted.append((sender, attributes, recipients, data))
            return defer.succeed({"code": 250, "reason": "", "queue_id": "Q1"})

        clock = Clock()
        clock.advance(1_000_000_000)
        verifier = Verifier(AddressCache(MemoryStore(), _times(), clock), post,
                            MainConfig({}), clock)
        self.assertEqual(verifier.query("a@x.example"), (PROBING, IN_PROGRESS))
        self.assertEqual(verifier.query("a@x.example"), (PROBING, IN_PROGRESS))
        self.assertEqual(posted, [("double-bounce", {"origin": "verify", "protocol": "local",
                                                     "verify": "yes"},
                                   [("a@x.example", "a@x.example")], b"")])
        verifier.update("a@x.example", OK, "delivers to mailbox")
        self.assertEqual(verifier.query("a@x.example"), (OK, "delivers to mailbox"))


class FakeVerify:
    """
    A verify client whose answers the test sets, one per query.
    """

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = []

    def query(self, address):
        self.asked.append(address)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed(answer)


class RestrictionTests(SynchronousTestCase):
    """
    The replies of reject_unverified_sender and reject_unverified_recipient,
    as Postfix's smtpd_check.c words them.
    """

    def evaluate(self, value, verify, stage="RCPT", sender="alice@example.org",
                 recipient="bob@example.com", **settings):
        self.clock = Clock()
        env = RestrictionEnvironment.fromConfig(MainConfig(settings), [], verify=verify)
        env.clock = self.clock
        results = []
        self.context = context = RecipientContext(clientAddress="192.0.2.1",
                                                  recipient=recipient, sender=sender,
                                                  stage=stage)
        d = defer.maybeDeferred(RestrictionList("smtpd_recipient_restrictions", value, env)
                                .evaluate, context)
        d.addBoth(results.append)
        for _ in range(10):
            self.clock.advance(3)
        [result] = results
        if result[0] == DUNNO and context.deferIfPermit:
            # A defer_if_permit is held in the context for the stage's end.
            return DEFER_IF_PERMIT, context.deferIfPermit
        return result

    def test_deliverable(self):
        self.assertEqual(self.evaluate("reject_unverified_recipient",
                                       FakeVerify((OK, "ok")))[0], DUNNO)

    def test_inProgressPolled(self):
        """
        While the probe is under way smtpd asks again, poll_count times
        in all, then answers 450, as a defer_if_permit.
        """
        verify = FakeVerify((PROBING, IN_PROGRESS))
        self.assertEqual(
            self.evaluate("reject_unverified_recipient", verify),
            (DEFER_IF_PERMIT, "450 4.1.1 <bob@example.com>: Recipient address rejected: "
                              "unverified address: Address verification in progress"))
        self.assertEqual(len(verify.asked), 3)
        verify = FakeVerify((PROBING, IN_PROGRESS), (BOUNCE, "550 5.1.1 unknown"))
        self.assertEqual(
            self.evaluate("reject_unverified_recipient", verify,
                          unverified_recipient_reject_code="550"),
            (REJECT, "550 5.1.1 <bob@example.com>: Recipient address rejected: "
                     "undeliverable address: 550 5.1.1 unknown"))
        self.assertEqual(len(verify.asked), 2)

    def test_sender(self):
        """
        The sender's replies carry 4.1.7; the null sender is not
        verified.
        """
        self.assertEqual(
            self.evaluate("reject_unverified_sender", FakeVerify((V_DEFER, "451 later")),
                          address_verify_poll_count="1"),
            (DEFER_IF_PERMIT, "450 4.1.7 <alice@example.org>: Sender address rejected: "
                              "unverified address: 451 later"))
        verify = FakeVerify((BOUNCE, "no"))
        self.assertEqual(self.evaluate("reject_unverified_sender", verify, sender="")[0], DUNNO)
        self.assertEqual(verify.asked, [])

    def test_reasonAndTempfailAction(self):
        self.assertEqual(
            self.evaluate("reject_unverified_recipient", FakeVerify((BOUNCE, "550 no")),
                          unverified_recipient_reject_reason="Go away",
                          unverified_recipient_tempfail_action="defer"),
            (DEFER, "450 4.1.1 <bob@example.com>: Recipient address rejected: "
                    "unverified address: Go away"))

    def test_serviceFailure(self):
        """
        A verify service that cannot be asked (or is not in master.cf)
        is a temporary failure, never an acceptance.
        """
        for verify in (FakeVerify(ConnectionRefusedError()), None):
            self.assertEqual(
                self.evaluate("reject_unverified_recipient", verify),
                (DEFER_IF_PERMIT, "450 4.1.1 <bob@example.com>: Recipient address rejected: "
                                  "address verification problem"))
        self.flushLoggedErrors()

    def test_deferIfPermitOnlyWhenPermitted(self):
        """
        The default defer_if_permit: a later reject still wins, a later
        permit becomes 450.
        """
        verify = FakeVerify((PROBING, IN_PROGRESS))
        self.assertEqual(self.evaluate("reject_unverified_recipient, reject", verify)[0], REJECT)
        self.assertEqual(self.evaluate("reject_unverified_recipient, permit", verify)[0],
                         PERMIT)
        self.assertTrue(self.context.deferIfPermit.startswith("450 4.1.1 "))

    def test_badTempfailActionRefused(self):
        self.assertRaises(ValueError, RestrictionEnvironment.fromConfig,
                          MainConfig({"unverified_sender_tempfail_action": "accept"}), [])


class StartupTests(SynchronousTestCase):
    def test_needsVerifyService(self):
        """
        Naming reject_unverified_* without a verify service in master.cf
        stops start-up, with the line to add.
        """
        from tmta.config.loader import loadConfiguration
        from tmta.config.parser import ConfigProblems

        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "main.cf"), "w") as f:
            f.write("smtpd_recipient_restrictions = reject_unauth_destination, "
                    "reject_unverified_recipient\nqueue_directory = /tmp/q\n")
        with open(os.path.join(directory, "master.cf"), "w") as f:
            f.write("smtp inet n - n - - smtpd\n")
        with self.assertRaises(ConfigProblems) as caught:
            loadConfiguration(directory)
        self.assertIn("reject_unverified_recipient needs the verify service",
                      str(caught.exception))
        with open(os.path.join(directory, "master.cf"), "a") as f:
            f.write("verify unix - - n - 1 verify\n")
        loadConfiguration(directory)
        # A cache verify could not write stops start-up too, and so does
        # a proxy: one proxy_write_maps does not list.
        with open(os.path.join(directory, "main.cf"), "a") as f:
            f.write("address_verify_map = proxy:texthash:/var/lib/x\n")
        with self.assertRaises(ConfigProblems) as caught:
            loadConfiguration(directory)
        self.assertIn("main.cf, line 3: address_verify_map = proxy:texthash:/var/lib/x",
                      str(caught.exception))
        with open(os.path.join(directory, "main.cf"), "a") as f:
            f.write("address_verify_map = proxy:btree:/var/lib/x\nproxy_write_maps =\n")
        with self.assertRaises(ConfigProblems) as caught:
            loadConfiguration(directory)
        self.assertIn("btree:/var/lib/x is not in proxy_write_maps", str(caught.exception))


class AgentTests(SynchronousTestCase):
    """
    What each agent answers for a probe: what it found, and nothing
    delivered.
    """

    def test_unverifyingPluginNeverGetsAProbe(self):
        """
        An agent that does not provide IAddressVerifier is not given the
        probe: it is answered "not known" for it.
        """
        from zope.interface import implementer

        from tmta.delivery import AgentProtocol
        from tmta.interfaces import IDeliveryAgent

        @implementer(IDeliveryAgent)
        class Delivers:
            called = False

            def deliver(self, request):
                Delivers.called = True
                return []

        protocol = AgentProtocol(Delivers(), store=type("S", (), {"path": lambda *a: "/x"})())
        result = protocol.deliver("Q", "", "x.example", 0.0, 0.0,
                                  [{"address": "a@x.example", "original": "a@x.example",
                                    "offset": 7, "notify": "", "orcpt": ""}], verify=True)
        self.assertFalse(Delivers.called)
        self.assertEqual(result["statuses"][0]["status"], "deferred")

    def test_smtpClientStopsAtRcpt(self):
        """
        The SMTP client ends a probe's transaction after RCPT TO: no
        DATA is sent, pipelined or not, and the next transaction on the
        session starts with RSET.
        """
        from tests.test_smtp import ClientTests
        from tmta.smtp.transaction import Transaction

        for pipelining in (True, False):
            harness = ClientTests()
            harness.session(recipients=["a@x.example", "b@x.example"])
            harness.say("220 ok", "250-ok", "250 PIPELINING" if pipelining else "250 8BITMIME")
            harness.sent()
            probe = Transaction("double-bounce@y.example", ["a@x.example", "b@x.example"],
                                b"", verifyOnly=True)
            harness.send(probe)
            if not pipelining:
                self.assertEqual(harness.sent(), "MAIL FROM:<double-bounce@y.example>\r\n")
                harness.say("250 ok")
                self.assertEqual(harness.sent(), "RCPT TO:<a@x.example>\r\n")
                harness.say("250 2.1.5 ok")
                self.assertEqual(harness.sent(), "RCPT TO:<b@x.example>\r\n")
                harness.say("550 5.1.1 unknown")
            else:
                self.assertEqual(harness.sent(), "MAIL FROM:<double-bounce@y.example>\r\n"
                                                 "RCPT TO:<a@x.example>\r\n"
                                                 "RCPT TO:<b@x.example>\r\n")
                harness.say("250 ok", "250 2.1.5 ok", "550 5.1.1 unknown")
            self.assertEqual(harness.sent(), "")
            [t] = harness.results
            self.assertEqual([t.replies[r].code for r in t.recipients], [250, 550])
            self.assertIsNone(t.final)
            harness.send(Transaction("s@y.example", ["c@x.example"], b"x\n"))
            self.assertEqual(harness.sent(), "RSET\r\n")


class VerifyPathTests(SynchronousTestCase):
    """
    A real master with verify, probing a private Postfix that knows one
    user, as a relay verifying recipients against the server inside.
    """

    def setUp(self):
        from tests.test_smtp import MASTER_CF

        self.base = shortTemporaryDirectory(self)
        self.inside = PrivatePostfix(os.path.join(self.base, "inside"), "inside.example", {
            "virtual_mailbox_maps": "inline:{ {alice@inside.example = box/} }"}).start()
        self.addCleanup(self.inside.stop)
        self.port = freePort()
        self.master = Master(os.path.join(self.base, "conf"), {
            "mydestination": "localhost", **localMaildirs(os.path.join(self.base, "mail") + "/"),
            "relay_domains": "inside.example",
            "transport_maps": "inline:{ {inside.example = "
                              f"relay:[127.0.0.1]:{self.inside.port}}} }}",
            "smtpd_sender_restrictions": "reject_unverified_sender",
            "smtpd_recipient_restrictions": "reject_unauth_destination, "
                                            "reject_unverified_recipient",
            "address_verify_poll_delay": "1s",
        }, MASTER_CF.format(port=self.port) + "verify unix - - n - 1 verify\n").start()
        self.addCleanup(self.master.stop)

    def test_recipients(self):
        """
        A user the inside server knows is accepted once the probe says
        so; one it refuses gets 450 with the server's reply; nothing is
        delivered to the inside server, and no probe is left queued or
        bounced.
        """
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        self.assertEqual(client.mail("someone@localhost")[0], 250)
        self.assertEqual(client.rcpt("alice@inside.example"), (250, b"2.1.5 Ok"))
        code, text = client.rcpt("bob@inside.example")
        self.assertEqual(code, 450)
        self.assertRegex(text.decode(), r"^4\.1\.1 <bob@inside\.example>: Recipient address "
                                        r"rejected: unverified address: host 127\.0\.0\.1\["
                                        r"127\.0\.0\.1\]:\d+ said: 550 5\.1\.1 <bob@inside\."
                                        r"example>: Recipient address rejected: User unknown")
        # The answer is kept: asked again, at once.
        self.assertEqual(client.rcpt("bob@inside.example")[0], 450)
        self.assertEqual(client.rcpt("alice@inside.example")[0], 250)
        client.quit()
        log = self.master.log()
        self.assertIn("to=<alice@inside.example>, relay=127.0.0.1[127.0.0.1]", log)
        self.assertIn("status=deliverable (250 2.1.5 Ok)", log)
        self.assertIn("status=undeliverable (host 127.0.0.1", log)
        # The local sender was verified too: by local, which found its
        # mailbox (and wrote nothing).
        self.assertIn("to=<someone@localhost>, relay=local", log)
        self.assertIn("status=deliverable (delivers to maildir)", log)
        self.assertFalse(os.path.exists(os.path.join(self.base, "mail", "someone")))
        self.assertEqual(self.inside.messages(), [])
        queue = self.master.queue
        waitFor(lambda: not any(os.listdir(os.path.join(queue, q))
                                for q in ("incoming", "active", "deferred")),
                what="the probes to leave the queue")
        self.assertNotIn("bounce", log.replace("double-bounce", ""))
        self.assertTrue(os.path.exists(os.path.join(self.master.directory, "data",
                                                    "verify_cache.db")))

    def test_mailStillFlows(self):
        """
        With the recipient verified, the message itself is delivered
        to the inside server as usual.
        """
        from tests.support import sendMessage

        try:
            sendMessage(self.port, "someone@localhost", ["alice@inside.example"], "first")
        except smtplib.SMTPRecipientsRefused:
            pass  # 450 while the probe was under way, if it was slow
        sendMessage(self.port, "someone@localhost", ["alice@inside.example"], "verified")
        waitFor(lambda: any(b"Subject: verified" in m for m in self.inside.messages()),
                what="delivery to the inside server")


class LocalProbeTests(SynchronousTestCase):
    """
    local answers a probe with what it found -- an alias, a mailbox, an
    unknown user -- and writes nothing.
    """

    def test_localAnswers(self):
        from dataclasses import replace

        from tests.support import activeRequest, testAccount
        from tmta.delivery import BOUNCED, SENT
        from tmta.local.agent import LocalAgent
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore

        base = shortTemporaryDirectory(self)
        createLayout(os.path.join(base, "queue"))
        store = QueueStore(os.path.join(base, "queue"))
        aliases = os.path.join(base, "aliases")
        with open(aliases, "w") as f:
            f.write("boss alice, carol\n")
        spool = os.path.join(base, "spool")
        settings = {"myhostname": "mx.example.org", "mail_spool_directory": spool,
                    "alias_maps": f"texthash:{aliases}"}
        if os.getuid() == 0:
            settings["mail_owner"] = testAccount()

        def probe(*recipients):
            request = activeRequest(store, recipients, b"Subject: x\n\nbody\n", "localhost")
            return [(s.status, s.reason)
                    for s in agent.deliverAll(replace(request, verifyOnly=True))]

        agent = LocalAgent(MainConfig(settings))
        self.assertEqual(probe("boss@localhost", "no-such-user-xyz@localhost"),
                         [(SENT, "aliased to alice, carol"),
                          (BOUNCED, 'unknown user: "no-such-user-xyz"')])
        self.assertFalse(os.path.exists(spool))
        os.makedirs(spool)
        os.chmod(spool, 0o1777)
        agent = LocalAgent(MainConfig(dict(settings, local_mailbox_accounts="none",
                                           mail_spool_directory=spool + "/")))
        self.assertEqual(probe("bob@localhost"), [(SENT, "delivers to maildir")])
        self.assertEqual(os.listdir(spool), [])
