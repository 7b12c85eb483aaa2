"""
Sites that keep their domains, mailboxes and aliases in a database, as
the ISPmail guide and the virtual-hosting how-tos set Postfix up: a real
master whose C{virtual_*} tables are C{pgsql:} (or C{mysql:}) files
against a private PostgreSQL (or MariaDB), delivering to the virtual
agent's Maildirs.  Unknown users are refused at RCPT; a database that
is down defers, never bounces or loses, and the mail goes through once
it is back.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import (
    MASTER_CF,
    REPO,
    Master,
    freePort,
    localMaildirs,
    sendMessage,
    shortTemporaryDirectory,
    testAccount,
    waitFor,
)
from tests.support.databases import PrivateMariaDB, PrivatePostgreSQL

#: The table files, as the guides write them (the mailbox query gives
#: the virtual agent its Maildir, relative to virtual_mailbox_base).
TABLES = {
    "virtual-mailbox-domains.cf": "query = SELECT 1 FROM virtual_domains WHERE name='%s'\n",
    "virtual-mailbox-maps.cf": "query = SELECT email FROM virtual_users\n"
                               "  WHERE email='%s' AND active = 1\n"
                               "result_format = %d/%u/\n",
    "virtual-alias-maps.cf": "query = SELECT destination FROM virtual_aliases "
                             "WHERE source='%s'\n",
    "email2email.cf": "query = SELECT email FROM virtual_users WHERE email='%s'\n",
    # Local aliases: a name's aliases in the hosted domain.
    "aliases.cf": "query = SELECT destination FROM virtual_aliases "
                  "WHERE source='%s@example.org'\n",
}


class DatabaseSiteMixin:
    kind = ""

    def startServer(self):
        raise NotImplementedError()

    def connection(self) -> str:
        raise NotImplementedError()

    def setUp(self):
        self.server = self.startServer()
        self.addCleanup(self.server.stop)
        self.server.createMailDatabase()
        base = self.base = shortTemporaryDirectory(self)
        self.mail = os.path.join(base, "vmail")
        os.mkdir(self.mail)
        import pwd

        account = pwd.getpwnam(testAccount()) if os.getuid() == 0 else \
            pwd.getpwuid(os.getuid())
        os.chown(self.mail, account.pw_uid, account.pw_gid)
        tables = os.path.join(base, "tables")
        os.mkdir(tables)
        spec = {}
        for name, text in TABLES.items():
            path = os.path.join(tables, name)
            with open(path, "w") as f:
                # A server back is tried again a second after it failed.
                f.write(self.connection() + "retry_interval = 1\n" + text)
            os.chmod(path, 0o640)
            spec[name] = f"proxy:{self.kind}:{path}"
        self.port = freePort()
        self.master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(base + "/mail/"),
            "virtual_mailbox_domains": spec["virtual-mailbox-domains.cf"],
            "virtual_mailbox_maps": spec["virtual-mailbox-maps.cf"],
            "virtual_alias_maps": f"{spec['virtual-alias-maps.cf']}, {spec['email2email.cf']}",
            "alias_maps": spec["aliases.cf"],
            # Aliases are read where local uses the system's accounts.
            "local_mailbox_accounts": "system",
            "virtual_mailbox_base": self.mail,
            "virtual_uid_maps": f"static:{account.pw_uid}",
            "virtual_gid_maps": f"static:{account.pw_gid}",
            "virtual_minimum_uid": "1",
            "smtpd_sender_restrictions": "check_sender_access inline:{ held@sender.example=HOLD }",
            "minimal_backoff_time": "2s", "maximal_backoff_time": "4s",
            "queue_run_delay": "2s",
        }, MASTER_CF.format(port=self.port)
           + "virtual   unix  -       n       n       -       -       virtual\n"
           + "retry     unix  -       -       n       -       -       error\n"
           + "proxymap  unix  -       -       n       -       -       proxymap\n").start()
        self.addCleanup(self.master.stop)

    def databaseClients(self):
        """
        The pids of the processes connected to the database's port.
        """
        import re

        out = subprocess.run(["ss", "-Htnp", "state", "established", "dst",
                              f"127.0.0.1:{self.server.port}"],
                             capture_output=True, text=True, check=True).stdout
        return [int(pid) for pid in re.findall(r"pid=(\d+)", out)]

    def delivered(self, mailbox: str) -> int:
        new = os.path.join(self.mail, mailbox, "new")
        return len(os.listdir(new)) if os.path.isdir(new) else 0

    def tmta(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "tmta.cli.admin", "-c", self.master.directory]
                       + list(args), check=True, cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)

    def test_deliveredAndRefused(self):
        """
        Mailboxes, aliases (one to two mailboxes, a domain's catch-all,
        an address with a quote) are delivered; an unknown user is
        refused at RCPT, and a server that is down is a 451.
        """
        sendMessage(self.port, "someone@localhost", ["ann@example.org"], "to ann")
        sendMessage(self.port, "someone@localhost", ["team@example.org"], "to the team")
        sendMessage(self.port, "someone@localhost", ["stranger@example.net"], "catch-all")
        sendMessage(self.port, "someone@localhost", ["o'brien@example.org"], "quoted")
        # A local alias in the database, to the hosted mailboxes.
        sendMessage(self.port, "someone@localhost", ["team@localhost"], "local alias")
        waitFor(lambda: (self.delivered("example.org/ann"), self.delivered("example.org/bob"),
                         self.delivered("example.net/cy")) == (3, 3, 1),
                what="the deliveries")
        error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, self.port,
                                  "someone@localhost", ["nobody@example.org"], "unknown")
        code, reply = error.recipients["nobody@example.org"]
        self.assertEqual((code, reply[:5]), (550, b"5.1.1"))
        self.assertIn(b"User unknown in virtual mailbox table", reply)
        # Every table is proxy:, so only proxymap talks to the database.
        self.assertEqual(set(self.databaseClients()), set(self.master.workers("proxymap")))
        self.server.stop()
        error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, self.port,
                                  "someone@localhost", ["ann@example.org"], "while down")
        code, reply = error.recipients["ann@example.org"]
        self.assertEqual((code, reply[:5]), (451, b"4.3.0"))

    def test_outageDefersThenDelivers(self):
        """
        Mail queued before the database went down waits while it is
        down (deferred, never bounced) and is delivered, each message
        once, when it is back.
        """
        for n in range(5):
            sendMessage(self.port, "held@sender.example", ["ann@example.org", "team@example.org"],
                        f"held {n}")
        waitFor(lambda: sum(len(files) for _, _, files in
                            os.walk(os.path.join(self.master.queue, "hold"))) == 5,
                what="the held mail")
        self.server.stop()
        self.tmta("queue", "release", "ALL")
        waitFor(lambda: self.master.log().count("status=deferred") >= 5, timeout=60,
                what="the deliveries to be deferred")
        self.assertEqual(self.delivered("example.org/ann"), 0)
        self.server.start()
        self.tmta("queue", "flush")
        waitFor(lambda: (self.delivered("example.org/ann"), self.delivered("example.org/bob"))
                == (10, 5), timeout=90, what="the deliveries after the outage")
        log = self.master.log()
        self.assertNotIn("status=bounced", log)
        self.assertEqual(self.delivered("example.org/ann"), 10)


class PostgreSQLSiteTests(DatabaseSiteMixin, SynchronousTestCase):
    kind = "pgsql"

    def startServer(self):
        return PrivatePostgreSQL(self).start()

    def connection(self) -> str:
        return (f"hosts = 127.0.0.1:{self.server.port}\nuser = mailuser\n"
                "password = secret\ndbname = mail\n")


class MariaDBSiteTests(DatabaseSiteMixin, SynchronousTestCase):
    kind = "mysql"

    def startServer(self):
        return PrivateMariaDB(self).start()

    def connection(self) -> str:
        return (f"hosts = 127.0.0.1:{self.server.port}\nuser = mailuser\n"
                "password = secret\ndbname = mail\n")


class TwoHostTests(SynchronousTestCase):
    """
    Two tmta hosts behind MX records, sharing one PostgreSQL and one
    Redis (L{tests.twohostdriver}, in a private namespace).
    """

    def test_twoHosts(self):
        from tests.support.namespace import runNamespaceDriver

        if not shutil.which("redis-server") or not shutil.which("smtp-source"):
            raise SkipTest("needs Debian's redis-server and Postfix's smtp-source")
        seen = runNamespaceDriver(self, "twohostdriver.py", timeout=600)
        # Mail accepted by either host, delivered once.
        self.assertEqual(seen["both"], 40)
        self.assertIn("not logged in", seen["loginMismatch"])
        # Twelve messages from one client, spread over both hosts: one
        # limit of six for the two.
        self.assertEqual(seen["rate"], [6, 6])
        # Relayed by MX to the preferred host while it is up.
        self.assertEqual(seen["preferred"], 5, seen["senderLog"])
        # Killed with mail queued, the host delivers all of it, once.
        self.assertEqual(seen["afterRestart"], 30)
        # While it is down, the other MX takes its mail.
        self.assertEqual((seen["bob"], seen["cy"]), (9, 12), seen["senderLog"])
        self.assertEqual(seen["otherMX"], 10, seen["senderLog"])
