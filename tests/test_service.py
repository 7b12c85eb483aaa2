"""
Tests for the C{postfix} command's verbs (L{tmta.cli.admin.service}):
C{tmta start}, C{status}, C{reload}, C{stop}, C{check} and
C{set-permissions}, on a real master.
"""

import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    REPO,
    endToEnd,
    freePort,
    localMaildirs,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    testAccount,
    waitFor,
)


class ServiceVerbTests(SynchronousTestCase):
    def setUp(self):
        endToEnd()
        if os.getuid() != 0:
            raise self.skipTest("the postfix verbs are root's")
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        self.conf = os.path.join(self.base, "conf")
        os.makedirs(self.conf)
        self.port = freePort()
        self.spool = os.path.join(self.base, "mail")
        self.queue = os.path.join(self.base, "queue")
        self.maillog = os.path.join(self.base, "maillog")
        settings = {"queue_directory": self.queue, "inet_protocols": "ipv4",
                    "mail_owner": testAccount(), "myhostname": "localhost",
                    "mydestination": "localhost", "maillog_file": self.maillog,
                    **localMaildirs(self.spool + "/")}
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.writelines(f"{name} = {value}\n" for name, value in settings.items())
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port))

    def tmta(self, *words):
        return subprocess.run([sys.executable, "-m", "tmta.cli.admin", "-c", self.conf,
                               *words], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=REPO))

    def test_startStatusReloadStop(self):
        """
        C{tmta start} starts the master as a daemon that delivers and
        logs to C{maillog_file}; C{status} says it runs, C{reload}
        re-reads the configuration, C{stop} returns once it has gone.
        """
        self.assertEqual(self.tmta("status").returncode, 1)
        started = self.tmta("start")
        self.assertEqual(started.returncode, 0, started.stderr)
        self.addCleanup(self.tmta, "stop")
        status = self.tmta("status")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn("is running: PID:", status.stderr)
        self.assertEqual(self.tmta("start").returncode, 1)
        waitFor(lambda: os.path.exists(self.maillog) and "daemon started" in open(
            self.maillog).read(), what="the master's start in maillog_file")
        sendMessage(self.port, "alice@example.com", ["bob@localhost"], "started")
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="delivery")
        self.assertEqual(self.tmta("reload").returncode, 0)
        waitFor(lambda: "reload: configuration" in open(self.maillog).read(), what="reload")
        stopped = self.tmta("stop")
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertEqual(self.tmta("status").returncode, 1)

    def test_startFailsLoudly(self):
        """
        A master that cannot start (its port is taken) makes C{tmta start}
        fail at once with the reason, rather than wait for ever on a
        daemon that has gone.
        """
        import socket

        with socket.socket() as taken:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", self.port))
            taken.listen()
            started = self.tmta("start")
        self.assertEqual(started.returncode, 1)
        self.assertIn("tmta: fatal:", started.stderr)
        self.assertIn(str(self.port), started.stderr)
        self.assertEqual(self.tmta("status").returncode, 1)

    def test_checkAndSetPermissions(self):
        """
        C{tmta check} finds a queue directory left with the wrong owner
        or mode; C{tmta set-permissions} puts it right.
        """
        self.assertEqual(self.tmta("set-permissions").returncode, 0)
        checked = self.tmta("check")
        self.assertEqual((checked.returncode, checked.stdout), (0, ""))
        active = os.path.join(self.queue, "active")
        os.chown(active, 0, 0)
        os.chmod(self.queue, 0o700)
        checked = self.tmta("check")
        self.assertEqual(checked.returncode, 1)
        self.assertIn(f"not owned by {testAccount()}: {active}", checked.stdout)
        self.assertIn(f"bad mode 700 (want 755): {self.queue}", checked.stdout)
        self.assertEqual(self.tmta("set-permissions").returncode, 0)
        checked = self.tmta("check")
        self.assertEqual((checked.returncode, checked.stdout), (0, ""))

    def test_startupProblemsSaidWhole(self):
        """
        What a component cannot honour (found only when the master checks
        each service) is reported by C{tmta check}, and by C{tmta start}
        in full, before a daemon is started.
        """
        with open(os.path.join(self.conf, "master.cf"), "a") as f:
            f.write("smtp      unix  -       -       n       -       -       smtp\n"
                    "relay     unix  -       -       n       -       -       smtp\n")
        with open(os.path.join(self.conf, "main.cf"), "a") as f:
            f.write("smtp_tls_security_level = fingerprint\n")
        checked = self.tmta("check")
        self.assertEqual(checked.returncode, 1)
        self.assertIn("smtp/unix: smtp_tls_security_level", checked.stdout)
        started = self.tmta("start")
        self.assertEqual(started.returncode, 1)
        for service in ("smtp/unix", "relay/unix"):
            self.assertIn(f"{service}: smtp_tls_security_level or smtp_tls_policy_maps: "
                          "cannot be honoured: TLS security level 'fingerprint' is not "
                          "implemented", started.stderr)
        self.assertEqual(self.tmta("status").returncode, 1)

    def test_checkFindsMissingAccounts(self):
        with open(os.path.join(self.conf, "main.cf"), "a") as f:
            f.write("default_privs = no-such-account-here\n")
        checked = self.tmta("check")
        self.assertEqual(checked.returncode, 1)
        self.assertIn("default_privs: no account named 'no-such-account-here'", checked.stdout)

    def tearDown(self):
        shutil.rmtree(self.base, ignore_errors=True)
