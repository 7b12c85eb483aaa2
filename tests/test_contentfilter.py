"""
After-queue content filtering (C{content_filter}, C{FILTER}, and
C{receive_override_options}), set up as Postfix's FILTER_README sets it
up, against a real filter: Debian's spampd, an SMTP proxy built on Perl's
Net::Server and SpamAssassin (so the filter's SMTP is not tmta's), with a
SpamAssassin rule of the test's own and no network tests.
"""

import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    CORE_MASTER_CF,
    REPO,
    Master,
    endToEnd,
    freePorts,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    stopProcess,
    waitFor,
)

SPAMPD = shutil.which("spampd") or "/usr/sbin/spampd"

#: The spam marker the test's SpamAssassin rule scores.
MARKER = "tmta-filter-spam-marker"

SPAMASSASSIN_RULES = f"""\
body TMTA_FILTER_TEST /{MARKER}/
score TMTA_FILTER_TEST 20.0
describe TMTA_FILTER_TEST the test's own spam marker
report_safe 0
"""

#: FILTER_README's after-queue setup: mail from outside goes through the
#: "scan" transport to the filter, which hands it back to the smtpd on
#: the return port, whose overrides keep it from being filtered and
#: checked again.
FILTER_MASTER_CF = CORE_MASTER_CF + """\
local     unix  -       n       n       -       -       local
scan      unix  -       -       n       -       10      smtp
  -o smtp_send_xforward_command=yes
  -o smtp_data_done_timeout=1200
127.0.0.1:{returnPort} inet n  -       n       -       10      smtpd
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
  -o content_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_helo_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
"""


class PrivateSpampd:
    """
    spampd on loopback: SMTP in on C{port}, out to C{relayPort}.
    """

    def __init__(self, directory: str, port: int, relayPort: int) -> None:
        self.directory = directory
        self.port = port
        self.relayPort = relayPort
        self.rules = os.path.join(directory, "spampd.cf")
        self.logPath = os.path.join(directory, "spampd.log")
        with open(self.rules, "w") as f:
            f.write(SPAMASSASSIN_RULES)
        self.process = None

    def start(self) -> "PrivateSpampd":
        log = open(self.logPath, "a")
        # Its log goes to syslog, which the test does not run: what it
        # says of that, and its errors, go to the log file.
        self.process = subprocess.Popen(
            [SPAMPD, "--nodetach", "--logsock=inet", f"--host=127.0.0.1:{self.port}",
             f"--relayhost=127.0.0.1:{self.relayPort}", "--children=1", "--local-only",
             "--tagall", f"--pid={os.path.join(self.directory, 'spampd.pid')}",
             f"--saconfig={self.rules}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        waitFor(lambda: _accepts(self.port) or self.process.poll() is not None,
                timeout=120, what="spampd to listen")
        if self.process.poll() is not None:
            raise AssertionError(f"spampd exited:\n{self.log()}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # Its children are in its process group.
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except OSError:
                pass
            stopProcess(self.process)

    def log(self) -> str:
        with open(self.logPath, errors="replace") as f:
            return f.read()


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def setUpFilter(test) -> None:
    """
    What a filter test needs: a directory, its Maildirs, three ports
    (smtpd's, the filter's, the smtpd's the filter hands mail back to),
    and a private spampd between the last two (not started).
    """
    endToEnd()
    if not os.access(SPAMPD, os.X_OK):
        raise test.skipTest("no spampd (Debian's spampd)")
    test.base = shortTemporaryDirectory(test)
    os.chmod(test.base, 0o755)
    test.spool = os.path.join(test.base, "mail")
    test.port, test.filterPort, test.returnPort = freePorts(3)
    test.spampd = PrivateSpampd(test.base, test.filterPort, test.returnPort)
    test.addCleanup(test.spampd.stop)


class AfterQueueFilterTests(SynchronousTestCase):
    """
    Mail through spampd and back, exactly once, checked once.
    """

    def setUp(self):
        setUpFilter(self)
        checks = os.path.join(self.base, "header_checks")
        with open(checks, "w") as f:
            f.write("/^Subject:/ PREPEND X-Checked: on the way in\n")
        self.main = {"myhostname": "mx.example.org", "mydestination": "localhost",
                     "content_filter": f"scan:[127.0.0.1]:{self.filterPort}",
                     "header_checks": f"regexp:{checks}",
                     "minimal_backoff_time": "300s", "maximal_backoff_time": "4000s",
                     "queue_run_delay": "300s",
                     **localMaildirs(self.spool + "/")}

    def startMaster(self):
        self.master = Master(os.path.join(self.base, "conf"), self.main,
                             FILTER_MASTER_CF.format(port=self.port,
                                                     returnPort=self.returnPort)).start()
        self.addCleanup(self.master.stop)

    def send(self, subject: str, body: str, recipients=("bob@localhost",)) -> str:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60,
                          source_address=("127.0.0.2", 0)) as client:
            client.ehlo("client.example")
            code, reply = client.docmd("MAIL", "FROM:<alice@example.com>")
            self.assertEqual(code, 250, reply)
            for recipient in recipients:
                code, reply = client.docmd("RCPT", f"TO:<{recipient}>")
                self.assertEqual(code, 250, reply)
            code, reply = client.data(
                f"From: alice@example.com\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode())
            self.assertEqual(code, 250, reply)
            return reply.decode().rsplit(" ", 1)[-1]

    def delivered(self, name: str = "bob"):
        return maildirMessages(self.spool).get(name, [])

    def test_throughTheFilterOnce(self):
        """
        Mail goes through spampd, which tags it, and comes back through
        the return smtpd into the mailbox, once: header_checks applied
        on the way in only, the filter's verdict in the headers.  Spam
        and ham are told apart by the test's own rule.
        """
        self.spampd.start()
        self.startMaster()
        self.send("ham", "an ordinary message")
        self.send("spam", f"this one carries {MARKER}")
        waitFor(lambda: len(self.delivered()) == 2, timeout=120, what="both deliveries")
        messages = {m.split(b"\nSubject: ", 1)[1].split(b"\n", 1)[0]: m.decode()
                    for m in self.delivered()}
        ham, spam = messages[b"ham"], messages[b"spam"]
        self.assertIn("\nX-Spam-Status: No,", ham)
        self.assertIn("\nX-Spam-Status: Yes,", spam)
        self.assertIn("TMTA_FILTER_TEST", spam)
        for text in (ham, spam):
            headers = text.partition("\n\n")[0]
            # Checked once: the return smtpd has no_header_body_checks.
            self.assertEqual(headers.count("X-Checked: on the way in"), 1, headers)
            # Received twice by tmta: from the client, then from spampd.
            self.assertEqual(headers.count("by mx.example.org"), 2, headers)
        self.assertIn(f"relay=127.0.0.1[127.0.0.1]:{self.filterPort}", self.master.log())
        # The smtpd the filter hands the mail back to heard of the
        # original client and queue id (XFORWARD, through spampd).
        self.assertRegex(self.master.log(), r"client=localhost\[127\.0\.0\.1\], "
                                            r"orig_queue_id=[0-9A-F]+, "
                                            r"orig_client=\S+\[127\.0\.0\.2\]")
        # Nothing is left in the queue, and no third copy arrives.
        self.assertEqual(len(self.delivered()), 2)

    def test_filterDownDefers(self):
        """
        While the filter is down, mail is queued and waits: it is never
        delivered unfiltered.  Once the filter is back, a flush sends it
        through.
        """
        self.startMaster()
        queueId = self.send("waiting", "for the filter")
        waitFor(lambda: "status=deferred" in self.master.log(), what="the deferral")
        self.assertIn(queueId, self.master.log())
        self.assertEqual(self.delivered(), [])
        self.spampd.start()
        result = subprocess.run(
            [sys.executable, "-m", "tmta.cli.admin", "queue", "flush", "-c",
             self.master.directory], capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PYTHONPATH=REPO))
        self.assertEqual(result.returncode, 0, result.stderr)
        waitFor(lambda: self.delivered(), timeout=120, what="the delivery after the flush")
        [message] = self.delivered()
        self.assertIn(b"\nX-Spam-Status: No,", message)

    def test_unfilteredReturnPortStillGuarded(self):
        """
        The return smtpd, which filters nothing, relays for loopback
        only, as FILTER_README's C{-o mynetworks=127.0.0.0/8} says, and
        takes mail for unknown local users (they were checked on the
        way in).
        """
        users = os.path.join(self.base, "users")
        with open(users, "w") as f:
            f.write("bob ok\n")
        self.main["local_recipient_maps"] = f"texthash:{users}"
        self.startMaster()
        with smtplib.SMTP("127.0.0.1", self.returnPort, timeout=60) as client:
            client.ehlo("spampd.example")
            client.mail("alice@example.com")
            code, _ = client.rcpt("someone@localhost")
            self.assertEqual(code, 250)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            client.ehlo("client.example")
            client.mail("alice@example.com")
            code, reply = client.rcpt("someone@localhost")
            self.assertEqual(code, 550, reply)


#: SMTPD_PROXY_README's before-queue setup: the smtpd on the port passes
#: each transaction to the filter as it happens; the filter hands it to
#: the smtpd on the return port, which queues it.
PROXY_MASTER_CF = CORE_MASTER_CF.replace(
    "{port}      inet  n       -       n       -       -       smtpd\n",
    "{port}      inet  n       -       n       -       -       smtpd\n"
    "  -o smtpd_proxy_filter=127.0.0.1:{filterPort}\n"
    "  -o smtpd_proxy_options={options}\n") + """\
local     unix  -       n       n       -       -       local
127.0.0.1:{returnPort} inet n  -       n       -       -       smtpd
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_recipient_restrictions=check_recipient_access,texthash:{blocked},permit_mynetworks,reject
  -o smtpd_data_restrictions=
  -o mynetworks=127.0.0.0/8
  -o receive_override_options=no_unknown_recipient_checks
"""


class BeforeQueueFilterTests(SynchronousTestCase):
    """
    C{smtpd_proxy_filter} with spampd as the filter: the client's
    transaction goes through it while the client waits, and the filter's
    replies (and the smtpd's behind it) are the client's.
    """

    #: C{smtpd_proxy_options}.
    options = ""

    def setUp(self):
        setUpFilter(self)
        blocked = os.path.join(self.base, "blocked")
        with open(blocked, "w") as f:
            f.write("blocked@localhost REJECT filtered out\n")
        self.master = Master(
            os.path.join(self.base, "conf"),
            {"myhostname": "mx.example.org", "mydestination": "localhost",
             **localMaildirs(self.spool + "/")},
            PROXY_MASTER_CF.format(port=self.port, filterPort=self.filterPort,
                                   returnPort=self.returnPort, blocked=blocked,
                                   options=self.options))

    def test_throughTheFilterWhileTheClientWaits(self):
        self.spampd.start()
        self.master.start()
        self.addCleanup(self.master.stop)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60,
                          source_address=("127.0.0.2", 0)) as client:
            client.ehlo("client.example")
            client.mail("alice@example.com")
            self.assertEqual(client.rcpt("bob@localhost")[0], 250)
            # Refused by the smtpd behind the filter, while the client waits.
            code, reply = client.rcpt("blocked@localhost")
            self.assertEqual(code, 554, reply)
            self.assertIn(b"filtered out", reply)
            code, reply = client.data(
                f"From: alice@example.com\r\nSubject: spam\r\n\r\n"
                f"..this line starts with a dot\r\ncarries {MARKER}\r\n".encode())
            self.assertEqual(code, 250, reply)
            self.assertRegex(reply.decode(), r"^2\.0\.0 Ok: queued as [0-9A-F]+$")
        waitFor(lambda: self.delivered(), timeout=60, what="the delivery")
        [message] = self.delivered()
        text = message.decode()
        headers, _, body = text.partition("\n\n")
        self.assertIn("\nX-Spam-Status: Yes,", headers)
        self.assertIn("\n..this line starts with a dot\n", "\n" + body)
        # smtpd's own Received: header (no queue id: the message was
        # queued behind the filter), then the one of the smtpd it went to.
        self.assertRegex(headers, r"Received: from client\.example \(\S+ \[127\.0\.0\.2\]\)"
                                  r"\n\tby mx\.example\.org \(tmta\) with ESMTP\n\tfor <bob@")
        self.assertEqual(headers.count("by mx.example.org (tmta)"), 2)
        waitFor(lambda: "proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as"
                in self.master.log(), what="the proxy-accept line")
        self.assertIn('rejected "RCPT TO:<blocked@localhost>"', self.master.log())
        # The smtpd behind the filter heard of the original client
        # (XFORWARD, through spampd).
        self.assertRegex(self.master.log(), r"client=localhost\[127\.0\.0\.1\], "
                                            r"orig_client=\S+\[127\.0\.0\.2\]")

    def test_filterDownRefuses(self):
        """
        While the filter is down, recipients are refused for now: nothing
        is accepted unfiltered.
        """
        self.master.start()
        self.addCleanup(self.master.stop)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            client.ehlo("client.example")
            client.mail("alice@example.com")
            code, reply = client.rcpt("bob@localhost")
            self.assertEqual((code, reply), (451, b"4.3.0 Error: queue file write error"))
            self.assertEqual(client.docmd("DATA")[0], 554)
        waitFor(lambda: f"connect to proxy filter 127.0.0.1:{self.filterPort}"
                in self.master.log(), what="the warning")
        self.assertEqual(self.delivered(), [])

    def delivered(self):
        return maildirMessages(self.spool).get("bob", [])


class SpeedAdjustedFilterTests(BeforeQueueFilterTests):
    """
    The same, with C{smtpd_proxy_options = speed_adjust}: the filter
    hears of the transaction once the whole message is in.
    """

    options = "speed_adjust"

    def test_throughTheFilterWhileTheClientWaits(self):
        """
        Recipients smtpd's checks pass are taken at once; the filter
        gets the whole transaction at the end of data, and its reply
        (the smtpd's behind it) is the client's.
        """
        self.spampd.start()
        self.master.start()
        self.addCleanup(self.master.stop)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            client.ehlo("client.example")
            client.mail("alice@example.com")
            self.assertEqual(client.rcpt("bob@localhost")[0], 250)
            code, reply = client.data(f"Subject: adjusted\r\n\r\n{MARKER}\r\n".encode())
            self.assertEqual(code, 250, reply)
            # A recipient the smtpd behind the filter refuses refuses
            # the message, at its end.
            client.mail("alice@example.com")
            self.assertEqual(client.rcpt("bob@localhost")[0], 250)
            self.assertEqual(client.rcpt("blocked@localhost")[0], 250)
            code, reply = client.data(b"Subject: refused\r\n\r\nx\r\n")
            self.assertEqual(code, 554, reply)
            self.assertIn(b"filtered out", reply)
        waitFor(lambda: self.delivered(), timeout=60, what="the delivery")
        [message] = self.delivered()
        self.assertIn(b"\nX-Spam-Status: Yes,", message)
        self.assertIn(b"Subject: adjusted", message)

    def test_filterDownRefuses(self):
        """
        While the filter is down, the message is refused for now at its
        end: nothing is accepted unfiltered.
        """
        self.master.start()
        self.addCleanup(self.master.stop)
        with smtplib.SMTP("127.0.0.1", self.port, timeout=60) as client:
            client.ehlo("client.example")
            client.mail("alice@example.com")
            self.assertEqual(client.rcpt("bob@localhost")[0], 250)
            self.assertEqual(client.data(b"Subject: x\r\n\r\nx\r\n"),
                             (451, b"4.3.0 Error: queue file write error"))
        self.assertEqual(self.delivered(), [])


class ProxyUnitTests(SynchronousTestCase):
    """
    L{tmta.smtpd.proxy}: the filter's address, and the message text as
    the filter gets it.
    """

    def test_settings(self):
        from tmta.config import MainConfig
        from tmta.smtpd.proxy import ProxySettings

        def settings(value):
            return ProxySettings.fromConfig(MainConfig({
                "smtpd_proxy_filter": value, "queue_directory": "/var/spool/tmta",
                "myhostname": "mx.example.org"}))

        self.assertIsNone(settings(""))
        inet = settings("127.0.0.1:10025")
        self.assertEqual((inet.family, inet.host, inet.port, inet.ehlo, inet.timeout),
                         ("inet", "127.0.0.1", 10025, "mx.example.org", 100.0))
        self.assertEqual(settings("inet:[::1]:10025").host, "::1")
        self.assertEqual(settings("unix:private/filter").path,
                         "/var/spool/tmta/private/filter")
        self.assertRaises(ValueError, settings, "127.0.0.1")
        self.assertRaises(ValueError, settings, "host:99999")

    def test_dotsDoubledAcrossChunks(self):
        from tmta.smtpd.proxy import ProxyTransfer

        written = []

        class Proxy:
            def write(self, data):
                written.append(data)

        transfer = ProxyTransfer(Proxy(), b"Received: by test\n", "a@example.com", 0)
        # The client's dot-stuffed text, decoded, and stuffed again.
        for part in (b"Subject: x\r\n\r\nline\r\n", b"..dot first\r\nmid", b"dle .\r\n",
                     b"...two\r\n.\r\n"):
            transfer.feed(part)
        self.assertTrue(transfer.done)
        self.assertEqual(b"".join(written),
                         b"Received: by test\r\nSubject: x\r\n\r\nline\r\n..dot first\r\n"
                         b"middle .\r\n...two\r\n")
