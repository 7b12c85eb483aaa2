"""
Hostile SMTP sessions against a real master, each a real loopback
session: smuggling attempts with every non-standard end of data,
plaintext pipelined behind STARTTLS, the classic open-relay address
forms, overlong lines, oversize messages, too many recipients, early
talkers, slow clients and error floods.  After each, the same smtpd
still serves an honest client.

Clients from 127.0.0.1 are outside mynetworks here; 127.0.0.2 is
inside.
"""

import os
import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    Master,
    TestCA,
    freePort,
    localMaildirs,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    waitFor,
)

#: Every end of data that is not CRLF.CRLF.
BAD_ENDINGS = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n",
               b"\r\n.\r", b"\r\n\x00.\r\n"]


class Session:
    """
    A raw SMTP session.
    """

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30,
                                             source_address=(source, 0))
        self.buffer = b""

    def reply(self) -> bytes:
        """
        One whole reply (all its lines).
        """
        while True:
            lines = self.buffer.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if len(line) >= 4 and line[3:4] == b" " or len(line) == 3:
                    text = b"\r\n".join(lines[:i + 1])
                    self.buffer = b"\r\n".join(lines[i + 1:])
                    return text
            chunk = self.sock.recv(65536)
            if not chunk:
                text, self.buffer = self.buffer, b""
                return text
            self.buffer += chunk

    def command(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def closed(self) -> bool:
        """
        Whether the server ended the session.
        """
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


class HostileSessionTests(SynchronousTestCase):
    def setUp(self):
        self.sessions = []
        self.base = shortTemporaryDirectory(self)
        self.spool = os.path.join(self.base, "mail")
        self.port = freePort()
        ca = TestCA(os.path.join(self.base, "ca"))
        certFile, keyFile = ca.server("localhost")
        self.master = Master(os.path.join(self.base, "conf"), {
            "myhostname": "localhost",
            "mydestination": "localhost, $myhostname",
            "mynetworks": "127.0.0.2/32",
            **localMaildirs(self.spool + "/"),
            "message_size_limit": "100000",
            "smtpd_recipient_limit": "5",
            "smtpd_timeout": "3s",
            "smtpd_hard_error_limit": "5",
            "smtpd_soft_error_limit": "100",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": certFile,
            "smtpd_tls_key_file": keyFile,
        }, MASTER_CF.format(port=self.port)).start()
        self.addCleanup(self.master.stop)
        # Cleanups run last first: this one while the master still runs.
        self.addCleanup(self.honestClientServed)

    def honestClientServed(self):
        """
        Whatever the hostile client did, an honest one is served.
        """
        for session in self.sessions:
            session.close()
        sendMessage(self.port, "alice@example.com", ["carol@localhost"], "honest")

    def session(self, source="127.0.0.1", ehlo=True) -> Session:
        session = Session(self.port, source)
        self.sessions.append(session)
        self.assertTrue(session.reply().startswith(b"220 "))
        if ehlo:
            self.assertIn(b"250 ", session.command(b"EHLO client.example\r\n"))
        return session

    def subjects(self, name):
        found = []
        for text in maildirMessages(self.spool).get(name, []):
            headers = text.split(b"\n\n", 1)[0]
            found += [line for line in headers.split(b"\n") if line.startswith(b"Subject:")]
        return found

    def test_smugglingNeverEndsData(self):
        """
        No non-standard end of data ends the message: the "smuggled"
        message stays text of the first, from outside mynetworks and
        from inside, and nothing else is queued.
        """
        accepted = 0
        for source in ("127.0.0.1", "127.0.0.2"):
            for ending in BAD_ENDINGS:
                session = self.session(source)
                self.assertTrue(session.command(b"MAIL FROM:<alice@example.com>\r\n")
                                .startswith(b"250"))
                self.assertTrue(session.command(b"RCPT TO:<victim@localhost>\r\n")
                                .startswith(b"250"))
                self.assertTrue(session.command(b"DATA\r\n").startswith(b"354"))
                smuggled = (b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@localhost>\r\n"
                            b"DATA\r\nSubject: smuggled\r\n\r\nforged\r\n")
                reply = session.command(b"Subject: carrier " + repr(ending).encode()
                                        + b"\r\n\r\nbody" + ending + smuggled + b"\r\n.\r\n")
                self.assertTrue(reply.startswith(b"250 2.0.0 Ok: queued as"), (ending, reply))
                accepted += 1
                self.assertTrue(session.command(b"QUIT\r\n").startswith(b"221"))
        waitFor(lambda: len(maildirMessages(self.spool).get("victim", [])) >= accepted,
                what="the carriers")
        time.sleep(0.5)
        self.assertEqual(len(maildirMessages(self.spool)["victim"]), accepted)
        self.assertEqual([s for s in self.subjects("victim") if b"smuggled" in s], [])

    def test_pipelinedPlaintextAfterSTARTTLS(self):
        session = self.session()
        reply = session.command(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n")
        self.assertIn(b"554 5.5.0 Error: SMTP protocol synchronization", reply)
        self.assertTrue(session.closed())

    def test_openRelayForms(self):
        """
        The classic relay tricks, from a client outside mynetworks.
        """
        forms = [b"<user@remote.example>", b"<user%remote.example@localhost>",
                 b"<remote.example!user@localhost>", b'<"user@remote.example"@localhost>',
                 b'<"user%remote.example"@localhost>', b"<@localhost:user@remote.example>",
                 b"<user@remote.example@localhost>", b"<user@remote.example.>",
                 b'<"user@remote.example">', b"<USER@REMOTE.EXAMPLE>"]
        for form in forms:
            session = self.session()
            self.assertTrue(session.command(b"MAIL FROM:<alice@example.com>\r\n")
                            .startswith(b"250"))
            reply = session.command(b"RCPT TO:" + form + b"\r\n")
            self.assertEqual(reply[:1], b"5", (form, reply))
            session.command(b"QUIT\r\n")

    def test_relayFormsFromInsideStillRelay(self):
        session = self.session("127.0.0.2")
        session.command(b"MAIL FROM:<alice@example.com>\r\n")
        # A permitted client may relay (the mail waits for a route).
        self.assertTrue(session.command(b"RCPT TO:<user@remote.example>\r\n").startswith(b"250"))

    def test_overlongCommand(self):
        session = self.session()
        reply = session.command(b"MAIL FROM:<" + b"a" * 5000 + b"@example.com>\r\n")
        self.assertEqual(reply, b"500 5.5.2 Error: line too long")
        # Neither cut nor obeyed: no transaction was started.
        self.assertTrue(session.command(b"RCPT TO:<bob@localhost>\r\n").startswith(b"503"))
        self.assertTrue(session.command(b"NOOP\r\n").startswith(b"250"))

    def test_controlCharactersInCommands(self):
        session = self.session()
        for line in (b"MAIL FROM:<a@b.example>\x00\r\n", b"NOOP\x1b[31m\r\n",
                     b"HELO a\x7fb\r\n"):
            self.assertTrue(session.command(line).startswith(b"500 5.5.2"), line)

    def test_oversize(self):
        session = self.session()
        self.assertTrue(session.command(b"MAIL FROM:<a@example.com> SIZE=200000\r\n")
                        .startswith(b"552 5.3.4"))
        session.command(b"MAIL FROM:<a@example.com>\r\n")
        session.command(b"RCPT TO:<big@localhost>\r\n")
        self.assertTrue(session.command(b"DATA\r\n").startswith(b"354"))
        reply = session.command(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 150
                                + b".\r\n")
        self.assertTrue(reply.startswith(b"552 5.3.4"), reply)
        self.assertEqual(maildirMessages(self.spool).get("big"), None)

    def test_tooManyRecipients(self):
        session = self.session()
        session.command(b"MAIL FROM:<a@example.com>\r\n")
        replies = [session.command(f"RCPT TO:<r{n}@localhost>\r\n".encode())
                   for n in range(7)]
        self.assertEqual([r[:3] for r in replies], [b"250"] * 5 + [b"452"] * 2)
        self.assertEqual(replies[-1], b"452 4.5.3 Error: too many recipients")

    def test_unauthorizedPipelining(self):
        """
        Commands sent ahead without EHLO's leave (after HELO, or behind
        EHLO itself) end the session, as Postfix 3.9 does.
        """
        for hello in (b"HELO client.example\r\n", b"EHLO client.example\r\n"):
            session = self.session(ehlo=False)
            session.sock.sendall(hello + b"MAIL FROM:<a@example.com>\r\n"
                                 b"RCPT TO:<bob@localhost>\r\n")
            data = b""
            while not session.closed() if data else True:
                chunk = session.sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertIn(b"554 5.5.0 Error: SMTP protocol synchronization", data)
            self.assertNotIn(b"250 2.1.0", data)

    def test_slowClient(self):
        session = self.session()
        session.sock.sendall(b"MAIL FROM:<slow")
        started = time.monotonic()
        reply = session.reply()
        self.assertEqual(reply, b"421 4.4.2 localhost Error: timeout exceeded")
        self.assertLess(time.monotonic() - started, 15)

    def test_errorFlood(self):
        session = self.session()
        replies = [session.command(b"BOGUS\r\n") for _ in range(6)]
        self.assertEqual(replies[-1], b"421 4.7.0 localhost Error: too many errors")
        self.assertTrue(session.closed())
