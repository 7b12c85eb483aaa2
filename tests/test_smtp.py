"""
Tests for the smtp delivery agent (L{tmta.smtp}): the client protocol
against a scripted server, and a real master relaying through
C{relayhost} to Postfix's smtp-sink on loopback.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support import MASTER_CF as MAIL_PATH_MASTER_CF
from tests.support import (
    REPO,
    Master,
    endToEnd,
    freePort,
    localMaildirs,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    waitFor,
)
from tmta.smtp.client import SMTPClient, transparent
from tmta.smtp.transaction import SessionFailed, Timeouts, Transaction


class TransparencyTests(SynchronousTestCase):
    def test_crlfAndDots(self):
        self.assertEqual(transparent(b"a\n.b\n..c\r\nd"), b"a\r\n..b\r\n...c\r\nd\r\n.\r\n")
        self.assertEqual(transparent(b""), b".\r\n")


class ClientTests(SynchronousTestCase):
    def session(self, recipients=("a@x.example", "b@x.example"), lmtp=False):
        self.clock = Clock()
        self.transaction = Transaction("s@y.example", list(recipients), b"Subject: t\n\n.hi\n")
        self.client = SMTPClient("me.example", self.clock,
                                 Timeouts(greeting=10, helo=10, mail=10, rcpt=10, dataInit=10,
                                          dataDone=10, quit=10), lmtp=lmtp)
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        self.opened = []
        self.client.ready.addBoth(self.opened.append)
        self.results = []

    def send(self, transaction=None):
        d = defer.Deferred.fromCoroutine(self.client.send(transaction or self.transaction))
        d.addBoth(self.results.append)

    def say(self, *lines):
        self.client.dataReceived(b"".join(line.encode() + b"\r\n" for line in lines))

    def sent(self):
        value = self.transport.value().decode()
        self.transport.clear()
        return value

    def test_perRecipientResults(self):
        self.session()
        self.say("220 sink ESMTP")
        self.assertEqual(self.sent(), "EHLO me.example\r\n")
        self.say("250-sink", "250-SIZE 1000", "250 8BITMIME")
        self.assertEqual(self.opened, [self.client])
        self.send()
        self.assertEqual(self.sent(), "MAIL FROM:<s@y.example> SIZE=16\r\n")
        self.say("250 ok")
        self.assertEqual(self.sent(), "RCPT TO:<a@x.example>\r\n")
        self.say("550 5.1.1 no such user")
        self.say("250 2.1.5 ok")
        self.assertEqual(self.sent(), "RCPT TO:<b@x.example>\r\nDATA\r\n")
        self.say("354 go")
        self.assertEqual(self.sent(), "Subject: t\r\n\r\n..hi\r\n.\r\n")
        self.say("250 2.0.0 queued as X")
        [t] = self.results
        self.assertEqual(t.replies["a@x.example"].code, 550)
        self.assertEqual(t.replies["a@x.example"].dsn, "5.1.1")
        self.assertEqual(str(t.final), "250 2.0.0 queued as X")
        self.assertTrue(self.client.usable)
        self.client.quit()
        self.assertEqual(self.sent(), "QUIT\r\n")

    def test_pipelinedAndReused(self):
        """
        With PIPELINING the envelope and DATA go in one write; the
        session then carries a second transaction after a RSET-free
        start (the first ended cleanly), and a third after RSET (the
        second was refused).
        """
        self.session(recipients=["a@x.example"])
        self.say("220 ok", "250-ok", "250 PIPELINING")
        self.sent()
        self.send()
        self.assertEqual(self.sent(), "MAIL FROM:<s@y.example>\r\nRCPT TO:<a@x.example>\r\n"
                                      "DATA\r\n")
        self.say("250 ok", "250 ok", "354 go")
        self.sent()
        self.say("250 done")
        self.assertEqual(str(self.results[-1].final), "250 done")
        second = Transaction("s@y.example", ["b@x.example"], b"x\n")
        self.send(second)
        self.assertEqual(self.sent(), "MAIL FROM:<s@y.example>\r\nRCPT TO:<b@x.example>\r\n"
                                      "DATA\r\n")
        self.say("250 ok", "550 no", "503 no valid recipients")
        self.assertEqual(self.results[-1].replies["b@x.example"].code, 550)
        third = Transaction("s@y.example", ["c@x.example"], b"x\n")
        self.send(third)
        self.assertEqual(self.sent(), "RSET\r\n")

    def test_tooBigForTheServer(self):
        """
        A message over the server's SIZE is refused for good without
        being sent (5.3.4).
        """
        self.session(recipients=["a@x.example"])
        self.say("220 ok", "250-ok", "250 SIZE 10")
        self.sent()
        self.send()
        [failure] = self.results
        self.assertEqual(failure.value.reply.code, 552)
        self.assertEqual(failure.value.reply.dsn, "5.3.4")
        self.assertEqual(self.sent(), "")
        # The client decided, not the server: no "host ... said".
        from tmta.smtp.agent import _failure

        self.assertRegex(_failure("mx.x.example[192.0.2.1]:25", failure.value),
                         r"^message size \d+ exceeds size limit 10 of server "
                         r"mx\.x\.example\[192\.0\.2\.1\]:25$")

    def test_eightBitToSevenBitServer(self):
        """
        An 8-bit message to a server without 8BITMIME goes as
        quoted-printable; to one with it, as it is, with BODY=8BITMIME.
        """
        body = "Content-Type: text/plain; charset=utf-8\n\nGr\u00fc\u00dfe\n".encode()
        for offered, expected, mail in (
                ("250 ok", b"Gr=C3=BC=C3=9Fe\r\n", "MAIL FROM:<s@y.example>\r\n"),
                ("250 8BITMIME", "Gr\u00fc\u00dfe\r\n".encode(),
                 "MAIL FROM:<s@y.example> BODY=8BITMIME\r\n")):
            self.session(recipients=["a@x.example"])
            self.say("220 ok", "250-ok", offered)
            self.sent()
            self.send(Transaction("s@y.example", ["a@x.example"], body))
            self.assertEqual(self.sent(), mail)
            self.say("250 ok")
            self.sent()
            self.say("250 ok")
            self.sent()
            self.say("354 go")
            data = self.transport.value()
            self.assertIn(expected, data)
            self.assertEqual(b"quoted-printable" in data, offered == "250 ok")

    def test_smtputf8Required(self):
        self.session(recipients=["j\u00fcrgen@x.example"])
        self.say("220 ok", "250-ok", "250 8BITMIME")
        self.sent()
        self.send()
        [failure] = self.results
        self.assertEqual((failure.value.reply.code, failure.value.reply.dsn), (550, "5.6.7"))
        self.assertEqual(self.sent(), "")

    def test_heloFallback(self):
        self.session(recipients=["a@x.example"])
        self.say("220 old")
        self.sent()
        self.say("502 what")
        self.assertEqual(self.sent(), "HELO me.example\r\n")

    def test_timeout(self):
        """
        A server that accepts the connection and never answers costs one
        time-out.
        """
        self.session()
        self.clock.advance(10)
        [failure] = self.opened
        self.assertIsInstance(failure.value, SessionFailed)
        self.assertIn("timed out", failure.value.reason)
        self.assertTrue(self.transport.disconnecting)

    def test_lostAfterRecipients(self):
        self.session()
        self.say("220 ok", "250 ok")
        self.send()
        self.say("250 ok", "250 ok", "250 ok")
        self.client.connectionLost(None)
        [failure] = self.results
        self.assertEqual(failure.value.stage, "DATA")
        self.assertEqual(len(self.transaction.replies), 2)
        self.assertFalse(self.client.usable)

    def test_lmtpOneReplyEach(self):
        self.session(lmtp=True)
        self.say("220 lmtp")
        self.assertEqual(self.sent(), "LHLO me.example\r\n")
        self.say("250 ok")
        self.send()
        self.say("250 ok", "250 ok", "250 ok", "354 go")
        self.say("250 2.0.0 delivered", "452 4.2.2 over quota")
        [t] = self.results
        self.assertEqual([t.replies[r].code for r in t.recipients], [250, 452])


# The mail path's services, and the smtp client for mail that leaves.
MASTER_CF = MAIL_PATH_MASTER_CF + """\
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
"""


class RelayHarness:
    """
    A real master relaying through relayhost, to smtp-sink or another
    peer on C{self.sinkPort}.
    """

    def setUp(self):
        if shutil.which("smtp-sink") is None:
            raise SkipTest("Debian's postfix package (smtp-sink) is not installed")
        self.base = shortTemporaryDirectory(self)
        self.spool = os.path.join(self.base, "mail")
        self.dumps = os.path.join(self.base, "dumps")
        os.makedirs(self.dumps)
        os.chmod(self.dumps, 0o777)
        self.sinkPort = freePort()

    def startSink(self, *options):
        args = ["smtp-sink", "-u", "nobody", "-d", os.path.join(self.dumps, "%M."), *options,
                f"127.0.0.1:{self.sinkPort}", "20"]
        self.sink = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.stopSink)
        waitFor(lambda: _listening(self.sinkPort), what="smtp-sink to listen")

    def stopSink(self):
        if self.sink.poll() is None:
            self.sink.send_signal(signal.SIGTERM)
            self.sink.wait(10)

    def startMaster(self, **main):
        self.port = freePort()
        settings = {
            "mydestination": "localhost",
            **localMaildirs(self.spool + "/"),
            "relayhost": f"[127.0.0.1]:{self.sinkPort}",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
            "smtp_data_done_timeout": "5s",
        }
        settings.update(main)
        self.master = Master(os.path.join(self.base, "conf"), settings,
                             MASTER_CF.format(port=self.port)).start()
        self.addCleanup(self.master.stop)
        return self.master

    def dumped(self):
        from tests.support import dumpedMessages

        return dumpedMessages(self.dumps)


class RelayTests(RelayHarness, SynchronousTestCase):
    """
    A real master relaying through relayhost to smtp-sink.
    """

    def test_genericMaps(self):
        """
        smtp_generic_maps: the sender, the recipients and the address
        headers go out with the addresses the table gives (an address,
        or a whole domain by C{@domain}); the log names each recipient
        as the mail has it.
        """
        import smtplib

        self.startSink()
        self.startMaster(smtp_generic_maps="inline:{ alice@localhost=alice.smith@isp.example, "
                                           "team@remote.example=group@remote.example, "
                                           "@localhost=@isp.example }")
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        client.sendmail("alice@localhost", ["bob@remote.example", "team@remote.example"],
                        b"From: Alice <alice@localhost>\r\nTo: bob@remote.example\r\n"
                        b"Cc: carol@localhost,\r\n dave@elsewhere.example\r\n"
                        b"Subject: generic\r\n\r\nbody mentions alice@localhost\r\n")
        client.quit()
        waitFor(lambda: self.dumped(), what="the message at the sink")
        [text] = self.dumped()
        self.assertIn(b"X-Mail-Args: <alice.smith@isp.example>", text)
        self.assertIn(b"X-Rcpt-Args: <bob@remote.example>", text)
        self.assertIn(b"X-Rcpt-Args: <group@remote.example>", text)
        self.assertIn(b"\nFrom: Alice <alice.smith@isp.example>\n", text)
        self.assertIn(b"\nCc: carol@isp.example, dave@elsewhere.example\n", text)
        self.assertIn(b"\nbody mentions alice@localhost\n", text)
        waitFor(lambda: "to=<team@remote.example>" in self.master.log()
                and "status=sent" in self.master.log(), what="the log")

    def test_relayed(self):
        self.startSink()
        self.startMaster()
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example",
                                                            "carol@remote.example"], "away",
                              body="line\r\n.dot\r\n")
        waitFor(lambda: self.dumped(), what="the message at the sink")
        [text] = self.dumped()
        self.assertIn(b"Subject: away", text)
        self.assertIn(b"\n.dot", text)
        waitFor(lambda: "status=sent" in self.master.log(), what="the log line")
        log = self.master.log()
        self.assertIn(f"{queueId}: to=<bob@remote.example>, relay=127.0.0.1[127.0.0.1]:"
                      f"{self.sinkPort}", log)
        waitFor(lambda: log.count("status=sent") >= 2 or
                self.master.log().count("status=sent") >= 2)

    def test_connectionsReused(self):
        """
        Messages one after another to the same next hop share a
        connection: the log shows conn_use=N, and fewer connections than
        messages.
        """
        self.startSink()
        self.startMaster()
        for n in range(8):
            sendMessage(self.port, "alice@localhost", [f"r{n}@remote.example"], f"m{n}")
        waitFor(lambda: len(self.dumped()) == 8, what="eight messages at the sink")
        waitFor(lambda: self.master.log().count("status=sent") == 8, what="the log lines")
        log = self.master.log()
        reused = log.count(", conn_use=")
        self.assertGreater(reused, 0, log)

    def test_lmtpToUNIXSocket(self):
        """
        transport_maps sends a domain to LMTP on a UNIX socket under the
        queue directory (lmtp:unix:private/NAME, as Dovecot's users
        write it); smtp-sink -L answers per recipient.
        """
        self.startMaster(transport_maps="inline:{ lmtp.example=lmtp:unix:private/sink-lmtp }")
        path = os.path.join(self.master.queue, "private", "sink-lmtp")
        self.sink = subprocess.Popen(
            ["smtp-sink", "-L", "-u", "nobody", "-d", os.path.join(self.dumps, "%M."),
             f"unix:{path}", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.stopSink)
        waitFor(lambda: os.path.exists(path), what="the LMTP socket")
        os.chmod(path, 0o777)
        queueId = sendMessage(self.port, "alice@localhost", ["a@lmtp.example", "b@lmtp.example"],
                              "over lmtp")
        waitFor(lambda: self.master.log().count("status=sent") >= 2, what="both delivered")
        self.assertIn(f"{queueId}: to=<a@lmtp.example>, relay=unix[", self.master.log())
        self.assertTrue([d for d in self.dumped() if b"Subject: over lmtp" in d])

    def test_postfixMXRejectsOne(self):
        """
        A private Postfix as the receiving MX accepts one recipient and
        rejects the other: the good one is delivered, the sender gets
        one RFC 3464 notice naming only the rejected one, with Postfix's
        reply.
        """
        from tests.support import PrivatePostfix

        mx = PrivatePostfix(os.path.join(self.base, "postfix"), "mx.test", {
            "smtpd_recipient_restrictions":
                "check_recipient_access inline:{{ nobody@mx.test = REJECT no such mailbox }}, "
                "permit_mynetworks, reject_unauth_destination",
        })
        self.sinkPort = mx.port
        mx.start()
        self.addCleanup(mx.stop)
        self.startMaster()
        sendMessage(self.port, "alice@localhost", ["good@mx.test", "nobody@mx.test"], "two")
        waitFor(lambda: mx.messages(), what="the good recipient's copy at Postfix")
        [copy] = mx.messages()
        self.assertIn(b"Subject: two", copy)
        waitFor(lambda: maildirMessages(self.spool).get("alice"), what="the notice to alice")
        [notice] = maildirMessages(self.spool)["alice"]
        self.assertDeliveryStatus(notice, ["nobody@mx.test"], "Subject: two")
        self.assertIn(b"no such mailbox", notice)

    def test_smtpKilledInData(self):
        """
        kill -9 of the smtp worker while the server holds the DATA reply:
        the message is deferred, then delivered; nothing is lost.
        """
        from tests.support.processes import processName

        self.startSink("-w", "3")
        self.startMaster()
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "killed")
        waitFor(lambda: [p for p in self.master.workers() if processName(p) == "smtp"],
                what="an smtp worker")
        time.sleep(1)
        for pid in [p for p in self.master.workers() if processName(p) == "smtp"]:
            os.kill(pid, signal.SIGKILL)
        waitFor(lambda: f"{queueId}: to=<bob@remote.example>, relay=none" in self.master.log(),
                what="the deferral after the crash")
        waitFor(lambda: f"{queueId}: removed" in self.master.log(), timeout=30,
                what="delivery after the crash")
        self.assertTrue([d for d in self.dumped() if b"Subject: killed" in d])

    def test_hangingServerCostsOneTimeout(self):
        """
        A server that accepts and never greets costs its destination one
        time-out, and holds up no other destination.
        """
        import socket

        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(50)
        self.addCleanup(silent.close)
        silentPort = silent.getsockname()[1]
        self.startSink()
        self.startMaster(relayhost="", smtp_helo_timeout="8s",
                         transport_maps=f"inline:{{ silent.example=smtp:[127.0.0.1]:{silentPort}, "
                                        f"live.example=smtp:[127.0.0.1]:{self.sinkPort} }}")
        stuck = sendMessage(self.port, "alice@localhost", ["a@silent.example"], "stuck")
        started = time.monotonic()
        sendMessage(self.port, "alice@localhost", ["b@live.example"], "flows")
        waitFor(lambda: [d for d in self.dumped() if b"Subject: flows" in d], timeout=10,
                what="the live destination's mail")
        # Well within the silent server's time limit.
        self.assertLess(time.monotonic() - started, 6)
        waitFor(lambda: f"{stuck}: to=<a@silent.example>" in self.master.log(), timeout=30,
                what="the silent destination's deferral")
        self.assertIn("conversation timed out while receiving the initial greeting reply",
                      self.master.log())

    def test_fallbackRelay(self):
        """
        When the next hop does not take the mail, smtp_fallback_relay
        does.
        """
        self.startSink()
        self.startMaster(relayhost="", smtp_fallback_relay=f"[127.0.0.1]:{self.sinkPort}",
                         transport_maps=f"inline:{{ dead.example=smtp:[127.0.0.1]:{freePort()} }}")
        sendMessage(self.port, "alice@localhost", ["a@dead.example"], "fell back")
        waitFor(lambda: [d for d in self.dumped() if b"Subject: fell back" in d],
                what="delivery through the fallback relay")

    def test_loadOverReusedConnections(self):
        """
        1,000 messages from 20 concurrent smtp-source sessions all reach
        the sink through relayhost, over fewer connections than messages.
        """
        if shutil.which("smtp-source") is None:
            raise SkipTest("Debian's postfix package (smtp-source) is not installed")
        self.startSink()
        self.startMaster()
        result = subprocess.run(
            ["smtp-source", "-s", "20", "-m", "1000", "-l", "1000", "-f", "alice@localhost",
             "-t", "bob@remote.example", f"127.0.0.1:{self.port}"],
            capture_output=True, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: len(os.listdir(self.dumps)) >= 1000, timeout=120,
                what="1,000 messages at the sink")
        waitFor(lambda: self.master.log().count("status=sent") >= 1000, timeout=30,
                what="1,000 log lines")
        log = self.master.log()
        fresh = log.count("status=sent") - log.count(", conn_use=")
        self.assertLess(fresh, 1000 / 2, f"{fresh} new connections for 1,000 messages")

    def test_postfixRelaysToTmta(self):
        """
        The other direction: a private Postfix with tmta as its relayhost
        hands it mail, which tmta delivers locally.
        """
        from tests.support import PrivatePostfix

        self.startMaster(relayhost="")
        postfix = PrivatePostfix(os.path.join(self.base, "postfix"), "mx.test", {
            "relayhost": f"[127.0.0.1]:{self.port}",
        }).start()
        self.addCleanup(postfix.stop)
        sendMessage(postfix.port, "someone@mx.test", ["bob@localhost"], "via postfix")
        waitFor(lambda: maildirMessages(self.spool).get("bob"), timeout=30,
                what="the message in bob's Maildir")
        [text] = maildirMessages(self.spool)["bob"]
        self.assertIn(b"Subject: via postfix", text)
        self.assertIn(b"(Postfix)", text)

    def test_sinkDownDeferredThenDelivered(self):
        self.startMaster()
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "later")
        waitFor(lambda: "status=deferred (connect to" in self.master.log(), what="a deferral")
        self.assertIn("Connection refused", self.master.log())
        self.startSink()
        waitFor(lambda: self.dumped(), timeout=30, what="delivery once the sink is up")
        waitFor(lambda: f"{queueId}: removed" in self.master.log(), what="the queue file gone")

    def tmtaCommand(self, *args, input=None):
        environ = dict(os.environ, PYTHONPATH=REPO)
        return subprocess.run([sys.executable, "-m", "tmta.cli.admin", *args, "-c",
                               self.master.directory], capture_output=True, text=True,
                              env=environ, timeout=60, input=input)

    def test_queueListAndFlush(self):
        """
        Mail deferred because the next hop is down is listed with the
        reason; once the sink is back, a flush delivers it at once
        rather than after the backoff.
        """
        self.startMaster(minimal_backoff_time="300s", maximal_backoff_time="4000s",
                         queue_run_delay="300s")
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "flushed")
        waitFor(lambda: "status=deferred" in self.master.log(), what="a deferral")
        waitFor(lambda: queueId in self.tmtaCommand("queue", "list").stdout,
                what="the message in the listing")
        listing = self.tmtaCommand("queue", "list").stdout
        self.assertIn("alice@localhost", listing)
        self.assertIn("bob@remote.example", listing)
        self.assertIn("Connection refused", listing)
        self.assertRegex(listing, r"\n-- \d+ Kbytes in 1 Request\.\n")
        self.startSink()
        result = self.tmtaCommand("queue", "flush")
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: self.dumped(), timeout=10, what="delivery after the flush")
        waitFor(lambda: self.tmtaCommand("queue", "list").stdout == "Mail queue is empty\n",
                what="an empty queue")

    def test_queueTools(self):
        """
        list --json, show, delete, requeue and deliver on a real queue.
        """
        import json

        self.startMaster(minimal_backoff_time="300s", maximal_backoff_time="4000s",
                         queue_run_delay="300s")
        first = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "one")
        second = sendMessage(self.port, "alice@localhost", ["carol@remote.example"], "two")
        for queueId in (first, second):
            waitFor(lambda q=queueId: f"{q}: to=" in self.master.log(), what="the deferral")
        waitFor(lambda: len(self.tmtaCommand("queue", "list", "--json").stdout.splitlines())
                == 2 and "active" not in self.tmtaCommand("queue", "list", "--json").stdout,
                what="both deferred")
        listed = [json.loads(line) for line in
                  self.tmtaCommand("queue", "list", "--json").stdout.splitlines()]
        self.assertEqual({m["queue_id"] for m in listed}, {first, second})
        self.assertTrue(all(m["queue_name"] == "deferred" for m in listed))
        self.assertIn("Connection refused", listed[0]["recipients"][0]["delay_reason"])
        shown = self.tmtaCommand("queue", "show", first).stdout
        self.assertIn(f"*** ENVELOPE RECORDS deferred/{first} ***", shown)
        self.assertIn("recipient: bob@remote.example", shown)
        self.assertIn("Subject: one", shown)
        headers = self.tmtaCommand("queue", "show", "-h", first).stdout
        self.assertIn("Subject: one", headers)
        self.assertNotIn("ENVELOPE RECORDS", headers)
        self.assertNotIn("HEADER EXTRACTED / BODY", headers)
        envelope = self.tmtaCommand("queue", "show", "-e", first).stdout
        self.assertIn("recipient: bob@remote.example", envelope)
        self.assertNotIn("Subject:", envelope)
        body = self.tmtaCommand("queue", "show", "-b", first).stdout
        self.assertNotIn("Subject:", body)
        self.assertIn("*** HEADER EXTRACTED / BODY ***", body)
        result = self.tmtaCommand("queue", "delete", second)
        self.assertIn("deleted: 1 message", result.stderr)
        self.assertNotIn(second, self.tmtaCommand("queue", "list").stdout)
        self.assertEqual(self.tmtaCommand("queue", "delete", "../etc/passwd").returncode, 1)
        attempts = self.master.log().count(f"{first}: to=")
        self.assertIn("requeued: 1 message", self.tmtaCommand("queue", "requeue", "ALL").stderr)
        waitFor(lambda: self.master.log().count(f"{first}: to=") > attempts,
                what="another attempt after the requeue")
        self.startSink()
        waitFor(lambda: f"{first}*" not in self.tmtaCommand("queue", "list").stdout,
                what="the message deferred again")
        self.assertEqual(self.tmtaCommand("queue", "deliver", first).returncode, 0)
        waitFor(lambda: self.dumped(), timeout=10, what="delivery of the one message")

    def test_holdAndRelease(self):
        """
        Mail on hold is listed with C{!} and not delivered, even by a
        flush; released, it is delivered at once.
        """
        self.maillog = os.path.join(self.base, "maillog")
        self.startMaster(minimal_backoff_time="300s", maximal_backoff_time="4000s",
                         queue_run_delay="300s", maillog_file=self.maillog)
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "held")
        waitFor(lambda: queueId in self.tmtaCommand("queue", "list").stdout
                and f"{queueId}*" not in self.tmtaCommand("queue", "list").stdout,
                what="the message deferred")
        # The queue ids from standard input, as "mailq | ... | postsuper -h -".
        result = self.tmtaCommand("queue", "hold", "-", input=f"{queueId}\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("placed on hold: 1 message", result.stderr)
        # Logged as postsuper logs it, in the maillog (maillog_file).
        with open(self.maillog) as f:
            logged = f.read()
        self.assertIn("tmta/postsuper[", logged)
        self.assertIn(f": {queueId}: placed on hold\n", logged)
        self.assertIn(": Placed on hold: 1 message\n", logged)
        self.assertIn(f"{queueId}!", self.tmtaCommand("queue", "list").stdout)
        self.startSink()
        self.tmtaCommand("queue", "flush")
        time.sleep(2)
        self.assertEqual(self.dumped(), [])
        result = self.tmtaCommand("queue", "release", "ALL")
        self.assertIn("released from hold: 1 message", result.stderr)
        waitFor(lambda: self.dumped(), timeout=10, what="delivery after the release")
        self.assertEqual(self.tmtaCommand("queue", "hold", "NOTANID!").returncode, 1)

    def test_dsnParametersPassedOn(self):
        """
        RET, ENVID, NOTIFY and ORCPT reach a next hop that offers DSN
        (smtp-sink shows what it was given); that server reports, so
        no success notice comes from here.
        """
        self.startSink()
        self.startMaster()
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "dsn",
                              mailOptions=["RET=HDRS", "ENVID=id+2B1"],
                              rcptOptions=["NOTIFY=SUCCESS,FAILURE",
                                           "ORCPT=rfc822;Bob+2Bx@remote.example"])
        waitFor(lambda: self.dumped(), what="the message at the sink")
        [text] = self.dumped()
        self.assertIn(b"X-Mail-Args: <alice@localhost> RET=HDRS ENVID=id+2B1", text)
        self.assertIn(b"X-Rcpt-Args: <bob@remote.example> NOTIFY=SUCCESS,FAILURE "
                      b"ORCPT=rfc822;Bob+2Bx@remote.example", text)
        waitFor(lambda: f"{queueId}: removed" in self.master.log(), what="the message done")
        self.assertNotIn("delivery status notification", self.master.log())

    def test_softRejectDeferred(self):
        self.startSink("-r", "RCPT")
        self.startMaster()
        sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "soft")
        waitFor(lambda: "status=deferred" in self.master.log(), what="a deferral")
        self.assertIn("(in reply to RCPT TO command)", self.master.log())
        # smtp-sink says 354 even with no recipient; only the end of data
        # follows, never the message.
        self.assertFalse([d for d in self.dumped() if b"Subject: soft" in d])

    def test_hardRejectBounced(self):
        """
        A recipient refused for good is bounced: the sender gets a
        notice, and nothing reaches the sink.
        """
        self.startSink("-f", "RCPT")
        self.startMaster()
        sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "hard")
        waitFor(lambda: "status=bounced" in self.master.log(), what="a bounce")
        waitFor(lambda: maildirMessages(self.spool).get("alice"), what="the notice to alice")
        self.assertFalse([d for d in self.dumped() if b"Subject: hard" in d])
        [notice] = maildirMessages(self.spool)["alice"]
        self.assertDeliveryStatus(notice, ["bob@remote.example"], "Subject: hard")

    def test_notifyNeverAndRetHeaders(self):
        """
        NOTIFY=NEVER: bounced without a notice.  RET=HDRS: the notice
        returns the headers only, with the ENVID.
        """
        self.startSink("-f", "RCPT")
        self.startMaster()
        quiet = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "quiet",
                            rcptOptions=["NOTIFY=NEVER"])
        waitFor(lambda: f"{quiet}: removed" in self.master.log(), what="the silent bounce")
        self.assertIn(f"{quiet}: to=<bob@remote.example>", self.master.log())
        self.assertNotIn(f"{quiet}: sender non-delivery notification", self.master.log())
        sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "headers",
                    body="the body text\r\n", mailOptions=["RET=HDRS", "ENVID=ref-7"])
        waitFor(lambda: maildirMessages(self.spool).get("alice"), what="the notice to alice")
        [notice] = maildirMessages(self.spool)["alice"]
        self.assertDeliveryStatus(notice, ["bob@remote.example"], "Subject: headers")
        self.assertIn(b"Content-Type: text/rfc822-headers", notice)
        self.assertIn(b"Original-Envelope-Id: ref-7", notice)
        self.assertNotIn(b"the body text", notice)

    def test_5xxGreeting(self):
        """
        A server that greets with 5xx is skipped (the mail deferred when
        there is no other), or, with smtp_skip_5xx_greeting = no,
        refuses the mail for good.
        """
        self.startSink("-f", "CONNECT")
        self.startMaster()
        skipped = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "skip")
        waitFor(lambda: f"{skipped}: to=<bob@remote.example>" in self.master.log(),
                what="the attempt")
        self.assertIn("status=deferred", [line for line in self.master.log().splitlines()
                                          if f"{skipped}: to=" in line][0])
        self.master.stop()
        self.startMaster(smtp_skip_5xx_greeting="no")
        refused = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "refuse")
        waitFor(lambda: f"{refused}: to=<bob@remote.example>" in self.master.log(),
                what="the attempt")
        self.assertIn("status=bounced", [line for line in self.master.log().splitlines()
                                         if f"{refused}: to=" in line][0])

    def test_delayWarning(self):
        """
        Mail still deferred after delay_warning_time brings the sender
        one warning: an RFC 3464 report with Action: delayed.
        """
        self.startMaster(delay_warning_time="1s")
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "slow")
        waitFor(lambda: maildirMessages(self.spool).get("alice"), what="the warning to alice")
        [notice] = maildirMessages(self.spool)["alice"]
        self.assertIn(b"Subject: Delayed Mail (still being retried)", notice)
        self.assertIn(b"Action: delayed", notice)
        self.assertIn(b"Content-Type: text/rfc822-headers", notice)
        time.sleep(3)
        self.assertEqual(len(maildirMessages(self.spool)["alice"]), 1)
        self.assertIn(queueId, self.tmtaCommand("queue", "list").stdout)

    def test_doubleBounceToPostmaster(self):
        """
        Mail from the null sender that bounces goes to
        2bounce_notice_recipient when notify_classes lists 2bounce.
        """
        self.startSink("-f", "RCPT")
        self.startMaster(notify_classes="resource, software, 2bounce",
                         **{"2bounce_notice_recipient": "postmaster@localhost"})
        sendMessage(self.port, "", ["bob@remote.example"], "from nobody")
        waitFor(lambda: maildirMessages(self.spool).get("postmaster"),
                what="the copy to the postmaster")
        [notice] = maildirMessages(self.spool)["postmaster"]
        self.assertIn(b"Subject: Postmaster Copy: Undelivered Mail", notice)
        self.assertIn(b"Subject: from nobody", notice)

    def test_successNotice(self):
        """
        NOTIFY=SUCCESS for a local recipient: the sender gets a report
        saying it was delivered, with the ORCPT.
        """
        import email
        from email import policy

        self.startMaster()
        sendMessage(self.port, "alice@localhost", ["carol@localhost"], "reached",
                    rcptOptions=["NOTIFY=SUCCESS", "ORCPT=rfc822;carol@example.org"])
        waitFor(lambda: maildirMessages(self.spool).get("alice"), what="the notice to alice")
        [notice] = maildirMessages(self.spool)["alice"]
        message = email.message_from_bytes(notice, policy=policy.default)
        self.assertEqual(message["Subject"], "Successful Mail Delivery Report")
        _, status, _ = message.iter_parts()
        _, block = status.get_payload()
        self.assertEqual(block["Action"], "delivered")
        self.assertEqual(block["Status"], "2.0.0")
        self.assertEqual(block["Original-Recipient"], "rfc822;carol@example.org")
        self.assertTrue(maildirMessages(self.spool).get("carol"))

    def assertDeliveryStatus(self, notice, recipients, originalHeader):
        """
        C{notice} is an RFC 3464 report, as Python's email package reads
        it: one block per failed recipient, with the remote reply.
        """
        import email
        from email import policy

        message = email.message_from_bytes(notice, policy=policy.default)
        self.assertEqual(message.get_content_type(), "multipart/report")
        self.assertEqual(message.get_param("report-type"), "delivery-status")
        human, status, original = message.iter_parts()
        self.assertEqual(status.get_content_type(), "message/delivery-status")
        perMessage, *blocks = status.get_payload()
        self.assertEqual(perMessage["Reporting-MTA"].split(";")[0], "dns")
        self.assertTrue(perMessage["Arrival-Date"])
        self.assertEqual([b["Final-Recipient"] for b in blocks],
                         [f"rfc822; {r}" for r in recipients])
        for block in blocks:
            self.assertEqual(block["Action"], "failed")
            self.assertTrue(block["Status"].startswith("5."))
            self.assertTrue(block["Remote-MTA"].startswith("dns; "))
            self.assertTrue(block["Diagnostic-Code"].startswith("smtp; 5"))
        # The message itself when it fits bounce_size_limit, else its
        # headers.
        if original.get_content_type() == "message/rfc822":
            self.assertIn(originalHeader, original.get_content().as_string())
        else:
            self.assertEqual(original.get_content_type(), "text/rfc822-headers")
            self.assertIn(originalHeader, original.get_content())


def _listening(port):
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


ZONE = """
zone = [
    SOA('example.test', mname='ns.example.test', rname='root.example.test', serial=1,
        refresh=60, retry=60, expire=60, minimum=60),
    A('ns.example.test', '127.0.0.1'),
    MX('mx.example.test', 20, 'second.example.test'),
    MX('mx.example.test', 10, 'first.example.test'),
    A('first.example.test', '127.0.0.11'),
    A('second.example.test', '127.0.0.12'),
    A('plain.example.test', '127.0.0.13'),
    MX('null.example.test', 0, ''),
    MX('loop.example.test', 10, 'me.example.test'),
    MX('loop.example.test', 20, 'other.example.test'),
    A('me.example.test', '127.0.0.14'),
]
"""


class DNSTests(SynchronousTestCase):
    """
    Where the agent connects, through a twisted.names authoritative
    server on loopback serving a test zone.
    """

    def setUp(self):
        from twisted.internet import reactor

        from tests.support import loopbackResolver
        from tmta.config import MainConfig
        from tmta.smtp.agent import SMTPDeliveryAgent

        resolver = loopbackResolver(self, ZONE)
        self.agent = SMTPDeliveryAgent(reactor, MainConfig({"myhostname": "me.example.test"}),
                                       resolver=resolver)
        self.reactor = reactor

    def hosts(self, nexthop):
        from twisted.internet import reactor

        results = []
        d = defer.Deferred.fromCoroutine(self.agent.hosts.find(nexthop))
        d.addBoth(results.append)
        deadline = time.time() + 10
        while not results and time.time() < deadline:
            reactor.iterate(0.01)
        [result] = results
        return result

    def test_mxPreferenceOrder(self):
        self.assertEqual(self.hosts("mx.example.test"),
                         [("first.example.test", "127.0.0.11", 25),
                          ("second.example.test", "127.0.0.12", 25)])

    def test_addressWhenNoMX(self):
        self.assertEqual(self.hosts("plain.example.test:2525"),
                         [("plain.example.test", "127.0.0.13", 2525)])

    def test_bracketsSkipMX(self):
        self.assertEqual(self.hosts("[first.example.test]"),
                         [("first.example.test", "127.0.0.11", 25)])

    def test_noSuchDomainBounces(self):
        from tmta.smtp.nexthop import NextHopError

        failure = self.hosts("nowhere.example.test")
        self.assertIsInstance(failure.value, NextHopError)
        self.assertEqual((failure.value.dsn, failure.value.permanent), ("5.4.4", True))

    def test_nullMXBounces(self):
        failure = self.hosts("null.example.test")
        self.assertEqual((failure.value.dsn, failure.value.permanent), ("5.1.10", True))

    def test_serverFailureDefers(self):
        """
        A name server that does not answer: the mail waits (4.4.3), it
        is not bounced.
        """
        from twisted.internet import reactor
        from twisted.names import client

        from tmta.config import MainConfig
        from tmta.smtp.agent import SMTPDeliveryAgent
        from tmta.smtp.nexthop import NextHopError

        silent = client.Resolver(servers=[("127.0.0.1", freePort())], reactor=reactor,
                                 timeout=(1,))
        self.agent = SMTPDeliveryAgent(reactor, MainConfig({}), resolver=silent)
        failure = self.hosts("mx.example.test")
        self.assertIsInstance(failure.value, NextHopError)
        self.assertEqual((failure.value.dsn, failure.value.permanent), ("4.4.3", False))

    def test_loopBounces(self):
        failure = self.hosts("loop.example.test")
        self.assertEqual(failure.value.dsn, "5.4.6")
        self.assertIn("loops back to myself", failure.value.reason)


class SystemResolverTests(SynchronousTestCase):
    """
    The smtp agent finds an MX through the system's /etc/resolv.conf, as
    in production: a private mount and network namespace gives the test
    its own resolv.conf and a DNS server on its own loopback.
    """

    def test_mxThroughResolvConf(self):
        endToEnd()
        if os.geteuid() != 0 or shutil.which("unshare") is None or \
                shutil.which("smtp-sink") is None:
            raise SkipTest("needs root, unshare and smtp-sink")
        probe = subprocess.run(["unshare", "-mn", "true"], capture_output=True)
        if probe.returncode != 0:
            raise SkipTest("cannot make a private namespace here")
        driver = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resolvdriver.py")
        result = subprocess.run(["unshare", "-mn", sys.executable, driver],
                                capture_output=True, text=True, timeout=120)
        self.assertIn("DELIVERED", result.stdout, result.stdout + result.stderr)
        # The best MX refuses connections; the second takes the mail.
        self.assertIn("relay=second.example.test[127.0.0.12]:25", result.stdout)


class SessionLimitTests(TestCase):
    """
    smtp_mx_session_limit: servers that talk but refuse for now count
    against it; connections that fail do not.
    """

    @defer.inlineCallbacks
    def test_sessionsCounted(self):
        from twisted.internet import reactor

        from tmta.config import MainConfig
        from tmta.delivery import DEFERRED, DeliveryRequest, RequestRecipient
        from tmta.smtp.agent import SMTPDeliveryAgent
        from tmta.smtp.transaction import Reply

        tried = []

        class Busy:
            def __init__(self):
                self.ready = defer.fail(SessionFailed("initial greeting",
                                                      Reply(421, "4.3.2 busy")))

        def connect(address, port, factory):
            tried.append(address)
            if address == "127.0.0.1":
                return defer.fail(ConnectionRefusedError())
            return defer.succeed(Busy())

        class FourHosts:
            async def find(self, nexthop):
                return [("a", "127.0.0.1", 25), ("b", "127.0.0.2", 25), ("c", "127.0.0.3", 25),
                        ("d", "127.0.0.4", 25)]

        agent = SMTPDeliveryAgent(reactor, MainConfig({}), resolver=object(), connect=connect,
                                  hosts=FourHosts())

        class Request(DeliveryRequest):
            def content(self):
                return iter([b"Subject: x\n\nbody\n"])

        request = Request("6616754DEA88102EF8", "", "a@b.example", "example.test",
                          [RequestRecipient("r@example.test", "r@example.test", 10)])
        result = yield agent.deliver(request)
        [status] = result.statuses
        self.assertEqual(status.status, DEFERRED)
        # No server took the session: the destination failed as a whole,
        # which the queue manager's scheduler takes as negative feedback.
        self.assertEqual(result.siteFailure, status.reason)
        self.assertIn("4.3.2 busy", result.siteFailure)
        # The refused connection did not count; two sessions did.
        self.assertEqual(tried, ["127.0.0.1", "127.0.0.2", "127.0.0.3"])


class AddressTests(TestCase):
    """
    Which addresses the agent tries, and from which address it connects:
    inet_protocols, smtp_address_preference, smtp_host_lookup and
    smtp_bind_address.
    """

    def agent(self, **settings):
        from twisted.internet import reactor

        from tmta.config import MainConfig
        from tmta.smtp.agent import SMTPDeliveryAgent

        return SMTPDeliveryAgent(reactor, MainConfig(settings), resolver=object())

    def test_protocolsAndPreference(self):
        addresses = ["192.0.2.1", "2001:db8::1", "192.0.2.2"]
        self.assertEqual(self.agent(inet_protocols="ipv4").hosts.preferred(addresses),
                         ["192.0.2.1", "192.0.2.2"])
        self.assertEqual(self.agent(smtp_address_preference="ipv6").hosts.preferred(addresses),
                         ["2001:db8::1", "192.0.2.1", "192.0.2.2"])
        self.assertEqual(self.agent(smtp_address_preference="ipv4").hosts.preferred(
            list(reversed(addresses))), ["192.0.2.2", "192.0.2.1", "2001:db8::1"])

    @defer.inlineCallbacks
    def test_nativeLookup(self):
        """
        smtp_host_lookup = native uses the system's resolver, which knows
        localhost from /etc/hosts; no MX lookup is made with DNS off.
        """
        agent = self.agent(smtp_host_lookup="native", inet_protocols="ipv4",
                           smtp_dns_support_level="disabled")
        hosts = yield defer.Deferred.fromCoroutine(agent.hosts.find("localhost:2525"))
        self.assertEqual(hosts, [("localhost", "127.0.0.1", 2525)])

    @defer.inlineCallbacks
    def test_bindAddress(self):
        from twisted.internet import protocol, reactor

        seen = defer.Deferred()

        class Greeter(protocol.Protocol):
            def connectionMade(self):
                seen.callback(self.transport.getPeer().host)
                self.transport.write(b"220 test\r\n")

        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Greeter),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        agent = self.agent(smtp_bind_address="127.0.0.2")
        connected = yield agent._connectTCP("127.0.0.1", port.getHost().port,
                                            protocol.Factory.forProtocol(protocol.Protocol))
        self.addCleanup(connected.transport.loseConnection)
        self.assertEqual((yield seen), "127.0.0.2")


class ProtocolErrorTests(TestCase):
    """
    notify_classes = protocol: a server that breaks SMTP costs the
    delivery an attempt, and the postmaster gets the session's
    transcript.
    """

    @defer.inlineCallbacks
    def test_transcriptToPostmaster(self):
        from twisted.internet import protocol, reactor

        from tmta.config import MainConfig
        from tmta.delivery import DEFERRED, DeliveryRequest, RequestRecipient
        from tmta.smtp.agent import SMTPDeliveryAgent

        class Garbled(protocol.Protocol):
            def connectionMade(self):
                self.transport.write(b"220 garbled.example ESMTP\r\n")

            def dataReceived(self, data):
                self.transport.write(b"hello, whoever you are\r\n")

        port = reactor.listenTCP(0, protocol.Factory.forProtocol(Garbled),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        notices = []

        def postmaster(recipient, text):
            notices.append((recipient, text))
            return defer.succeed("NOTICEID")

        agent = SMTPDeliveryAgent(reactor, MainConfig({"notify_classes": "protocol"}),
                                  resolver=object(), postmaster=postmaster)
        self.addCleanup(agent.cache.close)

        class Request(DeliveryRequest):
            def content(self):
                return iter([b"Subject: x\n\nbody\n"])

        request = Request("6616754DEA88102EF8", "", "a@b.example",
                          f"[127.0.0.1]:{port.getHost().port}",
                          [RequestRecipient("r@example.test", "r@example.test", 10)])
        result = yield agent.deliver(request)
        [status] = result.statuses
        self.assertEqual(status.status, DEFERRED)
        self.assertIn("protocol error with 127.0.0.1[127.0.0.1]:", status.reason)
        self.assertIn("malformed reply", status.reason)
        [(recipient, text)] = notices
        self.assertEqual(recipient, "postmaster")
        self.assertIn(b"Subject: tmta SMTP client: errors from 127.0.0.1[127.0.0.1]:", text)
        self.assertIn(b" In: 220 garbled.example ESMTP", text)
        self.assertIn(b" Out: EHLO ", text)
        self.assertIn(b" In: hello, whoever you are", text)
