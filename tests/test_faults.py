"""
Faults under load, end to end: a real master and its workers on
loopback, clients that record every reply, and the promise that mail
acknowledged with 250 is delivered whatever happens to the processes.

Each test sends a load from several client threads, one connection per
message, and does something unkind while it runs: SIGHUP to the master
several times, or kill -9 of one kind of worker.  Afterwards every
message acknowledged with 250 must reach its Maildir (a duplicate is
acceptable, a loss is not) and the active queue must be empty.
"""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from typing import List, Set

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    Master,
    freePort,
    localMaildirs,
    sendMessage,
    shortTemporaryDirectory,
    subjects,
    waitFor,
)
from tests.support.processes import commandLine, descendants, processName
from tmta.queue.store import QueueStore


class Load:
    """
    C{threads} clients sending C{count} messages in all, each to
    C{bob@localhost} with a subject of its own; the subjects of those
    acknowledged with 250 are kept.
    """

    def __init__(self, port: int, count: int, threads: int = 4) -> None:
        self.port = port
        self.count = count
        self.acknowledged: Set[str] = set()
        self.refused = 0
        self._lock = threading.Lock()
        self._next = iter(range(count))
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(threads)]

    def start(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def _take(self):
        with self._lock:
            return next(self._next, None)

    def _run(self) -> None:
        while True:
            number = self._take()
            if number is None:
                return
            subject = f"load-{number}"
            try:
                sendMessage(self.port, "alice@example.com", ["bob@localhost"], subject)
            except (smtplib.SMTPException, OSError):
                with self._lock:
                    self.refused += 1
                continue
            with self._lock:
                self.acknowledged.add(subject)

    def wait(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.time()))
        if any(t.is_alive() for t in self._threads):
            raise AssertionError("the load did not finish")

    @property
    def sent(self) -> int:
        with self._lock:
            return len(self.acknowledged) + self.refused


class SessionLoad:
    """
    C{threads} clients, each holding one SMTP session open and sending
    message after message on it (to C{bob@localhost}, each with a
    subject of its own) until L{stop}.  A session that fails is counted
    in C{cutOff} and opened again.
    """

    def __init__(self, port: int, threads: int = 6) -> None:
        self.port = port
        self.acknowledged: Set[str] = set()
        self.cutOff: List[str] = []
        self._lock = threading.Lock()
        self._numbers = iter(range(10**9))
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)
                         for _ in range(threads)]

    def start(self) -> "SessionLoad":
        for thread in self._threads:
            thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.is_set():
            client = None
            try:
                client = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
                client.ehlo("test.example")
                while not self._stopping.is_set():
                    with self._lock:
                        subject = f"load-{next(self._numbers)}"
                    client.sendmail("alice@example.com", ["bob@localhost"],
                                    f"Subject: {subject}\r\n\r\nhello\r\n")
                    with self._lock:
                        self.acknowledged.add(subject)
                client.quit()
            except (smtplib.SMTPException, OSError) as e:
                with self._lock:
                    self.cutOff.append(f"{type(e).__name__}: {e}")
                if client is not None:
                    client.close()

    def stop(self, timeout: float = 60) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)


class FaultTests(SynchronousTestCase):
    def startMaster(self) -> Master:
        base = shortTemporaryDirectory(self)
        self.spool = os.path.join(base, "mail")
        self.port = freePort()
        settings = {
            "mydestination": "localhost, $myhostname",
            **localMaildirs(self.spool + "/"),
            # Mail deferred by a killed agent comes back within seconds.
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "queue_run_delay": "1s",
        }
        self.master = Master(os.path.join(base, "conf"), settings,
                             MASTER_CF.format(port=self.port)).start()
        self.addCleanup(self.master.stop)
        return self.master

    def workersNamed(self, name: str) -> List[int]:
        return [p for p in self.master.workers() if processName(p) == name]

    def countQmgrs(self):
        """
        Count the queue managers every 20 ms from now on, in a thread.

        @return: a function that stops counting and answers the most seen
            at once.
        """
        counts: List[int] = []
        watching = threading.Event()

        def watch():
            while not watching.is_set():
                counts.append(len(self.workersNamed("qmgr")))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        def most() -> int:
            watching.set()
            watcher.join()
            return max(counts)

        return most

    def assertNoneLost(self, load) -> None:
        """
        Every message acknowledged with 250 reaches the Maildir, and the
        queue is left empty.
        """
        self.assertGreater(len(load.acknowledged), 0)

        def missing() -> Set[str]:
            return load.acknowledged - set(subjects(self.spool))

        queue = self.master.queue
        store = QueueStore(queue)
        try:
            waitFor(lambda: not missing(), timeout=120)
        except AssertionError:
            where = {name: sum(len(files) for _, _, files in os.walk(os.path.join(queue, name)))
                     for name in ("incoming", "active", "deferred", "hold", "corrupt")}
            self.fail(f"{len(missing())} of {len(load.acknowledged)} acknowledged messages "
                      f"not delivered: {sorted(missing())[:10]}; queue: {where}\n"
                      f"{self.master.log()[-6000:]}")

        def left():
            # deferred/ is hashed into subdirectories: count files only.
            # A file a killed cleanup never finished is not mail anybody
            # was promised (it is removed once stale, as in Postfix).
            found = {}
            for name in ("active", "incoming", "deferred"):
                for _, _, files in os.walk(os.path.join(queue, name)):
                    found.setdefault(name, []).extend(
                        f for f in files if name != "incoming" or store.isComplete(name, f))
            return {name: files for name, files in found.items() if files}

        try:
            waitFor(lambda: not left(), timeout=30)
        except AssertionError:
            self.fail(f"left in the queue: {left()}\n{self.master.log()[-3000:]}")

    def _during(self, load: Load, action, times: int) -> None:
        """
        Do C{action} C{times} times, spread over the load.
        """
        step = load.count // (times + 1)
        for n in range(1, times + 1):
            waitFor(lambda: load.sent >= n * step, timeout=120, what="the load to progress")
            action()

    def test_reloadsUnderLoad(self):
        """
        Several SIGHUPs while mail arrives: nothing is stranded or lost,
        and there is never more than one queue manager.
        """
        master = self.startMaster()
        load = Load(self.port, 600, threads=8).start()
        mostQmgrs = self.countQmgrs()
        self._during(load, lambda: master.signal(signal.SIGHUP), 5)
        load.wait()
        self.assertNoneLost(load)
        self.assertLessEqual(mostQmgrs(), 1)
        # Nothing was killed: no message may have been delivered twice.
        delivered = subjects(self.spool)
        self.assertEqual(len(delivered), len(set(delivered)))

    def _rapidReloads(self, invalid: bool) -> None:
        """
        20 SIGHUPs 0.3 to 1.2 seconds apart under continuous load, the
        configuration changed before each (and, with C{invalid}, every
        other one made unreadable): nothing lost, nothing delivered
        twice, never two queue managers, no client cut off, and the
        active queue empty at the end.
        """
        import random

        master = self.startMaster()
        mainCf = os.path.join(master.directory, "main.cf")
        with open(mainCf) as f:
            original = f.read()
        load = SessionLoad(self.port, threads=6).start()
        mostQmgrs = self.countQmgrs()
        chooser = random.Random(31)
        for n in range(20):
            time.sleep(chooser.uniform(0.3, 1.2))
            text = original + f"smtpd_banner = $myhostname ESMTP reload {n}\n"
            if invalid and n % 2:
                text += "message_size_limit = ten\n"
            with open(mainCf + ".new", "w") as f:
                f.write(text)
            os.replace(mainCf + ".new", mainCf)
            master.signal(signal.SIGHUP)
        with open(mainCf + ".new", "w") as f:
            f.write(original)
        os.replace(mainCf + ".new", mainCf)
        load.stop()
        self.assertNoneLost(load)
        self.assertEqual(load.cutOff, [], "sessions were cut off")
        self.assertLessEqual(mostQmgrs(), 1)
        delivered = subjects(self.spool)
        duplicates = len(delivered) - len(set(delivered))
        self.assertEqual(duplicates, 0, f"{duplicates} duplicate deliveries")
        self.assertNotIn("did not stop: killing it", master.log())

    def test_rapidReloadsUnderLoad(self):
        self._rapidReloads(invalid=False)

    def test_rapidReloadsWithInvalidConfiguration(self):
        """
        A SIGHUP after main.cf was broken keeps the configuration the
        master runs on, for the workers it starts afterwards too.
        """
        self._rapidReloads(invalid=True)

    def _refusedReloadKeepsServing(self, change) -> None:
        """
        After C{change(mainCf)} and a SIGHUP, the master keeps its
        configuration, and so do the workers it starts afterwards: mail
        is still taken and delivered.
        """
        master = self.startMaster()
        sendMessage(self.port, "alice@example.com", ["bob@localhost"], "before")
        waitFor(lambda: "before" in subjects(self.spool), what="the first delivery")
        change(os.path.join(master.directory, "main.cf"))
        master.signal(signal.SIGHUP)
        waitFor(lambda: "reload failed, keeping the old configuration" in master.log(),
                what="the refused reload")
        # Every worker goes: those that come next are started after the
        # failed reload.
        for pid in self.master.workers():
            if processName(pid) not in ("tmta-forkserver",):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for n in range(3):
            sendMessage(self.port, "alice@example.com", ["bob@localhost"], f"after-{n}")
        waitFor(lambda: {"after-0", "after-1", "after-2"} <= set(subjects(self.spool)),
                timeout=60, what="delivery after the failed reload")

    def test_invalidReloadKeepsServing(self):
        """
        A reload after main.cf was broken is refused.
        """
        def breakIt(mainCf: str) -> None:
            with open(mainCf, "a") as f:
                f.write("message_size_limit = ten\n")

        self._refusedReloadKeepsServing(breakIt)

    def test_reloadToAnotherQueueRefused(self):
        """
        A reload that would move the queue (main.cf emptied, or another
        queue_directory) is refused: the workers would leave the mail
        in the queue in use behind, and the master's lock and pid files
        are there.  Moving it takes a restart (Postfix's master, too,
        enters its queue directory once, at start).
        """
        def emptyIt(mainCf: str) -> None:
            open(mainCf, "w").close()

        self._refusedReloadKeepsServing(emptyIt)
        self.assertIn("queue_directory", self.master.log())

    def test_killMasterAlone(self):
        """
        kill -9 of the master alone, with sessions open across it: its
        workers drop the sessions (acknowledging nothing more), finish
        what they hold and leave; a new master waits for them, then
        delivers everything acknowledged, once.
        """
        master = self.startMaster()
        load = SessionLoad(self.port, threads=3).start()
        waitFor(lambda: len(load.acknowledged) >= 30, what="some mail")
        held = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        self.addCleanup(held.close)
        held.ehlo("held.example")
        held.mail("alice@example.com")
        orphans = master.workers() + [p for p in descendants(master.pid)
                                      if "forkserver" in commandLine(p)]
        os.kill(master.pid, signal.SIGKILL)
        master.process.wait()

        def dropped():
            try:
                return held.noop()[0] != 250
            except (smtplib.SMTPException, OSError):
                return True

        waitFor(dropped, timeout=10, what="the held session to be dropped")
        load.stop()
        waitFor(lambda: not [p for p in orphans if os.path.exists(f"/proc/{p}")
                             and processName(p) != ""],
                timeout=60, what="the orphaned workers to leave")
        master.start()
        self.assertNoneLost(load)
        delivered = subjects(self.spool)
        self.assertEqual(len(delivered) - len(set(delivered)), 0, "duplicate deliveries")

    def test_fsyncFailuresInTheMailbox(self):
        """
        fsync failing with EIO in local (injected with strace) while
        mail arrives: every acknowledged message is delivered once --
        the deliveries whose file or new/ could not be synced are
        deferred and leave no copy behind.
        """
        import shutil
        import subprocess

        if os.geteuid() != 0 or shutil.which("strace") is None:
            raise self.skipTest("needs root and strace")
        master = self.startMaster()
        sendMessage(self.port, "alice@example.com", ["bob@localhost"], "warm-up")
        waitFor(lambda: "warm-up" in subjects(self.spool), what="the first delivery")
        load = Load(self.port, 300, threads=4).start()
        waitFor(lambda: load.sent >= 20, what="the load to start")
        tracers = [
            subprocess.Popen(["strace", "-qq", "-f", "-p", str(pid), "-e", "trace=fsync",
                              "-e", "inject=fsync:error=EIO:when=2+3"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for pid in self.workersNamed("local")]
        self.assertTrue(tracers, "no local worker to trace")
        time.sleep(4)
        for tracer in tracers:
            tracer.terminate()
            tracer.wait(10)
        load.wait()
        self.assertNoneLost(load)
        self.assertIn("Input/output error", master.log())
        delivered = subjects(self.spool)
        duplicates = len(delivered) - len(set(delivered))
        self.assertEqual(duplicates, 0, f"{duplicates} duplicate deliveries")

    def test_slowCommandHoldsNobodyElse(self):
        """
        A recipient whose mail goes to a slow command (an alias or
        .forward to |/bin/sleep) holds up nobody else's mail: local sends
        it back to be delivered on a connection of its own, and the
        others' deliveries go on meanwhile, none repeated.
        """
        from tests.support import testAccount

        if os.geteuid() != 0:
            raise self.skipTest("local runs commands as another account: needs root")
        user = testAccount()
        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "spool")
        os.mkdir(spool)
        os.chmod(spool, 0o1777)
        aliases = os.path.join(base, "aliases")
        with open(aliases, "w") as f:
            f.write(f"slow |/bin/sleep 8\nvictim {user}\n")
        self.port = freePort()
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost, $myhostname", "local_recipient_maps": "",
            "mail_spool_directory": spool, "alias_maps": f"texthash:{aliases}",
        }, MASTER_CF.format(port=self.port)).start()
        self.addCleanup(master.stop)
        sendMessage(self.port, "alice@example.com", ["slow@localhost"], "slow one")
        waitFor(lambda: "/bin/sleep" in " ".join(commandLine(p) for p in descendants(master.pid)),
                what="the command to start")
        started = time.monotonic()
        for n in range(5):
            sendMessage(self.port, "alice@example.com", ["victim@localhost"], f"victim {n}")
        mbox = os.path.join(spool, user)

        def victims():
            try:
                with open(mbox, "rb") as f:
                    return f.read().count(b"Subject: victim ")
            except FileNotFoundError:
                return 0

        waitFor(lambda: victims() == 5, timeout=30, what="the other deliveries")
        self.assertLess(time.monotonic() - started, 6,
                        "the other users' mail waited for the command")
        waitFor(lambda: "status=sent (delivered to command: /bin/sleep 8)" in master.log(),
                timeout=30, what="the command's delivery")
        self.assertEqual(master.log().count("delivered to command: /bin/sleep 8"), 1)
        self.assertEqual(victims(), 5, "a delivery was repeated")

    def test_killedQmgrBackAtOnce(self):
        """
        A queue manager killed while nothing else happens is started
        again at once, not at its wake-up timer minutes later: mail in
        active/ would wait for it.
        """
        self.startMaster()
        sendMessage(self.port, "alice@example.com", ["bob@localhost"], "before")
        waitFor(lambda: "before" in subjects(self.spool), what="the first delivery")
        [qmgr] = self.workersNamed("qmgr")
        os.kill(qmgr, signal.SIGKILL)
        waitFor(lambda: [p for p in self.workersNamed("qmgr") if p != qmgr], timeout=20,
                what="a new queue manager")

    def _killUnderLoad(self, name: str) -> None:
        self.startMaster()
        load = Load(self.port, 200).start()

        def kill():
            for pid in self.workersNamed(name):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

        self._during(load, kill, 2)
        load.wait()
        self.assertNoneLost(load)

    def test_killQmgr(self):
        self._killUnderLoad("qmgr")

    def test_killCleanup(self):
        self._killUnderLoad("cleanup")

    def test_killLocal(self):
        self._killUnderLoad("local")

    def test_killSmtpd(self):
        self._killUnderLoad("smtpd")
