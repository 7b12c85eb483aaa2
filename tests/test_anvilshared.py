"""
anvil's rates kept in a store several hosts share
(C{anvil_shared_store}, L{tmta.anvil.shared}): two anvils (as on two
hosts) counting one client against a private Redis and a private
memcached meet one count; a store that goes away leaves each anvil
counting alone.
"""

from __future__ import annotations

import shutil
import subprocess

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support import accepting, endToEnd, freePort, stopProcess, waitFor
from tmta.anvil import AnvilTable
from tmta.anvil.shared import SharedRates, configurationProblems, parseSharedStore
from tmta.config import MainConfig


class ParseTests(SynchronousTestCase):
    def test_values(self):
        self.assertIsNone(parseSharedStore(""))
        self.assertEqual(parseSharedStore("redis:inet:127.0.0.1:6379"),
                         ("redis", "inet", "127.0.0.1", 6379))
        self.assertEqual(parseSharedStore("memcache:unix:/run/memcached.sock"),
                         ("memcache", "unix", "/run/memcached.sock", 0))
        for bad in ("redis:127.0.0.1", "mongodb:inet:h:1", "redis:inet:h:port"):
            self.assertRaises(ValueError, parseSharedStore, bad)
        self.assertEqual(len(configurationProblems(
            MainConfig({"anvil_shared_store": "redis:somewhere"}), None)), 1)


class SharedStoreTestsMixin:
    def startStore(self, port: int) -> subprocess.Popen:
        raise NotImplementedError()

    def setUp(self):
        endToEnd()
        self.port = freePort()
        self.store = self.startStore(self.port)
        self.addCleanup(stopProcess, self.store)
        waitFor(lambda: accepting(self.port), what="the store to listen")

    def rates(self, clock=reactor) -> SharedRates:
        return SharedRates(clock, (self.kind, "inet", "127.0.0.1", self.port), 60)

    @defer.inlineCallbacks
    def test_twoHostsOneCount(self):
        """
        Events of one client counted by two anvils add up; another
        client and another event count apart.
        """
        first, second = AnvilTable(Clock(), 60, self.rates()), \
            AnvilTable(Clock(), 60, self.rates())
        seen = []
        for table in (first, second, first, second):
            seen.append((yield table.shared("192.0.2.1", "message", 1)))
        self.assertEqual(seen, [1, 2, 3, 4])
        self.assertEqual((yield second.shared("192.0.2.2", "message", 1)), 1)
        self.assertEqual((yield first.shared("192.0.2.1", "recipient", 1)), 1)
        for table in (first, second):
            table.sharedRates._protocol.transport.loseConnection()

    @defer.inlineCallbacks
    def test_storeGone(self):
        """
        Without the store, each anvil's own count stands, and a warning
        says so.
        """
        table = AnvilTable(Clock(), 60, self.rates())
        self.assertEqual((yield table.shared("192.0.2.9", "connect", 1)), 1)
        self.assertEqual(AnvilTable(Clock(), 60).shared("192.0.2.9", "connect", 3), 3)
        stopProcess(self.store)
        self.assertEqual((yield table.shared("192.0.2.9", "connect", 7)), 7)
        self.assertTrue(table._storeFailing)


class RedisTests(SharedStoreTestsMixin, TestCase):
    kind = "redis"

    def startStore(self, port: int) -> subprocess.Popen:
        if not shutil.which("redis-server"):
            raise SkipTest("Debian's redis-server is not installed")
        return subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class MemcachedTests(SharedStoreTestsMixin, TestCase):
    kind = "memcache"

    def startStore(self, port: int) -> subprocess.Popen:
        if not shutil.which("memcached"):
            raise SkipTest("Debian's memcached is not installed")
        return subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0",
                                 "-u", "nobody", "-m", "16"])
