"""
Tests for local(8)'s expansions (L{tmta.local.agent}): aliases built
into C{hash:} tables, include files, file and command targets,
C{.forward}, the rights each delivery runs with, and what an envelope
address may never do.  Run as root with real accounts: rights mean
nothing otherwise.
"""

import mailbox
import multiprocessing
import os
import pwd
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.support import activeRequest, shortTemporaryDirectory, testAccount
from tmta.cli.admin import buildMaps
from tmta.config import MainConfig
from tmta.delivery import BOUNCED, DEFERRED, SENT
from tmta.local.agent import LocalAgent
from tmta.mail.mailbox import deliverMaildir, deliverMbox
from tmta.mail.pipecommand import runCommand
from tmta.queue.layout import createLayout
from tmta.queue.store import QueueStore

MESSAGE = b"Subject: hi\nFrom: a@b\n\nFrom the start\nbody\n"


class RecordingForwarder:
    """
    Stands where cleanup would take forwarded mail (the end-to-end tests
    use the real one).
    """

    def __init__(self):
        self.posted = []

    def forward(self, sender, recipients, attributes, content):
        self.posted.append((sender, recipients, b"".join(content)))
        return f"FWD{len(self.posted)}"


class ExpansionTests(SynchronousTestCase):
    def setUp(self):
        if os.getuid() != 0:
            raise self.skipTest("delivery rights need root")
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        self.queue = os.path.join(self.base, "queue")
        createLayout(self.queue)
        self.store = QueueStore(self.queue)
        self.spool = os.path.join(self.base, "spool")
        os.mkdir(self.spool)
        os.chmod(self.spool, 0o1777)
        # Where file and command targets write: open to everyone.
        self.out = os.path.join(self.base, "out")
        os.mkdir(self.out)
        os.chmod(self.out, 0o1777)
        self.user = pwd.getpwnam(testAccount())
        self.nobody = pwd.getpwnam("nobody")
        self.home = os.path.join(self.base, "home")
        os.mkdir(self.home, 0o755)
        os.chown(self.home, self.user.pw_uid, self.user.pw_gid)
        fields = list(self.user)
        fields[5] = self.home
        self.account = pwd.struct_passwd(fields)
        self.forwarder = RecordingForwarder()

    def accounts(self, name):
        if name == self.account.pw_name:
            return self.account
        return pwd.getpwnam(name)

    def agent(self, aliases="", **params):
        settings = {"myhostname": "mx.example.org", "mydestination": "localhost, $myhostname",
                    "mail_spool_directory": self.spool, "alias_maps": "",
                    "default_privs": "nobody", "mail_owner": testAccount()}
        if aliases:
            path = os.path.join(self.base, "aliases")
            with open(path, "w") as f:
                f.write(aliases.replace("OUT", self.out).replace("USER", self.user.pw_name))
            self.assertEqual(buildMaps([f"hash:{path}"], aliases=True), 0)
            settings["alias_maps"] = f"hash:{path}"
        settings.update(params)
        return LocalAgent(MainConfig(settings), fsync=lambda fd: None, accounts=self.accounts,
                          forwarder=self.forwarder)

    def request(self, *recipients, content=MESSAGE, sender="alice@example.com"):
        return activeRequest(self.store, recipients, content, "mx.example.org", sender)

    def read(self, *parts):
        with open(os.path.join(*parts), "rb") as f:
            return f.read()

    def test_mailboxInAGroupSpool(self):
        """
        In a mail spool writable by its group and not by everyone
        (Debian's C{/var/mail}, C{root:mail 2775}), a new mailbox is
        created as Postfix's local creates it: owned by the user, in the
        spool's group, mode 0600.
        """
        import grp

        group = grp.getgrnam("mail").gr_gid if "mail" in {g.gr_name for g in grp.getgrall()} \
            else self.nobody.pw_gid
        os.chown(self.spool, 0, group)
        os.chmod(self.spool, 0o2775)
        [status] = self.agent().deliverAll(self.request("USER@localhost".replace(
            "USER", self.user.pw_name)))
        self.assertEqual((status.status, status.reason), (SENT, "delivered to mailbox"))
        st = os.stat(os.path.join(self.spool, self.user.pw_name))
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o7777),
                         (self.user.pw_uid, group, 0o600))
        self.assertIn(b"Subject:", self.read(self.spool, self.user.pw_name))

    def test_classicAliases(self):
        """
        A list in the classic format (continuation lines, comments),
        built into hash:, reaches a user, a file, a command and an
        include file's members; the file and the command get the
        rights of default_privs, since root owns the alias database.
        """
        members = os.path.join(self.base, "members")
        with open(members, "w") as f:
            f.write(f"# the include file\n{self.out}/included\n")
        agent = self.agent(
            "# a comment\n"
            "team: USER,\n"
            "    OUT/archive,\n"
            '    "|id -u > OUT/uid; echo $RECIPIENT > OUT/env; cat > OUT/msg",\n'
            f"    :include:{members}\n"
            "postmaster: root\n",
            allow_mail_to_files="alias, forward, include")
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        mbox = self.read(self.spool, self.user.pw_name)
        self.assertIn(b"Delivered-To: ", mbox)
        self.assertIn(b"\n>From the start\n", mbox)
        self.assertEqual(os.stat(os.path.join(self.spool, self.user.pw_name)).st_uid,
                         self.user.pw_uid)
        for name in ("archive", "included"):
            self.assertTrue(self.read(self.out, name).startswith(b"From alice@example.com "))
            self.assertEqual(os.stat(os.path.join(self.out, name)).st_uid, self.nobody.pw_uid)
        self.assertEqual(self.read(self.out, "uid").strip(), str(self.nobody.pw_uid).encode())
        self.assertEqual(self.read(self.out, "env").strip(), b"team@mx.example.org")
        self.assertIn(b"Subject: hi\n", self.read(self.out, "msg"))

    def test_aliasDeliveriesLoggedAsPostfixLogsThem(self):
        """
        Each mailbox, file or command an alias reaches gets a log line of
        its own, C{to=} the alias's target and C{orig_to=} the address
        the mail was sent to, as Postfix's local logs them.
        """
        from twisted.logger import formatEvent, globalLogPublisher

        lines = []

        def observe(event):
            lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        agent = self.agent("root: USER, OUT/archive\n",
                           allow_mail_to_files="alias, forward, include")
        [status] = agent.deliverAll(self.request("root"))
        self.assertEqual(status.status, SENT, status.reason)
        delivered = [line for line in lines if "status=sent" in line]
        self.assertEqual(len(delivered), 2, delivered)
        self.assertIn(f"to=<{self.user.pw_name}@mx.example.org>, orig_to=<root>, relay=local",
                      delivered[0])
        self.assertIn("(delivered to mailbox)", delivered[0])
        self.assertIn("to=<root@mx.example.org>, orig_to=<root>, relay=local", delivered[1])
        self.assertIn(f"(delivered to file: {self.out}/archive)", delivered[1])

    def test_patternTableOwnerRunsCommands(self):
        """
        A command in a regexp: alias table runs as the table file's owner
        (as in Postfix), not as default_privs; an inline table, which is
        not a file, counts as root's.
        """
        path = os.path.join(self.base, "aliases.regexp")
        with open(path, "w") as f:
            f.write(f'/^team$/ "|id -u > {self.out}/uid"\n')
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        agent = self.agent(alias_maps=f"regexp:{path}")
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        self.assertEqual(self.read(self.out, "uid").strip(), str(self.user.pw_uid).encode())
        agent = self.agent(alias_maps=f"inline:{{ {{ team = |id -u > {self.out}/uid2 }} }}")
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        self.assertEqual(self.read(self.out, "uid2").strip(), str(self.nobody.pw_uid).encode())

    def test_staleDatabaseDefers(self):
        agent = self.agent("team: USER\n")
        path = os.path.join(self.base, "aliases")
        st = os.stat(path + ".db")
        os.utime(path, (st.st_atime, st.st_mtime + 10))
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, DEFERRED)
        self.assertIn("older than its source", status.reason)
        os.unlink(path + ".db")
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, DEFERRED)
        self.assertIn("tmta map build", status.reason)

    def test_includeCommandsRefusedByDefault(self):
        members = os.path.join(self.base, "members")
        with open(members, "w") as f:
            f.write(f"|touch {self.out}/ran\n")
        agent = self.agent(f"team: :include:{members}\n")
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, BOUNCED)
        self.assertIn("not allowed from include", status.reason)
        self.assertFalse(os.path.exists(os.path.join(self.out, "ran")))

    def test_includeOwnedBySomeoneElse(self):
        """
        An include file named in root's aliases but owned by an ordinary
        user is refused: its commands would otherwise run as that user
        on root's say-so.
        """
        members = os.path.join(self.base, "members")
        with open(members, "w") as f:
            f.write(f"{self.out}/planted\n")
        os.chown(members, self.user.pw_uid, self.user.pw_gid)
        agent = self.agent(f"team: :include:{members}\n",
                           allow_mail_to_files="alias, forward, include")
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, BOUNCED)
        self.assertIn("refused", status.reason)
        self.assertFalse(os.path.exists(os.path.join(self.out, "planted")))

    def test_envelopeNeverNamesCommandsOrFiles(self):
        agent = self.agent("postmaster: root\n")
        cwd = os.getcwd()
        os.chdir(self.out)
        self.addCleanup(os.chdir, cwd)
        statuses = agent.deliverAll(self.request(
            '"|touch pwned"@mx.example.org', f'"{self.out}/file"@mx.example.org',
            "/etc/passwd@mx.example.org", '":include:/etc/passwd"@localhost'))
        self.assertEqual([s.status for s in statuses], [BOUNCED] * 4)
        self.assertEqual(os.listdir(self.out), [])
        self.assertEqual(os.listdir(self.spool), [])

    def writeForward(self, text, owner=None):
        path = os.path.join(self.home, ".forward")
        with open(path, "w") as f:
            f.write(text)
        uid = self.user.pw_uid if owner is None else owner
        os.chown(path, uid, self.user.pw_gid)
        return path

    def test_forwardFile(self):
        """
        A user's .forward sends mail to a file (written as the user), to
        an address elsewhere (posted again through cleanup, sender kept)
        and to the user's own mailbox (C{\\user}).
        """
        self.writeForward(f"{self.home}/saved, friend@remote.example, \\{self.user.pw_name}\n")
        agent = self.agent()
        [status] = agent.deliverAll(self.request(f"{self.user.pw_name}@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        self.assertIn("forwarded as FWD1", status.reason)
        self.assertEqual(os.stat(os.path.join(self.home, "saved")).st_uid, self.user.pw_uid)
        self.assertIn(b"Subject: hi", self.read(self.home, "saved"))
        self.assertIn(b"Subject: hi", self.read(self.spool, self.user.pw_name))
        [(sender, recipients, content)] = self.forwarder.posted
        self.assertEqual((sender, recipients), ("alice@example.com", ["friend@remote.example"]))
        self.assertTrue(content.startswith(
            f"Delivered-To: {self.user.pw_name}@mx.example.org\n".encode()))

    def test_forwardExtension(self):
        """
        forward_path tries .forward+ext before .forward.
        """
        with open(os.path.join(self.home, ".forward+lists"), "w") as f:
            f.write(f"{self.home}/lists\n")
        os.chown(os.path.join(self.home, ".forward+lists"), self.user.pw_uid, -1)
        agent = self.agent(recipient_delimiter="+")
        [status] = agent.deliverAll(self.request(f"{self.user.pw_name}+lists@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        self.assertTrue(os.path.exists(os.path.join(self.home, "lists")))

    def test_forwardOwnedBySomeoneElse(self):
        """
        A .forward that the user does not own is ignored: the mail goes
        to the mailbox, and the command in it does not run.
        """
        self.writeForward(f"|touch {self.out}/ran\n", owner=self.nobody.pw_uid)
        agent = self.agent()
        [status] = agent.deliverAll(self.request(f"{self.user.pw_name}@mx.example.org"))
        self.assertEqual((status.status, status.reason), (SENT, "delivered to mailbox"))
        self.assertFalse(os.path.exists(os.path.join(self.out, "ran")))

    def test_forwardCommandRunsAsUser(self):
        self.writeForward(f'"|id -u > {self.out}/uid"\n')
        agent = self.agent()
        [status] = agent.deliverAll(self.request(f"{self.user.pw_name}@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        self.assertEqual(self.read(self.out, "uid").strip(), str(self.user.pw_uid).encode())

    def test_ownerAlias(self):
        """
        Mail forwarded for a list with an owner- alias carries the owner
        as its sender, so bounces go there.
        """
        agent = self.agent("team: far@remote.example\nowner-team: USER\n")
        [status] = agent.deliverAll(self.request("team@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        [(sender, recipients, _)] = self.forwarder.posted
        self.assertEqual(sender, "owner-team@mx.example.org")

    def test_aliasLoop(self):
        agent = self.agent("a: b\nb: a\n")
        [status] = agent.deliverAll(self.request("a@mx.example.org"))
        self.assertEqual(status.status, BOUNCED)

    def test_lusersRelay(self):
        agent = self.agent(luser_relay="USER".replace("USER", self.user.pw_name))
        [status] = agent.deliverAll(self.request("nobody-here@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        self.assertTrue(os.path.exists(os.path.join(self.spool, self.user.pw_name)))

    def test_mailboxCommand(self):
        agent = self.agent(mailbox_command=f"cat > {self.out}/mda; echo $HOME > {self.out}/home")
        [status] = agent.deliverAll(self.request(f"{self.user.pw_name}@mx.example.org"))
        self.assertEqual(status.status, SENT, status.reason)
        self.assertEqual(os.stat(os.path.join(self.out, "mda")).st_uid, self.user.pw_uid)
        self.assertEqual(self.read(self.out, "home").strip(), self.home.encode())


class CommandTests(SynchronousTestCase):
    """
    Exit statuses read as sysexits, output as the reason, time limits.
    """

    def runScript(self, script, message=b"x\n", limit=30.0):
        account = pwd.getpwnam("nobody") if os.getuid() == 0 else pwd.getpwuid(os.getuid())
        return runCommand(["/bin/sh", "-c", script], [message], account.pw_uid,
                          account.pw_gid, {"PATH": "/usr/bin:/bin"}, "/", limit)

    def test_statuses(self):
        self.assertEqual(self.runScript("cat >/dev/null").status, SENT)
        tempfail = self.runScript("echo try later; exit 75")
        self.assertEqual((tempfail.status, tempfail.dsn), (DEFERRED, "4.3.0"))
        self.assertIn("try later", tempfail.reason)
        nouser = self.runScript("echo no such user >&2; exit 67")
        self.assertEqual((nouser.status, nouser.dsn), (BOUNCED, "5.1.1"))
        self.assertIn("no such user", nouser.reason)
        self.assertEqual(self.runScript("exit 3").status, BOUNCED)
        self.assertEqual(self.runScript("kill -9 $$").status, DEFERRED)

    def test_unreadInput(self):
        """
        A command that exits without reading a large message succeeds.
        """
        self.assertEqual(self.runScript("true", message=b"x" * (1 << 22)).status, SENT)

    def test_timeLimit(self):
        outcome = self.runScript("sleep 30", limit=0.5)
        self.assertEqual(outcome.status, BOUNCED)
        self.assertIn("time limit", outcome.reason)

    def test_neverRoot(self):
        self.assertRaises(ValueError, runCommand, ["/bin/true"], [], 0, 0, {}, "/", 1)


def _appendMany(path, worker, count):
    for i in range(count):
        body = f"From the worker {worker}\nmessage {i}\n".encode()
        deliverMbox(path, f"From w{worker}@example.org  Thu Jan  1 00:00:00 1970\n".encode(),
                    f"X-Worker: {worker}\nX-Number: {i}\n".encode(), [b"Subject: s\n\n", body],
                    lambda fd: None)


class MailboxFormatTests(SynchronousTestCase):
    def test_mboxUnderConcurrentLoad(self):
        """
        Workers appending to one mbox at once leave every message whole,
        as Python's mailbox module reads it back.
        """
        path = os.path.join(shortTemporaryDirectory(self), "mbox")
        context = multiprocessing.get_context("fork")
        workers = [context.Process(target=_appendMany, args=(path, w, 40)) for w in range(6)]
        for p in workers:
            p.start()
        for p in workers:
            p.join(60)
            self.assertEqual(p.exitcode, 0)
        box = mailbox.mbox(path, create=False)
        seen = set()
        for message in box:
            worker, number = message["X-Worker"], message["X-Number"]
            self.assertEqual(message.get_payload(),
                             f">From the worker {worker}\nmessage {number}\n")
            seen.add((worker, number))
        self.assertEqual(len(seen), 240)

    def test_mboxSizeLimit(self):
        """
        mailbox_size_limit caps the mbox file: a delivery that would
        grow it past the limit fails for good, leaving it as it was.
        """
        from tmta.mail.mailbox import MailboxError

        path = os.path.join(shortTemporaryDirectory(self), "mbox")
        deliverMbox(path, b"From a  x\n", b"", [b"x" * 500], lambda fd: None,
                    sizeLimit=1000, incoming=520)
        size = os.path.getsize(path)
        error = self.assertRaises(MailboxError, deliverMbox, path, b"From a  x\n", b"",
                                  [b"y" * 500], lambda fd: None, sizeLimit=1000, incoming=520)
        self.assertFalse(error.temporary)
        self.assertEqual(error.dsn, "5.2.2")
        self.assertEqual(os.path.getsize(path), size)

    def test_maildirReadable(self):
        path = os.path.join(shortTemporaryDirectory(self), "Maildir")
        for i in range(3):
            deliverMaildir(path, b"Delivered-To: x@y\n", [b"Subject: %d\n\nbody\n" % i],
                           lambda fd: None)
        box = mailbox.Maildir(path, factory=None, create=False)
        self.assertEqual(sorted(m["Subject"] for m in box), ["0", "1", "2"])


class EndToEndTests(SynchronousTestCase):
    """
    A real master with system accounts: an aliases file built with
    tmta-newaliases, mail through SMTP and tmta-sendmail.
    """

    def setUp(self):
        import sys

        from tests.support import UNPRIVILEGED_PYTHON
        from tests.test_pickup import PICKUP_MASTER_CF

        if os.getuid() != 0:
            raise self.skipTest("delivery rights need root")
        self.newaliases = os.path.join(os.path.dirname(sys.executable), "tmta-newaliases")
        if not os.access(self.newaliases, os.X_OK):
            raise self.skipTest("tmta-newaliases is not installed beside this Python")
        self.unprivilegedPython = UNPRIVILEGED_PYTHON
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        self.spool = os.path.join(self.base, "spool")
        os.mkdir(self.spool)
        os.chmod(self.spool, 0o1777)
        self.out = os.path.join(self.base, "out")
        os.mkdir(self.out)
        os.chmod(self.out, 0o1777)
        self.user = pwd.getpwnam(testAccount())
        self.conf = os.path.join(self.base, "conf")
        self.aliases = os.path.join(self.base, "aliases")
        with open(self.aliases, "w") as f:
            f.write(f"# site aliases\n"
                    f"team: {self.user.pw_name},\n"
                    f"   {self.out}/archive,\n"
                    f'   "|id -u > {self.out}/uid"\n'
                    f"away: someone@remote.example\n")
        from tests.support import freePort

        self.port = freePort()
        self.masterCf = PICKUP_MASTER_CF.format(port=self.port)

    def startMaster(self):
        from tests.support import Master

        master = Master(self.conf, {
            "mydestination": "localhost, $myhostname", "myorigin": "localhost",
            "local_mailbox_accounts": "system", "mail_spool_directory": self.spool,
            "alias_maps": f"hash:{self.aliases}", "alias_database": f"hash:{self.aliases}",
            "default_privs": "nobody"}, self.masterCf)
        built = subprocess.run([self.newaliases], env=dict(os.environ, MAIL_CONFIG=self.conf),
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(built.returncode, 0, built.stderr)
        self.assertTrue(os.path.exists(self.aliases + ".db"))
        master.start()
        self.addCleanup(master.stop)
        return master

    def test_aliasesThroughSMTP(self):
        from tests.support import sendMessage, waitFor

        master = self.startMaster()
        sendMessage(self.port, "alice@localhost", ["team@localhost", "away@localhost"], "list")
        mbox = os.path.join(self.spool, self.user.pw_name)
        uid = os.path.join(self.out, "uid")
        waitFor(lambda: os.path.exists(mbox) and os.path.exists(uid) and os.path.getsize(uid),
                what="the list's deliveries")
        box = mailbox.mbox(mbox, create=False)
        self.assertEqual([m["Subject"] for m in box], ["list"])
        waitFor(lambda: os.path.exists(os.path.join(self.out, "archive")), what="the archive")
        with open(os.path.join(self.out, "uid")) as f:
            self.assertEqual(f.read().strip(), str(pwd.getpwnam("nobody").pw_uid))
        # The alias elsewhere is forwarded as a new message.
        waitFor(lambda: "forwarded as" in master.log(), what="the forwarding")
        listed = subprocess.run(
            [os.path.join(os.path.dirname(self.newaliases), "tmta"), "queue", "list", "--json"],
            env=dict(os.environ, MAIL_CONFIG=self.conf), capture_output=True, text=True,
            timeout=60)
        self.assertIn("someone@remote.example", listed.stdout)
        self.assertIn("alice@localhost", listed.stdout)

    def test_hostileRecipients(self):
        """
        Envelope addresses that look like commands or files deliver
        nowhere, through SMTP (refused at RCPT) and through
        tmta-sendmail (bounced).
        """
        import smtplib

        from tests.support import REPO, waitFor

        master = self.startMaster()
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        client.ehlo("client.example")
        client.mail("alice@localhost")
        for address in ['"|touch pwned"@localhost', f'"{self.out}/file"@localhost',
                        "/etc/passwd@localhost"]:
            code, _ = client.rcpt(address)
            self.assertEqual(code // 100, 5, address)
        client.quit()
        nobody = pwd.getpwnam("nobody")
        if not os.access(self.unprivilegedPython, os.X_OK):
            raise self.skipTest("no Python for an ordinary account (.ci/run makes one)")

        def becomeNobody():
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)

        posted = subprocess.run(
            [self.unprivilegedPython, "-c",
             "import sys; from tmta.cli.sendmail import main; sys.exit(main())",
             '"|touch pwned"@localhost', f"{self.out}/file@localhost"],
            input=b"Subject: hostile\n\nx\n", capture_output=True, timeout=60,
            preexec_fn=becomeNobody, cwd=self.out,
            env={"PYTHONPATH": REPO, "MAIL_CONFIG": self.conf, "PATH": "/usr/bin:/bin"})
        self.assertEqual(posted.returncode, 0, posted.stderr)
        waitFor(lambda: master.log().count("status=bounced") >= 2, what="the bounces")
        self.assertEqual(os.listdir(self.out), [])
        self.assertFalse(os.path.exists(os.path.join(master.directory, "pwned")))
