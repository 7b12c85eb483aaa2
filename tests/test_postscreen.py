"""
postscreen (L{tmta.postscreen}) in front of smtpd, through a real master:
Debian's C{smtp inet ... postscreen} and C{smtpd pass ... smtpd} lines, a
client that passes and is then remembered, clients that talk before
their turn, the access list, and the tests after the greeting.  The DNS
list test runs in a private network namespace against a twisted.names
server (L{tests.postscreendriver}).
"""

import os
import smtplib
import socket
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import (
    Master,
    endToEnd,
    freePort,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    waitFor,
)
from tests.support.namespace import runNamespaceDriver

#: Debian's postscreen lines, with the port of the test.
POSTSCREEN_MASTER_CF = """\
{port}      inet  n       -       n       -       1       postscreen
smtpd     pass  -       -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
local     unix  -       n       n       -       -       local
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
"""


def postscreenMain(base: str, **settings) -> dict:
    """
    main.cf for a postscreen test: loopback is not in mynetworks, so
    that C{permit_mynetworks} does not let the test's client past.
    """
    return {"myhostname": "mx.example.org", "mydestination": "localhost",
            "mynetworks": "192.0.2.0/24", "postscreen_greet_wait": "1s",
            **localMaildirs(os.path.join(base, "mail") + "/"), **settings}


def readReply(sock: socket.socket, timeout: float = 10) -> bytes:
    """
    Read until a complete final reply line (C{NNN text}) has come, or the
    connection closes.
    """
    sock.settimeout(timeout)
    data = b""
    while True:
        lines = data.split(b"\r\n")
        if any(len(line) > 3 and line[3:4] == b" " for line in lines[:-1]):
            return data
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


class PostscreenTests(SynchronousTestCase):
    def setUp(self):
        endToEnd()
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        self.spool = os.path.join(self.base, "mail")
        self.port = freePort()

    def startMaster(self, **settings):
        self.master = Master(os.path.join(self.base, "conf"),
                             postscreenMain(self.base, **settings),
                             POSTSCREEN_MASTER_CF.format(port=self.port)).start()
        self.addCleanup(self.master.stop)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(sock.close)
        return sock

    def test_passedThenRemembered(self):
        """
        A new client waits out the greeting, passes, and is handed to
        smtpd, which finishes the greeting postscreen began and takes
        its mail; the next time it is remembered and handed over at once.
        """
        self.startMaster()
        started = time.monotonic()
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        greeted = time.monotonic() - started
        code, banner = client.ehlo("client.example")
        self.assertEqual(code, 250)
        client.sendmail("alice@example.com", ["bob@localhost"],
                        b"Subject: through postscreen\r\n\r\nhello\r\n")
        client.quit()
        self.assertGreaterEqual(greeted, 0.9)
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="the delivery")
        waitFor(lambda: "PASS NEW [127.0.0.1]:" in self.master.log(), what="PASS NEW")
        self.assertIn("CONNECT from [127.0.0.1]:", self.master.log())
        started = time.monotonic()
        sock = self.connect()
        greeting = readReply(sock)
        self.assertLess(time.monotonic() - started, 0.9)
        self.assertTrue(greeting.startswith(b"220 mx.example.org"), greeting)
        self.assertNotIn(b"220-", greeting)
        sock.sendall(b"QUIT\r\n")
        self.assertTrue(readReply(sock).startswith(b"221"))
        waitFor(lambda: "PASS OLD [127.0.0.1]:" in self.master.log(), what="PASS OLD")

    def test_pregreetDropped(self):
        """
        A client that talks before its turn (a spambot) is told so and
        dropped, with C{postscreen_greet_action = drop}; its words are
        logged as Postfix logs them.
        """
        self.startMaster(postscreen_greet_action="drop")
        sock = self.connect()
        sock.sendall(b"EHLO spambot.example\r\n")
        reply = readReply(sock)
        self.assertIn(b"220-mx.example.org", reply)
        reply += readReply(sock) if b"521" not in reply else b""
        self.assertIn(b"521 5.5.1 Protocol error\r\n", reply)
        self.assertEqual(sock.recv(100), b"")
        waitFor(lambda: "DISCONNECT [127.0.0.1]:" in self.master.log(),
                what="the DISCONNECT line")
        log = self.master.log()
        self.assertIn("PREGREET 22 after", log)
        self.assertIn(": EHLO spambot.example\\r\\n", log)
        self.assertIn("DISCONNECT [127.0.0.1]:", log)
        self.assertNotIn("PASS NEW", log)

    def test_pregreetEnforced(self):
        """
        With C{enforce}, the client that talked early gets postscreen's
        own SMTP engine, which refuses its recipients; nothing reaches
        smtpd or the queue.
        """
        self.startMaster(postscreen_greet_action="enforce")
        sock = self.connect()
        sock.sendall(b"EHLO spambot.example\r\n")
        reply = readReply(sock)
        while b"\r\n220 " not in b"\r\n" + reply:
            reply += readReply(sock)
        # Its early EHLO is answered once the greeting is complete.
        while b"250 " not in reply:
            reply += readReply(sock)
        sock.sendall(b"MAIL FROM:<spam@example.com>\r\n")
        self.assertTrue(readReply(sock).startswith(b"250 2.1.0"))
        sock.sendall(b"RCPT TO:<bob@localhost>\r\n")
        self.assertEqual(readReply(sock), b"550 5.5.1 Protocol error\r\n")
        sock.sendall(b"DATA\r\n")
        self.assertEqual(readReply(sock), b"554 5.5.1 Error: no valid recipients\r\n")
        waitFor(lambda: "proto=ESMTP, helo=<spambot.example>" in self.master.log(),
                what="the refusal")
        self.assertIn("550 5.5.1 Protocol error; from=<spam@example.com>, to=<bob@localhost>, "
                      "proto=ESMTP, helo=<spambot.example>", self.master.log())
        self.assertEqual(maildirMessages(self.spool), {})

    def test_accessList(self):
        """
        C{postscreen_access_list}: a permitted client goes to smtpd at
        once, untested; a denied one, with C{drop}, is sent away.
        """
        access = os.path.join(self.base, "postscreen_access.cidr")
        with open(access, "w") as f:
            f.write("127.0.0.1/32 permit\n127.0.0.2/32 reject\n")
        self.startMaster(postscreen_access_list=f"permit_mynetworks, cidr:{access}",
                         postscreen_denylist_action="drop", postscreen_greet_wait="5s")
        started = time.monotonic()
        sock = self.connect()
        greeting = readReply(sock)
        self.assertLess(time.monotonic() - started, 3)
        self.assertTrue(greeting.startswith(b"220 mx.example.org"), greeting)
        denied = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                          source_address=("127.0.0.2", 0))
        self.addCleanup(denied.close)
        self.assertEqual(readReply(denied), b"521 5.3.2 Service currently unavailable\r\n")
        waitFor(lambda: "DENYLISTED [127.0.0.2]:" in self.master.log()
                and "ALLOWLISTED [127.0.0.1]:" in self.master.log(), what="the log lines")

    def test_afterGreetingTests(self):
        """
        With the tests after the greeting on, a new client talks to
        postscreen itself and is asked to come back (450 at RCPT); one
        that pipelines without leave fails (C{enforce}: 550); one that
        came back after passing goes to smtpd.
        """
        self.startMaster(postscreen_pipelining_enable="yes",
                         postscreen_non_smtp_command_enable="yes",
                         postscreen_bare_newline_enable="yes")
        sock = self.connect()
        greeting = readReply(sock)
        while b"\r\n220 " not in b"\r\n" + greeting:
            greeting += readReply(sock)
        for command, expected in ((b"EHLO client.example\r\n", b"250-mx.example.org"),
                                  (b"MAIL FROM:<alice@example.com>\r\n", b"250 2.1.0 Ok"),
                                  (b"RCPT TO:<bob@localhost>\r\n",
                                   b"450 4.3.2 Service currently unavailable"),
                                  (b"QUIT\r\n", b"221 2.0.0 Bye")):
            sock.sendall(command)
            self.assertTrue(readReply(sock).startswith(expected), command)
        waitFor(lambda: "PASS NEW [127.0.0.1]:" in self.master.log(), what="PASS NEW")
        # Now remembered: smtpd takes the mail.
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: back\r\n\r\nhi\r\n")
        client.quit()
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="the delivery")
        # A pipelining client, from another address, fails.
        pipelined = socket.create_connection(("127.0.0.1", self.port), timeout=10,
                                             source_address=("127.0.0.5", 0))
        self.addCleanup(pipelined.close)
        greeting = readReply(pipelined)
        while b"\r\n220 " not in b"\r\n" + greeting:
            greeting += readReply(pipelined)
        pipelined.sendall(b"EHLO bot.example\r\nMAIL FROM:<spam@example.com>\r\n"
                          b"RCPT TO:<bob@localhost>\r\n")
        replies = b""
        while b"\r\n5" not in b"\r\n" + replies and b"\r\n4" not in b"\r\n" + replies:
            replies += readReply(pipelined)
        self.assertIn(b"550 5.5.1 Protocol error", replies)
        waitFor(lambda: "COMMAND PIPELINING from [127.0.0.5]:" in self.master.log(),
                what="the pipelining line")


class DebianMasterCfTests(SynchronousTestCase):
    """
    Debian's own master.cf, with its postscreen lines uncommented as
    Postfix's POSTSCREEN_README says, starts and serves the SMTP port.
    """

    def test_postscreenLinesUncommented(self):
        endToEnd()
        stock = "/usr/share/postfix/master.cf.dist"
        if not os.path.exists(stock):
            raise SkipTest("no Debian master.cf (Debian's postfix package)")
        port = freePort()
        lines = []
        with open(stock) as f:
            for line in f:
                fields = line.split()
                if fields[:2] == ["smtp", "inet"] and fields[-1] == "smtpd":
                    line = "#" + line
                elif fields[:2] == ["#smtp", "inet"] or fields[:2] == ["#smtpd", "pass"] \
                        or fields[:1] in (["#dnsblog"], ["#tlsproxy"]):
                    line = line[1:]
                if line.startswith("smtp ") and "postscreen" in line:
                    line = f"{port}" + line[len("smtp"):]
                lines.append(line)
        base = shortTemporaryDirectory(self)
        os.chmod(base, 0o755)
        master = Master(os.path.join(base, "conf"), postscreenMain(base),
                        "".join(lines)).start()
        self.addCleanup(master.stop)
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: debian\r\n\r\nx\r\n")
        client.quit()
        waitFor(lambda: maildirMessages(os.path.join(base, "mail")).get("bob"),
                what="the delivery")
        waitFor(lambda: "PASS NEW [127.0.0.1]:" in master.log(), what="PASS NEW")


class DNSListTests(SynchronousTestCase):
    """
    C{postscreen_dnsbl_sites} with weights, filters and an allow list,
    against a twisted.names server the system resolver is pointed at, in
    a private network namespace.
    """

    def test_dnsLists(self):
        observed = runNamespaceDriver(self, "postscreendriver.py")
        log = observed["log"]
        # 127.0.0.1 is on dnsbl.test (weight 2): refused, with the list
        # named as postscreen_dnsbl_reply_map names it (without its key).
        self.assertEqual(observed["listed"],
                         "550 5.7.1 Service unavailable; client [127.0.0.1] blocked using "
                         "dnsbl.test")
        self.assertIn("DNSBL rank 2 for [127.0.0.1]:", log)
        # 127.0.0.2 answers only a filter it does not pass: not listed.
        self.assertEqual(observed["filtered"], 250)
        self.assertIn("PASS NEW [127.0.0.2]:", log)
        # 127.0.0.3 is on the allow list (weight -5): it passes as soon as
        # the DNS answers, well within the greeting wait.
        self.assertLess(observed["allowedAfter"], 3.0)
        self.assertIn("PASS NEW [127.0.0.3]:", log)
        self.assertEqual(observed["delivered"], 2)


class ScoreTests(SynchronousTestCase):
    """
    The DNS list score (L{tmta.postscreen.dnsbl.Score}), as Postfix adds
    weights and picks TTLs.
    """

    def test_weightsAndFilters(self):
        from tmta.postscreen.dnsbl import Score, byZone
        from tmta.postscreen.settings import parseSite

        sites = [parseSite(s) for s in ("zen.example=127.0.0.[2..11]*3",
                                        "zen.example=127.0.0.[10;11]*-1",
                                        "wl.example*-5")]
        zones = byZone(sites)
        score = Score()
        score.answer(zones["zen.example"], ["127.0.0.4"], 300)
        self.assertEqual((score.total, score.name), (3, "zen.example"))
        score.answer(zones["wl.example"], [], 600)
        self.assertEqual(score.total, 3)
        self.assertEqual(score.ttl(60, 3600), 300)
        allowed = Score()
        allowed.answer(zones["zen.example"], ["127.0.0.10"], 100)
        allowed.answer(zones["wl.example"], ["127.0.9.1"], 900)
        self.assertEqual(allowed.total, 3 - 1 - 5)
        # The least TTL of the answers that count for it.
        self.assertEqual(allowed.ttl(60, 3600), 100)
        self.assertEqual(Score().ttl(60, 3600), 3600)

    def test_badSites(self):
        from tmta.postscreen.settings import parseSite

        self.assertRaises(ValueError, parseSite, "zen.example*x")
        self.assertRaises(ValueError, parseSite, "zen.example=127.0.0")
        self.assertRaises(ValueError, parseSite, "=127.0.0.2")


class CacheTests(SynchronousTestCase):
    def test_recordsAndCleaning(self):
        from tmta.postscreen.cache import ClientCache, formatRecord, parseRecord
        from tmta.tables.writable import MemoryStore

        record = {"pregreet": 100, "dnsbl": 200}
        self.assertEqual(formatRecord(record), "100;200;0;0;0")
        self.assertEqual(parseRecord("100;200;0;0;0")["dnsbl"], 200)
        self.assertIsNone(parseRecord("garbage"))
        cache = ClientCache(MemoryStore(), retention=50)
        cache.put("192.0.2.1", record)
        cache.store.put("192.0.2.2", "bad")
        cache.put("192.0.2.3", {"pregreet": 1000})
        self.assertEqual(cache.clean(now=300), 2)
        self.assertEqual([a for a, _ in cache.store.items()], ["192.0.2.3"])


class ConfigurationTests(SynchronousTestCase):
    def problems(self, **settings):
        from tmta.config import MainConfig
        from tmta.postscreen.service import configurationProblems

        return configurationProblems(MainConfig(settings), None)

    def test_refused(self):
        self.assertEqual(self.problems(), [])
        [problem] = self.problems(postscreen_greet_action="bounce")
        self.assertIn("postscreen_greet_action = bounce", problem)
        self.assertEqual(self.problems(postscreen_upstream_proxy_protocol="haproxy"), [])
        [problem] = self.problems(postscreen_upstream_proxy_protocol="nginx")
        self.assertIn("the protocol supported is haproxy", problem)
        [problem] = self.problems(postscreen_allowlist_interfaces="!192.0.2.1 static:all")
        self.assertIn("static:all", problem)
        [problem] = self.problems(postscreen_dnsbl_sites="zen.example*heavy")
        self.assertIn("bad DNSBL weight", problem)
        [problem] = self.problems(postscreen_cache_map="texthash:/etc/postfix/cache")
        self.assertIn("postscreen_cache_map", problem)


class EngineTests(SynchronousTestCase):
    """
    postscreen's own SMTP engine (L{tmta.postscreen.engine}) on an
    in-memory connection: the non-SMTP command and bare newline tests.
    """

    def session(self, **settings):
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from tmta.config import MainConfig
        from tmta.postscreen.cache import ClientCache
        from tmta.postscreen.service import Screen
        from tmta.postscreen.session import PostscreenSession
        from tmta.postscreen.settings import PostscreenSettings
        from tmta.tables.writable import MemoryStore

        config = MainConfig({"myhostname": "mx.example.org", "mynetworks": "192.0.2.0/24",
                             "postscreen_greet_banner": "", **settings})
        self.screen = Screen(Clock(), PostscreenSettings.fromConfig(config),
                             ClientCache(MemoryStore(), 86400), None, "/nonexistent")
        self.handedOver = []
        self.screen.handOff = self.handedOver.append
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "198.51.100.9", 4000),
                                         hostAddress=IPv4Address("TCP", "127.0.0.1", 25))
        session = PostscreenSession(self.screen)
        session.makeConnection(self.transport)
        return session

    def replies(self):
        text = self.transport.value().decode()
        self.transport.clear()
        return [line for line in text.split("\r\n") if line]

    def test_nonSMTPCommandDropped(self):
        session = self.session(postscreen_non_smtp_command_enable="yes")
        self.assertEqual(self.replies(), ["220 mx.example.org ESMTP tmta"])
        session.dataReceived(b"GET / HTTP/1.0\r\n")
        self.assertEqual(self.replies(),
                         ["521 5.7.0 Error: I can break rules, too. Goodbye."])
        self.assertTrue(self.transport.disconnecting)
        self.assertNotIn("198.51.100.9", [a for a, _ in self.screen.cache.store.items()])

    def test_bareNewlineEnforced(self):
        session = self.session(postscreen_bare_newline_enable="yes",
                               postscreen_bare_newline_action="enforce")
        self.replies()
        session.dataReceived(b"EHLO client.example\n")
        self.assertIn("250 CHUNKING", self.replies())
        session.dataReceived(b"MAIL FROM:<a@example.com>\r\n")
        session.dataReceived(b"RCPT TO:<b@example.org>\r\n")
        self.assertEqual(self.replies(), ["250 2.1.0 Ok", "550 5.5.1 Protocol error"])
        session.dataReceived(b"QUIT\r\n")
        self.assertEqual(self.replies(), ["221 2.0.0 Bye"])
        self.assertEqual(self.handedOver, [])

    def test_passedThenHandedOver(self):
        session = self.session(postscreen_bare_newline_enable="yes")
        self.replies()
        for line in (b"EHLO client.example\r\n", b"MAIL FROM:<a@example.com>\r\n",
                     b"RCPT TO:<b@example.org>\r\n"):
            session.dataReceived(line)
        self.assertEqual(self.replies()[-1], "450 4.3.2 Service currently unavailable")
        session.dataReceived(b"QUIT\r\n")
        session.connectionLost()
        [(address, _)] = self.screen.cache.store.items()
        self.assertEqual(address, "198.51.100.9")
        # Back again: remembered, and handed to smtpd at once.
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport

        from tmta.postscreen.session import PostscreenSession

        again = PostscreenSession(self.screen)
        again.makeConnection(StringTransport(
            peerAddress=IPv4Address("TCP", "198.51.100.9", 4001),
            hostAddress=IPv4Address("TCP", "127.0.0.1", 25)))
        self.assertEqual(self.handedOver, [again])
