"""
An smtpd session over an in-memory transport, for unit tests of smtpd's
commands, restrictions and AUTH: L{SessionHarness} builds the server
from main.cf settings as the smtpd service does, with L{FakeCleanup}
recording what it would queue.
"""

from contextlib import contextmanager

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tmta.cleanup.client import CleanupClient
from tmta.cleanup.commands import (
    CleanupBegin,
    CleanupContent,
    CleanupEnd,
    CleanupRecipients,
)
from tmta.config import MainConfig
from tmta.rewrite import Rewriter
from tmta.smtpd.checking import Restrictions
from tmta.smtpd.protocol import SMTPServer
from tmta.smtpd.restrictions import RestrictionEnvironment
from tmta.smtpd.settings import SMTPSettings
from tmta.tables import DictTable
from tmta.tables.networks import parseNetworks


class FakeCleanup:
    """
    A connection to cleanup that records what smtpd sends; End answers
    when the test says.
    """

    def __init__(self):
        self.transport = StringTransport()
        self.calls = []
        self.ends = []
        self.writes = []

    @contextmanager
    def together(self):
        """
        Record which commands were sent in one write.
        """
        first = len(self.calls)
        yield
        self.writes.append([c for c, kw in self.calls[first:]])

    def callRemote(self, command, **kw):
        self.calls.append((command, kw))
        if command is CleanupBegin:
            return None  # one-way: no answer
        if command is CleanupEnd:
            d = defer.Deferred()
            self.ends.append(d)
            return d
        return defer.succeed({})

    def content(self):
        return b"".join(kw.get("data") or b"" for c, kw in self.calls
                        if c in (CleanupContent, CleanupEnd))

    def recipients(self):
        return [r["address"] for c, kw in self.calls if c in (CleanupBegin, CleanupRecipients)
                for r in kw["recipients"]]

    def finish(self, code=250, reason="2.0.0 Ok: queued as 0123456789ABCDEF01"):
        self.ends.pop(0).callback({"code": code, "reason": reason,
                                   "queue_id": "0123456789ABCDEF01"})


class SessionHarness:
    """
    An smtpd session over an in-memory transport, for a
    L{SynchronousTestCase}.
    """

    def resolver(self):
        """
        The resolver the DNS checks use: none here.
        """
        return None

    def makeServer(self, client="127.0.0.1", cleanupClient=None, anyLocalName=False,
                   freeSpace=lambda: None, lookup=None, **params):
        settings = {"myhostname": "mx.example.org", "mynetworks": "127.0.0.1/32",
                    "smtpd_timeout": "60s",
                    # These sessions pipeline freely; the defence has tests of its own.
                    "smtpd_forbid_unauth_pipelining": "no"}
        settings.update(params)
        config = MainConfig(settings)
        networks = parseNetworks(config.getList("mynetworks"))
        users = DictTable({"bob": "x", "postmaster": "x"})
        from tmta.smtpd.recipients import RecipientTables

        tables = RecipientTables.fromConfig(config)
        tables.local = None if anyLocalName else [users]
        environment = RestrictionEnvironment.fromConfig(config, networks, tables,
                                                        resolver=self.resolver())
        lists = Restrictions.fromConfig(config, environment)

        tls = None
        if config.get("smtpd_tls_security_level") or config.getBool("smtpd_tls_wrappermode"):
            from tests.support import TestCA
            from tmta.smtpd.tls import ServerTLS

            certFile, keyFile = TestCA(self.mktemp()).server("mx.example.org")
            tls = ServerTLS.fromConfig(config.withOverrides(
                {"smtpd_tls_cert_file": certFile, "smtpd_tls_key_file": keyFile}))
        self.settings = SMTPSettings.fromConfig(config, lists, tables, tls)
        rewriter = Rewriter(config)
        if cleanupClient is None:
            self.cleanup = FakeCleanup()
            self.clock = Clock()
            cleanupClient = CleanupClient(lambda: defer.succeed(self.cleanup), self.clock)
        server = SMTPServer(
            self.settings,
            cleanupClient,
            lambda a: defer.succeed(rewriter.resolve(a)),
            lookup or (lambda a: defer.succeed("localhost")),
            self.clock,
            freeSpace,
        )
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", client, 40000))
        server.makeConnection(self.transport)
        self.server = server
        return server

    def send(self, data):
        self.server.dataReceived(data)

    def replies(self):
        lines = self.transport.value().decode().split("\r\n")
        self.transport.clear()
        return [line for line in lines if line]
