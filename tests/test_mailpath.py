"""
End-to-end tests of the mail path: a real master and its workers on
loopback, real SMTP clients, real Maildirs.
"""

import fcntl
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    REPO,
    UNPRIVILEGED_PYTHON,
    Master,
    freePort,
    localMaildirs,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    stopProcess,
    subjects,
    testAccount,
    waitFor,
)
from tests.support.processes import descendants, processName


class MailPathTests(SynchronousTestCase):
    def startMaster(self, masterCf=MASTER_CF, cwd=None, **main):
        self.base = shortTemporaryDirectory(self)
        self.spool = os.path.join(self.base, "mail")
        self.port = freePort()
        settings = {
            "mydestination": "localhost, $myhostname",
            **localMaildirs(self.spool + "/"),
            "max_idle": "3s",
        }
        settings.update(main)
        self.master = Master(os.path.join(self.base, "conf"), settings,
                             masterCf.format(port=self.port), cwd=cwd).start()
        self.addCleanup(self.master.stop)
        return self.master

    def test_qmgrDeclaredFifo(self):
        """
        qmgr declared as a fifo, as older stock master.cf files have it,
        is served like a unix service.
        """
        self.startMaster(MASTER_CF.replace("qmgr      unix", "qmgr      fifo"))
        sendMessage(self.port, "alice@example.com", ["bob@localhost"], "fifo")
        waitFor(lambda: "fifo" in subjects(self.spool), what="delivery")

    def test_servicesNamedOtherwise(self):
        """
        C{cleanup_service_name}, C{queue_service_name} and
        C{rewrite_service_name} name the services the daemons use: with
        only C{cleanup2}, C{qmgr2} and C{rewrite2} in master.cf, mail is
        taken and delivered.
        """
        renamed = MASTER_CF
        for name in ("cleanup", "qmgr", "rewrite"):
            renamed = renamed.replace(f"\n{name} ", f"\n{name}2", 1)
        self.assertIn("\nrewrite2", renamed)
        self.startMaster(renamed, cleanup_service_name="cleanup2",
                         queue_service_name="qmgr2", rewrite_service_name="rewrite2")
        sendMessage(self.port, "alice@example.com", ["bob@localhost"], "renamed")
        waitFor(lambda: "renamed" in subjects(self.spool), what="delivery")

    def test_deliveredWithHeaders(self):
        master = self.startMaster()
        queueId = sendMessage(self.port, "alice@example.com", ["bob@localhost"], "first")
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="delivery")
        [text] = maildirMessages(self.spool)["bob"]
        headers = text.split(b"\n\n", 1)[0]
        for name in (b"Return-Path: <alice@example.com>", b"Delivered-To: bob@localhost",
                     b"Received: from test.example (localhost [127.0.0.1])",
                     b"Date: ", b"Message-Id: <", b"Subject: first"):
            self.assertIn(name, headers)
        self.assertIn(queueId.encode(), headers)
        # One process per service, each named for it.
        names = {processName(p) for p in master.workers()}
        self.assertTrue({"smtpd", "cleanup", "qmgr", "local"} <= names, names)
        # Log lines reach the master's log a moment after the mail moves.
        sent = re.compile(rf"tmta/local\[\d+\]: {queueId}: to=<bob@localhost>, relay=local, "
                          r"delay=[\d.e-]+, delays=[\d.e/-]+, dsn=2.0.0, status=sent")
        waitFor(lambda: sent.search(master.log()) and f"{queueId}: removed" in master.log(),
                what="the delivery log lines")
        log = master.log()
        self.assertIn(f"{queueId}: client=localhost[127.0.0.1]", log)
        self.assertIn(f"{queueId}: from=<alice@example.com>, size=", log)
        # Idle workers leave after max_idle; qmgr stays.
        waitFor(lambda: {processName(p) for p in master.workers()} == {"qmgr"}, timeout=30,
                what="idle workers to leave")
        if os.getuid() == 0:
            owner = pwd.getpwnam(testAccount()).pw_uid
            new = os.path.join(self.spool, "bob", "new")
            self.assertEqual(os.stat(os.path.join(new, os.listdir(new)[0])).st_uid, owner)

    def test_startDirectoryShadowsNothing(self):
        """
        A C{tmta} package in the directory the master is started in is
        not what its workers run: they import the master's own code, so
        neither a checkout of another version nor a package planted in a
        directory root starts from can take their place.
        """
        planted = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, planted)
        marker = os.path.join(planted, "imported")
        os.mkdir(os.path.join(planted, "tmta"))
        with open(os.path.join(planted, "tmta", "__init__.py"), "w") as f:
            f.write(f"open({marker!r}, 'w').close()\n"
                    "raise ImportError('the planted tmta')\n")
        self.startMaster(cwd=planted)
        sendMessage(self.port, "alice@example.com", ["bob@localhost"], "unshadowed")
        waitFor(lambda: "unshadowed" in subjects(self.spool), what="delivery")
        self.assertFalse(os.path.exists(marker))

    def test_swaks(self):
        if shutil.which("swaks") is None:
            raise self.skipTest("swaks is not installed")
        self.startMaster()
        result = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.port), "--from",
             "sender@example.com", "--to", "carol@localhost", "--header", "Subject: by swaks",
             "--pipeline"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        waitFor(lambda: "by swaks" in subjects(self.spool), what="delivery")

    def test_relayDenied(self):
        master = self.startMaster(mynetworks="127.0.0.1/32")
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as caught:
            sendMessage(self.port, "a@example.com", ["victim@remote.example"], "relay",
                        source="127.0.0.2")
        code, text = caught.exception.recipients["victim@remote.example"]
        self.assertEqual(code, 454)
        self.assertIn(b"Relay access denied", text)
        for queue in ("incoming", "active", "deferred"):
            self.assertEqual(os.listdir(os.path.join(master.queue, queue)), [])
        # Log lines reach the master's log a moment after the reply.  The
        # client is named as its address resolves (/etc/hosts names
        # 127.0.0.1 only, as a rule), as Postfix names it.
        import socket

        try:
            name = socket.gethostbyaddr("127.0.0.2")[0]
        except OSError:
            name = "unknown"
        waitFor(lambda: "NOQUEUE: reject: RCPT from " in master.log(),
                what="the reject log line")
        self.assertRegex(master.log(), rf"NOQUEUE: reject: RCPT from (unknown|{name})"
                                       r"\[127\.0\.0\.2\]")

    def test_remoteMailDeferredNotDropped(self):
        master = self.startMaster()
        queueId = sendMessage(self.port, "a@localhost", ["x@remote.example"], "remote")
        waitFor(lambda: os.listdir(os.path.join(master.queue, "deferred")), what="deferral")
        waitFor(lambda: re.search(
            rf"{queueId}: to=<x@remote.example>, relay=none, .*status=deferred "
            r"\(mail transport unavailable\)", master.log()), what="the deferral log line")

    def test_bounceToSender(self):
        self.startMaster(local_mailbox_accounts="system", alias_maps="")
        # Accepted (local_recipient_maps is empty) but unknown to local:
        # the sender hears of it.
        if os.getuid() != 0:
            raise self.skipTest("system-account delivery to another user needs root")
        os.makedirs(self.spool, exist_ok=True)
        os.chmod(self.spool, 0o1777)
        user = testAccount()
        sendMessage(self.port, f"{user}@localhost", ["no-such-user-q@localhost"], "lost")
        waitFor(lambda: maildirMessages(self.spool).get(user), what="the bounce")
        [notice] = maildirMessages(self.spool)[user]
        self.assertIn(b"Subject: Undelivered Mail Returned to Sender", notice)
        self.assertIn(b"Return-Path: <>", notice)
        self.assertIn(b"<no-such-user-q@localhost>: unknown user", notice)
        self.assertIn(b"Subject: lost", notice)

    def test_postmasterCopyOfBounces(self):
        """
        notify_classes = bounce: the postmaster gets the headers of each
        bounce, as the seed's local delivery program "informs the
        postmaster of all mail that could not be delivered".
        """
        errorEntry = "error     unix  -       -       n       -       -       error\n"
        self.startMaster(MASTER_CF + errorEntry,
                         notify_classes="bounce, resource, software",
                         relay_domains="nowhere.example",
                         transport_maps="inline:{ { nowhere.example = error:no such place } }",
                         # Taken, to be bounced: smtpd would refuse the
                         # error transport's recipients at RCPT.
                         smtpd_reject_unlisted_recipient="no")
        sendMessage(self.port, "alice@localhost", ["x@nowhere.example"], "doomed",
                    body="secret body\r\n")
        waitFor(lambda: maildirMessages(self.spool).get("alice")
                and maildirMessages(self.spool).get("postmaster"), what="both notices")
        [copy] = maildirMessages(self.spool)["postmaster"]
        self.assertIn(b"Subject: Postmaster Copy: Undelivered Mail", copy)
        self.assertIn(b"Subject: doomed", copy)
        self.assertIn(b"text/rfc822-headers", copy)
        self.assertNotIn(b"secret body", copy)
        [notice] = maildirMessages(self.spool)["alice"]
        self.assertIn(b"secret body", notice)

    def sendMany(self, count, accepted, failures, stop=None, threads=8):
        lock = threading.Lock()
        numbers = iter(range(count))

        def worker():
            while stop is None or not stop.is_set():
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                try:
                    sendMessage(self.port, "load@example.com", [f"user{n % 5}@localhost"],
                                f"msg-{n}")
                except (OSError, smtplib.SMTPException) as e:
                    with lock:
                        failures.append((n, e))
                    continue
                with lock:
                    accepted.append(f"msg-{n}")

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for t in pool:
            t.start()
        return pool

    def test_killWorkerDuringTraffic(self):
        # Mail whose delivery agent died is deferred; retry soon.
        master = self.startMaster(queue_run_delay="2s", minimal_backoff_time="2s",
                                  maximal_backoff_time="4s")
        accepted, failures = [], []
        pool = self.sendMany(150, accepted, failures)
        waitFor(lambda: len(accepted) > 30, what="traffic")
        victims = [p for p in master.workers() if processName(p) in ("cleanup", "local")]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        for t in pool:
            t.join(120)
        waitFor(lambda: set(accepted) <= set(subjects(self.spool)), timeout=120,
                what="every accepted message to be delivered")
        # The master replaced the killed workers at once: the rest went on.
        self.assertGreater(len(accepted), 100)

    def test_killEverythingAndRestart(self):
        master = self.startMaster()
        accepted, failures = [], []
        stop = threading.Event()
        pool = self.sendMany(400, accepted, failures, stop=stop)
        waitFor(lambda: len(accepted) > 150, timeout=120, what="traffic")
        master.kill()
        stop.set()
        for t in pool:
            t.join(60)
        # Only a message whose queue file outlived the kill can be
        # delivered again (its delivery made and not yet recorded), and
        # only once more.
        queued = sum(len(files) for name in ("incoming", "active", "deferred")
                     for _, _, files in os.walk(os.path.join(master.queue, name)))
        master.start()
        waitFor(lambda: set(accepted) <= set(subjects(self.spool)), timeout=180,
                what="every accepted message to be delivered after the restart")
        delivered = subjects(self.spool)
        duplicates = len(delivered) - len(set(delivered))
        self.assertLessEqual(duplicates, queued)
        self.assertLessEqual(max(delivered.count(s) for s in set(delivered)), 2)


# A Python an ordinary account can run, with tmta installed: .ci/run
# makes it from the system's python3.  The Python the tests run on may
# live where only root can read (root's home, on this project's
# machines), and then nothing unprivileged can start.


def _requirePort2525(testCase) -> None:
    # The embedded default's port is fixed: tests that use it take turns
    # (trial -j runs them in parallel), holding the lock until cleanup.
    lock = open(os.path.join(tempfile.gettempdir(), "tmta-tests-port2525.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    testCase.addCleanup(lock.close)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", 2525))
        except OSError:
            raise testCase.skipTest("port 2525 is in use")


class EmbeddedDefaultTests(SynchronousTestCase):
    def test_embeddedUnprivileged(self):
        """
        An ordinary user with no configuration runs C{twistd -n tmta}:
        everything is kept under C{~/.tmta}, every process runs as that
        user, and mail for any name at localhost lands in a Maildir
        there.
        """
        if os.getuid() != 0:
            raise self.skipTest("needs root, to become an ordinary account")
        if not os.access(UNPRIVILEGED_PYTHON, os.X_OK):
            raise self.skipTest(f"no Python for an ordinary account at {UNPRIVILEGED_PYTHON} "
                                "(.ci/run makes one)")
        _requirePort2525(self)
        account = pwd.getpwnam(testAccount())
        home = os.path.join(shortTemporaryDirectory(self), "home")
        os.mkdir(home, 0o700)
        os.chown(home, account.pw_uid, account.pw_gid)
        log = os.path.join(home, "out.log")
        with open(log, "w") as out:
            os.chown(log, account.pw_uid, account.pw_gid)

            def becomeAccount():
                os.setgroups([])
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)

            process = subprocess.Popen(
                [os.path.join(os.path.dirname(UNPRIVILEGED_PYTHON), "twistd"), "-n", "--pidfile=",
                 "tmta"],
                # The venv gives Python and the dependencies; the code
                # under test is this tree's.
                env={"HOME": home, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                     "PYTHONPATH": REPO},
                stdout=out, stderr=subprocess.STDOUT, cwd=home, preexec_fn=becomeAccount,
            )

        self.addCleanup(stopProcess, process)
        waitFor(lambda: "daemon started" in open(log).read() or process.poll() is not None,
                timeout=60)
        text = open(log).read()
        data = os.path.join(home, ".tmta")
        self.assertIn(f"everything is under {data}", text, text)
        sendMessage(2525, "a@example.com", ["someone@localhost"], "unprivileged")
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            sendMessage(2525, "a@example.com", ["x@remote.example"], "no relay")
        spool = os.path.join(data, "mail")
        waitFor(lambda: "unprivileged" in subjects(spool), what="delivery")
        owners = {pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
                  for pid in [process.pid] + descendants(process.pid)
                  if os.path.exists(f"/proc/{pid}")}
        self.assertEqual(owners, {account.pw_name})
        for root, dirs, files in os.walk(data):
            for name in dirs + files:
                self.assertEqual(os.lstat(os.path.join(root, name)).st_uid, account.pw_uid)

    def test_embedded(self):
        _requirePort2525(self)
        data = shortTemporaryDirectory(self)
        if os.getuid() == 0:
            # As in root's home: a directory mail_owner cannot traverse.
            data = os.path.join(data, "home")
            os.mkdir(data, 0o700)
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO
        log = os.path.join(data, "out.log")
        process = subprocess.Popen(
            [sys.executable, "-c",
             "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "tmta",
             "-d", os.path.join(data, "tmta")],
            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=data,
        )

        self.addCleanup(stopProcess, process)
        waitFor(lambda: "daemon started" in open(log).read() or process.poll() is not None)
        text = open(log).read()
        self.assertIn(f"everything is under {os.path.join(data, 'tmta')}", text)
        self.assertIn("smtpd on 127.0.0.1:2525", text)
        sendMessage(2525, "a@example.com", ["anybody@localhost"], "embedded")
        # STARTTLS is offered, with the certificate made on first start.
        import ssl

        client = smtplib.SMTP("127.0.0.1", 2525, timeout=30)
        client.starttls(context=ssl._create_unverified_context())
        client.sendmail("a@example.com", ["anybody@localhost"], b"Subject: embedded tls\r\n\r\n")
        client.quit()
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            sendMessage(2525, "a@example.com", ["x@remote.example"], "no relay")
        spool = os.path.join(data, "tmta", "mail")
        waitFor(lambda: {"embedded", "embedded tls"} <= set(subjects(spool)), what="delivery")
        self.assertTrue(os.path.exists(os.path.join(data, "tmta", "main.cf")))
