"""
tmta taking over a Debian server's mail from Postfix, and giving it back:
the whole of what an operator does, on a Debian "Internet Site" made by
Debian's own package scripts, in private namespaces with overlays over
C{/etc}, C{/usr} and C{/var} (L{tests.support.takeover}), so that the
machine the test runs on is left as it was.
"""

import json
import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO, UNPRIVILEGED_PYTHON, endToEnd, shortTemporaryDirectory


class TakeOverTests(SynchronousTestCase):
    def setUp(self):
        endToEnd()
        if os.getuid() != 0:
            raise self.skipTest("taking a machine over needs root")
        for command in ("postfix", "dpkg-reconfigure", "mail", "unshare", "useradd"):
            if not shutil.which(command):
                raise self.skipTest(f"no {command} (Debian's postfix and bsd-mailx packages)")
        self.tmtaBin = os.path.dirname(UNPRIVILEGED_PYTHON)
        if not os.access(os.path.join(self.tmtaBin, "tmta"), os.X_OK):
            raise self.skipTest(f"no tmta every user can run in {self.tmtaBin} "
                                "(.ci/run installs it)")
        probe = subprocess.run(["unshare", "-mn", "true"], capture_output=True)
        if probe.returncode != 0:
            raise self.skipTest("no private namespaces here")

    def test_takeOverDeliverAndGiveBack(self):
        """
        On a Debian Postfix "Internet Site": C{tmta install-system
        --take-over} and C{tmta start}; an ordinary user's C{mail -s
        subject root} (bsd-mailx, through the sendmail link) lands in the
        new C{/var/mail} mbox of the user root is aliased to, created as
        Postfix's local creates it; remote mail waits in C{mailq} while
        the relay (a private Postfix) is down and goes with C{tmta
        flush}; C{reload} and C{stop} work; C{tmta uninstall-system}
        gives the machine back with Postfix's maps readable by
        C{postmap -q} and its queue untouched.
        """
        base = shortTemporaryDirectory(self)
        os.chmod(base, 0o755)
        driver = subprocess.run(
            ["unshare", "-mn", "--propagation", "private", sys.executable, "-m",
             "tests.support.takeover", base, self.tmtaBin],
            cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
            timeout=600)
        self.assertEqual(driver.returncode, 0, driver.stdout + driver.stderr)
        with open(os.path.join(base, "observed.json")) as f:
            observed = json.load(f)
        self.assertNotIn("error", observed,
                         f"{observed.get('error')}\n{observed.get('log', '')[-6000:]}")
        log = observed["log"]
        self.assertEqual(observed["install"][0], 0, observed["install"][1])
        self.assertEqual(observed["start"][0], 0, observed["start"][1])
        self.assertTrue(observed["sendmail"].endswith("tmta-sendmail"))

        self.assertEqual(observed["mail"][0], 0, observed["mail"][1])
        mailbox = observed["mailbox"]
        self.assertEqual((mailbox["owner"], mailbox["group"], mailbox["mode"]),
                         ("alice", observed["mailGroup"], 0o600))
        self.assertIn("Subject: subject", mailbox["text"])
        self.assertIn("\nbody\n", mailbox["text"])
        # From the user, qualified with /etc/mailname; delivered to
        # root's alias, as Postfix logs it.
        self.assertIn("From bob@mx.example.org ", mailbox["text"])
        self.assertIn("to=<alice@mx.example.org>, orig_to=<root>", log)
        self.assertIn("Subject: after reload", observed["mailboxAfterReload"])

        self.assertIn("someone@remote.example", observed["mailq"])
        self.assertIn("bob@mx.example.org", observed["mailq"])
        self.assertEqual(observed["flush"], 0)
        self.assertIn("Subject: far", observed["relayed"])
        self.assertIn("Mail queue is empty", observed["mailqAfter"])
        self.assertEqual(observed["reload"], 0)
        self.assertEqual(observed["stop"][0], 0, observed["stop"][1])
        self.assertEqual(observed["status"], 1)

        self.assertEqual(observed["uninstall"][0], 0, observed["uninstall"][1])
        self.assertEqual(observed["sendmailAfter"], "file")
        self.assertEqual(observed["postmap"], "smtp:[127.0.0.1]:"
                         + observed["postmap"].rpartition(":")[2])
        self.assertEqual(observed["postalias"], "alice\n")
        self.assertTrue(observed["postfixDatabasesKept"])
        self.assertTrue(observed["postfixQueueKept"])
