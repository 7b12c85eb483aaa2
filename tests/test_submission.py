"""
Tests for L{tmta.submission}: a Twisted program submits mail to a
running tmta and hears the queue id only once the queue file is durable.
"""

import os
import subprocess
import sys
import textwrap
from email.message import EmailMessage

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import (
    MASTER_CF,
    REPO,
    FsyncRecorder,
    Master,
    freePort,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    waitFor,
)
from tests.test_cleanup import LocalRewriter
from tmta.cleanup.protocol import CleanupProtocol
from tmta.cleanup.state import Cleanup
from tmta.config import MainConfig
from tmta.queue.layout import createLayout
from tmta.queue.qfile import iterContent, readEnvelope
from tmta.queue.store import QueueStore
from tmta.submission import SubmissionClient, SubmissionFailed
from tmta.wire.connect import socketPath


class InProcessTests(TestCase):
    """
    Against a cleanup service listening on its public socket in this
    process, with a recorder of every fsync.
    """

    def setUp(self):
        self.queue = shortTemporaryDirectory(self)
        createLayout(self.queue)
        self.fsyncs = FsyncRecorder()
        self.store = QueueStore(self.queue, fsync=self.fsyncs)
        config = MainConfig({"myhostname": "mx.example.org"})
        cleanup = Cleanup(reactor, config, self.store, LocalRewriter(config),
                          lambda queueId: defer.succeed(None))
        path = socketPath(self.queue, "cleanup", private=False)
        self.port = reactor.listenUNIX(path, Factory.forProtocol(
            lambda: CleanupProtocol(cleanup)))
        self.addCleanup(self.port.stopListening)
        self.client = SubmissionClient(reactor, self.queue)
        self.addCleanup(self.client.close)

    @defer.inlineCallbacks
    def test_queueIdOnlyAfterFsync(self):
        message = EmailMessage()
        message["Subject"] = "from the application"
        message.set_content("hello\n")

        def answered(queueId):
            self.fsyncs.paths.append(("answered", queueId))
            return queueId

        queueId = yield self.client.submit("app@example.com", ["bob@example.org"],
                                           message).addCallback(answered)
        path = self.store.path("incoming", queueId)
        self.assertEqual(self.fsyncs.paths,
                         [path, os.path.dirname(path), ("answered", queueId)])
        with self.store.open("incoming", queueId) as f:
            envelope = readEnvelope(f)
            text = b"".join(iterContent(f, envelope))
        self.assertEqual(envelope.sender, "app@example.com")
        self.assertEqual([r.address for r in envelope.recipients], ["bob@example.org"])
        self.assertIn(b"Subject: from the application\n", text)
        self.assertIn(b"(tmta, from userid", text)
        self.assertNotIn(b"\r\n", text)

    @defer.inlineCallbacks
    def test_largeMessageBytes(self):
        body = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * 1
        body += (b"y" * 998 + b"\r\n") * 300
        queueId = yield self.client.submit("", ["bob@example.org"], body)
        with self.store.open("incoming", queueId) as f:
            envelope = readEnvelope(f)
            text = b"".join(iterContent(f, envelope))
        self.assertEqual(envelope.sender, "")
        self.assertTrue(text.endswith((b"y" * 998 + b"\n") * 300))

    @defer.inlineCallbacks
    def test_refusedAddresses(self):
        for sender, recipients in (("a@b", []), ("a\r\nRCPT@b", ["x@y"]), ("a@b", [""])):
            with self.assertRaises(SubmissionFailed) as caught:
                yield self.client.submit(sender, recipients, b"x\n")
            self.assertFalse(caught.exception.temporary)


class DownTests(TestCase):
    @defer.inlineCallbacks
    def test_tmtaDownIsTemporary(self):
        queue = shortTemporaryDirectory(self)
        createLayout(queue)
        client = SubmissionClient(reactor, queue)
        with self.assertRaises(SubmissionFailed) as caught:
            yield client.submit("app@example.com", ["bob@example.org"], b"Subject: x\n\nx\n")
        self.assertTrue(caught.exception.temporary)
        self.assertEqual(caught.exception.code, 421)
        leftovers = [n for _, _, names in os.walk(os.path.join(queue, "incoming"))
                     for n in names]
        self.assertEqual(leftovers, [])


PROGRAM = """\
import sys
from twisted.internet.task import react
from tmta.submission import SubmissionClient

def main(reactor, config):
    client = SubmissionClient.fromConfigDirectory(reactor, config)
    d = client.submit("app@example.com", ["bob@localhost"],
                      b"Subject: from a Twisted program\\n\\nhello\\n")
    return d.addCallback(print)

react(main, sys.argv[1:])
"""


class RunningTmtaTests(SynchronousTestCase):
    def test_programSubmitsToTwistdTmta(self):
        """
        A Twisted program of a few lines submits to a running
        C{twistd tmta} and the mail is delivered.
        """
        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "localhost", "mydestination": "localhost",
            **localMaildirs(spool + "/"),
        }, MASTER_CF.format(port=freePort())).start()
        self.addCleanup(master.stop)
        program = os.path.join(base, "submit.py")
        with open(program, "w") as f:
            f.write(textwrap.dedent(PROGRAM))
        result = subprocess.run([sys.executable, program, master.directory],
                                capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, PYTHONPATH=REPO))
        self.assertEqual(result.returncode, 0, result.stderr)
        queueId = result.stdout.strip()
        waitFor(lambda: maildirMessages(spool).get("bob"), what="delivery")
        waitFor(lambda: f"{queueId}: to=<bob@localhost>" in master.log(), what="the log line")
        self.assertIn(b"Subject: from a Twisted program", maildirMessages(spool)["bob"][0])


class TwistTests(SynchronousTestCase):
    def test_twistRunsTmta(self):
        """
        C{twist tmta} runs the master as C{twistd -n tmta} does.
        """
        from tests.support import sendMessage, stopProcess, testAccount

        base = shortTemporaryDirectory(self)
        conf = os.path.join(base, "conf")
        os.makedirs(conf)
        port = freePort()
        spool = os.path.join(base, "mail")
        settings = {"queue_directory": os.path.join(base, "queue"), "inet_protocols": "ipv4",
                    "myhostname": "localhost", "mydestination": "localhost",
                    **localMaildirs(spool + "/")}
        if os.getuid() == 0:
            settings["mail_owner"] = testAccount()
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=port))
        log = open(os.path.join(base, "twist.log"), "w+")
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.application.twist._twist import Twist; "
             "Twist.main()", "--log-format=text", "tmta", "-c", conf],
            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=REPO))

        self.addCleanup(stopProcess, process)
        waitFor(lambda: "daemon started" in open(log.name).read() or process.poll() is not None,
                what="the master")
        sendMessage(port, "alice@example.com", ["bob@localhost"], "via twist")
        waitFor(lambda: maildirMessages(spool).get("bob"), what="delivery")
