"""
End-to-end tests of the master (L{tmta.master}): real twistd processes,
real workers, a drop-in component plugin written by the test the way a
plugin author would.
"""

import os
import signal
import socket
import textwrap
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import Master, freePort, shortTemporaryDirectory, testAccount, waitFor
from tests.support.processes import commandLine, processName, processUid

ECHO_PLUGIN = textwrap.dedent(
    """
    import os
    from twisted.application.service import Service
    from twisted.internet.protocol import Factory, Protocol
    from twisted.logger import Logger
    from twisted.plugin import IPlugin
    from zope.interface import implementer
    from tmta.interfaces import IComponent

    log = Logger()

    class Echo(Protocol):
        def connectionMade(self):
            log.info("echo: client connected")
        def dataReceived(self, data):
            if data.strip() == b"crash":
                os._exit(3)
            self.transport.write(b"%d:" % os.getpid() + data)

    class EchoService(Service):
        def __init__(self, context):
            self.context = context
        def startService(self):
            self.context.listen(Factory.forProtocol(Echo))

    @implementer(IPlugin, IComponent)
    class EchoComponent:
        name = "echo"
        resident = False
        worldReachable = False
        busyReply = None
        def needsRoot(self, config, unpriv):
            return not unpriv
        def configurationProblems(self, config, entry):
            return []
        def clientLimit(self, config):
            return 2
        def makeService(self, context):
            return EchoService(context)

    @implementer(IPlugin, IComponent)
    class BrokenComponent:
        name = "broken"
        resident = False
        worldReachable = False
        busyReply = None
        def needsRoot(self, config, unpriv):
            return not unpriv
        def configurationProblems(self, config, entry):
            return []
        def clientLimit(self, config):
            return 1
        def makeService(self, context):
            os._exit(7)

    echo = EchoComponent()
    broken = BrokenComponent()
    """
)


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def echo(self, text=b"hi"):
        self.sock.sendall(text)
        pid, _, rest = self.sock.recv(1000).partition(b":")
        return int(pid)

    def close(self):
        self.sock.close()


class MasterTests(SynchronousTestCase):
    def setUp(self):
        base = shortTemporaryDirectory(self)
        plugins = os.path.join(base, "plugins", "twisted", "plugins")
        os.makedirs(plugins)
        with open(os.path.join(plugins, "tmta_test_echo.py"), "w") as f:
            f.write(ECHO_PLUGIN)
        self.port = freePort()
        self.master = Master(
            os.path.join(base, "conf"),
            {"max_idle": "3s", "max_use": "5", "service_throttle_time": "2s"},
            f"{self.port} inet n - n - 2 echo\n"
            "broken unix - - n - - broken\n"
            "nosuch unix - - n - - no-such-component\n"
            "postlog unix-dgram n - n - 1 postlogd\n",
            extraPath=[os.path.join(base, "plugins")],
        ).start()
        self.addCleanup(self.master.stop)

    def test_spawnOnDemandAndLimits(self):
        log = self.master.log()
        self.assertIn("services not implemented, skipped: nosuch/unix (no-such-component), "
                      "postlog/unix-dgram (postlogd)", log)
        self.assertEqual(self.master.workers(), [])
        clients = [Client(self.port) for _ in range(5)]
        # Two clients per process, two processes at most: the fifth waits.
        pids = [c.echo() for c in clients[:4]]
        self.assertEqual(len(set(pids)), 2)
        for pid in set(pids):
            self.assertIn(f"{self.port}/inet", commandLine(pid))
            self.assertEqual(processName(pid), "echo")
        clients[4].sock.settimeout(1)
        self.assertRaises(socket.timeout, clients[4].echo)
        clients[0].close()
        clients[4].sock.settimeout(10)
        self.assertEqual(int(clients[4].sock.recv(100).split(b":")[0]), pids[0])
        for c in clients[1:]:
            c.close()
        # Idle workers leave after max_idle.
        waitFor(lambda: self.master.workers() == [], what="idle workers to exit")
        waitFor(lambda: f"echo[{pids[0]}]: echo: client connected" in self.master.log(),
                what="the worker's log line")

    def test_maxUse(self):
        # max_use 5 for each of a worker's 2 clients: 10 clients a life.
        seen = set()
        for _ in range(11):
            c = Client(self.port)
            seen.add(c.echo())
            c.close()
            time.sleep(0.05)
        self.assertGreaterEqual(len(seen), 2)

    def test_crashReplacedAtOnce(self):
        c = Client(self.port)
        first = c.echo()
        c.sock.sendall(b"crash")
        waitFor(lambda: first not in self.master.workers())
        c2 = Client(self.port)
        self.assertNotEqual(c2.echo(), first)
        c2.close()
        waitFor(lambda: "died unexpectedly after serving" in self.master.log())

    def test_startupFailureThrottled(self):
        path = os.path.join(self.master.queue, "private", "broken")
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
        waitFor(lambda: "throttling the service" in self.master.log())
        time.sleep(1)
        self.assertEqual(self.master.log().count("throttling the service"), 1)

    def test_workersLeaveWithTheirMaster(self):
        c = Client(self.port)
        c.echo()
        workers = self.master.kill()
        self.assertTrue(workers)
        # The workers close the listener at once, so a new master can bind.
        waitFor(lambda: all(not commandLine(p) for p in workers), what="orphans to exit")
        self.master.start()
        c2 = Client(self.port)
        c2.echo()
        c2.close()

    def test_reload(self):
        c = Client(self.port)
        old = c.echo()
        c.close()
        self.master.signal(signal.SIGHUP)
        waitFor(lambda: old not in self.master.workers(), what="old worker to leave")
        c = Client(self.port)
        self.assertNotEqual(c.echo(), old)
        c.close()
        waitFor(lambda: "reload: configuration" in self.master.log(), what="the reload log line")

    def test_stop(self):
        c = Client(self.port)
        pid = c.echo()
        c.close()
        self.master.signal(signal.SIGTERM)
        self.master.process.wait(20)
        waitFor(lambda: not commandLine(pid))
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", self.port), 1)

    def test_privilegeDrop(self):
        if os.getuid() != 0:
            raise self.skipTest("needs root")
        c = Client(self.port)
        pid = c.echo()
        c.close()
        import pwd

        self.assertEqual(processUid(pid), pwd.getpwnam(testAccount()).pw_uid)


class MasterLockTests(SynchronousTestCase):
    def test_heldLockRefused(self):
        """
        While the lock is held -- by another master, or by a worker that
        inherited it -- a new master waits, then refuses to start.
        """
        import fcntl

        from tmta.master.lock import MasterRunning, acquireMasterLock
        from tmta.queue.layout import createLayout

        queue = self.mktemp()
        createLayout(queue)
        first = acquireMasterLock(queue)
        # A worker's copy of the descriptor keeps the lock held after the
        # master's own is closed.
        inherited = os.dup(first)
        os.close(first)
        slept = []
        with self.assertRaises(MasterRunning):
            acquireMasterLock(queue, wait=3.0, sleep=slept.append,
                              now=iter(range(100)).__next__)
        self.assertTrue(slept)
        os.close(inherited)
        second = acquireMasterLock(queue, wait=0)
        fcntl.flock(second, fcntl.LOCK_UN)
        os.close(second)
