"""
Tests for the queue manager (L{tmta.qmgr}) with stand-in delivery agents
and bounce service.
"""

import os
import time

from twisted.internet import defer, reactor, task
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from tmta.bounce.commands import BounceRecipients
from tmta.config import MainConfig
from tmta.delivery import BOUNCED, DEFERRED, SENT, Deliver
from tmta.qmgr.jobs import Job, Outcome
from tmta.qmgr.manager import QueueManager
from tmta.qmgr.scheduler import TransportQueue, parseFeedback
from tmta.queue.layout import createLayout
from tmta.queue.store import QueueStore
from tmta.rewrite import Rewriter


class FakeAgent:
    def __init__(self, service, test):
        self.service = service
        self.test = test
        self.transport = StringTransport()

    def callRemote(self, command, **kw):
        self.test.requests.append((self.service, command, kw))
        self.test.connections.append(self)
        if command is BounceRecipients:
            if self.test.bounceFails:
                return defer.fail(RuntimeError("bounce down"))
            return defer.succeed({"notice_id": "X"})
        assert command is Deliver
        if self.test.held is not None:
            d = defer.Deferred()
            self.test.held.append((d, kw))
            return d
        if self.test.agentCrashes:
            self.transport.loseConnection()
            return defer.fail(ConnectionDone("the agent went away"))
        statuses = []
        for r in kw["recipients"]:
            outcome = self.test.outcomes.get(r["address"], SENT)
            statuses.append({"offset": r["offset"], "status": outcome,
                             "dsn": {SENT: "2.0.0", DEFERRED: "4.2.2", BOUNCED: "5.0.0"}[outcome],
                             "reason": f"test {outcome}"})
        return defer.succeed({"statuses": statuses})


class QueueManagerTests(TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        createLayout(self.directory)
        self.store = QueueStore(self.directory)
        self.requests = []
        self.connections = []
        self.outcomes = {}
        self.bounceFails = False
        self.agentCrashes = False
        self.held = None
        self.services = {"local", "bounce"}
        self.makeManager()

    def makeManager(self, settings=None, connect=None, resolve=None):
        """
        A queue manager with C{settings} over the tests' main.cf, whose
        agents are L{FakeAgent}s unless C{connect} makes others.
        """
        config = MainConfig(dict({"myhostname": "mx.example.org", "queue_run_delay": "1000s"},
                                 **(settings or {})))
        rewriter = Rewriter(config)

        def fakeAgents(service):
            if service not in self.services:
                return defer.fail(OSError("no such socket"))
            return defer.succeed(FakeAgent(service, self))

        self.manager = QueueManager(reactor, config, self.store, connect or fakeAgents,
                                    resolve or (lambda a: defer.succeed(rewriter.resolve(a))))
        self.addCleanup(self.manager.stop)

    def queue(self, recipients, sender="alice@example.com", arrival=None, queueName="incoming"):
        queueId, writer = self.store.create("incoming")
        writer.envelope(arrival or time.time(), sender, {})
        for r in recipients:
            writer.recipient(r)
        writer.content(b"Subject: t\n\nbody\n")
        writer.commit()
        if queueName != "incoming":
            self.store.move(queueId, "incoming", queueName)
        return queueId

    async def settle(self):
        for _ in range(50):
            if not self.manager.active:
                return
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
        self.fail("qmgr did not settle")

    @defer.inlineCallbacks
    def test_delivered(self):
        queueId = self.queue(["bob@localhost", "carol@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("incoming") + self.store.list("active"), [])
        delivered = [r["address"] for s, c, kw in self.requests for r in kw["recipients"]]
        self.assertEqual(sorted(delivered), ["bob@localhost", "carol@localhost"])
        # local takes one recipient per request.
        self.assertEqual(len(self.requests), 2)
        self.assertEqual(self.store.list("deferred"), [])
        self.assertFalse(os.path.exists(self.store.path("active", queueId)))

    def queueWith(self, attributes, recipients):
        queueId, writer = self.store.create("incoming")
        writer.envelope(time.time(), "alice@example.com", attributes)
        for r in recipients:
            writer.recipient(r)
        writer.content(b"Subject: t\n\nbody\n")
        writer.commit()
        return queueId

    @defer.inlineCallbacks
    def test_contentFilterRoutes(self):
        """
        A content filter overrides the address resolver: every recipient
        goes to its transport; without a next hop, to the recipient's
        domain (C{myhostname} for a bare name), or C{default_filter_nexthop}.
        """
        self.services.add("scan")
        self.queueWith({"filter": "scan:[127.0.0.1]:10025"},
                       ["bob@localhost", "carol@remote.example"])
        self.queueWith({"filter": "scan:"}, ["dave@remote.example", "erin"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        routes = sorted((service, kw["nexthop"], r["address"])
                        for service, command, kw in self.requests
                        for r in kw["recipients"])
        self.assertEqual(routes, [
            ("scan", "[127.0.0.1]:10025", "bob@localhost"),
            ("scan", "[127.0.0.1]:10025", "carol@remote.example"),
            ("scan", "mx.example.org", "erin"),
            ("scan", "remote.example", "dave@remote.example")])
        self.requests.clear()
        self.makeManager({"default_filter_nexthop": "[filter.example]"})
        self.queueWith({"filter": "scan"}, ["dave@remote.example"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual([kw["nexthop"] for _, _, kw in self.requests], ["[filter.example]"])

    @defer.inlineCallbacks
    def test_probesBypassTheFilter(self):
        """
        sendmail -bv's report goes where the address resolves to, not to
        the content filter its mail would take.
        """
        from tmta.queue.qfile import PROBE_ATTRIBUTE, VERIFY_REPORT

        self.services.add("scan")
        self.queueWith({"filter": "scan:[127.0.0.1]:10025", PROBE_ATTRIBUTE: VERIFY_REPORT},
                       ["bob@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertNotIn("scan", [service for service, _, _ in self.requests])
        self.assertIn("local", [service for service, _, _ in self.requests])

    @defer.inlineCallbacks
    def test_notRegularFilesSetAside(self):
        """
        A FIFO, or a link to another queue file, under a queue file's
        name is never opened or taken into active/: it is moved to
        corrupt/ with a warning, and the real message is delivered once.
        """
        real = self.queue(["bob@localhost"], queueName="deferred")
        os.utime(self.store.path("deferred", real), (0, 0))
        fifo = "4F6A21C3E9B2A001A7"
        path = self.store.path("deferred", fifo)
        self.store.ensureDirectory(os.path.dirname(path))
        os.mkfifo(path, 0o700)
        link = "4F6A21C3E9B2B001A7"
        os.symlink(self.store.path("deferred", real), self.store.path("incoming", link))
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(sorted(os.listdir(os.path.join(self.directory, "corrupt"))),
                         sorted([fifo, link]))
        delivered = [r["address"] for s, c, kw in self.requests for r in kw["recipients"]]
        self.assertEqual(delivered, ["bob@localhost"])
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_futureRetryTimeCapped(self):
        """
        A deferred message whose retry time lies beyond
        maximal_backoff_time (a clock set wrong when it was deferred) is
        tried now, not at that date.
        """
        far = self.queue(["bob@localhost"], queueName="deferred")
        os.utime(self.store.path("deferred", far), (time.time() + 86400 * 365,) * 2)
        near = self.queue(["carol@localhost"], queueName="deferred")
        os.utime(self.store.path("deferred", near), (time.time() + 60,) * 2)
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        delivered = [r["address"] for s, c, kw in self.requests for r in kw["recipients"]]
        self.assertEqual(delivered, ["bob@localhost"])
        self.assertEqual(self.store.list("deferred"), [near])

    @defer.inlineCallbacks
    def test_flushWaitsForTheResolver(self):
        """
        A flush of more deferred mail than trivial-rewrite answers at
        once holds at most L{RESOLVING_LIMIT} messages waiting for it;
        the rest stays in C{deferred/}, and is taken up, flushed, as the
        answers come.
        """
        from tmta.qmgr.manager import RESOLVING_LIMIT

        questions = []

        def resolve(address):
            d = defer.Deferred()
            questions.append((address, d))
            return d

        self.makeManager({"defer_transports": "local"}, resolve=resolve)
        count = RESOLVING_LIMIT + 30
        for n in range(count):
            queueId = self.queue([f"user{n}@localhost"], queueName="deferred")
            os.utime(self.store.path("deferred", queueId), (time.time() + 3600,) * 2)
        self.manager.flush()
        yield defer.Deferred.fromCoroutine(self.settle_briefly())
        self.assertEqual(len(questions), RESOLVING_LIMIT)
        self.assertEqual(len(self.manager.active), RESOLVING_LIMIT)
        self.assertEqual(len(self.store.list("deferred")), 30)
        rewriter = Rewriter(self.manager.config)
        while questions:
            answering, questions[:] = list(questions), []
            for address, d in answering:
                d.callback(rewriter.resolve(address))
            yield defer.Deferred.fromCoroutine(self.settle_briefly())
        yield defer.Deferred.fromCoroutine(self.settle())
        delivered = [r["address"] for s, c, kw in self.requests for r in kw["recipients"]]
        # Flushed, so delivered despite defer_transports.
        self.assertEqual(sorted(delivered), sorted(f"user{n}@localhost" for n in range(count)))
        self.assertEqual(self.store.list("deferred"), [])

    @defer.inlineCallbacks
    def test_flushTriesDeadDestinations(self):
        """
        A flush tries a destination taken for dead again at once, as
        Postfix's C{postqueue -f} does, rather than deferring its mail
        untried until C{minimal_backoff_time} has passed.
        """
        self.services.add("smtp")
        self.held = []
        for n in range(12):
            self.queue([f"u{n}@remote.example"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle_briefly())
        tried = len(self.held)
        self.assertEqual(tried, 5)  # initial_destination_concurrency
        while self.held:
            d, kw = self.held.pop(0)
            d.callback({"statuses": [{"offset": r["offset"], "status": DEFERRED,
                                      "dsn": "4.4.1", "reason": "refused"}
                                     for r in kw["recipients"]],
                        "site_failure": "connect to remote.example: Connection refused"})
        yield defer.Deferred.fromCoroutine(self.settle())
        # Taken for dead: the rest was deferred untried.
        self.assertEqual(len(self.requests), tried)
        self.assertEqual(len(self.store.list("deferred")), 12)
        self.held = None
        self.manager.flush()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(len(self.requests), tried + 12)
        self.assertEqual(self.store.list("deferred"), [])

    @defer.inlineCallbacks
    def test_partialDeferral(self):
        self.outcomes["carol@localhost"] = DEFERRED
        queueId = self.queue(["bob@localhost", "carol@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("deferred"), [queueId])
        env = self.store.readEnvelope("deferred", queueId)
        self.assertEqual([r.address for r in env.pending()], ["carol@localhost"])
        retry = os.stat(self.store.path("deferred", queueId)).st_mtime
        self.assertGreaterEqual(retry, time.time() + 290)
        # Why carol waits is recorded, for the queue listing.
        self.assertEqual(self.store.readDeferLog(queueId), {"carol@localhost": "test deferred"})
        # The next run delivers only the recipient still pending.
        self.requests.clear()
        del self.outcomes["carol@localhost"]
        os.utime(self.store.path("deferred", queueId), (0, 0))
        self.manager.scanDeferred()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual([r["address"] for s, c, kw in self.requests for r in kw["recipients"]],
                         ["carol@localhost"])
        self.assertEqual(self.store.list("deferred"), [])
        self.assertEqual(self.store.readDeferLog(queueId), {})

    @defer.inlineCallbacks
    def test_recipientLimit(self):
        """
        qmgr_message_recipient_limit: no more messages are taken up while
        the active ones have that many recipients.
        """
        self.makeManager({"qmgr_message_recipient_limit": "3"})
        self.held = []
        for _ in range(3):
            self.queue(["bob@localhost", "carol@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle_briefly())
        self.assertEqual(len(self.manager.active), 2)
        self.assertEqual(self.manager.active.recipients, 4)
        self.assertEqual(len(self.store.list("incoming")), 1)
        while self.held:
            d, kw = self.held.pop(0)
            d.callback({"statuses": [{"offset": r["offset"], "status": SENT, "dsn": "2.0.0",
                                      "reason": "ok"} for r in kw["recipients"]]})
            yield defer.Deferred.fromCoroutine(self.settle_briefly())
            self.manager.wakeup()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("incoming") + self.store.list("active"), [])
        self.assertEqual(self.manager.active.recipients, 0)

    @defer.inlineCallbacks
    def test_delayWarningOnce(self):
        """
        Past delay_warning_time the sender is told once which recipients
        still wait; NOTIFY without DELAY leaves one out.
        """
        self.makeManager({"delay_warning_time": "1h"})
        self.outcomes["carol@localhost"] = DEFERRED
        self.outcomes["dave@localhost"] = DEFERRED
        queueId, writer = self.store.create("incoming")
        writer.envelope(time.time() - 7200, "alice@example.com", {})
        writer.recipient("carol@localhost")
        writer.recipient("dave@localhost", notify="FAILURE")
        writer.content(b"Subject: t\n\nbody\n")
        writer.commit()
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        notices = [kw for s, c, kw in self.requests if c is BounceRecipients]
        self.assertEqual([(n["kind"], [r["address"] for r in n["recipients"]]) for n in notices],
                         [("delay", ["carol@localhost"])])
        self.assertEqual(notices[0]["recipients"][0]["action"], "delayed")
        # The Status is the deferral's own, as its Diagnostic-Code says.
        self.assertEqual(notices[0]["recipients"][0]["dsn"], "4.2.2")
        self.assertIsNotNone(self.store.deferWarned(queueId))
        os.utime(self.store.path("deferred", queueId), (0, 0))
        self.manager.scanDeferred()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(len([1 for s, c, kw in self.requests if c is BounceRecipients]), 1)

    async def connectionsForTwoDeliveries(self, messages: int = 2, underWay: int = 2):
        """
        Messages for one mailbox, C{underWay} of them under way at once:
        how many connections to local they took.
        """
        self.held = []
        for _ in range(messages):
            self.queue(["bob@localhost"])
        self.manager.start()
        await self.settle_briefly()
        self.assertEqual(len(self.held), underWay)
        connections = len(set(self.connections))
        while self.held:
            d, kw = self.held.pop(0)
            d.callback({"statuses": [{"offset": r["offset"], "status": SENT, "dsn": "2.0.0",
                                      "reason": "ok"} for r in kw["recipients"]]})
            await self.settle_briefly()
        await self.settle()
        self.assertEqual(self.store.list("active"), [])
        self.assertEqual(self.store.list("incoming"), [])
        return connections

    @defer.inlineCallbacks
    def test_deliveryBatch(self):
        """
        With C{local_delivery_batch_limit = 2}, the deliveries under way
        together share a connection to local, which serves them as one
        batch.
        """
        self.makeManager({"local_delivery_batch_limit": "2"})
        connections = yield defer.Deferred.fromCoroutine(self.connectionsForTwoDeliveries())
        self.assertEqual(connections, 1)

    @defer.inlineCallbacks
    def test_deliveryBatchPerProcess(self):
        """
        With batches, C{local_destination_concurrency_limit} (2) counts
        local processes, each serving up to a batch: four deliveries to
        one mailbox are under way at once, on two connections.
        """
        self.makeManager({"local_delivery_batch_limit": "2"})
        connections = yield defer.Deferred.fromCoroutine(
            self.connectionsForTwoDeliveries(messages=5, underWay=4))
        self.assertEqual(connections, 2)

    @defer.inlineCallbacks
    def test_deliveryPerConnection(self):
        """
        With C{local_delivery_batch_limit = 1} every delivery under way
        has a connection of its own, as in Postfix.
        """
        self.makeManager({"local_delivery_batch_limit": "1"})
        connections = yield defer.Deferred.fromCoroutine(self.connectionsForTwoDeliveries())
        self.assertEqual(connections, 2)

    @defer.inlineCallbacks
    def test_deliveryBatchDefault(self):
        """
        By default local takes up to eight deliveries per connection: with
        two local processes for one mailbox, seventeen deliveries to it
        put sixteen under way, on two connections.
        """
        connections = yield defer.Deferred.fromCoroutine(
            self.connectionsForTwoDeliveries(messages=17, underWay=16))
        self.assertEqual(connections, 2)

    @defer.inlineCallbacks
    def test_fullActiveQueueSlowsInflow(self):
        """
        With the active queue full, qmgr raises the in-flow flag cleanup
        waits on; once a message leaves, it lowers it and takes up the
        mail left waiting without another trigger.
        """
        from tmta.common.flow import FLAG

        flag = os.path.join(self.directory, FLAG)
        self.makeManager({"qmgr_message_active_limit": "1"})
        self.held = []
        self.queue(["bob@localhost"])
        self.queue(["bob@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle_briefly())
        self.assertEqual(len(self.manager.active), 1)
        self.assertTrue(os.path.exists(flag))
        d, kw = self.held.pop(0)
        d.callback({"statuses": [{"offset": r["offset"], "status": SENT, "dsn": "2.0.0",
                                  "reason": "ok"} for r in kw["recipients"]]})
        yield defer.Deferred.fromCoroutine(self.settle_briefly())
        self.assertEqual(len(self.held), 1)
        self.assertEqual(self.store.list("incoming"), [])
        d, kw = self.held.pop(0)
        d.callback({"statuses": [{"offset": r["offset"], "status": SENT, "dsn": "2.0.0",
                                  "reason": "ok"} for r in kw["recipients"]]})
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertFalse(os.path.exists(flag))

    @defer.inlineCallbacks
    def test_newAndDeferredTakeTurns(self):
        """
        With the active queue full, new and deferred mail take turns for
        the room that frees up: neither starves the other.
        """
        self.makeManager({"qmgr_message_active_limit": "1"})
        self.held = []
        names = {}
        for n in range(3):
            names[self.queue([f"new{n}@localhost"])] = f"I{n}"
        for n in range(3):
            queueId = self.queue([f"old{n}@localhost"], queueName="deferred")
            os.utime(self.store.path("deferred", queueId), (0, 0))
            names[queueId] = f"D{n}"
        self.manager.start()
        order = []
        for _ in range(6):
            yield defer.Deferred.fromCoroutine(self.settle_briefly())
            [queueId] = list(self.manager.active)
            order.append(names[queueId])
            d, kw = self.held.pop(0)
            d.callback({"statuses": [{"offset": r["offset"], "status": SENT, "dsn": "2.0.0",
                                      "reason": "ok"} for r in kw["recipients"]]})
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(order, ["I0", "D0", "I1", "D1", "I2", "D2"])

    @defer.inlineCallbacks
    def test_backoffIntervals(self):
        """
        A deferred message waits as long as it has been queued, within
        minimal_backoff_time and maximal_backoff_time (300s, 4000s).
        """
        self.outcomes["carol@localhost"] = DEFERRED
        now = time.time()
        expected = {}
        for age, wait in ((10, 300), (1000, 1000), (100000, 4000)):
            expected[self.queue(["carol@localhost"], arrival=now - age)] = wait
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        for queueId, wait in expected.items():
            retry = os.stat(self.store.path("deferred", queueId)).st_mtime
            self.assertLess(abs(retry - now - wait), 5, (queueId, retry - now, wait))

    @defer.inlineCallbacks
    def test_transportUnavailable(self):
        queueId = self.queue(["x@remote.example"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("deferred"), [queueId])

    def logged(self):
        from twisted.logger import globalLogPublisher

        from tmta.logging import formatLine

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return lambda: [formatLine(e) for e in events
                        if e.get("log_namespace", "").startswith("tmta")]

    @defer.inlineCallbacks
    def test_deferralsLogged(self):
        """
        Recipients deferred because their transport failed them (it
        crashed mid-delivery, or could not be reached) each get their
        status=deferred line with the reason.
        """
        lines = self.logged()
        self.agentCrashes = True
        crashed = self.queue(["bob@localhost"])
        unreachable = self.queue(["x@remote.example"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(sorted(self.store.list("deferred")), sorted([crashed, unreachable]))
        deferred = [line for line in lines() if "status=deferred" in line]
        self.assertEqual(len(deferred), 2, lines())
        self.assertTrue(any(line.startswith(f"{crashed}: to=<bob@localhost>, relay=none")
                            and "(delivery agent local failed: " in line
                            for line in deferred), deferred)
        self.assertTrue(any(line.startswith(f"{unreachable}: to=<x@remote.example>")
                            and "(mail transport unavailable)" in line
                            for line in deferred), deferred)

    @defer.inlineCallbacks
    def test_strandedActiveTakenUp(self):
        """
        A file in active/ that the running queue manager is not working
        on (left by one replaced at a reload) is delivered at the next
        periodic scan, not at the next restart.
        """
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.queue(["bob@localhost"], queueName="active")
        self.manager.periodicScan()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("active"), [])
        self.assertEqual([r["address"] for s, c, kw in self.requests for r in kw["recipients"]],
                         ["bob@localhost"])

    @defer.inlineCallbacks
    def test_activeOfAnotherQueueManagerLeftAlone(self):
        """
        While another queue manager works on the same queue (master.cf
        may name two, as mailcow's does), a file in active/ may be the
        other's, under delivery: neither a start nor a periodic scan
        takes it back.  Once the other has gone, it is recovered.
        """
        import subprocess
        import sys

        lock = os.path.join(self.store.directory, "pid", "qmgr.lock")
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        other = subprocess.Popen(
            [sys.executable, "-c", "import fcntl, os, sys, time\n"
             f"fd = os.open({lock!r}, os.O_RDWR | os.O_CREAT)\n"
             "fcntl.lockf(fd, fcntl.LOCK_SH)\nprint('held', flush=True)\ntime.sleep(60)\n"],
            stdout=subprocess.PIPE)
        self.addCleanup(other.kill)
        self.assertEqual(other.stdout.readline(), b"held\n")
        queueId = self.queue(["bob@localhost"], queueName="active")
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.manager.periodicScan()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("active"), [queueId])
        self.assertEqual(self.requests, [])
        other.kill()
        other.wait()
        self.manager.periodicScan()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual([r["address"] for s, c, kw in self.requests for r in kw["recipients"]],
                         ["bob@localhost"])

    @defer.inlineCallbacks
    def test_stopWaitsForDeliveriesUnderWay(self):
        """
        Stopping starts no more deliveries, and fires only once those
        under way have answered and been recorded: a delivery is never
        made and then forgotten (to be made again by the next qmgr).
        """
        self.held = []
        self.queue(["bob@localhost"])
        self.queue(["carol@localhost", "dave@localhost"])
        self.manager.start()
        for _ in range(20):
            if self.held:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        started = len(self.held)
        self.assertGreater(started, 0)
        stopped = self.manager.stop()
        self.assertNoResult(stopped)
        for d, kw in self.held:
            d.callback({"statuses": [{"offset": r["offset"], "status": SENT, "dsn": "2.0.0",
                                      "reason": "ok"} for r in kw["recipients"]]})
        yield stopped
        self.assertEqual(len(self.held), started)
        delivered = {r["address"] for d, kw in self.held for r in kw["recipients"]}
        # What was delivered is recorded: it is not pending in any file.
        for queueId in self.store.list("active"):
            pending = {r.address for r in self.store.readEnvelope("active", queueId).pending()}
            self.assertFalse(pending & delivered, (queueId, pending, delivered))

    @defer.inlineCallbacks
    def test_deferTransports(self):
        """
        Mail for a transport in defer_transports waits, with its reason,
        until a flush.
        """
        self.makeManager({"defer_transports": "local"})
        queueId = self.queue(["bob@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.requests, [])
        self.assertEqual(self.store.list("deferred"), [queueId])
        self.assertEqual(self.store.readDeferLog(queueId), {"bob@localhost": "deferred transport"})
        self.manager.flush()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual([r["address"] for s, c, kw in self.requests for r in kw["recipients"]],
                         ["bob@localhost"])
        self.assertEqual(self.store.list("deferred"), [])

    @defer.inlineCallbacks
    def test_bounced(self):
        self.outcomes["nobody@localhost"] = BOUNCED
        queueId = self.queue(["nobody@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        bounces = [kw for s, c, kw in self.requests if c is BounceRecipients]
        self.assertEqual(len(bounces), 1)
        self.assertEqual(bounces[0]["queue_id"], queueId)
        self.assertEqual(bounces[0]["recipients"][0]["address"], "nobody@localhost")
        self.assertEqual(self.store.list("deferred"), [])

    @defer.inlineCallbacks
    def test_bounceServiceDownKeepsMail(self):
        self.outcomes["nobody@localhost"] = BOUNCED
        self.bounceFails = True
        queueId = self.queue(["nobody@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("deferred"), [queueId])
        self.assertEqual(len(self.store.readEnvelope("deferred", queueId).pending()), 1)

    @defer.inlineCallbacks
    def test_expired(self):
        queueId = self.queue(["x@remote.example"], arrival=time.time() - 6 * 86400,
                             queueName="deferred")
        os.utime(self.store.path("deferred", queueId), (0, 0))
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        bounces = [kw for s, c, kw in self.requests if c is BounceRecipients]
        self.assertEqual(bounces[0]["recipients"][0]["dsn"], "4.4.7")
        self.assertEqual(self.store.list("deferred"), [])

    @defer.inlineCallbacks
    def test_notDueStaysDeferred(self):
        queueId = self.queue(["bob@localhost"], queueName="deferred")
        later = time.time() + 3600
        os.utime(self.store.path("deferred", queueId), (later, later))
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.requests, [])
        self.assertEqual(self.store.list("deferred"), [queueId])

    @defer.inlineCallbacks
    def test_recoversActive(self):
        self.queue(["bob@localhost"], queueName="active")
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(len(self.requests), 1)
        self.assertEqual(self.store.list("active"), [])

    @defer.inlineCallbacks
    def test_corruptMovedAside(self):
        queueId = self.queue(["bob@localhost"])
        with open(self.store.path("incoming", queueId), "r+b") as f:
            f.truncate(30)
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("corrupt"), [queueId])
        self.assertEqual(self.requests, [])

    @defer.inlineCallbacks
    def test_incompleteIgnored(self):
        queueId, writer = self.store.create("incoming")
        writer.envelope(1.0, "", {})
        writer.flush()
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle())
        self.assertEqual(self.store.list("incoming"), [queueId])
        writer.abort()

    @defer.inlineCallbacks
    def test_destinationConcurrency(self):
        """
        With a delivery per process (C{local_delivery_batch_limit = 1}),
        no more deliveries to one recipient are under way than
        C{local_destination_concurrency_limit} allows.
        """
        started = []
        pending = []

        def connect(service):
            agent = FakeAgent(service, self)

            def call(command, **kw):
                started.append(kw["recipients"][0]["address"])
                d = defer.Deferred()
                pending.append((d, kw))
                return d

            agent.callRemote = call
            return defer.succeed(agent)

        self.makeManager({"local_delivery_batch_limit": "1"}, connect)
        for _ in range(5):
            self.queue(["bob@localhost"])
        self.manager.start()
        yield defer.Deferred.fromCoroutine(self.settle_briefly())
        # local_destination_concurrency_limit = 2 per recipient.
        self.assertEqual(len(started), 2)
        while pending:
            d, kw = pending.pop(0)
            d.callback({"statuses": [{"offset": r["offset"], "status": SENT, "dsn": "2.0.0",
                                      "reason": "ok"} for r in kw["recipients"]]})
            yield defer.Deferred.fromCoroutine(self.settle_briefly())
        self.assertEqual(len(started), 5)

    async def settle_briefly(self):
        for _ in range(5):
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d


class TransportQueueTests(TestCase):
    """
    L{TransportQueue} starts jobs within the transport's and each
    destination's limits, destinations taking turns.
    """

    def setUp(self):
        self.started = []
        self.queue = TransportQueue("local", 3, 2, self.start)

    def start(self, job):
        d = defer.Deferred()
        self.started.append((job, d))
        return d

    def job(self, destination):
        return Job(None, "local", destination, (destination, ""), [])

    def test_limits(self):
        for _ in range(5):
            self.queue.submit(self.job("a"))
        self.queue.submit(self.job("b"))
        self.queue.submit(self.job("c"))
        # Two for a (its limit), then b; c waits for the transport's limit.
        self.assertEqual([j.nexthop for j, _ in self.started], ["a", "a", "b"])
        self.started[0][1].callback(None)
        self.assertEqual([j.nexthop for j, _ in self.started[3:]], ["c"])
        self.started[1][1].callback(None)
        self.started[2][1].callback(None)
        self.assertEqual([j.nexthop for j, _ in self.started[4:]], ["a", "a"])
        self.assertEqual(self.queue.running, 3)
        self.assertEqual(self.queue.perDestination, {("a", ""): 2, ("c", ""): 1})

    def test_completedAfterNextStarted(self):
        """
        A job's bookkeeping (C{complete}) runs with its result once the
        next job for its place has been started, so that the transport
        does not wait for it.
        """
        seen = []

        def complete(result, job):
            seen.append((result, job.nexthop, [j.nexthop for j, _ in self.started]))

        queue = TransportQueue("local", 1, 1, self.start, complete)
        queue.submit(self.job("a"))
        queue.submit(self.job("b"))
        self.started[0][1].callback("answer")
        self.assertEqual(seen, [("answer", "a", ["a", "b"])])

    def test_synchronousCompletion(self):
        """
        Jobs that finish as they start leave the counts right and the
        line empty.
        """
        queue = TransportQueue("local", 1, 1, lambda job: defer.succeed(None))
        for _ in range(50):
            queue.submit(self.job("a"))
        self.assertEqual((queue.running, queue.perDestination, queue.waiting), (0, {}, {}))


class SchedulerFeedbackTests(TestCase):
    """
    Postfix's nqmgr concurrency window, on a L{task.Clock}: slow start,
    the limit, negative feedback, and dead destinations.
    """

    def setUp(self):
        self.clock = task.Clock()
        self.started = []
        self.suspended = []
        self.queue = TransportQueue(
            "smtp", 0, 20, self.start, suspend=lambda job, why: self.suspended.append((job, why)),
            initialConcurrency=5, cohortLimit=1, deadTime=300, clock=self.clock)

    def start(self, job):
        d = defer.Deferred()
        self.started.append((job, d))
        return d

    def job(self, nexthop):
        return Job(None, "smtp", nexthop, (nexthop, ""), [])

    def running(self, nexthop):
        return [d for job, d in self.started if job.nexthop == nexthop and not d.called]

    def test_slowStartUpToTheLimit(self):
        for _ in range(100):
            self.queue.submit(self.job("a.example"))
        self.assertEqual(len(self.running("a.example")), 5)
        # Each delivery that reaches the site opens the window by one:
        # its place is taken again, and one more starts.
        self.running("a.example")[0].callback(Outcome([]))
        self.assertEqual(self.queue.window(("a.example", "")), 6)
        self.assertEqual(len(self.running("a.example")), 6)
        seen, windows = [], []
        while len([j for j, d in self.started if not d.called]) and len(seen) < 200:
            running = self.running("a.example")
            seen.append(len(running))
            windows.append(self.queue.window(("a.example", "")))
            running[0].callback(Outcome([]))
        self.assertEqual(max(seen), 20)
        self.assertEqual(max(windows), 20)
        self.assertEqual(windows[:4], [6, 7, 8, 9])
        self.assertEqual(len(self.started), 100)
        # Done with it, the destination leaves no state behind.
        self.assertEqual(self.queue.destinations, {})

    def test_negativeFeedback(self):
        for _ in range(20):
            self.queue.submit(self.job("a.example"))
        queue = TransportQueue("smtp", 0, 20, self.start, initialConcurrency=5)
        for _ in range(20):
            queue.submit(self.job("b.example"))
        # Without a cohort limit, failures only close the window, down
        # to one.
        for expected in (4, 3, 2, 1, 1):
            self.running("b.example")[0].callback(Outcome([], "connect refused"))
            self.assertEqual(queue.window(("b.example", "")), expected)
        self.assertEqual(len(self.running("b.example")), 1)

    def test_deadDestinationDoesNotDelayOthers(self):
        for _ in range(20):
            self.queue.submit(self.job("dead.example"))
        self.queue.submit(self.job("live.example"))
        self.assertEqual(len(self.running("live.example")), 1)
        # Failed sessions in a row that add up to a whole window (a
        # cohort; 1/5 + 1/4 + 1/3 + 1/2 as the window shrinks): dead.
        failing = self.running("dead.example")
        self.assertEqual(len(failing), 5)
        for d in failing:
            d.callback(Outcome([], "connect to dead.example[192.0.2.1]:25: Connection refused"))
        # Its waiting mail is deferred at once, not tried.
        self.assertEqual(len(self.suspended), 15)
        self.assertEqual(self.suspended[0][1], "delivery temporarily suspended: connect to "
                         "dead.example[192.0.2.1]:25: Connection refused")
        self.assertEqual(len([j for j, d in self.started if j.nexthop == "dead.example"]), 5)
        # New mail for it too; mail for the live one goes on.
        self.queue.submit(self.job("dead.example"))
        self.queue.submit(self.job("live.example"))
        self.assertEqual(len(self.suspended), 16)
        self.running("live.example")[0].callback(Outcome([]))
        self.assertEqual(len(self.running("live.example")), 1)
        # After minimal_backoff_time it is tried again, from the
        # initial window.
        self.clock.advance(300)
        self.queue.submit(self.job("dead.example"))
        self.assertEqual(len(self.running("dead.example")), 1)
        self.assertEqual(self.queue.window(("dead.example", "")), 5)

    def test_successRevivesAtOnce(self):
        for _ in range(10):
            self.queue.submit(self.job("a.example"))
        running = self.running("a.example")
        for d in running[:4]:
            d.callback(Outcome([], "timed out"))
        # Windows shrank 5 → 4 → 3 → 2 → 1: 1/5 + 1/4 + 1/3 + 1/2 > 1.
        self.assertEqual(len(self.suspended), 5)
        # The fifth, still under way, got through: the site is alive.
        running[4].callback(Outcome([]))
        self.queue.submit(self.job("a.example"))
        self.assertEqual(len(self.running("a.example")), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_transportFailureIsNoFeedback(self):
        self.queue.submit(self.job("a.example"))
        self.running("a.example")[0].callback(Outcome(None, False))
        self.assertEqual(self.queue.window(("a.example", "")), 5)

    def test_feedbackValues(self):
        self.assertEqual(parseFeedback("1")(7), 1.0)
        self.assertAlmostEqual(parseFeedback("1/concurrency")(4), 0.25)
        self.assertAlmostEqual(parseFeedback("1/sqrt_concurrency")(4), 0.5)
        self.assertAlmostEqual(parseFeedback("1/8")(4), 0.125)
        self.assertRaises(ValueError, parseFeedback, "lots")
        self.assertRaises(ValueError, parseFeedback, "1/0")


class InFlowTests(TestCase):
    """
    cleanup's side of in_flow_delay, on a L{task.Clock}.
    """

    def test_waitsWhileFull(self):
        from tmta.common.flow import InFlowFlag, InFlowGate

        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "private"))
        clock = task.Clock()
        flag = InFlowFlag(directory)
        waited = []
        defer.Deferred.fromCoroutine(InFlowGate(clock, directory, 1.0).wait()).addCallback(
            waited.append)
        self.assertEqual(waited, [0.0])
        flag.set(True)
        defer.Deferred.fromCoroutine(InFlowGate(clock, directory, 1.0).wait()).addCallback(
            waited.append)
        clock.pump([0.1] * 3)
        flag.set(False)
        clock.pump([0.1])
        self.assertAlmostEqual(waited[1], 0.4)
        flag.set(True)
        defer.Deferred.fromCoroutine(InFlowGate(clock, directory, 1.0).wait()).addCallback(
            waited.append)
        clock.pump([0.1] * 20)
        self.assertAlmostEqual(waited[2], 1.0)

    def test_gateLooksOncePerPoll(self):
        """
        Having found room, the gate does not look at the flag again for
        C{poll} seconds; a queue that filled meanwhile holds the answers
        from then on, and a full queue is looked at every C{poll}.
        """
        from tmta.common.flow import InFlowFlag, InFlowGate

        directory = self.mktemp()
        os.makedirs(os.path.join(directory, "private"))
        clock = task.Clock()
        flag = InFlowFlag(directory)
        gate = InFlowGate(clock, directory, 1.0)
        self.assertFalse(gate.mayWait())
        flag.set(True)
        clock.advance(0.05)
        self.assertFalse(gate.mayWait())
        clock.advance(0.05)
        self.assertTrue(gate.mayWait())
        waited = []
        defer.Deferred.fromCoroutine(gate.wait()).addCallback(waited.append)
        clock.pump([0.1] * 2)
        flag.set(False)
        clock.pump([0.1])
        self.assertAlmostEqual(waited[0], 0.3)
        self.assertFalse(gate.mayWait())
        self.assertFalse(InFlowGate(clock, directory, 0.0).mayWait())
