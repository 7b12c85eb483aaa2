"""
Tests for L{tmta.cli.admin.system}: installing tmta as a machine's MTA
over a Debian Postfix configuration, under a root directory of the
test's own, and putting the machine back.
"""

import hashlib
import io
import os
import shutil
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tmta.cli.admin.system import installSystem, uninstallSystem

#: Debian's "Internet Site" main.cf, as its postfix package writes it
#: (the parts that matter here).
DEBIAN_MAIN_CF = """\
smtpd_banner = $myhostname ESMTP $mail_name (Debian/GNU)
biff = no
append_dot_mydomain = no
readme_directory = no
compatibility_level = 3.6
smtpd_tls_cert_file=/etc/ssl/certs/ssl-cert-snakeoil.pem
smtpd_tls_key_file=/etc/ssl/private/ssl-cert-snakeoil.key
smtpd_tls_security_level=may
smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination
myhostname = mx.example.org
alias_maps = hash:/etc/aliases
alias_database = hash:/etc/aliases
myorigin = /etc/mailname
mydestination = $myhostname, localhost.example.org, localhost
relayhost =
transport_maps = hash:/etc/postfix/transport
mynetworks = 127.0.0.0/8 [::ffff:127.0.0.0]/104 [::1]/128
mailbox_size_limit = 0
recipient_delimiter = +
inet_interfaces = all
inet_protocols = all
"""


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class InstallTests(SynchronousTestCase):
    def setUp(self):
        if not shutil.which("postmap"):
            raise self.skipTest("Postfix is not installed")
        self.root = os.path.abspath(self.mktemp())
        self.postfix = os.path.join(self.root, "etc", "postfix")
        os.makedirs(self.postfix)
        with open(os.path.join(self.postfix, "main.cf"), "w") as f:
            f.write(DEBIAN_MAIN_CF)
        shutil.copy("/etc/postfix/master.cf", os.path.join(self.postfix, "master.cf")) \
            if os.path.exists("/etc/postfix/master.cf") else None
        with open(os.path.join(self.root, "etc", "aliases"), "w") as f:
            f.write("postmaster: root\nroot: alice\n")
        with open(os.path.join(self.postfix, "transport"), "w") as f:
            f.write("example.net smtp:[relay.example.net]\n")
        # Postfix's own databases, which must stay as they are.
        empty = os.path.join(self.root, "pfconf")
        os.makedirs(empty)
        open(os.path.join(empty, "main.cf"), "w").close()
        self.pfconf = empty
        subprocess.run(["postalias", "-c", empty,
                        f"hash:{os.path.join(self.root, 'etc', 'aliases')}"], check=True)
        subprocess.run(["postmap", "-c", empty,
                        f"hash:{os.path.join(self.postfix, 'transport')}"], check=True)
        self.postfixDatabases = {path: digest(path) for path in (
            os.path.join(self.root, "etc", "aliases.db"),
            os.path.join(self.postfix, "transport.db"))}
        sbin = os.path.join(self.root, "usr", "sbin")
        os.makedirs(sbin)
        with open(os.path.join(sbin, "sendmail"), "w") as f:
            f.write("#!/bin/sh\n# Postfix's sendmail\n")

    def postmap(self, *args):
        return subprocess.run(["postmap", "-c", self.pfconf, *args], capture_output=True,
                              text=True, timeout=60)

    def test_takeOverAndGiveBack(self):
        """
        Taking over a Debian Postfix configuration makes tmta's own
        configuration and queue, reads Postfix's hash: tables as lmdb:
        databases built beside them, links sendmail (keeping Postfix's),
        and writes a systemd unit -- without touching Postfix's files;
        the uninstall puts every link back and removes what it made.
        """
        err = io.StringIO()
        self.assertEqual(installSystem(self.root, takeOver=True, force=True, err=err), 0,
                         err.getvalue())
        config = os.path.join(self.root, "etc", "tmta")
        with open(os.path.join(config, "main.cf")) as f:
            main = f.read()
        self.assertIn("queue_directory = /var/spool/tmta\n", main)
        self.assertIn("alias_maps = lmdb:/etc/aliases\n", main)
        self.assertIn("transport_maps = lmdb:/etc/postfix/transport\n", main)
        self.assertNotIn("hash:", main)
        self.assertIn("myorigin = /etc/mailname\n", main)
        # Postfix reads the databases tmta built for itself; its own are
        # unchanged.
        aliases = os.path.join(self.root, "etc", "aliases")
        self.assertEqual(subprocess.run(["postalias", "-c", self.pfconf, "-q", "root",
                                         f"lmdb:{aliases}"], capture_output=True,
                                        text=True).stdout, "alice\n")
        self.assertEqual({path: digest(path) for path in self.postfixDatabases},
                         self.postfixDatabases)
        sendmail = os.path.join(self.root, "usr", "sbin", "sendmail")
        self.assertTrue(os.path.islink(sendmail))
        self.assertTrue(os.readlink(sendmail).endswith("tmta-sendmail"))
        self.assertTrue(os.path.exists(sendmail + ".pre-tmta"))
        with open(os.path.join(self.root, "etc", "systemd", "system", "tmta.service")) as f:
            unit = f.read()
        self.assertIn("tmta -c /etc/tmta", unit)
        self.assertIn("Conflicts=postfix.service", unit)
        # Installing twice is refused.
        self.assertEqual(installSystem(self.root, takeOver=True, force=True,
                                       err=io.StringIO()), 1)

        self.assertEqual(uninstallSystem(self.root, err=io.StringIO()), 0)
        self.assertFalse(os.path.islink(sendmail))
        with open(sendmail) as f:
            self.assertIn("Postfix's sendmail", f.read())
        self.assertFalse(os.path.exists(aliases + ".lmdb"))
        self.assertFalse(os.path.exists(
            os.path.join(self.root, "etc", "systemd", "system", "tmta.service")))
        self.assertTrue(os.path.exists(os.path.join(config, "main.cf")))
        self.assertEqual(self.postmap("-q", "example.net",
                                      f"hash:{os.path.join(self.postfix, 'transport')}").stdout,
                         "smtp:[relay.example.net]\n")

    def test_anotherMTAsSendmailKeptWithoutForce(self):
        err = io.StringIO()
        self.assertEqual(installSystem(self.root, err=err), 1)
        self.assertIn("another MTA's", err.getvalue())

    def test_nothingToTakeOver(self):
        os.unlink(os.path.join(self.postfix, "main.cf"))
        err = io.StringIO()
        self.assertEqual(installSystem(self.root, takeOver=True, force=True, err=err), 1)
        self.assertIn("nothing to take over", err.getvalue())
