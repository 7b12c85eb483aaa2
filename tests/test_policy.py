"""
Tests for the master's process policy, L{tmta.master.policy}, and the
worker side of it, L{tmta.master.runtime}, with a fake clock.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tmta.master.policy import ServicePool
from tmta.master.runtime import WorkerRuntime


class PoolTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.spawned = []
        self.listening = []
        self.pool = self.makePool(maxproc=2)

    def makePool(self, maxproc):
        def spawn():
            pid = 100 + len(self.spawned)
            self.spawned.append(pid)
            return pid

        pool = ServicePool("smtp/inet", maxproc, 60, self.clock, spawn, self.listening.append)
        pool.update()
        return pool

    def test_listensWhenNoWorker(self):
        self.assertEqual(self.listening, [True])

    def test_spawnOnWork(self):
        self.pool.workArrived()
        self.assertEqual(self.spawned, [100])
        # The new worker counts as available: the master stops watching.
        self.assertEqual(self.listening, [True, False])
        self.pool.workArrived()
        self.assertEqual(self.spawned, [100])

    def test_maxproc(self):
        self.pool.workArrived()
        self.pool.status(100, False, 1)
        self.pool.workArrived()
        self.pool.status(101, False, 1)
        self.assertEqual(self.spawned, [100, 101])
        # All busy and at maxproc: nothing to watch for.
        self.assertFalse(self.pool.shouldListen())
        self.pool.workArrived()
        self.assertEqual(len(self.spawned), 2)
        self.pool.status(100, True, 1)
        self.assertFalse(self.pool.shouldListen())
        self.pool.status(100, False, 2)
        self.pool.exited(101, True)
        self.assertTrue(self.pool.shouldListen())

    def test_predecessorsCountAfterReload(self):
        """
        After a reload, workers of the old configuration still running
        count against maxproc: a single-process service (qmgr) gets its
        new worker only once the old one has gone.
        """
        pool = self.makePool(maxproc=1)
        pool.inherit(1)
        self.assertFalse(pool.shouldListen())
        pool.workArrived()
        self.assertEqual(self.spawned, [])
        pool.predecessorExited()
        self.assertTrue(pool.shouldListen())
        pool.workArrived()
        self.assertEqual(self.spawned, [100])

    def test_unlimited(self):
        pool = self.makePool(maxproc=0)
        for i in range(5):
            pool.workArrived()
            pool.status(self.spawned[-1], False, 1)
        self.assertEqual(len(self.spawned), 5)

    def test_multiplexingCountsClients(self):
        self.pool.workArrived()
        # A worker with room left for more clients stays available.
        self.pool.status(100, True, 37)
        self.pool.workArrived()
        self.assertEqual(self.spawned, [100])

    def test_replaceAfterCrash(self):
        self.pool.workArrived()
        self.pool.status(100, False, 5)
        self.pool.exited(100, False)
        self.assertFalse(self.pool.throttled)
        self.pool.workArrived()
        self.assertEqual(self.spawned, [100, 101])

    def test_throttleStartupFailure(self):
        self.pool.workArrived()
        self.pool.exited(100, False)
        self.assertTrue(self.pool.throttled)
        self.assertFalse(self.pool.shouldListen())
        self.pool.workArrived()
        self.assertEqual(self.spawned, [100])
        self.clock.advance(59)
        self.assertTrue(self.pool.throttled)
        self.clock.advance(1)
        self.assertFalse(self.pool.throttled)
        self.assertTrue(self.pool.shouldListen())
        self.pool.workArrived()
        self.assertEqual(self.spawned, [100, 101])

    def test_normalExitNotThrottled(self):
        self.pool.workArrived()
        self.pool.exited(100, True)
        self.assertFalse(self.pool.throttled)

    def test_spawnFailureThrottles(self):
        def broken():
            raise OSError("no processes left")

        pool = ServicePool("x/unix", 1, 60, self.clock, broken)
        pool.workArrived()
        self.assertTrue(pool.throttled)
        self.flushLoggedErrors(OSError)

    def test_stop(self):
        self.pool.stop()
        self.assertFalse(self.pool.shouldListen())
        self.pool.workArrived()
        self.assertEqual(self.spawned, [])


class FakePort:
    def __init__(self):
        self.reading = True
        self.listening = True

    def startReading(self):
        self.reading = True

    def stopReading(self):
        self.reading = False

    def stopListening(self):
        self.listening = False


class RuntimeTests(SynchronousTestCase):
    def makeRuntime(self, capacity=1, maxUse=3, maxIdle=100, resident=False):
        self.clock = Clock()
        self.reports = []
        self.exits = []
        runtime = WorkerRuntime(
            self.clock,
            capacity,
            maxUse,
            maxIdle,
            resident,
            lambda a, s: self.reports.append((a, s)),
            lambda: self.exits.append(True),
        )
        self.port = FakePort()
        runtime.ports.append(self.port)
        runtime.start()
        return runtime

    def test_masterLost(self):
        """
        Without its master a worker takes no more work: a resident one
        leaves at once, one that abandons its clients drops them and
        leaves, the others leave once their clients are done.
        """
        from twisted.internet.testing import StringTransport

        class Client(StringTransport):
            def abortConnection(self):
                self.aborted = True
                runtime.clientEnded(self)

        runtime = self.makeRuntime(capacity=5, resident=True)
        runtime.clientStarted(Client())
        runtime.masterLost()
        self.assertEqual((self.exits, self.port.listening), ([True], False))

        runtime = self.makeRuntime(capacity=5)
        runtime.abandons = True
        clients = [Client(), Client()]
        for client in clients:
            runtime.clientStarted(client)
        runtime.masterLost()
        self.assertTrue(all(getattr(c, "aborted", False) for c in clients))
        self.assertEqual((self.exits, self.port.listening), ([True], False))

        runtime = self.makeRuntime(capacity=5)
        client = Client()
        runtime.clientStarted(client)
        runtime.masterLost()
        self.assertEqual((self.exits, self.port.listening), ([], False))
        self.assertEqual(runtime.room(), 0)
        runtime.clientEnded(client)
        self.assertEqual(self.exits, [True])

    def test_requestsCountAgainstMaxUse(self):
        """
        An agent serving many requests over one connection (qmgr's)
        retires after max_use of them: it takes no new connection, and
        leaves once the one it has is closed.
        """
        r = self.makeRuntime(capacity=1, maxUse=3)
        r.clientStarted()
        self.assertEqual([r.requestServed() for _ in range(3)], [False, False, True])
        self.assertFalse(self.port.listening)
        self.assertEqual(self.exits, [])
        r.clientEnded()
        self.assertEqual(self.exits, [True])

    def test_singleClient(self):
        r = self.makeRuntime(capacity=1)
        self.assertEqual(self.reports, [(True, 0)])
        r.clientStarted()
        self.assertFalse(self.port.reading)
        self.assertEqual(r.room(), 0)
        r.clientEnded()
        self.assertTrue(self.port.reading)
        self.assertEqual(self.reports, [(True, 0), (False, 1), (True, 1)])

    def test_multiplexReportsFirstUseOnly(self):
        r = self.makeRuntime(capacity=10, maxUse=0)
        r.clientStarted()
        r.clientStarted()
        r.clientEnded()
        self.assertEqual(self.reports, [(True, 0), (True, 1)])
        self.assertEqual(r.room(), 9)

    def test_maxUse(self):
        """
        A process serves max_use clients for each it can hold at once:
        one that holds 10 and has max_use 2 takes 20 before it leaves, so
        it can hold all 10 at once.
        """
        r = self.makeRuntime(capacity=10, maxUse=2)
        for _ in range(10):
            r.clientStarted()
        self.assertFalse(self.port.reading)
        for _ in range(10):
            r.clientEnded()
        self.assertEqual(self.exits, [])
        for _ in range(9):
            r.clientStarted()
        self.assertEqual(r.room(), 1)
        r.clientStarted()
        self.assertFalse(self.port.reading)
        for _ in range(10):
            r.clientEnded()
        self.assertEqual(self.exits, [True])

    def test_maxUseOneAtATime(self):
        r = self.makeRuntime(capacity=1, maxUse=2)
        r.clientStarted()
        r.clientEnded()
        r.clientStarted()
        r.clientEnded()
        self.assertEqual(self.exits, [True])

    def test_maxIdle(self):
        r = self.makeRuntime(maxIdle=100)
        self.clock.advance(99)
        r.clientStarted()
        self.clock.advance(200)
        self.assertEqual(self.exits, [])
        r.clientEnded()
        self.clock.advance(99)
        self.assertEqual(self.exits, [])
        self.clock.advance(1)
        self.assertEqual(self.exits, [True])

    def test_resident(self):
        r = self.makeRuntime(maxUse=1, maxIdle=1, resident=True)
        r.clientStarted()
        r.clientEnded()
        self.clock.advance(1000)
        self.assertEqual(self.exits, [])

    def test_shutdownWaitsForClients(self):
        r = self.makeRuntime(capacity=5)
        r.clientStarted()
        r.shutdown()
        self.assertFalse(self.port.listening)
        self.assertEqual(self.exits, [])
        r.clientEnded()
        self.assertEqual(self.exits, [True])


class PassedConnectionTests(SynchronousTestCase):
    """
    A C{pass} service's worker serves a client connection another
    process accepted (L{tmta.master.runtime}): counted as a client from
    the hand-over until it closes.
    """

    def test_servedAndCounted(self):
        import socket

        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        from tmta.master.runtime import _PassedConnections

        runtime = WorkerRuntime(Clock(), 10, 0, 100, False, lambda a, s: None, lambda: None)
        made = []

        class Echo(Protocol):
            def connectionMade(self):
                made.append(self.transport)
                self.transport.write(b"hello\r\n")

        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        self.addCleanup(client.close)
        accepted, _ = listener.accept()
        passed = _PassedConnections(reactor, runtime, Factory.forProtocol(Echo))
        passed.serve(accepted.detach())
        [transport] = made
        self.assertEqual(runtime.clients, 1)
        self.assertIn("passed on", repr(transport))
        self.assertEqual(transport.getPeer().port, client.getsockname()[1])
        self.assertEqual(client.recv(100), b"hello\r\n")
        transport.loseConnection()
        for _ in range(10):
            reactor.iterate(0.01)
        self.assertEqual(runtime.clients, 0)
        self.assertEqual(client.recv(100), b"")

    def test_notTCPRefused(self):
        import socket

        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        from tmta.master.runtime import _PassedConnections

        runtime = WorkerRuntime(Clock(), 10, 0, 100, False, lambda a, s: None, lambda: None)
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        passed = _PassedConnections(reactor, runtime, Factory.forProtocol(Protocol))
        passed.serve(theirs.detach())
        self.assertEqual(runtime.clients, 0)
        self.assertEqual(ours.recv(100), b"")
