"""
HAProxy's PROXY protocol in front of smtpd and postscreen
(C{smtpd_upstream_proxy_protocol}, C{postscreen_upstream_proxy_protocol}):
the header's parsing (L{tmta.mail.proxyprotocol}), and real masters
behind a scripted proxy on loopback, whose sessions are about the client
the header names.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    CORE_MASTER_CF,
    Master,
    freePort,
    localMaildirs,
    shortTemporaryDirectory,
    waitFor,
)
from tmta.mail.proxyprotocol import (
    ProxyHeaderError,
    handOverRecord,
    parseHeader,
    readHandOverRecord,
)

V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v2Header(client: str, clientPort: int, server: str, serverPort: int,
             command: int = 1, tlv: bytes = b"") -> bytes:
    family = socket.AF_INET6 if ":" in client else socket.AF_INET
    addresses = (socket.inet_pton(family, client) + socket.inet_pton(family, server)
                 + struct.pack("!HH", clientPort, serverPort) + tlv)
    kind = 0x21 if family == socket.AF_INET6 else 0x11
    return V2 + bytes([0x20 | command, kind]) + struct.pack("!H", len(addresses)) + addresses


class HeaderTests(SynchronousTestCase):
    def test_version1(self):
        header = b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 25\r\n"
        self.assertEqual(parseHeader(header + b"EHLO x\r\n"),
                         (len(header), (("192.0.2.10", 40000), ("198.51.100.1", 25))))
        header = b"PROXY TCP6 2001:db8::10 2001:db8::1 40000 587\r\n"
        self.assertEqual(parseHeader(header),
                         (len(header), (("2001:db8::10", 40000), ("2001:db8::1", 587))))
        self.assertEqual(parseHeader(b"PROXY UNKNOWN\r\n"), (15, None))

    def test_version2(self):
        header = v2Header("192.0.2.10", 40000, "198.51.100.1", 25, tlv=b"\x01\x00\x02h2")
        self.assertEqual(parseHeader(header + b"QUIT\r\n"),
                         (len(header), (("192.0.2.10", 40000), ("198.51.100.1", 25))))
        header = v2Header("2001:db8::10", 1, "2001:db8::1", 2)
        self.assertEqual(parseHeader(header)[1], (("2001:db8::10", 1), ("2001:db8::1", 2)))
        # LOCAL: the proxy's own connection (a health check).
        self.assertEqual(parseHeader(v2Header("192.0.2.10", 1, "192.0.2.1", 2, command=0))[1],
                         None)

    def test_refused(self):
        """
        What is not a whole, well-formed header for TCP over IP is
        refused, as Postfix refuses it.
        """
        for data in [b"EHLO client.example\r\n", b"PROXY TCP4 192.0.2.10 198.51.100.1 40000",
                     b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 99999\r\n",
                     b"PROXY TCP4 2001:db8::1 198.51.100.1 40000 25\r\n",
                     b"PROXY TCP4 192.0.2.1O 198.51.100.1 40000 25\r\n",
                     b"PROXY UDP4 192.0.2.10 198.51.100.1 40000 25\r\n",
                     b"PROXY " + b"x" * 200 + b"\r\n",
                     v2Header("192.0.2.10", 1, "192.0.2.1", 2)[:20],
                     V2 + b"\x21\x31\x00\x00"]:
            self.assertRaises(ProxyHeaderError, parseHeader, data)

    def test_handOver(self):
        self.assertEqual(readHandOverRecord(handOverRecord(None)), (True, None))
        addresses = (("192.0.2.10", 40000), ("198.51.100.1", 25))
        record = handOverRecord(addresses)
        self.assertEqual(readHandOverRecord(record), (True, addresses))
        self.assertEqual(readHandOverRecord(record[:1]), (False, None))
        self.assertEqual(readHandOverRecord(record[:5]), (False, None))
        self.assertRaises(ProxyHeaderError, readHandOverRecord, b"P 192.0.2.10 x y z\n")


def _session(port: int, header: bytes, commands: bytes = b"QUIT\r\n") -> bytes:
    """
    Connect as a proxy does: the header, then, once greeted, the
    client's commands, each after the reply to the one before; all the
    server said until it closed.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(header)
        seen = _reply(s, b"")
        for command in commands.splitlines(keepends=True):
            if not seen.endswith(b"\r\n") or seen[-2:] == b"":
                break
            s.sendall(command)
            seen = _reply(s, seen)
        return seen


def _reply(s: socket.socket, seen: bytes) -> bytes:
    """
    Read up to the end of the next whole reply (its last line is
    C{NNN text}), or of the connection.
    """
    start = len(seen)
    while True:
        lines = seen[start:].split(b"\r\n")[:-1]
        if lines and lines[-1][3:4] == b" ":
            return seen
        chunk = s.recv(4096)
        if not chunk:
            return seen
        seen += chunk


class SmtpdBehindProxyTests(SynchronousTestCase):
    """
    smtpd on a port behind a proxy: the session is the proxied client's
    (restrictions, logs); a missing or bad header ends the connection.
    """

    def setUp(self):
        base = shortTemporaryDirectory(self)
        self.port = freePort()
        self.master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(base + "/mail/"),
            # The proxy's own address is trusted; its clients are not.
            "mynetworks": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            "smtpd_upstream_proxy_timeout": "2s",
        }, CORE_MASTER_CF.format(port=self.port).replace(
            f"{self.port}      inet  n       -       n       -       -       smtpd\n",
            f"{self.port}      inet  n       -       n       -       -       smtpd\n"
            "  -o smtpd_upstream_proxy_protocol=haproxy\n")).start()
        self.addCleanup(self.master.stop)

    def test_clientFromHeader(self):
        """
        The client the header names is the session's: not in mynetworks,
        it may not relay, and the log names it; a v2 header too.
        """
        said = _session(self.port, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n",
                        b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
                        b"RCPT TO:<b@elsewhere.example>\r\nQUIT\r\n")
        self.assertTrue(said.startswith(b"220 "), said)
        self.assertIn(b"\r\n454 4.7.1 <b@elsewhere.example>: Relay access denied", said)
        said = _session(self.port, v2Header("2001:db8::10", 40001, "::1", 25),
                        b"EHLO client.example\r\nQUIT\r\n")
        self.assertIn(b"250-", said)
        waitFor(lambda: "connect from unknown[192.0.2.10]" in self.master.log()
                and "connect from unknown[2001:db8::10]" in self.master.log(),
                what="the proxied clients in the log")

    def test_badOrMissingHeader(self):
        """
        A connection without a header (a client that bypassed the proxy)
        gets no greeting: it is closed when the header does not come in
        time, or at once when what came is no header.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            started = time.monotonic()
            self.assertEqual(s.recv(100), b"")
            self.assertGreater(time.monotonic() - started, 1.5)
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(b"EHLO client.example\r\n")
            self.assertEqual(s.recv(100), b"")
        waitFor(lambda: "haproxy read: timeout error" in self.master.log()
                and "haproxy read: not a PROXY protocol header" in self.master.log(),
                what="the warnings")


class PostscreenBehindProxyTests(SynchronousTestCase):
    """
    postscreen behind a proxy: its access list judges the proxied
    client, and smtpd, to which it hands the connection, knows it too.
    """

    def test_allowlistedAndHandedOver(self):
        base = shortTemporaryDirectory(self)
        port = freePort()
        listed = os.path.join(base, "access.cidr")
        with open(listed, "w") as f:
            f.write("192.0.2.10/32 permit\n192.0.2.66/32 reject\n")
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(base + "/mail/"),
            "mynetworks": "127.0.0.0/8",
            "smtpd_peername_lookup": "no",
            "postscreen_access_list": f"permit_mynetworks, cidr:{listed}",
            "postscreen_denylist_action": "drop",
        }, CORE_MASTER_CF.format(port=port).replace(
            f"{port}      inet  n       -       n       -       -       smtpd\n",
            f"{port}      inet  n       -       n       -       1       postscreen\n"
            "  -o postscreen_upstream_proxy_protocol=haproxy\n"
            "smtpd     pass  -       -       n       -       -       smtpd\n")).start()
        self.addCleanup(master.stop)
        said = _session(port, b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n",
                        b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n"
                        b"RCPT TO:<b@elsewhere.example>\r\nQUIT\r\n")
        self.assertIn(b"\r\n454 4.7.1 <b@elsewhere.example>: Relay access denied", said)
        said = _session(port, b"PROXY TCP4 192.0.2.66 127.0.0.1 40000 25\r\n")
        self.assertTrue(said.startswith(b"521 5.3.2 "), said)
        log = master.log
        waitFor(lambda: "ALLOWLISTED [192.0.2.10]:40000" in log()
                and "DENYLISTED [192.0.2.66]:40000" in log()
                and "connect from unknown[192.0.2.10]" in log(),
                what="postscreen's and smtpd's log of the proxied clients")
