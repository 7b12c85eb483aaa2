"""
Tests for L{tmta.qmgr.active.MessageCompletion}: what qmgr records of a
transport's answer, in the queue file and in the queue, and whom it
tells.
"""

import os
import time

from twisted.internet import defer, reactor
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from tmta.bounce.commands import BounceRecipients
from tmta.config import MainConfig
from tmta.delivery import BOUNCED, DEFERRED, SENT
from tmta.qmgr.active import ActiveMessages, MessageCompletion, Outstanding
from tmta.qmgr.jobs import ActiveMessage, Job, Outcome
from tmta.qmgr.settings import QmgrSettings
from tmta.queue.layout import createLayout
from tmta.queue.qfile import openQueueFile, readEnvelope
from tmta.queue.store import QueueStore


class RecordingBounce:
    """
    The bounce service, as qmgr reaches it: the notices asked for.
    """

    def __init__(self, notices, failing=False):
        self.notices = notices
        self.failing = failing
        self.transport = StringTransport()

    def callRemote(self, command, **arguments):
        assert command is BounceRecipients
        if self.failing:
            return defer.fail(RuntimeError("bounce is down"))
        self.notices.append(arguments)
        return defer.succeed({"notice_id": "X"})


class MessageCompletionTests(TestCase):
    def setUp(self):
        directory = os.path.abspath(self.mktemp())
        createLayout(directory)
        self.store = QueueStore(directory)
        self.notices = []
        self.bounceFails = False
        self.active = ActiveMessages()
        self.outstanding = Outstanding()
        self.now = time.time()

    def completion(self, **settings):
        config = MainConfig(dict({"myhostname": "mx.example.org"}, **settings))

        def connect(service):
            return defer.succeed(RecordingBounce(self.notices, self.bounceFails))

        return MessageCompletion(reactor, QmgrSettings.fromConfig(config), self.store,
                                 self.active, connect, self.outstanding, lambda: self.now)

    def activate(self, recipients, arrival=None, notify=None):
        """
        A message queued and moved into C{active/}, as qmgr takes it up.
        """
        queueId, writer = self.store.create("incoming")
        writer.envelope(arrival or self.now, "alice@example.com", {})
        for address in recipients:
            writer.recipient(address, notify=(notify or {}).get(address, ""))
        writer.content(b"Subject: t\n\nbody\n")
        writer.commit()
        self.store.move(queueId, "incoming", "active")
        with openQueueFile(self.store.path("active", queueId)) as f:
            envelope = readEnvelope(f)
        message = ActiveMessage(queueId, envelope, self.now, jobs=1)
        self.active[queueId] = message
        return message

    def job(self, message):
        return Job(message, "local", "localhost", ("localhost", ""),
                   list(message.envelope.recipients))

    @staticmethod
    def statuses(message, outcomes):
        return [{"offset": r.offset, "status": outcomes[r.address],
                 "dsn": {SENT: "2.0.0", DEFERRED: "4.2.2", BOUNCED: "5.1.1"}[outcomes[r.address]],
                 "reason": f"test {outcomes[r.address]}"}
                for r in message.envelope.recipients]

    def remaining(self, queueName, queueId):
        """
        The recipients still to deliver in a queue file.
        """
        with openQueueFile(self.store.path(queueName, queueId)) as f:
            return [r.address for r in readEnvelope(f).pending()]

    @defer.inlineCallbacks
    def test_allDeliveredRemoves(self):
        completion = self.completion()
        message = self.activate(["a@localhost", "b@localhost"])
        job = self.job(message)
        self.outstanding.begin()
        yield completion.delivered(
            Outcome(self.statuses(message, {"a@localhost": SENT, "b@localhost": SENT}), None),
            job)
        yield self.outstanding.drained()
        self.assertEqual(self.store.list("active"), [])
        self.assertNotIn(message.queueId, self.active)
        self.assertEqual(self.notices, [])

    @defer.inlineCallbacks
    def test_mixedOutcome(self):
        """
        A delivered, a deferred and a bounced recipient: the sender gets
        one failure notice, the file moves to C{deferred/} with only the
        deferred recipient left, its retry time in the future.
        """
        completion = self.completion(minimal_backoff_time="300s")
        message = self.activate(["a@localhost", "b@localhost", "c@localhost"])
        self.outstanding.begin()
        completion.delivered(Outcome(self.statuses(message, {
            "a@localhost": SENT, "b@localhost": DEFERRED, "c@localhost": BOUNCED}), None),
            self.job(message))
        yield self.outstanding.drained()
        [notice] = self.notices
        self.assertEqual(notice["kind"], "failure")
        self.assertEqual([r["address"] for r in notice["recipients"]], ["c@localhost"])
        self.assertEqual(self.store.list("active"), [])
        self.assertEqual(self.remaining("deferred", message.queueId), ["b@localhost"])
        self.assertGreaterEqual(os.stat(self.store.path("deferred", message.queueId)).st_mtime,
                                self.now + 299)
        self.assertNotIn(message.queueId, self.active)

    @defer.inlineCallbacks
    def test_bounceUnreachableDefers(self):
        """
        When the failure notice cannot be sent, the bounced recipient is
        deferred instead: nobody is left untold.
        """
        self.bounceFails = True
        completion = self.completion()
        message = self.activate(["a@localhost"])
        self.outstanding.begin()
        completion.delivered(Outcome(self.statuses(message, {"a@localhost": BOUNCED}), None),
                             self.job(message))
        yield self.outstanding.drained()
        self.assertEqual(self.remaining("deferred", message.queueId), ["a@localhost"])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    @defer.inlineCallbacks
    def test_softBounce(self):
        """
        With C{soft_bounce = yes} a refusal is a deferral, with its
        detail kept as 4.x.y.
        """
        completion = self.completion(soft_bounce="yes")
        message = self.activate(["a@localhost"])
        self.outstanding.begin()
        completion.delivered(Outcome(self.statuses(message, {"a@localhost": BOUNCED}), None),
                             self.job(message))
        yield self.outstanding.drained()
        self.assertEqual(self.notices, [])
        self.assertEqual(self.remaining("deferred", message.queueId), ["a@localhost"])

    @defer.inlineCallbacks
    def test_tooOldBounces(self):
        """
        A deferral past C{maximal_queue_lifetime} returns the message.
        """
        completion = self.completion(maximal_queue_lifetime="1d")
        message = self.activate(["a@localhost"], arrival=self.now - 2 * 86400)
        self.outstanding.begin()
        completion.delivered(Outcome(self.statuses(message, {"a@localhost": DEFERRED}), None),
                             self.job(message))
        yield self.outstanding.drained()
        [notice] = self.notices
        self.assertEqual(notice["recipients"][0]["dsn"], "4.4.7")
        self.assertIn("message is too old", notice["recipients"][0]["reason"])
        self.assertEqual(self.store.list("active") + self.store.list("deferred"), [])

    @defer.inlineCallbacks
    def test_missingStatusDefers(self):
        """
        A recipient the agent said nothing about is deferred, and a
        status for a recipient it was not sent is ignored.
        """
        completion = self.completion()
        message = self.activate(["a@localhost", "b@localhost"])
        first = message.envelope.recipients[0]
        self.outstanding.begin()
        completion.delivered(Outcome([
            {"offset": first.offset, "status": SENT, "dsn": "2.0.0", "reason": "ok"},
            {"offset": 999999, "status": SENT, "dsn": "2.0.0", "reason": "gossip"}], None),
            self.job(message))
        yield self.outstanding.drained()
        self.assertEqual(self.remaining("deferred", message.queueId), ["b@localhost"])

    @defer.inlineCallbacks
    def test_successNotice(self):
        """
        NOTIFY=SUCCESS gets a success notice; the message is removed.
        """
        completion = self.completion()
        message = self.activate(["a@localhost"], notify={"a@localhost": "SUCCESS"})
        self.outstanding.begin()
        completion.delivered(Outcome(self.statuses(message, {"a@localhost": SENT}), None),
                             self.job(message))
        yield self.outstanding.drained()
        [notice] = self.notices
        self.assertEqual((notice["kind"], notice["recipients"][0]["action"]),
                         ("success", "delivered"))
        self.assertEqual(self.store.list("active"), [])
