"""
Tests for posting with C{tmta-sendmail} and the pickup service: the
command's parsing on its own, and a real master taking mail an ordinary
user posted.
"""

import io
import os
import pwd
import stat
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support import (
    MASTER_CF,
    REPO,
    UNPRIVILEGED_PYTHON,
    Master,
    freePort,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    testAccount,
    waitFor,
)
from tmta.cli.sendmail import (
    UsageError,
    extractRecipients,
    parseArguments,
    readMessage,
)
from tmta.queue.layout import createLayout

PICKUP_MASTER_CF = (MASTER_CF + "pickup    unix  n       -       n       60      1       pickup\n"
                    "showq     unix  n       -       n       -       -       showq\n")


class CommandLineTests(SynchronousTestCase):
    def test_sendmailOptions(self):
        posting = parseArguments(["-t", "-oi", "-f", "<bounces@example.org>", "-F", "Cron",
                                  "-oem", "-odb", "-v", "-N", "success,failure", "-R", "hdrs",
                                  "-V", "env1", "a@example.org", "--", "-b@example.org"])
        self.assertTrue(posting.extract)
        self.assertFalse(posting.dotEnds)
        self.assertEqual((posting.sender, posting.fullName), ("bounces@example.org", "Cron"))
        self.assertEqual((posting.notify, posting.ret, posting.envid),
                         ("SUCCESS,FAILURE", "HDRS", "env1"))
        self.assertEqual(posting.recipients, ["a@example.org", "-b@example.org"])
        self.assertEqual(parseArguments(["-f", "<>"]).sender, "")
        self.assertEqual(parseArguments(["-bp"]).mode, "p")
        self.assertRaises(UsageError, parseArguments, ["-bz"])
        self.assertRaises(UsageError, parseArguments, ["-f"])

    def test_postfixOptionsAccepted(self):
        """
        C{-G} and C{-L label} are accepted; a bad C{-N}, C{-R} or C{-V}
        is ignored with Postfix's warning, and the mail still goes.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        posting = parseArguments(["-G", "-L", "cron", "-N", "sometimes", "-R", "all",
                                  "-V", "x" * 101, "a@example.org"])
        self.assertEqual((posting.notify, posting.ret, posting.envid), ("", "", ""))
        self.assertEqual(posting.recipients, ["a@example.org"])
        self.assertEqual(err.getvalue().splitlines(), [
            "tmta-sendmail: warning: bad -N option value -- ignored",
            "tmta-sendmail: warning: bad -R option value -- ignored",
            "tmta-sendmail: warning: bad -V option value -- ignored"])

    def test_malformedRecipientRefused(self):
        """
        A malformed recipient on the command line is refused at once
        (EX_DATAERR), and nothing is queued.
        """
        from tmta.cli.sendmail import EX_DATAERR, main

        conf = os.path.abspath(self.mktemp())
        os.makedirs(conf)
        queue = os.path.join(conf, "queue")
        createLayout(queue)
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write(f"queue_directory = {queue}\n")
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        for bad in ("a@@b.example", "a b@example.org", "<a@b.example"):
            self.assertEqual(main(["-C", conf, bad], io.BytesIO(b"Subject: x\n\nbody\n")),
                             EX_DATAERR, bad)
        self.assertEqual(os.listdir(os.path.join(queue, "maildrop")), [])
        self.assertIn("bad recipient address 'a@@b.example'", err.getvalue())

    def test_wakeupIsAnAMPBox(self):
        from twisted.protocols import amp

        from tmta.cli.maildrop import _ampBox

        pairs = [(b"_command", b"Wakeup"), (b"reason", b"incoming")]
        self.assertEqual(_ampBox(pairs), amp.Box(dict(pairs)).serialize())

    def test_dotEndsWithoutI(self):
        source = b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n"
        self.assertEqual(readMessage(io.BytesIO(source), True), b"Subject: x\n\nline\n")
        self.assertEqual(readMessage(io.BytesIO(source), False),
                         b"Subject: x\n\nline\n.\nafter\n")

    def test_extractRecipients(self):
        content = (b"From: me\nTo: A <a@example.org>, b@example.org\nBcc: hidden@example.org,\n"
                   b"  also@example.org\nSubject: x\n\nBcc: not a header\n")
        recipients, rest = extractRecipients(content)
        self.assertEqual(recipients, ["a@example.org", "b@example.org", "hidden@example.org",
                                      "also@example.org"])
        self.assertNotIn(b"hidden@", rest)
        self.assertIn(b"\n\nBcc: not a header\n", rest)


class StdioSMTPTests(SynchronousTestCase):
    """
    tmta-sendmail -bs: SMTP on standard input and output.
    """

    def converse(self, text):
        from tmta.cli.sendmail import Posting
        from tmta.cli.smtpstdio import StdioSMTP

        posted = []

        def post(posting, content):
            posted.append((posting.sender, list(posting.recipients), content))
            return f"QID{len(posted)}"

        out = io.BytesIO()
        status = StdioSMTP(io.BytesIO(text), out, "mx.example.org", Posting(), post, 1000).run()
        return status, out.getvalue().decode(), posted

    def test_conversation(self):
        status, replies, posted = self.converse(
            b"EHLO client\r\nMAIL FROM:<me@example.org>\r\nRCPT TO:<a@example.org>\r\n"
            b"RCPT TO:<b@example.org>\r\nDATA\r\nSubject: x\r\n\r\n..dot\r\nline\n.\r\n"
            b"MAIL FROM:<>\r\nRCPT TO:<c@example.org>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n")
        self.assertEqual(status, 0)
        # The last line of each reply.
        codes = [line[:3] for line in replies.splitlines() if line[3:4] == " "]
        self.assertEqual(codes, ["220", "250", "250", "250", "250", "354", "250",
                                 "250", "250", "354", "250", "221"])
        self.assertIn("250-PIPELINING", replies)
        self.assertIn("250 2.0.0 Ok: queued as QID1", replies)
        self.assertEqual(posted[0], ("me@example.org", ["a@example.org", "b@example.org"],
                                     b"Subject: x\n\n.dot\nline\n"))
        self.assertEqual(posted[1][:2], ("", ["c@example.org"]))

    def test_errors(self):
        _, replies, posted = self.converse(
            b"RCPT TO:<a@example.org>\r\nDATA\r\nMAIL FROM:<a b>\r\nMAIL FROM:<x@y>\r\n"
            b"DATA\r\nRCPT TO:<\"|cmd\"@y>\r\nFOO\r\nDATA\r\n" + b"x" * 2000 + b"\r\n.\r\n")
        codes = [line[:3] for line in replies.splitlines()]
        self.assertEqual(codes, ["220", "503", "503", "501", "250", "554", "250", "500", "354",
                                 "552"])
        self.assertEqual(posted, [])


class PickupTests(SynchronousTestCase):
    """
    An ordinary user posts with tmta-sendmail; pickup hands the mail to
    cleanup with that user as the sender.
    """

    def setUp(self):
        if os.getuid() != 0:
            raise self.skipTest("needs root, to post as an ordinary account")
        if not os.access(UNPRIVILEGED_PYTHON, os.X_OK):
            raise self.skipTest(f"no Python for an ordinary account at {UNPRIVILEGED_PYTHON} "
                                "(.ci/run makes one)")
        # Not the mail system's own account (tests run it as testAccount),
        # whose -f pickup believes.
        testAccount()
        self.account = pwd.getpwnam("nobody")
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        self.spool = os.path.join(self.base, "mail")
        self.conf = os.path.join(self.base, "conf")
        self.port = freePort()
        self.settings = {"mydestination": "localhost, $myhostname",
                         "myorigin": "localhost",
                         **localMaildirs(self.spool + "/")}

    def startMaster(self):
        self.master = Master(self.conf, self.settings,
                             PICKUP_MASTER_CF.format(port=self.port)).start()
        self.addCleanup(self.master.stop)
        return self.master

    def post(self, text, *args):
        account = self.account

        def becomeAccount():
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

        return subprocess.run(
            [UNPRIVILEGED_PYTHON, "-c",
             "import sys; from tmta.cli.sendmail import main; sys.exit(main())", *args],
            input=text, capture_output=True, timeout=60, preexec_fn=becomeAccount,
            env={"PYTHONPATH": REPO, "MAIL_CONFIG": self.conf, "PATH": "/usr/bin:/bin",
                 "LANG": "C.UTF-8"})

    def test_refusedMailBounced(self):
        """
        Mail posted with sendmail that cleanup refuses for good (here a
        header_checks REJECT) comes back to its poster in a bounce, as
        Postfix's does: nobody is left waiting for an answer.
        """
        checks = os.path.join(self.base, "header_checks")
        with open(checks, "w") as f:
            f.write("/^Subject: forbidden/ REJECT not this subject\n")
        self.settings["header_checks"] = f"regexp:{checks}"
        self.master = Master(self.conf, self.settings, PICKUP_MASTER_CF.format(port=self.port)
                             + "error     unix  -       -       n       -       -       error\n"
                             ).start()
        self.addCleanup(self.master.stop)
        result = self.post(b"To: someone@localhost\nSubject: forbidden\n\nhi\n", "-t")
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: maildirMessages(self.spool).get(self.account.pw_name),
                what="the bounce")
        [bounce] = maildirMessages(self.spool)[self.account.pw_name]
        self.assertIn(b"<someone@localhost>: not this subject", bounce)
        self.assertNotIn("someone", maildirMessages(self.spool))

    def test_postedByAnOrdinaryUser(self):
        self.startMaster()
        result = self.post(b"To: someone@localhost\nSubject: posted\n\nhi\n", "-t")
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: maildirMessages(self.spool).get("someone"), what="the delivery")
        [message] = maildirMessages(self.spool)["someone"]
        self.assertIn(f"Return-Path: <{self.account.pw_name}@localhost>".encode(), message)
        self.assertIn(f"from userid {self.account.pw_uid}".encode(), message)
        self.assertIn(b"Subject: posted", message)
        self.assertEqual(os.listdir(os.path.join(self.conf, "queue", "maildrop")), [])

    def test_postedLater(self):
        """
        Mail posted long after pickup's first scan is taken at once
        (inotify), not at the next timer wake-up a minute later.
        """
        import time

        self.startMaster()
        waitFor(lambda: "tmta/pickup" in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                        text=True).stdout, what="pickup")
        time.sleep(2)
        result = self.post(b"Subject: later\n\nhi\n", "afterwards@localhost")
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: maildirMessages(self.spool).get("afterwards"), timeout=15,
                what="the delivery, sooner than pickup's timer")

    def test_postedRightAfterReload(self):
        """
        Mail posted just after a reload is taken at once: the new pickup
        and queue manager start as soon as the old ones have gone, not
        at the next timer wake-up.
        """
        import signal
        import time

        master = self.startMaster()
        waitFor(lambda: "tmta/pickup" in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                                        text=True).stdout, what="pickup")
        for n in range(3):
            master.signal(signal.SIGHUP)
            time.sleep(0.3)
            result = self.post(f"Subject: reload {n}\n\nhi\n".encode(), f"reload{n}@localhost")
            self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: all(maildirMessages(self.spool).get(f"reload{n}") for n in range(3)),
                timeout=15, what="the deliveries, sooner than pickup's timer")

    def test_smtpOnStandardInput(self):
        self.startMaster()
        result = self.post(b"HELO me\r\nMAIL FROM:<root@localhost>\r\nRCPT TO:<bs@localhost>\r\n"
                           b"DATA\r\nSubject: by -bs\r\n\r\nhi\r\n.\r\nQUIT\r\n", "-bs")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"250 2.0.0 Ok: queued as", result.stdout)
        waitFor(lambda: maildirMessages(self.spool).get("bs"), what="the delivery")
        [message] = maildirMessages(self.spool)["bs"]
        self.assertIn(b"Subject: by -bs", message)
        # Posted as the user, whatever MAIL FROM said.
        self.assertIn(f"Return-Path: <{self.account.pw_name}@localhost>".encode(), message)

    def test_postedWhileStopped(self):
        # The queue exists once the master has run.
        self.startMaster().stop()
        result = self.post(b"Subject: while stopped\n\nhi\n", "later@localhost")
        self.assertEqual(result.returncode, 0, result.stderr)
        [name] = os.listdir(os.path.join(self.conf, "queue", "maildrop"))
        st = os.stat(os.path.join(self.conf, "queue", "maildrop", name))
        self.assertEqual(st.st_uid, self.account.pw_uid)
        self.assertEqual(st.st_mode & 0o077, 0o040)  # the mail group may read, no other
        self.startMaster()
        waitFor(lambda: maildirMessages(self.spool).get("later"), what="the delivery")

    def test_claimedSenderIgnored(self):
        """
        An ordinary user's -f is not believed: the mail is from the
        file's owner.
        """
        self.startMaster()
        result = self.post(b"Subject: forged\n\nhi\n", "-f", "root@localhost",
                           "victim@localhost")
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: maildirMessages(self.spool).get("victim"), what="the delivery")
        [message] = maildirMessages(self.spool)["victim"]
        self.assertIn(f"Return-Path: <{self.account.pw_name}@localhost>".encode(), message)

    def test_verificationReport(self):
        """
        C{sendmail -bv} reads no message and delivers none: each recipient
        is verified, and a report saying how each would be delivered is
        mailed to the user who asked.
        """
        os.makedirs(self.conf, exist_ok=True)
        with open(os.path.join(self.conf, "aliases"), "w") as f:
            f.write("boss@localhost someone@localhost\n")
        with open(os.path.join(self.conf, "transport"), "w") as f:
            f.write("broken.example error:5.1.2 no mail for this domain\n")
        self.settings.update(virtual_alias_maps=f"texthash:{self.conf}/aliases",
                             transport_maps=f"texthash:{self.conf}/transport")
        self.master = Master(self.conf, self.settings, PICKUP_MASTER_CF.format(port=self.port)
                             + "error     unix  -       -       n       -       -       error\n")
        self.addCleanup(self.master.stop)
        self.master.start()
        result = self.post(b"", "-bv", "boss@localhost", "x@broken.example")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.decode(), "Mail Delivery Status Report will be mailed "
                                                 f"to <{self.account.pw_name}>.\n")
        waitFor(lambda: maildirMessages(self.spool).get(self.account.pw_name),
                what="the report")
        [report] = maildirMessages(self.spool)[self.account.pw_name]
        text = report.decode()
        self.assertIn("Subject: Mail Delivery Status Report", text)
        self.assertIn("Enclosed is the mail delivery report that you requested.", text)
        self.assertIn("<someone@localhost> (expanded from <boss@localhost>): delivery via "
                      "local: delivers to maildir", text)
        self.assertIn("<x@broken.example>: delivery via error: no mail for this domain", text)
        self.assertIn("Action: deliverable", text)
        self.assertIn("Action: undeliverable\nStatus: 5.1.2", text)
        self.assertIn("Subject: probe", text)
        self.assertNotIn("someone", maildirMessages(self.spool))
        self.assertEqual(self.post(b"", "-bv", "-t").returncode, 64)

    def test_mailqForAnOrdinaryUser(self):
        """
        An ordinary user cannot read the queue, but tmta-mailq (through
        the showq service) lists it, with each deferred recipient's
        reason; cleanup's socket stays closed to that user.
        """
        self.startMaster()
        result = self.post(b"Subject: far\n\nhi\n", "someone@remote.example")
        self.assertEqual(result.returncode, 0, result.stderr)
        deferred = os.path.join(self.conf, "queue", "deferred")
        waitFor(lambda: any(files for _, _, files in os.walk(deferred)), what="the deferral")
        listing = self.post(b"", "-bp")
        self.assertEqual(listing.returncode, 0, listing.stderr)
        # Nothing about the queue directories the user may not read.
        self.assertEqual(listing.stderr, b"")
        text = listing.stdout.decode()
        self.assertIn("someone@remote.example", text)
        self.assertIn("(mail transport unavailable)", text)
        self.assertIn(f"{self.account.pw_name}@localhost", text)
        self.assertRegex(text, r"\n-- \d+ Kbytes in 1 Request\.\n")
        account = self.account

        def becomeAccount():
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

        probe = subprocess.run(
            [UNPRIVILEGED_PYTHON, "-c", "import socket, sys; s = socket.socket(socket.AF_UNIX);"
             " s.connect(sys.argv[1])", os.path.join(self.conf, "queue", "public", "cleanup")],
            capture_output=True, timeout=60, preexec_fn=becomeAccount)
        self.assertNotEqual(probe.returncode, 0)
        self.assertIn(b"PermissionError", probe.stderr)

    def test_junkInMaildirSetAside(self):
        self.startMaster()
        junk = os.path.join(self.conf, "queue", "maildrop", "6616754DEA88102EF8")
        with open(junk, "wb") as f:
            f.write(b"not a queue file at all")
        os.chown(junk, self.account.pw_uid, -1)
        result = self.post(b"Subject: after junk\n\nhi\n", "next@localhost")
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: maildirMessages(self.spool).get("next"), what="the delivery")
        waitFor(lambda: os.path.exists(os.path.join(self.conf, "queue", "corrupt",
                                                    "6616754DEA88102EF8")),
                what="the junk set aside")
        waitFor(lambda: "malformed" in self.master.log(), what="the log line")


class InstallCompatTests(SynchronousTestCase):
    """
    tmta install-compat links sendmail and mailq, and leaves another
    MTA's files alone unless forced.
    """

    def setUp(self):
        self.scripts = self.mktemp()
        os.makedirs(self.scripts)
        for name in ("tmta-sendmail", "tmta-mailq", "tmta-newaliases"):
            path = os.path.join(self.scripts, name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n")
            os.chmod(path, 0o755)
        self.prefix = self.mktemp()

    def install(self, force=False):
        from tmta.cli.admin import installCompat

        err = io.StringIO()
        return installCompat(self.prefix, force, self.scripts, err), err.getvalue()

    def test_links(self):
        self.assertEqual(self.install()[0], 0)
        link = os.path.join(self.prefix, "sbin", "sendmail")
        self.assertEqual(os.readlink(link),
                         os.path.abspath(os.path.join(self.scripts, "tmta-sendmail")))
        self.assertTrue(os.path.islink(os.path.join(self.prefix, "bin", "mailq")))
        self.assertEqual(self.install()[0], 0)  # again: nothing to do

    def test_anotherMTAKept(self):
        os.makedirs(os.path.join(self.prefix, "sbin"))
        other = os.path.join(self.prefix, "sbin", "sendmail")
        with open(other, "w") as f:
            f.write("postfix's\n")
        status, message = self.install()
        self.assertEqual(status, 1)
        self.assertIn("--force", message)
        self.assertFalse(os.path.islink(other))
        self.assertFalse(os.path.exists(os.path.join(self.prefix, "bin", "mailq")))
        self.assertEqual(self.install(force=True)[0], 0)
        self.assertTrue(os.path.islink(other))
        with open(other + ".pre-tmta") as f:
            self.assertEqual(f.read(), "postfix's\n")


class MaildropTrustTests(TestCase):
    """
    What pickup refuses to take from the world-writable maildrop: a hard
    link to a file made elsewhere, and a file that was not made there;
    a directory it cannot move is complained of once.
    """

    def setUp(self):
        from tmta.pickup.service import Pickup
        from tmta.queue.layout import createLayout

        self.queue = os.path.abspath(self.mktemp())
        createLayout(self.queue)
        self.maildrop = os.path.join(self.queue, "maildrop")
        self.posted = []
        self.postedAttributes = []
        test = self

        class Cleanup:
            async def post(self, sender, attributes, recipients, content):
                test.posted.append((sender, recipients))
                test.postedAttributes.append(attributes)
                return {"code": 250, "reason": "", "queue_id": "Q"}

        self.pickup = Pickup(reactor, self.queue, Cleanup(), 10_000_000)

    def posting(self, directory, name):
        from tmta.queue.writer import QueueFileWriter

        path = os.path.join(directory, name)
        writer = QueueFileWriter(path)
        writer.envelope(0.0, "root", {"sender_given": "yes"})
        writer.recipient("victim@example.org")
        writer.content(b"Subject: x\n\nbody\n")
        writer.commit()
        return path

    @defer.inlineCallbacks
    def test_hardLinkRefused(self):
        elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(elsewhere)
        original = self.posting(elsewhere, "original")
        os.link(original, os.path.join(self.maildrop, "4F6A21C3E9B2A001A7"))
        yield defer.Deferred.fromCoroutine(self.pickup.scan())
        self.assertEqual(self.posted, [])
        self.assertEqual(os.listdir(os.path.join(self.queue, "corrupt")),
                         ["4F6A21C3E9B2A001A7"])
        self.assertTrue(os.path.exists(original))

    @defer.inlineCallbacks
    def test_notMadeInMaildropRefused(self):
        """
        With maildrop set-group-id, a file whose group is not maildrop's
        was made elsewhere and moved in.
        """
        os.chmod(self.maildrop, 0o3733)
        if not os.stat(self.maildrop).st_mode & stat.S_ISGID:
            raise SkipTest("cannot make maildrop set-group-id here")
        path = self.posting(self.maildrop, "4F6A21C3E9B2A001A7")
        other = next(g for g in range(1, 65534) if g != os.stat(self.maildrop).st_gid)
        try:
            os.chown(path, -1, other)
        except PermissionError:
            raise SkipTest("needs root to give the file another group")
        yield defer.Deferred.fromCoroutine(self.pickup.scan())
        self.assertEqual(self.posted, [])
        good = self.posting(self.maildrop, "4F6A21C3E9B2B001A7")
        self.assertEqual(os.stat(good).st_gid, os.stat(self.maildrop).st_gid)
        yield defer.Deferred.fromCoroutine(self.pickup.scan())
        self.assertEqual(len(self.posted), 1)

    @defer.inlineCallbacks
    def test_contentFilterPassedOn(self):
        """
        pickup's C{content_filter} and C{receive_override_options} go to
        cleanup with each message, as smtpd's do.
        """
        from tmta.config import MainConfig
        from tmta.mail.receiving import receivingAttributes

        self.pickup.receiving = receivingAttributes(MainConfig({
            "content_filter": "scan:[127.0.0.1]:10025",
            "receive_override_options": "no_address_mappings"}))
        self.posting(self.maildrop, "4F6A21C3E9B2A001A7")
        yield defer.Deferred.fromCoroutine(self.pickup.scan())
        [attributes] = self.postedAttributes
        self.assertEqual(attributes["filter"], "scan:[127.0.0.1]:10025")
        self.assertEqual(attributes["receive_override"], "no_address_mappings")
        self.assertEqual(attributes["origin"], "pickup")

    @defer.inlineCallbacks
    def test_stuckDirectoryComplainedOfOnce(self):
        from twisted.logger import globalLogPublisher

        os.mkdir(os.path.join(self.maildrop, "4F6A21C3E9B2A001A7"))
        # Nowhere to move it to.
        corrupt = os.path.join(self.queue, "corrupt")
        os.rmdir(corrupt)
        with open(corrupt, "w"):
            pass
        complaints = []

        def observe(event):
            if "cannot move aside" in str(event.get("log_format", "")):
                complaints.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        for _ in range(3):
            yield defer.Deferred.fromCoroutine(self.pickup.scan())
        self.assertEqual(len(complaints), 1)
