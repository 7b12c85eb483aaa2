"""
Tests for cleanup (L{tmta.cleanup}): the queue file it writes, the
headers it adds, loop and size limits, and that it fsyncs before it
answers.
"""

import os

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.support import FsyncRecorder
from tmta.cleanup.protocol import CleanupProtocol
from tmta.cleanup.state import Cleanup
from tmta.config import MainConfig
from tmta.queue.layout import createLayout
from tmta.queue.qfile import iterContent, readEnvelope
from tmta.queue.store import QueueStore
from tmta.rewrite import Rewriter


class LocalRewriter:
    def __init__(self, config):
        self.rewriter = Rewriter(config)

    def rewrite(self, address):
        return defer.succeed(self.rewriter.rewrite(address))


class CleanupTests(TestCase):
    def setUp(self):
        from twisted.internet import reactor

        self.directory = os.path.abspath(self.mktemp())
        createLayout(self.directory)
        self.fsyncs = FsyncRecorder()
        self.store = QueueStore(self.directory, fsync=self.fsyncs)
        self.config = MainConfig({"myhostname": "mx.example.org", "hopcount_limit": "3",
                                  "message_size_limit": "100000"})
        self.wakeups = []

        def notify(queueId):
            # The file is durable before qmgr hears of it.
            self.wakeups.append(list(self.fsyncs.paths))
            return defer.succeed(None)

        self.cleanup = Cleanup(reactor, self.config, self.store, LocalRewriter(self.config), notify)

    async def submit(self, content, sender="alice", recipients=("bob",), attributes=None):
        p = CleanupProtocol(self.cleanup)
        attrs = attributes or {"client_address": "192.0.2.1", "client_name": "c.example",
                               "helo_name": "c", "protocol": "ESMTP"}
        p.begin(1, sender, [{"name": k, "value": v} for k, v in attrs.items()])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": r, "original": r} for r in recipients])
        for start in range(0, len(content), 7):
            p.content(1, content[start:start + 7])
        result = await p.end(1)
        return queueId, result

    def read(self, queueId):
        with self.store.open("incoming", queueId) as f:
            env = readEnvelope(f)
            return env, b"".join(iterContent(f, env))

    @defer.inlineCallbacks
    def test_queuedWithHeaders(self):
        queueId, result = yield defer.Deferred.fromCoroutine(
            self.submit(b"Subject: hi\n\nbody\n"))
        self.assertEqual(result["code"], 250)
        self.assertEqual(result["reason"], f"2.0.0 Ok: queued as {queueId}")
        env, text = self.read(queueId)
        self.assertEqual(env.sender, "alice@mx.example.org")
        self.assertEqual([(r.address, r.original) for r in env.recipients],
                         [("bob@mx.example.org", "bob")])
        headers, _, body = text.partition(b"\n\n")
        lines = headers.split(b"\n")
        self.assertTrue(lines[0].startswith(b"Received: from c (c.example [192.0.2.1])"))
        self.assertIn(b"\tby mx.example.org (tmta) with ESMTP id " + queueId.encode(), lines)
        self.assertIn(b"Subject: hi", lines)
        names = [line.split(b":")[0].lower() for line in lines if not line.startswith(b"\t")]
        for name in (b"date", b"message-id", b"from"):
            self.assertIn(name, names)
        self.assertEqual(body, b"body\n")
        path = self.store.path("incoming", queueId)
        self.assertEqual(self.wakeups, [[path, os.path.dirname(path)]])

    @defer.inlineCallbacks
    def test_existingHeadersKept(self):
        msg = b"From: x@y\nDate: Mon, 1 Jan 2024 00:00:00 +0000\nMessage-ID: <a@b>\n\nb\n"
        queueId, _ = yield defer.Deferred.fromCoroutine(self.submit(msg))
        _, text = self.read(queueId)
        self.assertEqual(text.count(b"Message-I"), 1)
        self.assertEqual(text.count(b"Date:"), 1)
        self.assertTrue(text.endswith(msg))

    @defer.inlineCallbacks
    def test_noHeaderSection(self):
        queueId, _ = yield defer.Deferred.fromCoroutine(self.submit(b"just a body line\nmore\n"))
        _, text = self.read(queueId)
        self.assertTrue(text.endswith(b"\n\njust a body line\nmore\n"))

    @defer.inlineCallbacks
    def test_emptyMessage(self):
        queueId, result = yield defer.Deferred.fromCoroutine(self.submit(b""))
        self.assertEqual(result["code"], 250)
        _, text = self.read(queueId)
        self.assertTrue(text.endswith(b"\n\n"))

    @defer.inlineCallbacks
    def test_duplicateRecipientsMerged(self):
        """
        A recipient given many times is queued once; one given again with
        another original address, or a different one, is kept.
        """
        queueId, result = yield defer.Deferred.fromCoroutine(
            self.submit(b"a\n", recipients=["bob"] * 1000 + ["carol", "bob"]))
        self.assertEqual(result["code"], 250)
        env, _ = self.read(queueId)
        self.assertEqual([(r.address, r.original) for r in env.recipients],
                         [("bob@mx.example.org", "bob"), ("carol@mx.example.org", "carol")])

    @defer.inlineCallbacks
    def test_hopcount(self):
        msg = b"Received: a\nReceived: b\nReceived: c\n\nloop\n"
        queueId, result = yield defer.Deferred.fromCoroutine(self.submit(msg))
        self.assertEqual((result["code"], result["reason"]), (554, "5.4.6 Too many hops"))
        self.assertEqual(self.store.list("incoming"), [])
        self.assertEqual(self.wakeups, [])

    @defer.inlineCallbacks
    def test_sizeLimit(self):
        _, result = yield defer.Deferred.fromCoroutine(self.submit(b"x" * 200000))
        self.assertEqual(result["code"], 552)
        self.assertEqual(self.store.list("incoming"), [])

    @defer.inlineCallbacks
    def test_nullSender(self):
        queueId, _ = yield defer.Deferred.fromCoroutine(self.submit(b"a\n", sender=""))
        env, text = self.read(queueId)
        self.assertEqual(env.sender, "")
        self.assertIn(b"From: MAILER-DAEMON", text)

    @defer.inlineCallbacks
    def test_badRecipientRefused(self):
        _, result = yield defer.Deferred.fromCoroutine(
            self.submit(b"a\n", recipients=["../../etc\x00"]))
        self.assertEqual(result["code"], 501)
        self.assertEqual(self.store.list("incoming"), [])

    @defer.inlineCallbacks
    def test_diskFull(self):
        def full(fd):
            raise OSError(28, "No space left on device")

        self.store.fsync = full
        _, result = yield defer.Deferred.fromCoroutine(self.submit(b"a\n"))
        self.assertEqual((result["code"], result["reason"]),
                         (452, "4.3.1 Insufficient system storage"))
        self.assertEqual(self.store.list("incoming"), [])

    @defer.inlineCallbacks
    def test_reallyFullDisk(self):
        """
        A queue on a disk that fills up while the message is written:
        452 4.3.1, no traceback, nothing left behind.
        """
        from twisted.internet import reactor

        from tests.support import fillFilesystem, smallFilesystem

        directory = smallFilesystem(self, "1m")
        createLayout(directory)
        self.store = QueueStore(directory)
        self.cleanup = Cleanup(reactor, self.config, self.store, LocalRewriter(self.config),
                               lambda queueId: defer.succeed(None))
        fillFilesystem(directory)
        filler = os.path.join(directory, "filler")
        # Room for the queue file to be created, not for the message.
        os.truncate(filler, os.path.getsize(filler) - 8192)
        _, result = yield defer.Deferred.fromCoroutine(
            self.submit(b"Subject: big\n\n" + (b"x" * 99 + b"\n") * 900))
        self.assertEqual((result["code"], result["reason"]),
                         (452, "4.3.1 Insufficient system storage"))
        self.assertEqual(self.store.list("incoming"), [])
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_connectionLostDiscards(self):
        p = CleanupProtocol(self.cleanup)
        p.begin(1, "a", [])
        p.content(1, b"partial")
        p.begin(2, "b", [])
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        p.connectionLost(Failure(ConnectionDone()))
        yield defer.succeed(None)
        self.assertEqual(os.listdir(os.path.join(self.directory, "incoming")), [])

    @defer.inlineCallbacks
    def test_interleavedMessages(self):
        """
        One connection carries several messages at once, their commands
        interleaved; each becomes its own queue file.
        """
        p = CleanupProtocol(self.cleanup)
        attrs = [{"name": "protocol", "value": "ESMTP"}]
        p.begin(7, "alice", attrs, [{"address": "bob", "original": "bob"}])
        p.begin(8, "carol", attrs, [{"address": "dave", "original": "dave"}])
        p.content(8, b"Subject: eight\n\n")
        p.content(7, b"Subject: seven\n\n")
        p.content(7, b"text of seven\n")
        first = p.end(8, b"text of eight\n")
        second = p.end(7)
        results = yield defer.gatherResults([first, second])
        texts = {}
        for result in results:
            self.assertEqual(result["code"], 250)
            env, text = self.read(result["queue_id"])
            texts[env.sender] = (env.recipients[0].address, text.partition(b"\n\n")[2])
        self.assertEqual(texts, {
            "alice@mx.example.org": ("bob@mx.example.org", b"text of seven\n"),
            "carol@mx.example.org": ("dave@mx.example.org", b"text of eight\n"),
        })

    @defer.inlineCallbacks
    def test_messagesInProgressLimited(self):
        """
        Past L{CleanupProtocol.maxMessages} messages in progress on one
        connection, another is refused (no queue file is opened for it);
        End for a message never begun is refused too.
        """
        p = CleanupProtocol(self.cleanup)
        p.maxMessages = 1
        p.begin(1, "a", [], [{"address": "bob", "original": "bob"}])
        p.begin(2, "a", [], [{"address": "bob", "original": "bob"}])
        self.assertEqual(len(os.listdir(os.path.join(self.directory, "incoming"))), 1)
        refused = yield p.end(2, b"x\n")
        self.assertEqual((refused["code"], refused["queue_id"]), (451, ""))
        self.assertIn("4.3.2", refused["reason"])
        unknown = yield p.end(3)
        self.assertEqual(unknown["code"], 503)
        accepted = yield p.end(1, b"x\n")
        self.assertEqual(accepted["code"], 250)


class ReceiveOverrideTests(TestCase):
    """
    C{receive_override_options} as the receiving daemon passes it on:
    address mappings and header/body checks switched off for that mail
    alone; the content filter kept in the queue file, and replaced by a
    FILTER action.
    """

    def setUp(self):
        from twisted.internet import reactor

        self.directory = os.path.abspath(self.mktemp())
        createLayout(self.directory)
        self.store = QueueStore(self.directory, fsync=FsyncRecorder())
        checks = os.path.join(self.directory, "header_checks")
        with open(checks, "w") as f:
            f.write("/^Subject: refiltered/ FILTER other:[192.0.2.9]\n"
                    "/^Subject:/ PREPEND X-Checked: yes\n")
        canonical = os.path.join(self.directory, "canonical")
        with open(canonical, "w") as f:
            f.write("alice@mx.example.org alice.smith@example.org\n")
        self.config = MainConfig({"myhostname": "mx.example.org",
                                  "header_checks": f"regexp:{checks}",
                                  "canonical_maps": f"texthash:{canonical}",
                                  "always_bcc": "archive@mx.example.org"})
        self.cleanup = Cleanup(reactor, self.config, self.store, LocalRewriter(self.config),
                               lambda queueId: defer.succeed(None))

    async def submit(self, attributes, subject=b"hi"):
        p = CleanupProtocol(self.cleanup)
        p.begin(1, "alice", [{"name": k, "value": v} for k, v in attributes.items()])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": "bob", "original": "bob"}])
        result = await p.end(1, b"Subject: " + subject + b"\n\nbody\n")
        self.assertEqual(result["code"], 250, result)
        with self.store.open("incoming", queueId) as f:
            env = readEnvelope(f)
            return env, b"".join(iterContent(f, env))

    @defer.inlineCallbacks
    def test_applied(self):
        env, text = yield defer.Deferred.fromCoroutine(self.submit(
            {"filter": "scan:[127.0.0.1]:10025"}))
        self.assertEqual(env.sender, "alice.smith@example.org")
        self.assertEqual(sorted(r.address for r in env.recipients),
                         ["archive@mx.example.org", "bob@mx.example.org"])
        self.assertIn(b"X-Checked: yes", text)
        self.assertEqual(env.attributes["filter"], "scan:[127.0.0.1]:10025")

    @defer.inlineCallbacks
    def test_switchedOff(self):
        env, text = yield defer.Deferred.fromCoroutine(self.submit(
            {"receive_override": "no_address_mappings,no_header_body_checks"}))
        self.assertEqual(env.sender, "alice@mx.example.org")
        self.assertEqual([r.address for r in env.recipients], ["bob@mx.example.org"])
        self.assertNotIn(b"X-Checked", text)
        self.assertNotIn("receive_override", env.attributes)
        self.assertNotIn("filter", env.attributes)

    @defer.inlineCallbacks
    def test_internalMail(self):
        """
        The mail system's own mail (a bounce, forwarded mail) is not
        checked or copied again, as Postfix's internal mail is not: a
        bounce carrying a refused message must reach the sender.  The
        address mappings still apply.
        """
        env, text = yield defer.Deferred.fromCoroutine(self.submit({"origin": "bounce"}))
        self.assertEqual(env.sender, "alice.smith@example.org")
        self.assertEqual([r.address for r in env.recipients], ["bob@mx.example.org"])
        self.assertNotIn(b"X-Checked", text)

    @defer.inlineCallbacks
    def test_filterActionWins(self):
        env, _ = yield defer.Deferred.fromCoroutine(self.submit(
            {"filter": "scan:[127.0.0.1]:10025"}, subject=b"refiltered"))
        self.assertEqual(env.attributes["filter"], "other:[192.0.2.9]")


class ReceivingAttributesTests(TestCase):
    """
    L{tmta.mail.receiving}: what smtpd and pickup add to every message.
    """

    def test_attributes(self):
        from tmta.mail.receiving import receivingAttributes

        self.assertEqual(receivingAttributes(MainConfig({})), {})
        self.assertEqual(receivingAttributes(MainConfig({
            "content_filter": "scan:[127.0.0.1]:10025",
            "receive_override_options":
                "no_unknown_recipient_checks, no_milters,no_header_body_checks"})),
            {"filter": "scan:[127.0.0.1]:10025",
             "receive_override": "no_header_body_checks,no_milters"})

    def test_unknownOptionRefused(self):
        from tmta.mail.receiving import receiveOverrides

        error = self.assertRaises(ValueError, receiveOverrides, "no_header_checks")
        self.assertIn("'no_header_checks'", str(error))
        from tmta.smtpd.checking import configurationProblems

        [problem] = configurationProblems(
            MainConfig({"receive_override_options": "no_milter"}), None)
        self.assertIn("no_milter", problem)


class RewriterTests(TestCase):
    def test_rewriteAndResolve(self):
        r = Rewriter(MainConfig({"myhostname": "mx.example.org", "relay_domains": "relay.example"}))
        self.assertEqual(r.rewrite("bob"), "bob@mx.example.org")
        self.assertEqual(r.rewrite("host.example!bob"), "bob@host.example")
        self.assertEqual(r.rewrite("bob%other.example@localhost"), "bob@other.example")
        self.assertEqual(r.rewrite("Bob@MX.Example.ORG."), "Bob@mx.example.org")
        local = r.resolve("bob@localhost")
        self.assertEqual((local.transport, local.nexthop, local.addressClass),
                         ("local", "mx.example.org", "local"))
        self.assertEqual(r.resolve("x@sub.relay.example").addressClass, "relay")
        remote = r.resolve("x@far.example")
        self.assertEqual((remote.transport, remote.nexthop, remote.addressClass),
                         ("smtp", "far.example", "default"))
        r2 = Rewriter(MainConfig({"relayhost": "[smarthost]"}))
        self.assertEqual(r2.resolve("x@far.example").nexthop, "[smarthost]")

    def test_senderDependentRelayhost(self):
        r = Rewriter(MainConfig({
            "relayhost": "[smarthost]",
            "sender_dependent_relayhost_maps": (
                "inline:{ alice@corp.example=[alice-relay]:587, @corp.example=[corp-relay], "
                "bob@corp.example=DUNNO, <>=[bounce-relay] }"),
        }))
        hop = lambda sender: r.resolve("x@far.example", sender).nexthop  # noqa: E731
        self.assertEqual(hop("Alice@corp.example"), "[alice-relay]:587")
        self.assertEqual(hop("carol@corp.example"), "[corp-relay]")
        self.assertEqual(hop("bob@corp.example"), "[smarthost]")
        self.assertEqual(hop("dave@other.example"), "[smarthost]")
        self.assertEqual(hop(""), "[bounce-relay]")
        # Local mail is not relayed, whoever sends it.
        self.assertEqual(r.resolve("bob@localhost", "alice@corp.example").transport, "local")


    def test_senderDependentDefaultTransport(self):
        """
        C{sender_dependent_default_transport_maps} replaces
        C{default_transport} by the sender (C{DUNNO}: not), never the
        relay transport; a next hop it names beats the relayhost, as a
        next hop in C{default_transport} does.
        """
        r = Rewriter(MainConfig({
            "relayhost": "[smarthost]", "relay_domains": "relay.example",
            "sender_dependent_default_transport_maps": (
                "inline:{ alice@corp.example=slow:[outbound]:2525, @corp.example=slow, "
                "bob@corp.example=DUNNO, <>=bounces }"),
        }))
        route = lambda sender: (lambda r: (r.transport, r.nexthop))(  # noqa: E731
            r.resolve("x@far.example", sender))
        self.assertEqual(route("alice@corp.example"), ("slow", "[outbound]:2525"))
        self.assertEqual(route("carol@corp.example"), ("slow", "[smarthost]"))
        self.assertEqual(route("bob@corp.example"), ("smtp", "[smarthost]"))
        self.assertEqual(route(""), ("bounces", "[smarthost]"))
        self.assertEqual(route(None), ("smtp", "[smarthost]"))
        self.assertEqual(r.resolve("x@relay.example", "alice@corp.example").transport, "relay")
        explicit = Rewriter(MainConfig({"relayhost": "[smarthost]",
                                        "default_transport": "smtp:[direct]"}))
        self.assertEqual(explicit.resolve("x@far.example").nexthop, "[direct]")


class TransportMapsTests(TestCase):
    """
    transport_maps, looked up as Postfix does.
    """

    def rewriter(self, entries, **params):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(entries)
        settings = {"myhostname": "mx.example.org", "mydestination": "localhost",
                    "recipient_delimiter": "+", "relayhost": "[smarthost]",
                    "transport_maps": f"texthash:{path}"}
        settings.update(params)
        return Rewriter(MainConfig(settings))

    def test_lookupOrder(self):
        r = self.rewriter(
            "bob@x.example   error:no bob here\n"
            "x.example       relay:[gw.example]:2525\n"
            ".sub.example    smtp:[sub-gw]\n"
            "dovecot.example lmtp:unix:private/dovecot-lmtp\n"
            "keep.example    :[only-nexthop]\n"
            "hop.example     lmtp:\n")
        def hop(address):
            found = r.resolve(address)
            return found.transport, found.nexthop

        self.assertEqual(hop("bob+tag@x.example"), ("error", "no bob here"))
        self.assertEqual(hop("carol@x.example"), ("relay", "[gw.example]:2525"))
        self.assertEqual(hop("a@deep.sub.example"), ("smtp", "[sub-gw]"))
        # A parent entry (.sub.example) does not match the domain itself.
        self.assertEqual(hop("a@sub.example"), ("smtp", "[smarthost]"))
        self.assertEqual(hop("a@dovecot.example"), ("lmtp", "unix:private/dovecot-lmtp"))
        # An empty transport or next hop keeps the address class's.
        self.assertEqual(hop("a@keep.example"), ("smtp", "[only-nexthop]"))
        self.assertEqual(hop("a@hop.example"), ("lmtp", "[smarthost]"))
        self.assertEqual(hop("a@other.example"), ("smtp", "[smarthost]"))
        self.assertEqual(hop("bob@localhost"), ("local", "mx.example.org"))

    def test_wildcardAndParentMatching(self):
        r = self.rewriter("example.com smtp:[one]\n* smtp:[everything]\n",
                          parent_domain_matches_subdomains="transport_maps")
        self.assertEqual(r.resolve("a@mail.example.com").nexthop, "[one]")
        self.assertEqual(r.resolve("a@elsewhere.test").nexthop, "[everything]")


class RewriteClientTests(TestCase):
    def test_cache(self):
        from tmta.rewrite.client import RewriteClient

        calls = []

        from twisted.internet.testing import StringTransport

        class FakeAMP:
            transport = StringTransport()

            def callRemote(self, command, **kw):
                calls.append(kw["address"])
                return defer.succeed({"address": kw["address"] + "@x"})

        clock = Clock()
        client = RewriteClient(lambda: defer.succeed(FakeAMP()), clock, ttl=10, idle=5)
        results = [self.successResultOf(client.rewrite("a")) for _ in range(3)]
        self.assertEqual(results, ["a@x"] * 3)
        self.assertEqual(calls, ["a"])
        clock.advance(11)
        self.successResultOf(client.rewrite("a"))
        self.assertEqual(calls, ["a", "a"])

    def test_resolveCachedApartFromRewrite(self):
        """
        Resolutions are cached too, apart from rewrites of the same
        address, and the cache keeps at most C{size} answers.
        """
        from twisted.internet.testing import StringTransport

        from tmta.rewrite.client import RewriteClient

        calls = []

        class FakeAMP:
            transport = StringTransport()

            def callRemote(self, command, **kw):
                calls.append((command.__name__, kw["address"]))
                if command.__name__ == "ResolveAddress":
                    return defer.succeed({"transport": "local", "nexthop": "h",
                                          "recipient": kw["address"], "addressClass": "local"})
                return defer.succeed({"address": kw["address"]})

        client = RewriteClient(lambda: defer.succeed(FakeAMP()), Clock(), size=2)
        first = self.successResultOf(client.resolve("a@h"))
        self.assertEqual((first.transport, first.recipient), ("local", "a@h"))
        self.assertEqual(self.successResultOf(client.resolve("a@h")), first)
        self.successResultOf(client.rewrite("a@h"))
        self.assertEqual(calls, [("ResolveAddress", "a@h"), ("RewriteAddress", "a@h")])
        self.successResultOf(client.rewrite("b@h"))  # the oldest answer goes
        self.successResultOf(client.resolve("a@h"))
        self.assertEqual(calls[-1], ("ResolveAddress", "a@h"))

    def test_lookupFailureNotCached(self):
        """
        A resolution that could not read a table (the C{retry}
        transport) is not remembered: the next question is asked again,
        so mail moves as soon as the table can be read.
        """
        from twisted.internet.testing import StringTransport

        from tmta.rewrite.client import RewriteClient

        answers = [{"transport": "retry", "nexthop": "table lookup failure: down",
                    "recipient": "a@h", "addressClass": "default"},
                   {"transport": "virtual", "nexthop": "h", "recipient": "a@h",
                    "addressClass": "virtual"}]

        class FakeAMP:
            transport = StringTransport()

            def callRemote(self, command, **kw):
                return defer.succeed(answers.pop(0))

        client = RewriteClient(lambda: defer.succeed(FakeAMP()), Clock())
        self.assertEqual(self.successResultOf(client.resolve("a@h")).transport, "retry")
        self.assertEqual(self.successResultOf(client.resolve("a@h")).transport, "virtual")
        self.assertEqual(self.successResultOf(client.resolve("a@h")).transport, "virtual")

    def test_questionUnderWayAskedOnce(self):
        """
        A question asked again before its answer came is not sent
        again: every asker gets the one answer, or the one failure.
        """
        from twisted.internet.testing import StringTransport

        from tmta.rewrite.client import RewriteClient

        asked = []

        class FakeAMP:
            transport = StringTransport()

            def callRemote(self, command, **kw):
                d = defer.Deferred()
                asked.append((kw["address"], d))
                return d

        client = RewriteClient(lambda: defer.succeed(FakeAMP()), Clock())
        waiting = [client.resolve("a@h") for _ in range(5)] + [client.resolve("b@h")]
        self.assertEqual([address for address, _ in asked], ["a@h", "b@h"])
        asked[0][1].callback({"transport": "local", "nexthop": "h", "recipient": "a@h",
                              "addressClass": "local"})
        self.assertEqual({self.successResultOf(d).recipient for d in waiting[:5]}, {"a@h"})
        self.assertNoResult(waiting[5])
        asked[1][1].errback(OSError("trivial-rewrite went away"))
        self.failureResultOf(waiting[5], OSError)
        # Failure is not remembered: the next asker asks again.
        client.resolve("b@h")
        self.assertEqual([address for address, _ in asked], ["a@h", "b@h", "b@h"])
