"""
End-to-end tests of smtpd services as operators configure them: Debian's
stock master.cf with its submission and submissions lines uncommented,
and a policy server run by spawn(8) (Debian's postfix-policyd-spf-python)
reached with check_policy_service.
"""

import os
import shutil
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import (
    MASTER_CF,
    Master,
    TestCA,
    freePort,
    freePorts,
    localMaildirs,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    waitFor,
)
from tests.test_config import STOCK_MASTER_CF, _uncommented
from tmta.sasl.passwords import changeTable


def _swaks(port, *options, user="bob", password="secret"):
    auth = ["--auth", "PLAIN", "--auth-user", user, "--auth-password", password] if user else []
    return subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(port), "--from", "alice@example.com",
         "--to", "bob@localhost", *options, *auth],
        capture_output=True, text=True, timeout=60)


class StockSubmissionTests(SynchronousTestCase):
    """
    Debian's stock master.cf, submission and submissions uncommented
    (with their C{-o} overrides untouched), on loopback test ports.
    """

    def setUp(self):
        if shutil.which("swaks") is None or not os.path.exists(STOCK_MASTER_CF):
            raise SkipTest("needs swaks and Debian's postfix package")
        self.base = shortTemporaryDirectory(self)
        self.spool = os.path.join(self.base, "mail")
        ca = TestCA(os.path.join(self.base, "ca"))
        self.certFile, self.keyFile = ca.server("localhost")
        self.passwords = os.path.join(self.base, "sasl_passwd")
        changeTable(self.passwords, "bob", "secret")
        os.chmod(self.passwords, 0o644)

    def start(self, edit=lambda text: text, **main):
        with open(STOCK_MASTER_CF) as f:
            text = edit(_uncommented(f.read(), {"submission", "submissions"}))
        self.ports = dict(zip(("smtp", "submission", "submissions"), freePorts(3)))
        lines = []
        for line in text.splitlines():
            words = line.split()
            if words and not line[0].isspace() and not line.startswith("#") \
                    and words[1] == "inet":
                line = line.replace(words[0], f"127.0.0.1:{self.ports[words[0]]}", 1)
            lines.append(line)
        settings = {
            "myhostname": "localhost", "mydestination": "localhost",
            **localMaildirs(self.spool + "/"),
            "smtpd_tls_cert_file": self.certFile, "smtpd_tls_key_file": self.keyFile,
            "smtpd_sasl_type": "tmta", "smtpd_sasl_path": self.passwords,
            # Port 25 takes mail from outside only for this machine.
            "mynetworks": "127.0.0.2/32",
        }
        settings.update(main)
        self.master = Master(os.path.join(self.base, "conf"), settings,
                             "\n".join(lines) + "\n").start()
        self.addCleanup(self.master.stop)

    def delivered(self, count):
        waitFor(lambda: len(maildirMessages(self.spool).get("bob", [])) >= count,
                what=f"{count} deliveries")

    def test_submissionAndSubmissions(self):
        self.start()
        submission = _swaks(self.ports["submission"], "--tls")
        self.assertEqual(submission.returncode, 0, submission.stdout)
        smtps = _swaks(self.ports["submissions"], "--tlsc")
        self.assertEqual(smtps.returncode, 0, smtps.stdout)
        self.delivered(2)
        # Without TLS there is no AUTH and no mail on submission.
        plain = _swaks(self.ports["submission"], user=None)
        self.assertNotEqual(plain.returncode, 0)
        self.assertIn("530 5.7.0 Must issue a STARTTLS command first", plain.stdout)
        # Wrong password, then no credentials: refused.
        wrong = _swaks(self.ports["submission"], "--tls", password="wrong")
        self.assertIn("535 5.7.8", wrong.stdout)
        anonymous = _swaks(self.ports["submissions"], "--tlsc", user=None)
        self.assertIn("554 5.7.1 <bob@localhost>: Recipient address rejected", anonymous.stdout)

    def test_muaRestrictionsByName(self):
        """
        C{-o} values that name main.cf parameters
        (C{$mua_client_restrictions}) are expanded as Postfix does.
        """
        def edit(text):
            return text.replace("-o smtpd_client_restrictions=\n",
                                "-o smtpd_client_restrictions=$mua_client_restrictions\n")

        self.start(edit, mua_client_restrictions="permit_sasl_authenticated, reject")
        ok = _swaks(self.ports["submission"], "--tls")
        self.assertEqual(ok.returncode, 0, ok.stdout)
        anonymous = _swaks(self.ports["submission"], "--tls", user=None)
        self.assertIn("554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: Access denied",
                      anonymous.stdout)
        self.delivered(1)


class SpawnPolicyTests(SynchronousTestCase):
    """
    Debian's postfix-policyd-spf-python, run by spawn from master.cf as
    its documentation says, answers check_policy_service.
    """

    def test_policydSpf(self):
        if not os.path.exists("/usr/bin/policyd-spf") or os.geteuid() != 0:
            raise SkipTest("needs root and Debian's postfix-policyd-spf-python")
        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        port = freePort()
        masterCf = MASTER_CF.format(port=port) + (
            "policyd-spf  unix  -       n       n       -       0       spawn\n"
            "  user=policyd-spf argv=/usr/bin/policyd-spf\n")
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost, $myhostname", **localMaildirs(spool + "/"),
            "policyd-spf_time_limit": "3600",
            "smtpd_recipient_restrictions": (
                "permit_sasl_authenticated, check_policy_service unix:private/policyd-spf"),
        }, masterCf).start()
        self.addCleanup(master.stop)
        for n in range(2):
            sendMessage(port, "alice@example.com", ["bob@localhost"], f"spf {n}")
        waitFor(lambda: len(maildirMessages(spool).get("bob", [])) == 2, what="deliveries")
        for text in maildirMessages(spool)["bob"]:
            headers = text.split(b"\n\n", 1)[0]
            # policyd-spf's answer for a loopback client, prepended.
            self.assertIn(b"X-Comment: SPF check N/A for local connections - "
                          b"client-ip=127.0.0.1; helo=test.example; "
                          b"envelope-from=alice@example.com; receiver=", headers)
            # Above the Received header, as Postfix puts it.
            self.assertLess(headers.index(b"X-Comment: "), headers.index(b"Received: "))


class ClientLimitTests(SynchronousTestCase):
    """
    smtpd_client_*_limit, counted by anvil across smtpd processes.
    """

    def start(self, **main):
        base = shortTemporaryDirectory(self)
        self.spool = os.path.join(base, "mail")
        self.port = freePort()
        masterCf = MASTER_CF.format(port=self.port) + (
            "anvil     unix  -       -       n       -       1       anvil\n")
        settings = {
            "myhostname": "localhost",
            "mydestination": "localhost, $myhostname", **localMaildirs(self.spool + "/"),
            # One client per process: every session below has a process
            # of its own, so only anvil sees them all.
            "smtpd_process_client_limit": "1",
            "smtpd_client_event_limit_exceptions": "",
        }
        settings.update(main)
        self.master = Master(os.path.join(base, "conf"), settings, masterCf).start()
        self.addCleanup(self.master.stop)

    def connect(self):
        from tests.test_hostile import Session

        session = Session(self.port)
        self.addCleanup(session.close)
        return session

    def test_connectionRateAcrossProcesses(self):
        self.start(smtpd_client_connection_rate_limit="3")
        sessions = [self.connect() for _ in range(3)]
        for session in sessions:
            self.assertTrue(session.reply().startswith(b"220 "))
        self.assertGreaterEqual(len(self.master.workers("smtpd")), 3)
        refused = self.connect()
        self.assertEqual(refused.reply(),
                         b"421 4.7.0 localhost Error: too many connections from 127.0.0.1")
        waitFor(lambda: "Connection rate limit exceeded: 4 from localhost[127.0.0.1] for "
                        "service " in self.master.log(), what="the warning")

    def test_connectionCountFreedOnClose(self):
        self.start(smtpd_client_connection_count_limit="2")
        first, second = self.connect(), self.connect()
        for session in (first, second):
            self.assertTrue(session.reply().startswith(b"220 "))
        self.assertTrue(self.connect().reply().startswith(b"421 4.7.0"))
        first.command(b"QUIT\r\n")
        first.close()
        waitFor(lambda: self.connect().reply().startswith(b"220 "), what="a free slot")

    def test_messageRate(self):
        self.start(smtpd_client_message_rate_limit="2")
        for n in range(2):
            sendMessage(self.port, "alice@example.com", ["bob@localhost"], f"rate {n}")
        import smtplib

        with self.assertRaises(smtplib.SMTPSenderRefused) as caught:
            sendMessage(self.port, "alice@example.com", ["bob@localhost"], "one too many")
        self.assertEqual(caught.exception.smtp_code, 450)
        self.assertIn(b"too much mail from 127.0.0.1", caught.exception.smtp_error)


class ProcessLimitTests(SynchronousTestCase):
    def test_allBusyAnswers421(self):
        """
        With every smtpd process at its client limit and no more allowed,
        a new client hears 421 at once instead of hanging.
        """
        from tests.test_hostile import Session

        base = shortTemporaryDirectory(self)
        port = freePort()
        masterCf = MASTER_CF.format(port=port).replace(
            f"{port}      inet  n       -       n       -       -       smtpd",
            f"{port}      inet  n       -       n       -       1       smtpd")
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "localhost", "mydestination": "localhost",
            "smtpd_process_client_limit": "1",
        }, masterCf).start()
        self.addCleanup(master.stop)
        busy = Session(port)
        self.addCleanup(busy.close)
        self.assertTrue(busy.reply().startswith(b"220 "))
        turnedAway = Session(port)
        self.addCleanup(turnedAway.close)
        self.assertEqual(turnedAway.reply(), b"421 4.3.2 All server ports are busy")
        busy.command(b"QUIT\r\n")
        busy.close()
        waitFor(lambda: Session(port).reply().startswith(b"220 "), what="a free process")


class TranscriptTests(SynchronousTestCase):
    def test_protocolAndPolicyTranscripts(self):
        """
        With notify_classes protocol and policy, a session with a
        syntax error and a refused recipient is mailed to the
        postmaster, credentials masked.
        """
        from tests.test_hostile import Session

        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        port = freePort()
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "localhost", "mydestination": "localhost, $myhostname",
            **localMaildirs(spool + "/"), "mynetworks": "127.0.0.2/32",
            "notify_classes": "resource, software, protocol, policy",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        }, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        session = Session(port)
        self.addCleanup(session.close)
        session.reply()
        session.command(b"EHLO client.example\r\n")
        self.assertTrue(session.command(b"BOGUS\r\n").startswith(b"500"))
        self.assertTrue(session.command(b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n").startswith(b"503"))
        session.command(b"MAIL FROM:<a@example.com>\r\n")
        self.assertTrue(session.command(b"RCPT TO:<x@far.example>\r\n").startswith(b"554"))
        session.command(b"QUIT\r\n")
        waitFor(lambda: maildirMessages(spool).get("postmaster"), what="the transcript")
        [text] = maildirMessages(spool)["postmaster"]
        self.assertIn(b"Subject: tmta SMTP server: policy and protocol errors from "
                      b"localhost[127.0.0.1]", text)
        self.assertIn(b" In:  BOGUS\n Out: 500 5.5.2 Error: command not recognized\n", text)
        self.assertIn(b" In:  AUTH PLAIN ***\n", text)
        self.assertNotIn(b"AGJvYgBzZWNyZXQ", text)
        self.assertIn(b" Out: 554 5.7.1 <x@far.example>: Relay access denied\n", text)
        # An honest session earns none.
        sendMessage(port, "alice@example.com", ["bob@localhost"], "fine")
        waitFor(lambda: maildirMessages(spool).get("bob"), what="delivery")
        self.assertEqual(len(maildirMessages(spool)["postmaster"]), 1)


class AccessActionTests(SynchronousTestCase):
    def test_holdDiscardRedirect(self):
        """
        HOLD, DISCARD and REDIRECT from an access table act on the
        message in the queue.
        """
        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        table = os.path.join(base, "recipient_access")
        with open(table, "w") as f:
            f.write("carol@localhost DISCARD spam trap\n"
                    "dave@localhost REDIRECT erin@localhost\n"
                    "frank@localhost HOLD look first\n")
        port = freePort()
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "localhost", "mydestination": "localhost, $myhostname",
            **localMaildirs(spool + "/"),
            "smtpd_recipient_restrictions": f"check_recipient_access texthash:{table}",
        }, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        discarded = sendMessage(port, "alice@example.com", ["carol@localhost"], "trap")
        sendMessage(port, "alice@example.com", ["dave@localhost"], "redirected")
        held = sendMessage(port, "alice@example.com", ["frank@localhost"], "held")
        waitFor(lambda: maildirMessages(spool).get("erin"), what="the redirected message")
        self.assertIn(b"Subject: redirected", maildirMessages(spool)["erin"][0])
        waitFor(lambda: f"{discarded}: discarded" in master.log(), what="the discard")
        hold = os.path.join(master.queue, "hold")
        waitFor(lambda: any(held in names for _, _, names in os.walk(hold)),
                what="the held message in the hold queue")
        self.assertNotIn("carol", maildirMessages(spool))
        self.assertNotIn("frank", maildirMessages(spool))
        self.assertNotIn("dave", maildirMessages(spool))
