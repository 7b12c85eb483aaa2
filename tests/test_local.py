"""
Tests for the local delivery agent (L{tmta.local}): Maildir and mbox
delivery, the fsync discipline, aliases, and delivery with the
recipient's identity (as root, with a real unprivileged account).
"""

import os
import pwd

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import FsyncRecorder, activeRequest, shortTemporaryDirectory, testAccount
from tmta.config import MainConfig
from tmta.delivery import BOUNCED, DEFERRED, SENT
from tmta.local.agent import LocalAgent
from tmta.mail import mailbox
from tmta.mail.mailbox import deliverMaildir, deliverMbox
from tmta.queue.layout import createLayout
from tmta.queue.store import QueueStore

MESSAGE = b"Subject: hi\nFrom: a@b\n\nFrom the start\nbody\n"


def isUnnamedIn(path, directory):
    """
    Whether C{path}, as /proc reads an open file's, is a file made
    without a name (C{O_TMPFILE}) in C{directory}: C{DIR/#INODE (deleted)}.
    """
    return path.startswith(directory + "/#") and path.endswith(" (deleted)")


def openUnnamedIn(directory):
    """
    This process's open files made without a name in C{directory}.
    """
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if isUnnamedIn(path, directory):
            paths.append(path)
    return paths


class LocalAgentTests(SynchronousTestCase):
    def setUp(self):
        self.base = shortTemporaryDirectory(self)
        self.queue = os.path.join(self.base, "queue")
        createLayout(self.queue)
        self.store = QueueStore(self.queue)
        self.fsyncs = FsyncRecorder()

    def queueMessage(self, content=MESSAGE, recipients=("bob@localhost",)):
        return activeRequest(self.store, recipients, content, "localhost")

    def agent(self, fsync=None, **params):
        settings = {"myhostname": "mx.example.org", "alias_maps": ""}
        if os.getuid() == 0:
            settings["mail_owner"] = testAccount()
        settings.update(params)
        spool = settings.get("mail_spool_directory")
        if spool and settings.get("local_mailbox_accounts") == "none":
            # As the local service does: the spool belongs to mail_owner.
            os.makedirs(spool, exist_ok=True)
            if os.getuid() == 0:
                account = pwd.getpwnam(settings["mail_owner"])
                os.chown(spool, account.pw_uid, account.pw_gid)
        return LocalAgent(MainConfig(settings), fsync=fsync or self.fsyncs)

    def aliasedAgent(self, aliases: str):
        """
        An agent delivering to system accounts' mailboxes in a spool any
        user may write, with C{aliases} (postmap's format) as texthash:.

        @return: C{(agent, spool)}.
        """
        spool = os.path.join(self.base, "spool")
        os.mkdir(spool)
        os.chmod(spool, 0o1777)
        path = os.path.join(self.base, "aliases")
        with open(path, "w") as f:
            f.write(aliases)
        return self.agent(mail_spool_directory=spool, alias_maps=f"texthash:{path}"), spool

    def test_accountlessMaildir(self):
        spool = os.path.join(self.base, "mail") + "/"
        agent = self.agent(local_mailbox_accounts="none", mail_spool_directory=spool)
        [status] = agent.deliverAll(self.queueMessage())
        self.assertEqual((status.status, status.dsn), (SENT, "2.0.0"))
        new = os.path.join(spool, "bob", "new")
        [name] = os.listdir(new)
        with open(os.path.join(new, name), "rb") as f:
            text = f.read()
        self.assertEqual(
            text, b"Return-Path: <alice@example.com>\nDelivered-To: bob@localhost\n" + MESSAGE)
        self.assertEqual(os.listdir(os.path.join(spool, "bob", "tmp")), [])
        # The file (still without a name, in tmp/'s file system), then
        # new/ after it is linked there, are fsynced before success.
        self.assertTrue(isUnnamedIn(self.fsyncs.paths[-2], os.path.join(spool, "bob", "tmp")),
                        self.fsyncs.paths)
        self.assertEqual(self.fsyncs.paths[-1], new)

    def test_batchSyncsEachMaildirOnce(self):
        """
        A batch of requests fsyncs each message file, and each Maildir's
        C{new/} once for all of them, after the last rename: no message
        counts as delivered before its name is durable.
        """
        spool = os.path.join(self.base, "mail") + "/"
        agent = self.agent(local_mailbox_accounts="none", mail_spool_directory=spool)
        requests = [self.queueMessage(), self.queueMessage(),
                    self.queueMessage(recipients=["carol@localhost"])]
        results = agent.deliverBatch(requests)
        self.assertEqual([[s.status for s in statuses] for statuses in results],
                         [[SENT], [SENT], [SENT]])
        bobNew = os.path.join(spool, "bob", "new")
        carolNew = os.path.join(spool, "carol", "new")
        names = sorted(os.listdir(bobNew))
        self.assertEqual(len(names), 2)
        files = [p for p in self.fsyncs.paths if not p.endswith("/new")]
        directories = [p for p in self.fsyncs.paths if p.endswith("/new")]
        self.assertEqual(len(files), 3)
        self.assertEqual(sorted(directories), sorted([bobNew, carolNew]))
        # The directories come after every file.
        self.assertEqual(self.fsyncs.paths[3:], directories)

    def test_batchSyncFailureDefers(self):
        """
        When C{new/} cannot be synced, the deliveries into it are
        deferred and their files taken out of C{new/} again (the mail is
        tried again, and the retry's copy is the only one), and the
        duplicate filter forgets them so that the next try delivers.
        """
        spool = os.path.join(self.base, "mail") + "/"
        failing = [True]

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if failing[0] and path.endswith("/bob/new"):
                raise OSError(5, "Input/output error")
            os.fsync(fd)

        agent = self.agent(fsync=fsync, local_mailbox_accounts="none", mail_spool_directory=spool)
        request = self.queueMessage(recipients=["bob@localhost", "carol@localhost"])
        [statuses] = agent.deliverBatch([request])
        self.assertEqual([(s.status, s.dsn) for s in statuses],
                         [(DEFERRED, "4.2.0"), (SENT, "2.0.0")])
        self.assertIn("cannot sync maildir", statuses[0].reason)
        self.assertIn(os.path.join(spool, "bob", "new"), statuses[0].reason)
        self.assertEqual(os.listdir(os.path.join(spool, "bob", "new")), [])
        failing[0] = False
        request.recipients = request.recipients[:1]
        [[status]] = agent.deliverBatch([request])
        self.assertEqual(status.status, SENT)
        self.assertEqual(len(os.listdir(os.path.join(spool, "bob", "new"))), 1)

    def test_commandRunsAlone(self):
        """
        A delivery to a command is never batched with other recipients':
        in a batch from a shared connection it is sent back undelivered
        (RUN_ALONE) while the others are delivered; on a connection of
        its own it runs, answered as soon as it ends.
        """
        if os.getuid() != 0:
            raise self.skipTest("commands run as another account: needs root")
        from dataclasses import replace

        from tmta.delivery import RUN_ALONE

        user = testAccount()
        agent, spool = self.aliasedAgent(f"first {user}\nslow |/bin/sleep 1\nlast {user}\n")
        requests = [self.queueMessage(recipients=[f"{name}@localhost"])
                    for name in ("first", "slow", "last")]
        results = agent.deliverBatch(requests)
        self.assertEqual([(s.status, s.action) for r in results for s in r],
                         [(SENT, ""), (DEFERRED, RUN_ALONE), (SENT, "")])
        [[status]] = agent.deliverBatch([replace(requests[1], alone=True)])
        self.assertEqual((status.status, status.reason),
                         (SENT, "delivered to command: /bin/sleep 1"))

    def test_batchWritesEveryFileBeforeAnyFsync(self):
        """
        A batch writes every Maildir file before it fsyncs the first;
        each file is fsynced before it has a name, and only then linked
        into C{new/}, whose fsync comes after every file's.
        """
        spool = os.path.join(self.base, "mail") + "/"
        box = {name: os.path.join(spool, name) for name in ("bob", "carol")}
        seen = []

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if not seen:
                seen.append({name: (len(openUnnamedIn(os.path.join(d, "tmp"))),
                                    len(os.listdir(os.path.join(d, "new"))))
                             for name, d in box.items()})
            seen.append(path)
            self.fsyncs(fd)

        agent = self.agent(fsync=fsync, local_mailbox_accounts="none", mail_spool_directory=spool)
        requests = [self.queueMessage(), self.queueMessage(),
                    self.queueMessage(recipients=["carol@localhost"])]
        results = agent.deliverBatch(requests)
        self.assertEqual([[s.status for s in statuses] for statuses in results],
                         [[SENT], [SENT], [SENT]])
        self.assertEqual(seen[0], {"bob": (2, 0), "carol": (1, 0)})
        files, directories = seen[1:4], seen[4:]
        self.assertTrue(all(any(isUnnamedIn(p, os.path.join(d, "tmp")) for d in box.values())
                            for p in files), files)
        self.assertEqual(sorted(directories),
                         sorted(os.path.join(d, "new") for d in box.values()))
        for name, d in box.items():
            self.assertEqual(os.listdir(os.path.join(d, "tmp")), [])
            self.assertEqual(len(os.listdir(os.path.join(d, "new"))), 2 if name == "bob" else 1)

    def test_batchFileSyncFailureDefers(self):
        """
        When a Maildir file cannot be synced at the end of its batch, that
        delivery is deferred, the file is removed (nothing reaches
        C{new/}), the others of the batch are delivered, and the next try
        delivers it.
        """
        spool = os.path.join(self.base, "mail") + "/"
        failing = [True]

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if failing[0] and "/carol/tmp/" in path:
                raise OSError(28, "No space left on device")
            os.fsync(fd)

        agent = self.agent(fsync=fsync, local_mailbox_accounts="none", mail_spool_directory=spool)
        request = self.queueMessage(recipients=["bob@localhost", "carol@localhost"])
        [statuses] = agent.deliverBatch([request])
        self.assertEqual([s.status for s in statuses], [SENT, DEFERRED])
        self.assertIn("No space left on device", statuses[1].reason)
        carol = os.path.join(spool, "carol")
        self.assertEqual(os.listdir(os.path.join(carol, "tmp")), [])
        self.assertEqual(os.listdir(os.path.join(carol, "new")), [])
        self.assertEqual(len(os.listdir(os.path.join(spool, "bob", "new"))), 1)
        failing[0] = False
        request.recipients = request.recipients[1:]
        [[status]] = agent.deliverBatch([request])
        self.assertEqual(status.status, SENT)
        self.assertEqual(len(os.listdir(os.path.join(carol, "new"))), 1)

    def test_unsafeNames(self):
        spool = os.path.join(self.base, "mail") + "/"
        agent = self.agent(local_mailbox_accounts="none", mail_spool_directory=spool)
        statuses = agent.deliverAll(self.queueMessage(recipients=[".hidden@localhost",
                                                                  '"a/b"@localhost']))
        self.assertEqual([s.status for s in statuses], [BOUNCED, BOUNCED])
        self.assertFalse(os.path.exists(os.path.join(self.base, "hidden")))

    def test_oneDeliveryPerMailbox(self):
        """
        Recipients of one message that lead to the same mailbox (the
        same name, another case, an extension, across requests) get one
        copy between them; another message gets its own.
        """
        spool = os.path.join(self.base, "mail") + "/"
        agent = self.agent(local_mailbox_accounts="none", mail_spool_directory=spool)
        request = self.queueMessage(recipients=["bob@localhost", "Bob@localhost",
                                                "bob+x@localhost", "carol@localhost"])
        first, rest = request.recipients[:1], request.recipients[1:]
        request.recipients = first
        statuses = agent.deliverAll(request)
        request.recipients = rest
        statuses += agent.deliverAll(request)
        self.assertEqual([s.status for s in statuses], [SENT] * 4)
        self.assertEqual(len(os.listdir(os.path.join(spool, "bob", "new"))), 1)
        self.assertEqual(len(os.listdir(os.path.join(spool, "carol", "new"))), 1)
        agent.deliverAll(self.queueMessage())
        self.assertEqual(len(os.listdir(os.path.join(spool, "bob", "new"))), 2)

    def test_errorsNameTheRealDirectory(self):
        """
        A mailbox error names the mailbox directory, not the descriptor
        the agent reaches it through.
        """
        spool = os.path.join(self.base, "mail") + "/"
        self.agent(local_mailbox_accounts="none", mail_spool_directory=spool)
        os.makedirs(os.path.join(spool, "bob"))
        with open(os.path.join(spool, "bob", "tmp"), "w"):
            pass
        fd = os.open(spool, os.O_RDONLY | os.O_DIRECTORY)
        self.addCleanup(os.close, fd)
        settings = {"myhostname": "mx.example.org", "alias_maps": "",
                    "local_mailbox_accounts": "none", "mail_spool_directory": spool}
        if os.getuid() == 0:
            settings["mail_owner"] = testAccount()
        agent = LocalAgent(MainConfig(settings), fsync=self.fsyncs,
                           spoolDirectory=f"/proc/self/fd/{fd}/")
        [status] = agent.deliverAll(self.queueMessage())
        self.assertEqual(status.status, DEFERRED)
        self.assertNotIn("/proc/self/fd", status.reason)
        self.assertIn(os.path.join(spool, "bob", "tmp"), status.reason)

    def test_unknownUser(self):
        agent = self.agent(mail_spool_directory=os.path.join(self.base, "spool"))
        [status] = agent.deliverAll(self.queueMessage(recipients=["no-such-user-xyz@localhost"]))
        self.assertEqual((status.status, status.dsn), (BOUNCED, "5.1.1"))

    def test_rootNeedsAlias(self):
        agent = self.agent(mail_spool_directory=os.path.join(self.base, "spool"))
        [status] = agent.deliverAll(self.queueMessage(recipients=["root@localhost"]))
        self.assertEqual(status.status, DEFERRED)

    def test_loop(self):
        spool = os.path.join(self.base, "mail") + "/"
        agent = self.agent(local_mailbox_accounts="none", mail_spool_directory=spool)
        msg = b"Delivered-To: bob@localhost\nSubject: x\n\nb\n"
        [status] = agent.deliverAll(self.queueMessage(content=msg))
        self.assertEqual((status.status, status.dsn), (BOUNCED, "5.4.6"))

    def test_aliasesAndIdentity(self):
        if os.getuid() != 0:
            raise self.skipTest("delivery as another account needs root")
        user = testAccount()
        account = pwd.getpwnam(user)
        # texthash: reads postmap's format, not postalias's.
        agent, spool = self.aliasedAgent(
            f"# test aliases\npostmaster root\nroot {user}\nboss {user}\n")
        statuses = agent.deliverAll(self.queueMessage(recipients=["postmaster@localhost"]))
        self.assertEqual([(s.status, s.reason) for s in statuses],
                         [(SENT, "delivered to mailbox")])
        mbox = os.path.join(spool, user)
        st = os.stat(mbox)
        self.assertEqual((st.st_uid, st.st_mode & 0o777), (account.pw_uid, 0o600))
        with open(mbox, "rb") as f:
            text = f.read()
        self.assertTrue(text.startswith(b"From alice@example.com "))
        self.assertIn(b"\n>From the start\n", text)
        self.assertTrue(text.endswith(b"body\n\n"))
        self.assertIn(mbox, self.fsyncs.paths)
        self.assertEqual(os.geteuid(), 0)

    def test_mboxAppendsAndLocks(self):
        path = os.path.join(self.base, "box")
        for i in range(2):
            deliverMbox(path, b"From a  Thu Jan  1 00:00:00 1970\n", b"", [b"m%d" % i],
                        self.fsyncs)
        with open(path, "rb") as f:
            self.assertEqual(f.read().count(b"\nFrom a "), 1)
        self.assertFalse(os.path.exists(path + ".lock"))


class MaildirFileTests(SynchronousTestCase):
    """
    How L{deliverMaildir} makes a message file: without a name until it
    is complete and fsynced, where the file system allows it.
    """

    def setUp(self):
        self.maildir = os.path.join(shortTemporaryDirectory(self), "box")
        self.tmp = os.path.join(self.maildir, "tmp")
        self.new = os.path.join(self.maildir, "new")

    def written(self):
        """
        Deliver a message, keeping its file unfinished as a batch does.
        """
        kept = []
        deliverMaildir(self.maildir, b"Delivered-To: bob@localhost\n", [b"Subject: x\n\nhi\n"],
                       finishLater=lambda written: kept.append(written) or True)
        [written] = kept
        self.addCleanup(written.discard)
        return written

    def test_noNameUntilComplete(self):
        """
        A written file has no name in C{tmp/} or C{new/} until it is
        complete: a process killed before then leaves nothing behind.
        Completed, it is in C{new/} with the whole message.
        """
        written = self.written()
        self.assertEqual(os.listdir(self.tmp), [])
        self.assertEqual(os.listdir(self.new), [])
        self.assertEqual(len(openUnnamedIn(self.tmp)), 1)
        written.complete()
        [name] = os.listdir(self.new)
        with open(os.path.join(self.new, name), "rb") as f:
            self.assertEqual(f.read(), b"Delivered-To: bob@localhost\nSubject: x\n\nhi\n")
        self.assertEqual(os.listdir(self.tmp), [])
        self.assertEqual(openUnnamedIn(self.tmp), [])

    def test_discardLeavesNothing(self):
        written = self.written()
        written.discard()
        self.assertEqual(os.listdir(self.tmp), [])
        self.assertEqual(os.listdir(self.new), [])
        self.assertEqual(openUnnamedIn(self.tmp), [])

    def test_nameTakenInNew(self):
        """
        A file whose name has been taken in C{new/} meanwhile gets
        another: the message already there is not replaced (as a rename
        would replace it).
        """
        written = self.written()
        with open(written.final, "wb") as f:
            f.write(b"already here")
        taken = written.final
        written.complete()
        self.assertNotEqual(written.final, taken)
        self.assertEqual(sorted(os.listdir(self.new)),
                         sorted([os.path.basename(taken), os.path.basename(written.final)]))
        with open(taken, "rb") as f:
            self.assertEqual(f.read(), b"already here")

    def test_namedWithoutUnnamedFiles(self):
        """
        In a Maildir whose file system cannot make a file without a name,
        the file is made in C{tmp/} under its name and renamed into
        C{new/}.
        """
        mailbox._namedOnly.add(os.path.normpath(self.maildir))
        self.addCleanup(mailbox._namedOnly.discard, os.path.normpath(self.maildir))
        written = self.written()
        self.assertEqual(os.listdir(self.tmp), [os.path.basename(written.final)])
        self.assertEqual(os.listdir(self.new), [])
        written.complete()
        self.assertEqual(os.listdir(self.tmp), [])
        self.assertEqual(os.listdir(self.new), [os.path.basename(written.final)])

    def test_refusedLinkFallsBackToNamedFiles(self):
        """
        When the link of an unnamed file into C{new/} is refused (here,
        across file systems), the delivery fails for now, leaves nothing
        behind, and the Maildir's later deliveries use named files.
        """
        os.makedirs(self.tmp)
        os.makedirs(self.new)
        if not os.path.isdir("/dev/shm") or \
                os.stat("/dev/shm").st_dev == os.stat(self.maildir).st_dev:
            raise SkipTest("needs a /dev/shm on another file system")
        self.addCleanup(mailbox._namedOnly.discard, os.path.normpath(self.maildir))
        fd = os.open("/dev/shm", os.O_RDWR | os.O_TMPFILE, 0o600)
        os.write(fd, b"Subject: x\n\nhi\n")
        written = mailbox.WrittenMaildirFile(fd, None, os.path.join(self.new, "m"), self.new)
        error = self.assertRaises(mailbox.MailboxError, written.complete)
        self.assertTrue(error.temporary)
        self.assertEqual(os.listdir(self.new), [])
        self.assertIn(os.path.normpath(self.maildir), mailbox._namedOnly)
        deliverMaildir(self.maildir, b"", [b"Subject: y\n\nhi\n"])
        self.assertEqual(len(os.listdir(self.new)), 1)
        self.assertEqual(os.listdir(self.tmp), [])
