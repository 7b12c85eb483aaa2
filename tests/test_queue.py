"""
Tests for L{tmta.queue}: queue ids, the queue file format and its damage,
the store, and the fsync discipline.
"""

import fcntl
import os
import stat
import struct

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import FsyncRecorder
from tmta.common.durable import startWriteback
from tmta.queue import layout
from tmta.queue.layout import createLayout
from tmta.queue.qfile import CorruptQueueFile, iterContent, markDone, readEnvelope
from tmta.queue.qid import QueueIdGenerator, hashDirectory, isQueueId
from tmta.queue.store import QueueStore
from tmta.queue.writer import commitAll


class QueueIdTests(SynchronousTestCase):
    def test_uniqueAndSorted(self):
        now = [1000.0]
        ids = QueueIdGenerator(now=lambda: now[0], pid=lambda: 4242)
        made = [ids.next() for _ in range(1000)]
        now[0] = 999.0  # the clock stepping back must not repeat ids
        made += [ids.next() for _ in range(10)]
        self.assertEqual(len(set(made)), len(made))
        self.assertEqual(made, sorted(made))
        self.assertTrue(all(isQueueId(i) for i in made))

    def test_distinctProcesses(self):
        a = QueueIdGenerator(now=lambda: 5.0, pid=lambda: 1).next()
        b = QueueIdGenerator(now=lambda: 5.0, pid=lambda: 2).next()
        self.assertNotEqual(a, b)

    def test_validation(self):
        for bad in ["", "../../etc/passwd", "0123456789ABCDEF0", "0123456789abcdef01", "X" * 18]:
            self.assertFalse(isQueueId(bad), bad)

    def test_hash(self):
        self.assertEqual(hashDirectory("0123456789ABCDEF01", 1), "C")
        self.assertEqual(hashDirectory("0123456789ABCDEF01", 2), "C/B")


class QueueFileTests(SynchronousTestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        createLayout(self.directory)
        self.fsyncs = FsyncRecorder()
        self.store = QueueStore(self.directory, fsync=self.fsyncs)

    def write(self, content=b"Subject: hi\n\nbody\n", recipients=("a@x", "b@y")):
        queueId, writer = self.store.create("incoming")
        writer.envelope(1234.5, "sender@example.com", {"client_address": "127.0.0.1"})
        for r in recipients:
            writer.recipient(r, r.upper())
        writer.content(content)
        writer.commit()
        return queueId

    def test_roundTrip(self):
        body = b"Subject: big\n\n" + b"x" * 200000 + b"\n"
        queueId = self.write(body)
        self.assertTrue(self.store.isComplete("incoming", queueId))
        with self.store.open("incoming", queueId) as f:
            env = readEnvelope(f)
            self.assertEqual(env.sender, "sender@example.com")
            self.assertEqual(env.arrival, 1234.5)
            self.assertEqual(env.attributes, {"client_address": "127.0.0.1"})
            self.assertEqual([(r.address, r.original) for r in env.recipients],
                             [("a@x", "A@X"), ("b@y", "B@Y")])
            self.assertEqual(env.size, len(body))
            chunks = list(iterContent(f, env))
        self.assertEqual(b"".join(chunks), body)
        self.assertTrue(all(len(c) <= 65535 for c in chunks))

    def test_fsyncBeforeCommitReturns(self):
        queueId = self.write()
        path = self.store.path("incoming", queueId)
        self.assertEqual(self.fsyncs.paths, [path, os.path.dirname(path)])

    def test_commitAllSharesDirectoryFsync(self):
        """
        L{commitAll} fsyncs each file, then their directory once, before
        it returns; a file that cannot be made durable is removed and
        reported, the others are committed.
        """
        writers = []
        for n in range(3):
            queueId, writer = self.store.create("incoming")
            writer.envelope(1.0, "", {})
            writer.recipient(f"r{n}@x")
            writers.append((queueId, writer))
        failing = writers[1][1].path

        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}") == failing:
                raise OSError(28, "No space left on device")
            self.fsyncs(fd)

        for _, writer in writers:
            writer._fsync = fsync
        errors = commitAll([w for _, w in writers])
        self.assertEqual([e is None for e in errors], [True, False, True])
        paths = [self.store.path("incoming", q) for q, _ in writers]
        self.assertEqual(self.fsyncs.paths, [paths[0], paths[2], os.path.dirname(paths[0])])
        self.assertEqual(sorted(self.store.list("incoming")),
                         sorted([writers[0][0], writers[2][0]]))
        self.assertTrue(self.store.isComplete("incoming", writers[0][0]))

    def test_commitAllFinishesEveryFileBeforeAnyFsync(self):
        """
        L{commitAll} finishes every file of the batch (end record,
        complete mode) before it fsyncs the first, so that one journal
        commit can carry them all.
        """
        writers = []
        for n in range(3):
            queueId, writer = self.store.create("incoming")
            writer.envelope(1.0, "", {})
            writer.recipient(f"r{n}@x")
            writer.content(b"Subject: %d\n\nbody\n" % n)
            writers.append((queueId, writer))
        seenAtFirstFsync = []

        def fsync(fd):
            if not seenAtFirstFsync:
                seenAtFirstFsync.extend(
                    self.store.isComplete("incoming", q) for q, _ in writers)
                for q, _ in writers:
                    self.store.readEnvelope("incoming", q)
            self.fsyncs(fd)

        for _, writer in writers:
            writer._fsync = fsync
        self.assertEqual(commitAll([w for _, w in writers]), [None, None, None])
        self.assertEqual(seenAtFirstFsync, [True, True, True])
        paths = [self.store.path("incoming", q) for q, _ in writers]
        self.assertEqual(self.fsyncs.paths, paths + [os.path.dirname(paths[0])])

    def test_incompleteInvisible(self):
        queueId, writer = self.store.create("incoming")
        writer.envelope(1.0, "", {})
        writer.content(b"partial")
        writer.flush()
        self.assertFalse(self.store.isComplete("incoming", queueId))
        writer.abort()
        self.assertEqual(self.store.list("incoming"), [])

    def test_markDone(self):
        queueId = self.write()
        with self.store.open("incoming", queueId, writable=True) as f:
            env = readEnvelope(f)
            markDone(f.fileno(), env.recipients[0])
        env = self.store.readEnvelope("incoming", queueId)
        self.assertEqual([r.done for r in env.recipients], [True, False])
        self.assertEqual([r.address for r in env.pending()], ["b@y"])

    def test_truncated(self):
        queueId = self.write(b"Subject: x\n\n" + b"y" * 1000)
        path = self.store.path("incoming", queueId)
        size = os.path.getsize(path)
        for cut in range(0, size, 37):
            with open(path, "r+b") as f:
                f.truncate(cut)
            self.assertRaises(CorruptQueueFile, self.store.readEnvelope, "incoming", queueId)

    def test_readInMemoryOrByRecord(self):
        """
        Small files are parsed from one read, large ones record by
        record: both readings agree, on whole and on truncated files.
        """
        from tmta.queue import qfile

        body = b"Subject: x\n\n" + b"y" * 200000 + b"\n"
        queueId = self.write(body)
        path = self.store.path("incoming", queueId)
        size = os.path.getsize(path)

        def read():
            try:
                with open(path, "rb") as f:
                    env = readEnvelope(f)
                    content = b"".join(iterContent(f, env))
                return (env.sender, env.size, env.contentOffset,
                        [(r.address, r.offset) for r in env.recipients], content)
            except CorruptQueueFile as e:
                return str(e)

        inMemory = read()
        self.patch(qfile, "_READ_WHOLE", 0)
        self.assertEqual(read(), inMemory)
        self.assertEqual(inMemory[-1], body)
        for cut in (3, 20, 60, size // 2, size - 6, size - 1):
            with open(path, "r+b") as f:
                f.truncate(cut)
            self.patch(qfile, "_READ_WHOLE", 1 << 20)
            whole = read()
            self.patch(qfile, "_READ_WHOLE", 0)
            self.assertEqual(read(), whole)
            self.assertIsInstance(whole, str)

    def test_garbage(self):
        queueId = self.write()
        path = self.store.path("incoming", queueId)
        data = bytearray(open(path, "rb").read())
        import random

        rng = random.Random(7)
        for _ in range(300):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            with open(path, "wb") as f:
                f.write(damaged)
            try:
                env = self.store.readEnvelope("incoming", queueId)
            except CorruptQueueFile:
                continue
            # A change the format cannot detect (inside a text field) still
            # yields a readable envelope, never a crash.
            self.assertIsInstance(env.sender, str)
        with open(path, "wb") as f:
            f.write(os.urandom(5000))
        self.assertRaises(CorruptQueueFile, self.store.readEnvelope, "incoming", queueId)

    def test_corruptMovedAside(self):
        queueId = self.write()
        with open(self.store.path("incoming", queueId), "wb") as f:
            f.write(b"not a queue file")
        self.store.corrupt("incoming", queueId, "test")
        self.assertEqual(self.store.list("incoming"), [])
        self.assertEqual(self.store.list("corrupt"), [queueId])

    def test_moveHashed(self):
        queueId = self.write()
        self.store.move(queueId, "incoming", "deferred")
        self.assertEqual(self.store.list("deferred"), [queueId])
        self.assertIn(os.sep + queueId[12] + os.sep, self.store.path("deferred", queueId))
        self.store.move(queueId, "deferred", "active")
        self.assertEqual(self.store.list("active"), [queueId])

    def test_pathsRejectHostileIds(self):
        self.assertRaises(ValueError, self.store.path, "incoming", "../x")
        self.assertRaises(ValueError, self.store.path, "nosuchqueue", "0123456789ABCDEF01")

    def test_listIgnoresStrays(self):
        open(os.path.join(self.directory, "incoming", "README"), "w").close()
        queueId = self.write()
        self.assertEqual(self.store.list("incoming"), [queueId])

    def test_removeStale(self):
        queueId, writer = self.store.create("incoming")
        writer.flush()
        self.store.removeStale("incoming", 3600)
        self.assertEqual(self.store.list("incoming"), [queueId])
        self.store.removeStale("incoming", 3600, now=os.path.getmtime(writer.path) + 3601)
        self.assertEqual(self.store.list("incoming"), [])
        writer.abort()

    def test_diskFullNoAck(self):
        def failingFsync(fd):
            raise OSError(28, "No space left on device")

        store = QueueStore(self.directory, fsync=failingFsync)
        queueId, writer = store.create("incoming")
        writer.envelope(1.0, "", {})
        writer.recipient("a@b")
        self.assertRaises(OSError, writer.commit)
        self.assertEqual(store.list("incoming"), [])

    def test_layoutModes(self):
        mode = stat.S_IMODE(os.stat(os.path.join(self.directory, "private")).st_mode)
        self.assertEqual(mode, 0o700)

    def test_layoutModesWhateverTheUmask(self):
        """
        Under twistd's daemon umask (077) the queue directories get
        Postfix's modes all the same, and a queue directory found with
        another mode (left by such a start before) is put right.
        """
        directory = os.path.abspath(self.mktemp())
        previous = os.umask(0o077)
        try:
            createLayout(directory)
        finally:
            os.umask(previous)
        modes = {name: stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
                 for name in ("", "active", "maildrop", "public", "private", "pid")}
        self.assertEqual(modes, {"": 0o755, "active": 0o700, "maildrop": 0o3733,
                                 "public": 0o711, "private": 0o700, "pid": 0o755})
        os.chmod(directory, 0o700)
        createLayout(directory)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o755)


def _directoryFlags(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return layout._flags(fd)
    finally:
        os.close(fd)


class TopDirectoryTests(SynchronousTestCase):
    """
    The queue directory is marked as the top of unrelated hierarchies,
    so that ext4 places each queue directory away from the others and
    from mailboxes.
    """

    def test_queueDirectoryMarked(self):
        probe = self.mktemp()
        os.mkdir(probe)
        try:
            fd = os.open(probe, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.ioctl(fd, layout._SETFLAGS,
                            struct.pack("i", _directoryFlags(probe) | layout._TOPDIR))
            finally:
                os.close(fd)
            supported = bool(_directoryFlags(probe) & layout._TOPDIR)
        except OSError:
            supported = False
        if not supported:
            raise SkipTest("this file system has no top-directory flag (not ext2/3/4)")
        directory = self.mktemp()
        createLayout(directory)
        self.assertTrue(_directoryFlags(directory) & layout._TOPDIR)
        # Marking again is harmless.
        self.assertTrue(layout.markTopDirectory(directory))
        # Subdirectories are made as usual; the flag is not inherited.
        self.assertFalse(_directoryFlags(os.path.join(directory, "incoming")) & layout._TOPDIR)

    def test_unsupportedIsNoError(self):
        """
        Where the flag cannot be set, the layout is made all the same.
        """
        self.assertFalse(layout.markTopDirectory(self.mktemp()))
        if os.path.isdir("/dev/shm"):
            # tmpfs keeps no such flag.
            self.assertFalse(layout.markTopDirectory("/dev/shm"))


class HashedQueueTests(SynchronousTestCase):
    """
    hash_queue_names: any queue, and the defer logs, in hashed
    subdirectories made on first use; a defer log from before the
    setting changed is still found.
    """

    def test_hashedIncomingAndDeferLogs(self):
        import os

        from tmta.config import MainConfig
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore

        directory = os.path.abspath(self.mktemp())
        createLayout(directory)
        flat = QueueStore(directory, hashedQueues=())
        store = QueueStore.fromConfig(MainConfig({
            "queue_directory": directory, "hash_queue_depth": "2",
            "hash_queue_names": "incoming, deferred, defer"}))
        queueId, writer = store.create("incoming")
        writer.envelope(1.0, "a@b.example", {})
        writer.recipient("c@d.example")
        writer.content(b"x\n")
        writer.commit()
        path = store.path("incoming", queueId)
        self.assertEqual(os.path.relpath(path, directory).count(os.sep), 3)
        self.assertTrue(os.path.exists(path))
        self.assertEqual(store.list("incoming"), [queueId])
        store.writeDeferLog(queueId, {"c@d.example": "busy"})
        self.assertFalse(os.path.exists(os.path.join(directory, "defer", queueId)))
        self.assertEqual(store.readDeferLog(queueId), {"c@d.example": "busy"})
        store.removeDeferLog(queueId)
        flat.writeDeferLog(queueId, {"c@d.example": "older"})
        self.assertEqual(store.readDeferLog(queueId), {"c@d.example": "older"})
        store.removeDeferLog(queueId)
        self.assertEqual(flat.readDeferLog(queueId), {})


class WritebackTests(SynchronousTestCase):
    """
    L{startWriteback} is a hint: it neither changes nor loses what was
    written, and does nothing where the system has no such call.
    """

    def _written(self):
        path = os.path.abspath(self.mktemp())
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.addCleanup(os.close, fd)
        os.write(fd, b"x" * 10000)
        return path, fd

    def test_startWriteback(self):
        path, fd = self._written()
        startWriteback(fd)
        os.fsync(fd)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"x" * 10000)

    def test_noSuchCall(self):
        from tmta.common import durable

        self.patch(durable, "_syncFileRange", None)
        path, fd = self._written()
        startWriteback(fd)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"x" * 10000)


class NotRegularFileTests(SynchronousTestCase):
    def test_fifoAndLinkNeverOpened(self):
        """
        Reading a queue file that is a FIFO does not wait for a writer,
        and one that is a link is not followed: both are refused at
        once.
        """
        from tmta.queue.qfile import NotRegularFile, openQueueFile

        directory = self.mktemp()
        os.makedirs(directory)
        fifo = os.path.join(directory, "fifo")
        os.mkfifo(fifo)
        self.assertRaises(NotRegularFile, openQueueFile, fifo)
        target = os.path.join(directory, "target")
        with open(target, "wb") as f:
            f.write(b"x")
        link = os.path.join(directory, "link")
        os.symlink(target, link)
        self.assertRaises(NotRegularFile, openQueueFile, link)
        os.mkdir(os.path.join(directory, "dir"))
        self.assertRaises(NotRegularFile, openQueueFile, os.path.join(directory, "dir"))

    def test_listingSkipsWithWarning(self):
        """
        tmta queue list (and mailq) go past a FIFO in the queue with a
        warning instead of hanging on it.
        """
        import subprocess
        import sys

        from tests.support import REPO
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore

        base = os.path.abspath(self.mktemp())
        queue = os.path.join(base, "queue")
        createLayout(queue)
        store = QueueStore(queue)
        path = store.path("deferred", "4F6A21C3E9B2A001A7")
        store.ensureDirectory(os.path.dirname(path))
        os.mkfifo(path, 0o700)
        with open(os.path.join(base, "main.cf"), "w") as f:
            f.write(f"queue_directory = {queue}\n")
        with open(os.path.join(base, "master.cf"), "w") as f:
            f.write("")
        result = subprocess.run(
            [sys.executable, "-c", "import sys; from tmta.cli.admin import main; "
             "sys.exit(main())", "-c", base, "queue", "list"],
            capture_output=True, text=True, timeout=30,
            env=dict(os.environ, PYTHONPATH=REPO))
        self.assertIn("not a regular file", result.stderr)
        self.assertIn("Mail queue is empty", result.stdout)


class ListingTests(SynchronousTestCase):
    def test_postfixColumns(self):
        """
        The listing has Postfix's mailq columns (its long-queue-id
        layout): the heading, each message's line, the reason where it
        changes (right-aligned, "reason unavailable" after one), each
        recipient under the sender, a blank line between messages, and
        the total in whole kilobytes.
        """
        import time as timeModule

        from tmta.queue.listing import formatQueue

        directory = os.path.abspath(self.mktemp())
        createLayout(directory)
        store = QueueStore(directory)
        arrival = timeModule.mktime((2026, 12, 7, 9, 5, 1, 0, 0, -1))
        ids = []
        for recipients, queueName in ((["a@x.example", "b@x.example", "c@y.example"], "deferred"),
                                      (["d@localhost"], "active")):
            queueId, writer = store.create("incoming")
            writer.envelope(arrival, "alice@example.com" if ids else "", {})
            for r in recipients:
                writer.recipient(r)
            writer.content(b"x" * 700)
            writer.commit()
            store.move(queueId, "incoming", queueName)
            ids.append(queueId)
        store.writeDeferLog(ids[0], {"a@x.example": "connect refused",
                                     "b@x.example": "connect refused"}, None)
        text = formatQueue(store)
        # Listed queue by queue, in whichever order the queues are read.
        deferredFirst = text.index(ids[0]) < text.index(ids[1])
        blocks = {
            ids[0]: [f"{ids[0]:<17}      700 Mon Dec  7 09:05:01 MAILER-DAEMON",
                     "(connect refused)".rjust(78),
                     " " * 47 + "a@x.example", " " * 47 + "b@x.example",
                     "(reason unavailable)".rjust(78), " " * 47 + "c@y.example"],
            ids[1]: [f"{ids[1] + '*':<17}      700 Mon Dec  7 09:05:01 alice@example.com",
                     " " * 47 + "d@localhost"],
        }
        order = [ids[0], ids[1]] if deferredFirst else [ids[1], ids[0]]
        expected = (["----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------"]
                    + blocks[order[0]] + [""] + blocks[order[1]]
                    + ["", "-- 1 Kbytes in 2 Requests."])
        self.assertEqual(text.splitlines(), expected)
