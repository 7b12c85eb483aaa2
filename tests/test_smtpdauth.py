"""
Tests for SMTP AUTH: the SASL mechanisms and tmta's password table
(L{tmta.sasl}), the AUTH command (L{tmta.smtpd.auth}) over an in-memory
transport, and submissions with swaks over STARTTLS against a real
master, checked by tmta's own table and by a private Dovecot.
"""

import base64
import os
import shutil
import subprocess
import sys

from twisted.internet import defer
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.support import (
    MASTER_CF,
    REPO,
    Master,
    PrivateDovecot,
    TestCA,
    freePort,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    waitFor,
)
from tests.support.smtpd import SessionHarness
from tmta.interfaces import ISASLBackend, ISASLExchange
from tmta.sasl import (
    Authenticated,
    AuthenticationFailed,
    Challenge,
    PasswordExchange,
    SASLClient,
    filterMechanisms,
)
from tmta.sasl.dovecot import DovecotBackend
from tmta.sasl.passwords import (
    PasswordTableBackend,
    PasswordTableError,
    changeTable,
    hashPassword,
    listUsers,
    parseTable,
    verifyPassword,
)
from tmta.smtpd.auth import SMTPAuth


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@implementer(ISASLBackend)
class DictBackend:
    """
    PLAIN and LOGIN against a dict, answering at once.
    """

    def __init__(self, users):
        self.users = users

    def mechanisms(self):
        return ["PLAIN", "LOGIN", "CRAM-MD5"]

    def begin(self, mechanism, client):
        self.client = client
        return PasswordExchange(
            mechanism, lambda u, p: defer.succeed(self.users.get(u) == p))


class MechanismTests(SynchronousTestCase):
    def exchange(self, mechanism, users={"bob": "secret"}):
        return PasswordExchange(mechanism, lambda u, p: defer.succeed(users.get(u) == p))

    def test_plain(self):
        result = self.successResultOf(self.exchange("PLAIN").step(b"\0bob\0secret"))
        self.assertEqual(result, Authenticated("bob"))
        self.assertEqual(self.successResultOf(self.exchange("PLAIN").step(b"bob\0bob\0secret")),
                         Authenticated("bob"))
        for wrong in (b"\0bob\0wrong", b"\0bob", b"alice\0bob\0secret", b"\0\0secret",
                      b"\0b\xffob\0secret"):
            self.failureResultOf(self.exchange("PLAIN").step(wrong), AuthenticationFailed)

    def test_plainWithoutInitialResponse(self):
        exchange = self.exchange("PLAIN")
        self.assertEqual(self.successResultOf(exchange.step(None)), Challenge(b""))
        self.assertEqual(self.successResultOf(exchange.step(b"\0bob\0secret")),
                         Authenticated("bob"))

    def test_login(self):
        exchange = self.exchange("LOGIN")
        self.assertEqual(self.successResultOf(exchange.step(None)), Challenge(b"Username:"))
        self.assertEqual(self.successResultOf(exchange.step(b"bob")), Challenge(b"Password:"))
        self.assertEqual(self.successResultOf(exchange.step(b"secret")), Authenticated("bob"))

    def test_securityOptions(self):
        offered = ["PLAIN", "LOGIN", "CRAM-MD5", "ANONYMOUS"]
        self.assertEqual(filterMechanisms(offered, ["noanonymous"]),
                         ["PLAIN", "LOGIN", "CRAM-MD5"])
        self.assertEqual(filterMechanisms(offered, ["noanonymous", "noplaintext"]),
                         ["CRAM-MD5"])
        self.assertRaises(ValueError, filterMechanisms, offered, ["nosuchoption"])

    def test_exchangesProvideTheirInterface(self):
        verifyObject(ISASLExchange, self.exchange("PLAIN"))
        verifyObject(ISASLBackend, PasswordTableBackend("/nonexistent", None))
        verifyObject(ISASLBackend, DovecotBackend("/nonexistent", None))


class PasswordTableTests(SynchronousTestCase):
    def test_hashes(self):
        stored = hashPassword("correct horse", logN=10)
        self.assertTrue(stored.startswith("$scrypt$ln=10,r=8,p=1$"))
        self.assertNotEqual(stored, hashPassword("correct horse", logN=10))  # salted
        self.assertTrue(verifyPassword(stored, "correct horse"))
        self.assertFalse(verifyPassword(stored, "correct horsE"))
        self.assertFalse(verifyPassword(None, "correct horse"))
        self.assertFalse(verifyPassword("$md5$nonsense", "correct horse"))

    def test_changeTable(self):
        path = os.path.join(self.mktemp(), "sasl_passwd")
        changeTable(path, "bob", "one", mustExist=False)
        changeTable(path, "alice@example.com", "two", mustExist=False)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o640)
        self.assertRaises(PasswordTableError, changeTable, path, "bob", "x", mustExist=False)
        changeTable(path, "bob", "three", mustExist=True)
        with open(path) as f:
            entries = parseTable(f.read())
        self.assertTrue(verifyPassword(entries["bob"], "three"))
        self.assertEqual(listUsers(path), ["alice@example.com", "bob"])
        changeTable(path, "bob", None, mustExist=True)
        self.assertEqual(listUsers(path), ["alice@example.com"])
        self.assertRaises(PasswordTableError, changeTable, path, "bob", None, mustExist=True)
        for bad in ("", "a:b", "a b", "a\nb"):
            self.assertRaises(PasswordTableError, changeTable, path, bad, "x")

    def test_userCommand(self):
        config = self.mktemp()
        os.makedirs(config)
        with open(os.path.join(config, "main.cf"), "w") as f:
            f.write("smtpd_sasl_type = tmta\n")
        env = dict(os.environ, PYTHONPATH=REPO)

        def tmta(*args, stdin=""):
            return subprocess.run([sys.executable, "-m", "tmta.cli.admin", "-c", config,
                                   "user", *args], input=stdin, capture_output=True,
                                  text=True, env=env, timeout=60)

        self.assertEqual(tmta("add", "bob", "--password-stdin", stdin="s3cret\n").returncode, 0)
        self.assertEqual(tmta("list").stdout, "bob\n")
        result = tmta("add", "bob", "--password-stdin", stdin="again\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("is in", result.stderr)
        self.assertEqual(tmta("passwd", "bob", "--password-stdin", stdin="new\n").returncode, 0)
        with open(os.path.join(config, "sasl_passwd")) as f:
            self.assertTrue(verifyPassword(parseTable(f.read())["bob"], "new"))
        self.assertEqual(tmta("remove", "bob").returncode, 0)
        self.assertEqual(tmta("list").stdout, "")
        # Options may stand before the names, as in any command.
        self.assertEqual(tmta("add", "--password-stdin", "carol", stdin="pw\n").returncode, 0)
        self.assertEqual(tmta("list").stdout, "carol\n")
        self.assertEqual(tmta("list", "--no-such-option").returncode, 2)


class AuthCommandTests(SessionHarness, SynchronousTestCase):
    """
    AUTH in a session over an in-memory transport.
    """

    def authServer(self, **params):
        server = self.makeServer(smtpd_sasl_auth_enable="yes", **params)
        from tmta.config import MainConfig

        config = MainConfig(dict({"smtpd_sasl_auth_enable": "yes"}, **params))
        self.backend = DictBackend({"bob": "secret"})
        self.settings.sasl = SMTPAuth.fromConfig(config, self.backend)
        self.replies()
        return server

    def test_ehloAnnouncesMechanisms(self):
        self.authServer()
        self.send(b"EHLO c\r\n")
        self.assertIn("250-AUTH PLAIN LOGIN CRAM-MD5", self.replies())
        self.authServer(smtpd_sasl_security_options="noanonymous, noplaintext")
        self.send(b"EHLO c\r\n")
        self.assertIn("250-AUTH CRAM-MD5", self.replies())
        self.authServer(smtpd_sasl_mechanism_filter="plain, login")
        self.send(b"EHLO c\r\n")
        self.assertIn("250-AUTH PLAIN LOGIN", self.replies())

    def test_plainInitialResponse(self):
        self.authServer()
        self.send(b"EHLO c\r\nAUTH PLAIN " + _b64(b"\0bob\0secret").encode() + b"\r\n")
        self.assertEqual(self.replies()[-1], "235 2.7.0 Authentication successful")
        self.assertEqual(self.server.saslUsername, "bob")
        self.assertEqual(self.backend.client, SASLClient("127.0.0.1", False, "smtp",
                                                         self.backend.client.localAddress))
        self.send(b"AUTH PLAIN\r\n")
        self.assertEqual(self.replies(), ["503 5.5.1 Error: already authenticated"])

    def test_loginSteps(self):
        self.authServer()
        self.send(b"EHLO c\r\nAUTH LOGIN\r\n")
        self.assertEqual(self.replies()[-1], "334 " + _b64(b"Username:"))
        self.send(_b64(b"bob").encode() + b"\r\n")
        self.assertEqual(self.replies(), ["334 " + _b64(b"Password:")])
        # A response is never read as a command, whatever it looks like.
        self.send(_b64(b"secret").encode() + b"\r\nNOOP\r\n")
        self.assertEqual(self.replies(), ["235 2.7.0 Authentication successful", "250 2.0.0 Ok"])

    def test_wrongPasswordWaits(self):
        self.authServer()
        self.send(b"EHLO c\r\nAUTH PLAIN " + _b64(b"\0bob\0wrong").encode() + b"\r\nNOOP\r\n")
        self.assertEqual(self.replies()[-1][:4], "250 ")  # only EHLO's answer so far
        self.clock.advance(1)
        self.assertEqual(self.replies(), ["535 5.7.8 Error: authentication failed",
                                          "250 2.0.0 Ok"])
        self.assertIsNone(self.server.saslUsername)
        self.assertEqual(self.server.errors, 1)

    def test_abortAndGarbage(self):
        self.authServer()
        self.send(b"EHLO c\r\nAUTH LOGIN\r\n*\r\n")
        self.assertEqual(self.replies()[-1], "501 5.7.0 Authentication aborted")
        self.send(b"AUTH PLAIN !!!notbase64\r\n")
        self.assertEqual(self.replies(), ["501 5.5.2 Error: cannot decode response"])
        self.send(b"AUTH KERBEROS_V4\r\n")
        self.assertEqual(self.replies(), ["504 5.5.4 Unrecognized authentication type"])
        self.send(b"AUTH\r\n")
        self.assertEqual(self.replies(), ["501 5.5.4 Syntax: AUTH mechanism"])

    def test_notInTransactionOrBeforeHelo(self):
        self.authServer()
        self.send(b"AUTH PLAIN\r\n")
        self.assertEqual(self.replies(), ["503 5.5.1 Error: send HELO/EHLO first"])
        self.send(b"EHLO c\r\nMAIL FROM:<a@example.com>\r\nAUTH PLAIN\r\n")
        self.assertEqual(self.replies()[-1], "503 5.5.1 Error: MAIL transaction in progress")

    def test_authOnlyWithoutTLS(self):
        self.authServer(smtpd_tls_auth_only="yes")
        self.send(b"EHLO c\r\nAUTH PLAIN\r\n")
        replies = self.replies()
        self.assertFalse([r for r in replies if "AUTH" in r], replies)
        self.assertEqual(replies[-1], "503 5.5.1 Error: authentication not enabled")

    def test_disabled(self):
        self.makeServer()
        self.replies()
        self.send(b"EHLO c\r\nAUTH PLAIN\r\n")
        self.assertEqual(self.replies()[-1], "503 5.5.1 Error: authentication not enabled")


class SubmissionTests(SynchronousTestCase):
    """
    swaks submits over STARTTLS with AUTH PLAIN to a real master whose
    smtpd takes mail only from authenticated clients.
    """

    def startMaster(self, **main):
        if shutil.which("swaks") is None:
            raise SkipTest("swaks is not installed")
        self.base = shortTemporaryDirectory(self)
        self.spool = os.path.join(self.base, "mail")
        ca = TestCA(os.path.join(self.base, "ca"))
        certFile, keyFile = ca.server("localhost")
        self.port = freePort()
        settings = {
            "myhostname": "localhost",
            "mydestination": "localhost, $myhostname",
            **localMaildirs(self.spool + "/"),
            "smtpd_tls_security_level": "encrypt",
            "smtpd_tls_cert_file": certFile,
            "smtpd_tls_key_file": keyFile,
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_tls_auth_only": "yes",
            "smtpd_sasl_authenticated_header": "yes",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        }
        settings.update(main)
        self.master = Master(os.path.join(self.base, "conf"), settings,
                             MASTER_CF.format(port=self.port)).start()
        self.addCleanup(self.master.stop)

    def swaks(self, user, password, subject, *more):
        return subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.port), "--tls",
             "--from", "alice@example.com", "--to", "bob@localhost",
             "--header", f"Subject: {subject}", *more]
            + (["--auth", "PLAIN", "--auth-user", user, "--auth-password", password]
               if user else []),
            capture_output=True, text=True, timeout=60)

    def assertSubmits(self):
        result = self.swaks("bob", "secret", "authenticated")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        waitFor(lambda: maildirMessages(self.spool).get("bob"), what="delivery")
        [text] = maildirMessages(self.spool)["bob"]
        self.assertIn(b"(Authenticated sender: bob)", text)
        self.assertIn(b"with ESMTPSA id", text)
        waitFor(lambda: "sasl_method=PLAIN, sasl_username=bob" in self.master.log(),
                what="the log line")

    def assertRefused(self):
        wrong = self.swaks("bob", "wrong", "wrong password")
        self.assertNotEqual(wrong.returncode, 0)
        self.assertIn("535 5.7.8", wrong.stdout + wrong.stderr)
        anonymous = self.swaks(None, None, "no auth")
        self.assertNotEqual(anonymous.returncode, 0)
        self.assertIn("554 5.7.1", anonymous.stdout + anonymous.stderr)
        # No AUTH before STARTTLS.
        plain = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.port), "--quit-after", "EHLO"],
            capture_output=True, text=True, timeout=60)
        self.assertNotIn("AUTH", plain.stdout.split("EHLO", 1)[1])
        self.assertIn("STARTTLS", plain.stdout)

    def test_ownPasswordTable(self):
        passwords = os.path.join(shortTemporaryDirectory(self), "sasl_passwd")
        changeTable(passwords, "bob", "secret")
        if os.geteuid() == 0:
            os.chmod(os.path.dirname(passwords), 0o755)
            os.chmod(passwords, 0o644)
        self.startMaster(smtpd_sasl_type="tmta", smtpd_sasl_path=passwords)
        self.assertRefused()
        self.assertSubmits()

    def test_dovecot(self):
        dovecot = PrivateDovecot(os.path.join(shortTemporaryDirectory(self), "dovecot"),
                                 {"bob": "secret"}).start()
        self.addCleanup(dovecot.stop)
        self.startMaster(smtpd_sasl_type="dovecot", smtpd_sasl_path=dovecot.socket)
        self.assertRefused()
        self.assertSubmits()
