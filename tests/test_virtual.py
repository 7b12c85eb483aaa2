"""
Tests for the virtual delivery agent (L{tmta.virtual}): mailbox, uid and
gid maps, the base directory it never leaves, the uids it never takes,
and a real master delivering a virtual domain.
"""

import mailbox
import os
import pwd

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    Master,
    activeRequest,
    freePort,
    localMaildirs,
    sendMessage,
    shortTemporaryDirectory,
    testAccount,
    waitFor,
)
from tmta.config import MainConfig
from tmta.delivery import BOUNCED, DEFERRED, SENT
from tmta.queue.layout import createLayout
from tmta.queue.store import QueueStore
from tmta.virtual import VirtualAgent

MAILBOXES = """\
alice@virt.example    virt.example/alice/
bob@virt.example      virt.example/bob
@catch.example        catch/all/
evil@virt.example     ../../escape/
"""


def _account():
    return pwd.getpwnam(testAccount()) if os.getuid() == 0 else pwd.getpwuid(os.getuid())


class VirtualAgentTests(SynchronousTestCase):
    def setUp(self):
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        queue = os.path.join(self.base, "queue")
        createLayout(queue)
        self.store = QueueStore(queue)
        self.mail = os.path.join(self.base, "vmail")
        os.mkdir(self.mail)
        self.account = _account()
        os.chown(self.mail, self.account.pw_uid, self.account.pw_gid)
        self.maps = os.path.join(self.base, "vmailbox")
        with open(self.maps, "w") as f:
            f.write(MAILBOXES)

    def agent(self, **params):
        settings = {"virtual_mailbox_base": self.mail,
                    "virtual_mailbox_maps": f"texthash:{self.maps}",
                    "virtual_uid_maps": f"static:{self.account.pw_uid}",
                    "virtual_gid_maps": f"static:{self.account.pw_gid}",
                    "virtual_minimum_uid": "1", "recipient_delimiter": "+"}
        settings.update(params)
        return VirtualAgent(MainConfig(settings), fsync=lambda fd: None)

    def request(self, *recipients):
        return activeRequest(self.store, recipients, b"Subject: v\n\nFrom here\n",
                             "virt.example", "sender@example.org")

    def test_mailboxes(self):
        statuses = self.agent().deliverAll(self.request(
            "alice@virt.example", "Bob@Virt.Example", "alice+x@virt.example",
            "anyone@catch.example", "nobody@virt.example"))
        self.assertEqual([s.status for s in statuses], [SENT, SENT, SENT, SENT, BOUNCED])
        alice = mailbox.Maildir(os.path.join(self.mail, "virt.example", "alice"),
                                factory=None, create=False)
        self.assertEqual(len(alice), 2)
        bob = mailbox.mbox(os.path.join(self.mail, "virt.example", "bob"), create=False)
        [message] = list(bob)
        self.assertEqual(message["Delivered-To"], "Bob@Virt.Example")
        self.assertEqual(message.get_payload(), ">From here\n")
        st = os.stat(os.path.join(self.mail, "virt.example", "bob"))
        self.assertEqual(st.st_uid, self.account.pw_uid)
        self.assertEqual(len(os.listdir(os.path.join(self.mail, "catch", "all", "new"))), 1)

    def test_neverOutsideBaseNorRoot(self):
        [status] = self.agent().deliverAll(self.request("evil@virt.example"))
        self.assertEqual(status.status, DEFERRED)
        self.assertFalse(os.path.exists(os.path.join(self.base, "escape")))
        [status] = self.agent(virtual_uid_maps="static:0").deliverAll(
            self.request("alice@virt.example"))
        self.assertEqual(status.status, DEFERRED)
        self.assertIn("never written as root", status.reason)
        [status] = self.agent(virtual_minimum_uid="100000").deliverAll(
            self.request("alice@virt.example"))
        self.assertEqual(status.status, DEFERRED)

    def test_sizeLimit(self):
        [status] = self.agent(virtual_mailbox_limit="10").deliverAll(
            self.request("bob@virt.example"))
        self.assertEqual((status.status, status.dsn), (BOUNCED, "5.2.2"))


class VirtualServiceTests(SynchronousTestCase):
    def startMaster(self, options: str = ""):
        """
        A real master delivering virt.example into Maildirs under a base
        of the test's, as the test account.

        @param options: the virtual service's C{-o} settings.
        @return: the master, its SMTP port, the mailbox base and the
            account.
        """
        base = shortTemporaryDirectory(self)
        os.chmod(base, 0o755)
        mail = os.path.join(base, "vmail")
        os.mkdir(mail)
        account = _account()
        os.chown(mail, account.pw_uid, account.pw_gid)
        maps = os.path.join(base, "vmailbox")
        with open(maps, "w") as f:
            f.write(MAILBOXES)
        port = freePort()
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(base + "/mail/"),
            "virtual_mailbox_domains": "virt.example",
            "virtual_mailbox_base": mail,
            "virtual_mailbox_maps": f"texthash:{maps}",
            "virtual_uid_maps": f"static:{account.pw_uid}",
            "virtual_gid_maps": f"static:{account.pw_gid}",
            "virtual_minimum_uid": "1",
        }, MASTER_CF.format(port=port)
           + f"virtual   unix  -       n       n       -       -       virtual {options}\n"
        ).start()
        self.addCleanup(master.stop)
        return master, port, mail, account

    def test_maxUseCountsDeliveries(self):
        """
        max_use bounds the deliveries a virtual process makes, although
        qmgr sends them all over one connection: after that many it is
        replaced, and nothing is lost on the way.
        """
        import re

        master, port, mail, _ = self.startMaster("-o max_use=3")
        for n in range(12):
            sendMessage(port, "someone@localhost", ["alice@virt.example"], f"use {n}")
        new = os.path.join(mail, "virt.example", "alice", "new")
        waitFor(lambda: os.path.isdir(new) and len(os.listdir(new)) == 12,
                what="the deliveries")
        waitFor(lambda: master.log().count("relay=virtual") == 12, what="the log lines")
        processes = set(re.findall(r"tmta/virtual\[(\d+)\]: \S+: to=", master.log()))
        self.assertGreaterEqual(len(processes), 4, processes)
        self.assertNotIn("status=deferred", master.log())

    def test_virtualDomain(self):
        """
        Mail to a virtual mailbox domain is accepted (not relayed) and
        written under virtual_mailbox_base as the mapped uid.
        """
        master, port, mail, account = self.startMaster()
        sendMessage(port, "someone@localhost", ["alice@virt.example"], "to a virtual box",
                    source="127.0.0.1")
        new = os.path.join(mail, "virt.example", "alice", "new")
        waitFor(lambda: os.path.isdir(new) and os.listdir(new), what="the delivery")
        [name] = os.listdir(new)
        self.assertEqual(os.stat(os.path.join(new, name)).st_uid, account.pw_uid)
        waitFor(lambda: "relay=virtual" in master.log(), what="the log line")
        import smtplib

        error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, port,
                                  "someone@localhost", ["nobody@virt.example"], "unknown")
        code, reply = error.recipients["nobody@virt.example"]
        self.assertEqual(code, 550)
        self.assertIn(b"User unknown in virtual mailbox table", reply)
