"""
Milters (L{tmta.milter}, smtpd's and cleanup's) against real
ones, each a private instance on loopback: a milter on Sendmail's own
libmilter (Debian's python3-milter, scripted per test:
L{tests.support.milters.scripted}) for every action a milter may take,
and OpenDKIM signing and verifying.
"""

import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    REPO,
    UNPRIVILEGED_PYTHON,
    Master,
    endToEnd,
    freePort,
    freePorts,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    waitFor,
)
from tests.support.namespace import runNamespaceDriver

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPTED = os.path.join(os.path.dirname(__file__), "support", "milters", "scripted.py")


def _hasLibmilter() -> bool:
    return os.access(SYSTEM_PYTHON, os.X_OK) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import Milter"], capture_output=True).returncode == 0


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class ScriptedMilterTests(SynchronousTestCase):
    """
    Each action of a libmilter milter, through a real master.
    """

    def setUp(self):
        endToEnd()
        if not _hasLibmilter():
            raise self.skipTest("no libmilter for Python (Debian's python3-milter)")
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        self.spool = os.path.join(self.base, "mail")
        self.port = freePort()
        self.milterPort = freePort()
        self.log = os.path.join(self.base, "milter.log")

    def startMilter(self, unixSocket=None, **script):
        """
        Start the scripted milter, on the test's port, or on the UNIX
        socket C{unixSocket}.
        """
        path = os.path.join(self.base, "script.json")
        with open(path, "w") as f:
            json.dump(script, f)
        where = f"unix:{unixSocket}" if unixSocket else f"inet:{self.milterPort}@127.0.0.1"
        process = subprocess.Popen(
            [SYSTEM_PYTHON, SCRIPTED, where, path, self.log],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (process.terminate(), process.wait()))
        if unixSocket:
            waitFor(lambda: os.path.exists(unixSocket), what="the milter's socket")
            # As a milter's UMask 002 and group would let the mail system in.
            os.chmod(unixSocket, 0o777)
            return
        waitFor(lambda: _listening(self.milterPort), what="the milter")

    def startMaster(self, milters=None, **settings):
        main = {"myhostname": "mx.example.org", "mydestination": "localhost",
                "smtpd_milters": milters or f"inet:127.0.0.1:{self.milterPort}",
                **localMaildirs(self.spool + "/"), **settings}
        self.master = Master(os.path.join(self.base, "conf"), main,
                             MASTER_CF.format(port=self.port)).start()
        self.addCleanup(self.master.stop)

    def seen(self):
        entries = []
        if os.path.exists(self.log):
            with open(self.log) as f:
                entries = [json.loads(line) for line in f if line.strip()]
        return [e["message"] for e in entries if "message" in e]

    def client(self):
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
        self.addCleanup(lambda: client.close())
        return client

    def test_everyChange(self):
        """
        A milter's changes at the end of the message are all made:
        headers added, inserted and changed, a recipient added, the body
        replaced; it saw the envelope, the headers without the Received:
        header tmta added, the body with CRLF line ends, and the macros.
        """
        self.startMilter(eom_edits=[
            ["addheader", "X-Scripted", "yes"],
            ["insheader", 0, "X-Top", "first"],
            ["chgheader", "Subject", 1, "changed"],
            ["addrcpt", "<extra@localhost>"],
            ["replacebody", "replaced body\r\n"]])
        # A default for a macro the session gives no value (no AUTH).
        self.startMaster(milter_macro_defaults="{ {auth_type} = none }")
        client = self.client()
        client.ehlo("client.example")
        client.sendmail("alice@example.com", ["bob@localhost"],
                        b"Subject: original\r\nFrom: alice@example.com\r\n\r\nhello\r\n")
        waitFor(lambda: maildirMessages(self.spool).get("bob")
                and maildirMessages(self.spool).get("extra"), what="both deliveries")
        [message] = maildirMessages(self.spool)["bob"]
        text = message.decode()
        headers, _, body = text.partition("\n\n")
        self.assertEqual(body, "replaced body\n")
        self.assertIn("\nSubject: changed\n", headers)
        self.assertNotIn("original", headers)
        self.assertIn("X-Scripted: yes", headers.splitlines())
        # Inserted at the top: before tmta's own Received: header.
        self.assertLess(headers.index("X-Top: first"), headers.index("Received: from"))
        [seen] = self.seen()
        self.assertEqual(seen["sender"], "<alice@example.com>")
        self.assertEqual(seen["recipients"], ["<bob@localhost>"])
        self.assertEqual(seen["helo"], "client.example")
        self.assertEqual([name for name, _ in seen["headers"]], ["Subject", "From",
                                                                 "Date", "Message-Id"])
        self.assertEqual(seen["body"], "hello\r\n")
        self.assertEqual(seen["macros"]["connect"]["j"], "mx.example.org")
        self.assertEqual(seen["macros"]["connect"]["_"], "localhost [127.0.0.1]")
        self.assertEqual(seen["macros"]["mail"]["{mail_addr}"], "alice@example.com")
        self.assertEqual(seen["macros"]["mail"]["{auth_type}"], "none")
        self.assertNotIn("{auth_authen}", seen["macros"]["mail"])
        self.assertEqual(seen["macros"]["rcpt"]["{rcpt_addr}"], "bob@localhost")
        self.assertTrue(seen["macros"]["eom"]["i"])

    def test_refusals(self):
        """
        A milter's temporary failure of RCPT is the client's reply.
        """
        self.startMilter(envrcpt="tempfail")
        self.startMaster()
        client = self.client()
        client.ehlo("client.example")
        client.mail("alice@example.com")
        code, text = client.rcpt("bob@localhost")
        self.assertEqual((code, text), (451, b"4.7.1 Service unavailable - try again later"))
        client.rset()

    def test_endOfMessageRejected(self):
        """
        A milter's own reply refusing the message at its end is the
        client's reply, and nothing is delivered.
        """
        self.startMilter(eom=["550", "5.7.1", "no thanks"])
        self.startMaster()
        client = self.client()
        client.ehlo("client.example")
        with self.assertRaises(smtplib.SMTPDataError) as caught:
            client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(caught.exception.smtp_code, 550)
        self.assertEqual(caught.exception.smtp_error, b"5.7.1 no thanks")
        # The session goes on, and the milter with it.
        self.assertEqual(client.noop()[0], 250)
        time.sleep(0.5)
        self.assertEqual(maildirMessages(self.spool), {})

    def post(self, text: bytes, *args):
        """
        Post C{text} with tmta-sendmail as the ordinary account
        C{nobody}, through pickup.
        """
        if os.getuid() != 0:
            raise self.skipTest("needs root, to post as an ordinary account")
        if not os.access(UNPRIVILEGED_PYTHON, os.X_OK):
            raise self.skipTest(f"no Python for an ordinary account at {UNPRIVILEGED_PYTHON}")
        account = pwd.getpwnam("nobody")

        def becomeAccount():
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

        result = subprocess.run(
            [UNPRIVILEGED_PYTHON, "-c",
             "import sys; from tmta.cli.sendmail import main; sys.exit(main())", *args],
            input=text, capture_output=True, timeout=60, preexec_fn=becomeAccount,
            env={"PYTHONPATH": REPO, "MAIL_CONFIG": self.master.directory,
                 "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        self.assertEqual(result.returncode, 0, result.stderr)

    def startLocalMaster(self, **settings):
        """
        A master with pickup, whose mail goes through C{non_smtpd_milters}
        and whose smtpd has no milters.
        """
        main = {"myhostname": "mx.example.org", "mydestination": "localhost",
                "myorigin": "localhost",
                "non_smtpd_milters": f"inet:127.0.0.1:{self.milterPort}",
                **localMaildirs(self.spool + "/"), **settings}
        self.master = Master(os.path.join(self.base, "conf"), main,
                             MASTER_CF.format(port=self.port)
                             + "pickup    unix  n       -       n       60      1       pickup\n"
                             + "error     unix  -       -       n       -       -       error\n"
                             ).start()
        self.addCleanup(self.master.stop)

    def test_localSubmission(self):
        """
        Mail from sendmail goes through C{non_smtpd_milters} in a
        session made up as Postfix makes it up (client localhost at
        127.0.0.1, EHLO localhost, the sender unbracketed), and the
        milter's changes are made; mail from SMTP does not.
        """
        self.startMilter(eom_edits=[["addheader", "X-Local-Milter", "seen"],
                                    ["addrcpt", "<extra@localhost>"]])
        self.startLocalMaster()
        self.post(b"To: bob@localhost\nSubject: local\n\nhello\n", "-t")
        waitFor(lambda: maildirMessages(self.spool).get("bob")
                and maildirMessages(self.spool).get("extra"), what="both deliveries")
        [message] = maildirMessages(self.spool)["bob"]
        self.assertIn(b"\nX-Local-Milter: seen\n", message)
        [seen] = self.seen()
        self.assertEqual(seen["connect"][0], "localhost")
        self.assertIn("127.0.0.1", seen["connect"][1])
        self.assertEqual(seen["helo"], "localhost")
        self.assertEqual(seen["sender"], "nobody@localhost")
        self.assertEqual(seen["recipients"], ["bob@localhost"])
        self.assertEqual(seen["macros"]["connect"]["j"], "mx.example.org")
        self.assertEqual(seen["macros"]["connect"]["_"], "localhost [127.0.0.1]")
        self.assertEqual(seen["macros"]["mail"]["{mail_addr}"], "nobody@localhost")
        self.assertTrue(seen["macros"]["eom"]["i"])
        # SMTP mail is smtpd's milters' (none here), not these.
        client = self.client()
        client.sendmail("alice@example.com", ["carol@localhost"], b"Subject: smtp\r\n\r\nx\r\n")
        waitFor(lambda: maildirMessages(self.spool).get("carol"), what="the SMTP delivery")
        self.assertNotIn(b"X-Local-Milter", maildirMessages(self.spool)["carol"][0])
        self.assertEqual(len(self.seen()), 1)

    def test_localSubmissionRefused(self):
        """
        A milter that refuses a local submission refuses it for good: the
        poster (gone by then) gets it back in a bounce, as Postfix's
        cleanup returns sendmail's mail; nothing reaches the recipient.
        One that refuses a recipient cannot say so to the sender, so the
        mail waits in the maildrop with a warning.
        """
        self.startMilter(envfrom=["550", "5.7.1", "not from you"])
        self.startLocalMaster()
        self.post(b"To: bob@localhost\nSubject: refused\n\nhello\n", "-t")
        waitFor(lambda: "milter-reject: MAIL from localhost[127.0.0.1]: 5.7.1 not from you; "
                "from=<nobody@localhost> to=<bob@localhost> proto=local"
                in self.master.log(), what="the refusal")
        waitFor(lambda: maildirMessages(self.spool).get("nobody"), what="the bounce")
        [bounce] = maildirMessages(self.spool)["nobody"]
        self.assertIn(b"<bob@localhost>: not from you", bounce)
        self.assertIn(b"\nStatus: 5.7.1\n", bounce)
        self.assertIn(b"Subject: refused", bounce)
        self.assertNotIn("bob", maildirMessages(self.spool))
        self.assertEqual(os.listdir(os.path.join(self.master.queue, "maildrop")), [])

    def test_localRecipientRefusedWaits(self):
        self.startMilter(envrcpt="reject")
        self.startLocalMaster()
        self.post(b"To: bob@localhost\nSubject: refused\n\nhello\n", "-t")
        waitFor(lambda: "can't reject recipient in non-smtpd submission" in self.master.log(),
                what="the warning")
        self.assertIn("4.3.5 Server configuration error", self.master.log())
        time.sleep(0.5)
        self.assertEqual(maildirMessages(self.spool), {})
        maildrop = os.path.join(self.master.queue, "maildrop")
        self.assertEqual(len(os.listdir(maildrop)), 1)

    def test_milterMaps(self):
        """
        C{smtpd_milter_maps} chooses the milters by client: C{DISABLE} for
        one, a list of its own for another, C{smtpd_milters} for the rest.
        """
        self.startMilter(eom_edits=[["addheader", "X-Scripted", "yes"]])
        maps = os.path.join(self.base, "milter_maps.cidr")
        with open(maps, "w") as f:
            f.write("127.0.0.2/32 DISABLE\n"
                    f"127.0.0.3/32 {{ inet:127.0.0.1:{self.milterPort}, "
                    "default_action=accept }\n")
        self.startMaster(smtpd_milter_maps=f"cidr:{maps}")
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            with smtplib.SMTP("127.0.0.1", self.port, timeout=60,
                              source_address=(source, 0)) as client:
                client.sendmail("alice@example.com", [f"from{source[-1]}@localhost"],
                                b"Subject: mapped\r\n\r\nx\r\n")
        waitFor(lambda: len(maildirMessages(self.spool)) == 3, what="three deliveries")
        found = {name: b"\nX-Scripted: yes\n" in messages[0]
                 for name, messages in maildirMessages(self.spool).items()}
        self.assertEqual(found, {"from1": True, "from2": False, "from3": True})

    def test_milterHeaderChecks(self):
        """
        C{milter_header_checks} look at the headers a milter adds: here
        one that refuses what the milter marked as spam, and one that
        drops a header it added.
        """
        self.startMilter(eom_edits=[["addheader", "X-Spam-Flag", "YES"],
                                    ["addheader", "X-Internal", "secret"]])
        checks = os.path.join(self.base, "milter_header_checks")
        with open(checks, "w") as f:
            f.write("/^X-Spam-Flag:\\s+YES/ REJECT spam refused\n/^X-Internal:/ IGNORE\n")
        self.startMaster(milter_header_checks=f"regexp:{checks}")
        client = self.client()
        with self.assertRaises(smtplib.SMTPDataError) as caught:
            client.sendmail("alice@example.com", ["bob@localhost"],
                            b"Subject: x\r\nX-Spam-Flag: YES\r\n\r\nx\r\n")
        self.assertEqual((caught.exception.smtp_code, caught.exception.smtp_error),
                         (550, b"5.7.1 spam refused"))
        with open(checks, "w") as f:
            f.write("/^X-Internal:/ IGNORE\n")
        self.master.signal(signal.SIGHUP)
        waitFor(lambda: "reload" in self.master.log(), what="the reload")
        time.sleep(1)
        client = self.client()
        client.sendmail("alice@example.com", ["bob@localhost"],
                        b"Subject: y\r\nX-Internal: the client's own\r\n\r\ny\r\n")
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="the delivery")
        [message] = maildirMessages(self.spool)["bob"]
        # The milter's header is gone; the client's own one was not checked.
        self.assertIn(b"\nX-Internal: the client's own\n", message)
        self.assertNotIn(b"secret", message)
        self.assertIn(b"\nX-Spam-Flag: YES\n", message)

    def startRefusingMaster(self):
        """
        A master whose smtpd refuses recipient nobody@localhost itself.
        """
        access = os.path.join(self.base, "recipient_access")
        with open(access, "w") as f:
            f.write("nobody@localhost REJECT no such person\n")
        self.startMaster(smtpd_recipient_restrictions=f"check_recipient_access texthash:{access},"
                         " permit_mynetworks, reject_unauth_destination")

    def test_rejectedRecipientsTold(self):
        """
        A milter that asks to hear of refused recipients (SMFIP_RCPT_REJ)
        is told of each, with Postfix's macros ({rcpt_mailer} error,
        {rcpt_host} the status, {rcpt_addr} the reason); the refusal
        stands whatever it answers.  One that does not ask is not told.
        """
        self.startMilter(rcpt_rej=True)
        self.startRefusingMaster()
        client = self.client()
        client.ehlo("client.example")
        client.mail("alice@example.com")
        code, _ = client.rcpt("nobody@localhost")
        self.assertEqual(code, 554)
        self.assertEqual(client.rcpt("bob@localhost")[0], 250)
        client.data(b"Subject: x\r\n\r\nx\r\n")
        waitFor(lambda: self.seen(), what="the milter's record")
        [seen] = self.seen()
        self.assertEqual(seen["recipients"], ["<nobody@localhost>", "<bob@localhost>"])
        refused, accepted = seen["rcpt_macros"]
        self.assertEqual(refused["{rcpt_mailer}"], "error")
        self.assertEqual(refused["{rcpt_host}"], "5.7.1")
        self.assertEqual(refused["{rcpt_addr}"],
                         "<nobody@localhost>: Recipient address rejected: no such person")
        self.assertEqual(accepted["{rcpt_mailer}"], "local")
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="the delivery")

    def test_rejectedRecipientsNotToldUnasked(self):
        self.startMilter()
        self.startRefusingMaster()
        client = self.client()
        client.ehlo("client.example")
        client.mail("alice@example.com")
        self.assertEqual(client.rcpt("nobody@localhost")[0], 554)
        self.assertEqual(client.rcpt("bob@localhost")[0], 250)
        client.data(b"Subject: x\r\n\r\nx\r\n")
        waitFor(lambda: self.seen(), what="the milter's record")
        [seen] = self.seen()
        self.assertEqual(seen["recipients"], ["<bob@localhost>"])

    def test_unixSocket(self):
        """
        A milter on a UNIX socket (C{unix:/path}), as Debian's OpenDKIM
        and OpenDMARC packages set theirs up.
        """
        socketPath = os.path.join(self.base, "scripted.sock")
        self.startMilter(unixSocket=socketPath,
                         eom_edits=[["addheader", "X-Scripted", "over a UNIX socket"]])
        self.startMaster(milters=f"unix:{socketPath}")
        client = self.client()
        client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: x\r\n\r\nx\r\n")
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="the delivery")
        [message] = maildirMessages(self.spool)["bob"]
        self.assertIn(b"\nX-Scripted: over a UNIX socket\n", message)

    def test_connectRejected(self):
        """
        A milter that refuses the connection: the client is greeted with
        554, and MAIL is refused.
        """
        self.startMilter(connect="reject")
        self.startMaster()
        with self.assertRaises(smtplib.SMTPConnectError) as caught:
            smtplib.SMTP("127.0.0.1", self.port, timeout=60)
        self.assertEqual(caught.exception.smtp_code, 554)

    def test_unreachableMilterTempfails(self):
        """
        A milter that cannot be reached gets milter_default_action:
        tempfail (the default) refuses MAIL with 451, so that nothing is
        accepted unchecked; accept lets mail through unchecked.
        """
        self.startMaster()
        client = self.client()
        client.ehlo("client.example")
        code, text = client.mail("alice@example.com")
        self.assertEqual(code, 451)
        self.assertEqual(text, b"4.7.1 Service unavailable - try again later")

    def test_unreachableMilterAccepted(self):
        self.startMaster(milters=f"{{ inet:127.0.0.1:{self.milterPort}, "
                                 "default_action=accept }")
        client = self.client()
        client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: x\r\n\r\nx\r\n")
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="the delivery")

    def test_silentMilterTimesOut(self):
        """
        A milter that does not answer within milter_content_timeout gets
        the default action (tempfail): the message is refused with 451,
        not accepted unchecked, and not delivered.
        """
        self.startMilter(sleep={"eom": 10})
        self.startMaster(milter_content_timeout="2s")
        client = self.client()
        with self.assertRaises(smtplib.SMTPDataError) as caught:
            client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: x\r\n\r\nx\r\n")
        self.assertEqual(caught.exception.smtp_code, 451)
        time.sleep(0.5)
        self.assertEqual(maildirMessages(self.spool), {})

    def test_discardAndQuarantine(self):
        """
        DISCARD accepts the message and drops it; a quarantine request
        puts it in the hold queue.
        """
        self.startMilter(eom_edits=[["quarantine", "looks odd"]])
        self.startMaster()
        client = self.client()
        client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: x\r\n\r\nx\r\n")
        hold = os.path.join(self.master.queue, "hold")
        waitFor(lambda: any(files for _, _, files in os.walk(hold)), what="the held message")
        self.assertEqual(maildirMessages(self.spool), {})


class OpenDKIMTests(SynchronousTestCase):
    """
    OpenDKIM (Debian's opendkim), a private instance for each of its
    modes: mail from a submission client is signed on the way out, and
    the signature verifies on the way back in.
    """

    def setUp(self):
        endToEnd()
        if not (shutil.which("opendkim") and shutil.which("opendkim-genkey")):
            raise self.skipTest("no OpenDKIM (Debian's opendkim and opendkim-tools)")
        if os.getuid() != 0:
            raise self.skipTest("a private OpenDKIM here runs as root")
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        subprocess.run(["opendkim-genkey", "-D", self.base, "-d", "example.com", "-s", "test"],
                       check=True)
        with open(os.path.join(self.base, "test.txt")) as f:
            record = "".join(re.findall(r'"([^"]*)"', f.read()))
        keys = os.path.join(self.base, "keys")
        with open(keys, "w") as f:
            f.write(f"test._domainkey.example.com {record}\n")
        self.signer = self.opendkim("sign", "Mode s\nDomain example.com\nSelector test\n"
                                    f"KeyFile {self.base}/test.private\n"
                                    "InternalHosts 127.0.0.1\n")
        self.verifier = self.opendkim("verify", f"Mode v\nTestPublicKeys {keys}\n"
                                      "AuthservID mx.example.org\n")

    def opendkim(self, name: str, settings: str) -> int:
        port = freePort()
        path = os.path.join(self.base, f"{name}.conf")
        with open(path, "w") as f:
            # RequireSafeKeys no: the test's files are under /tmp, which
            # OpenDKIM otherwise refuses as open to other users.
            f.write(f"Socket inet:{port}@127.0.0.1\nBackground no\nSyslog no\n"
                    "RequireSafeKeys no\n"
                    f"PidFile {self.base}/{name}.pid\nCanonicalization relaxed/simple\n"
                    + settings)
        process = subprocess.Popen(["opendkim", "-f", "-x", path],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (process.terminate(), process.wait()))
        waitFor(lambda: _listening(port), what=f"OpenDKIM ({name})")
        return port

    def test_signedAndVerified(self):
        spool = os.path.join(self.base, "mail")
        port, submission = freePort(), freePort()
        masterCf = MASTER_CF.format(port=port) + (
            f"127.0.0.1:{submission} inet n - n - - smtpd "
            f"-o smtpd_milters=inet:127.0.0.1:{self.signer}\n")
        master = Master(os.path.join(self.base, "conf"), {
            "myhostname": "mx.example.org", "mydestination": "localhost",
            "smtpd_milters": f"inet:127.0.0.1:{self.verifier}",
            **localMaildirs(spool + "/")}, masterCf).start()
        self.addCleanup(master.stop)
        client = smtplib.SMTP("127.0.0.1", submission, timeout=60)
        client.sendmail("alice@example.com", ["bob@localhost"],
                        b"From: alice@example.com\r\nTo: bob@localhost\r\n"
                        b"Subject: signed\r\n\r\nA message to sign.\r\n")
        client.quit()
        waitFor(lambda: maildirMessages(spool).get("bob"), what="the signed message")
        [signed] = maildirMessages(spool)["bob"]
        self.assertIn(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.com;",
                      signed)
        # Back in through the verifying smtpd, as another server would
        # send it on.
        onward = b"".join(line for line in signed.splitlines(True)
                          if not line.startswith((b"Return-Path:", b"Delivered-To:")))
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        client.sendmail("alice@example.com", ["carol@localhost"], onward.replace(b"\n", b"\r\n"))
        client.quit()
        waitFor(lambda: maildirMessages(spool).get("carol"), what="the verified message")
        [verified] = maildirMessages(spool)["carol"]
        self.assertRegex(verified.decode(), r"Authentication-Results: mx.example.org;\s+"
                                            r"dkim=pass")


RSPAMD_RULES = """\
rspamd_config.TMTA_REJECT = {
  callback = function(task)
    return tostring(task:get_content()):find('tmta%-rspamd%-reject') ~= nil
  end,
  score = 20.0,
  description = 'the test marker that rejects',
}
rspamd_config.TMTA_TAG = {
  callback = function(task)
    return tostring(task:get_content()):find('tmta%-rspamd%-tag') ~= nil
  end,
  score = 8.0,
  description = 'the test marker that tags',
}
"""


class RspamdTests(SynchronousTestCase):
    """
    rspamd (Debian's rspamd) in milter mode: a private instance whose
    proxy worker speaks the milter protocol, with rules of the test's
    own: one whose score rejects, one whose score tags.
    """

    def setUp(self):
        endToEnd()
        if not shutil.which("rspamd"):
            raise self.skipTest("no rspamd (Debian's rspamd)")
        if os.getuid() != 0:
            raise self.skipTest("a private rspamd here runs as root")
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        os.makedirs(os.path.join(self.base, "db"))
        rules = os.path.join(self.base, "rules.lua")
        with open(rules, "w") as f:
            f.write(RSPAMD_RULES)
        scanner, self.milterPort = freePorts(2)
        conf = os.path.join(self.base, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(f"""\
options {{
  pidfile = "{self.base}/rspamd.pid";
  dbdir = "{self.base}/db";
  filters = "";
  dns {{ nameserver = ["127.0.0.1:{freePort()}"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{self.base}/rspamd.log"; level = "info"; }}
actions {{ reject = 15; add_header = 6; greylist = null; }}
worker "normal" {{ bind_socket = "127.0.0.1:{scanner}"; count = 1; }}
worker "rspamd_proxy" {{
  bind_socket = "127.0.0.1:{self.milterPort}";
  milter = yes;
  timeout = 120s;
  upstream "local" {{ default = yes; self_scan = yes; }}
  count = 1;
}}
lua = "{rules}";
""")
        process = subprocess.Popen(["rspamd", "-f", "-c", conf, "-u", "root", "-g", "root", "-i"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (process.terminate(), process.wait()))
        waitFor(lambda: _listening(self.milterPort), timeout=120, what="rspamd's milter")

    def test_rejectedAndTagged(self):
        spool = os.path.join(self.base, "mail")
        port = freePort()
        master = Master(os.path.join(self.base, "conf"), {
            "myhostname": "mx.example.org", "mydestination": "localhost",
            "smtpd_milters": f"inet:127.0.0.1:{self.milterPort}",
            **localMaildirs(spool + "/")}, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        with self.assertRaises(smtplib.SMTPDataError) as caught:
            client.sendmail("alice@example.com", ["bob@localhost"],
                            b"From: alice@example.com\r\nSubject: bad\r\n\r\n"
                            b"This one carries tmta-rspamd-reject.\r\n")
        self.assertEqual(caught.exception.smtp_code, 554)
        client.sendmail("alice@example.com", ["bob@localhost"],
                        b"From: alice@example.com\r\nSubject: dubious\r\n\r\n"
                        b"This one carries tmta-rspamd-tag.\r\n")
        client.sendmail("alice@example.com", ["bob@localhost"],
                        b"From: alice@example.com\r\nSubject: fine\r\n\r\nAn ordinary one.\r\n")
        client.quit()
        waitFor(lambda: len(maildirMessages(spool).get("bob", [])) == 2, what="two deliveries")
        messages = {m.split(b"\nSubject: ", 1)[1].split(b"\n", 1)[0]: m
                    for m in maildirMessages(spool)["bob"]}
        self.assertEqual(sorted(messages), [b"dubious", b"fine"])
        self.assertIn(b"\nX-Spam: Yes\n", messages[b"dubious"])
        self.assertNotIn(b"X-Spam: Yes", messages[b"fine"])
        waitFor(lambda: "milter-reject: END-OF-MESSAGE" in master.log(), what="the log line")


class OpenDMARCTests(SynchronousTestCase):
    """
    OpenDMARC (Debian's opendmarc) against DMARC and SPF records a
    twisted.names server serves, in a private network namespace whose
    resolv.conf names it (L{tests.dmarcdriver}).
    """

    def test_passAndReject(self):
        if not shutil.which("opendmarc"):
            raise self.skipTest("no OpenDMARC (Debian's opendmarc)")
        observed = runNamespaceDriver(self, "dmarcdriver.py")
        self.assertEqual(observed["forged"], "550 5.7.1 rejected by DMARC policy for good.test")
        [delivered] = observed["delivered"]
        self.assertIn("\nAuthentication-Results: mx.example.org; dmarc=pass (p=reject dis=none) "
                      "header.from=good.test\n", delivered)
        # Postfix's log line, with the client and the envelope.
        self.assertIn("milter-reject: END-OF-MESSAGE from unknown[127.0.0.5]: 5.7.1 rejected by "
                      "DMARC policy for good.test; from=<mallory@bad.test> to=<bob@localhost> "
                      "proto=ESMTP helo=<client.good.test>", observed["log"])
