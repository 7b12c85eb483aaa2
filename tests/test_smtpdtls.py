"""
Tests for smtpd's TLS (L{tmta.smtpd.tls}, L{tmta.smtpd.starttls}):
STARTTLS and SMTPS against a real master, with Python's smtplib and
ssl, swaks and openssl s_client as clients.
"""

import os
import shutil
import smtplib
import socket
import ssl
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import (
    MASTER_CF,
    Master,
    TestCA,
    freePort,
    localMaildirs,
    maildirMessages,
    shortTemporaryDirectory,
    waitFor,
)
from tmta.config import MainConfig
from tmta.mail.tls import TLSConfigError
from tmta.smtpd.tls import ServerTLS

SMTPS_CF = """\
{smtps}     inet  n       -       n       -       -       smtpd
  -o smtpd_tls_wrappermode=yes
"""


def _readReply(sock) -> bytes:
    """
    One whole (possibly multi-line) SMTP reply.
    """
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


class ServerTLSSettingsTests(SynchronousTestCase):
    """
    What L{ServerTLS.fromConfig} makes of the C{smtpd_tls_*} settings.
    """

    def setUp(self):
        self.ca = TestCA(self.mktemp())
        self.certFile, self.keyFile = self.ca.server("mx.example.org")

    def tls(self, **settings):
        return ServerTLS.fromConfig(MainConfig(settings))

    def test_noneOffersNothing(self):
        self.assertIsNone(self.tls())
        self.assertIsNone(self.tls(smtpd_tls_security_level="none",
                                   smtpd_tls_cert_file=self.certFile))

    def test_olderSwitches(self):
        tls = self.tls(smtpd_use_tls="yes", smtpd_tls_cert_file=self.certFile,
                       smtpd_tls_key_file=self.keyFile)
        self.assertEqual(tls.level, "may")
        tls = self.tls(smtpd_enforce_tls="yes", smtpd_tls_cert_file=self.certFile,
                       smtpd_tls_key_file=self.keyFile)
        self.assertTrue(tls.required)

    def test_mayWithoutCertificateTurnsSTARTTLSOff(self):
        self.assertIsNone(self.tls(smtpd_tls_security_level="may"))
        self.assertIsNone(self.tls(smtpd_tls_security_level="may",
                                   smtpd_tls_cert_file="/nonexistent.pem"))

    def test_requiredWithoutCertificateFails(self):
        self.assertRaises(TLSConfigError, self.tls, smtpd_tls_security_level="encrypt")
        self.assertRaises(TLSConfigError, self.tls, smtpd_tls_wrappermode="yes",
                          smtpd_tls_cert_file="/nonexistent.pem")

    def test_keyMustMatch(self):
        otherCert, otherKey = self.ca.server("other.example.org")
        self.assertRaises(TLSConfigError, self.tls, smtpd_tls_security_level="encrypt",
                          smtpd_tls_cert_file=self.certFile, smtpd_tls_key_file=otherKey)

    def test_clientLevelsRefused(self):
        self.assertRaises(TLSConfigError, self.tls, smtpd_tls_security_level="verify",
                          smtpd_tls_cert_file=self.certFile, smtpd_tls_key_file=self.keyFile)

    def test_chainFiles(self):
        combined = os.path.join(self.ca.directory, "combined.pem")
        with open(combined, "wb") as out:
            for path in (self.keyFile, self.certFile):
                with open(path, "rb") as f:
                    out.write(f.read())
        tls = self.tls(smtpd_tls_security_level="encrypt", smtpd_tls_chain_files=combined)
        self.assertTrue(tls.required)

    def test_chainFilesSplit(self):
        """
        A key in one file and its chain in the next (docker-mailserver's
        C{key.pem cert.pem}) is one key and chain, as Postfix reads the
        list; a chain before its key, or a key without a chain, is an
        error.
        """
        tls = self.tls(smtpd_tls_security_level="encrypt",
                       smtpd_tls_chain_files=f"{self.keyFile} {self.certFile}")
        self.assertTrue(tls.required)
        self.assertRaises(TLSConfigError, self.tls, smtpd_tls_security_level="encrypt",
                          smtpd_tls_chain_files=f"{self.certFile} {self.keyFile}")
        self.assertRaises(TLSConfigError, self.tls, smtpd_tls_security_level="encrypt",
                          smtpd_tls_chain_files=self.keyFile)

    def test_protocols(self):
        self.assertRaises(TLSConfigError, self.tls, smtpd_tls_security_level="may",
                          smtpd_tls_cert_file=self.certFile, smtpd_tls_key_file=self.keyFile,
                          smtpd_tls_mandatory_protocols="TLSv9",
                          smtpd_tls_wrappermode="yes")


class STARTTLSTests(SynchronousTestCase):
    """
    A real master whose smtpd offers STARTTLS on one port and SMTPS on
    another.
    """

    def startMaster(self, **main):
        self.base = shortTemporaryDirectory(self)
        self.spool = os.path.join(self.base, "mail")
        self.ca = TestCA(os.path.join(self.base, "ca"))
        certFile, keyFile = self.ca.server("localhost")
        self.port, self.smtps = freePort(), freePort()
        settings = {
            "myhostname": "localhost",
            "mydestination": "localhost, $myhostname",
            **localMaildirs(self.spool + "/"),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": certFile,
            "smtpd_tls_key_file": keyFile,
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
        }
        settings.update(main)
        masterCf = MASTER_CF.format(port=self.port) + SMTPS_CF.format(smtps=self.smtps)
        self.master = Master(os.path.join(self.base, "conf"), settings, masterCf).start()
        self.addCleanup(self.master.stop)
        return self.master

    def clientContext(self):
        context = ssl.create_default_context(cafile=self.ca.caFile)
        return context

    def delivered(self, name="bob"):
        waitFor(lambda: maildirMessages(self.spool).get(name), what="delivery")
        return maildirMessages(self.spool)[name]

    def test_starttlsDelivers(self):
        """
        A client that says STARTTLS, checks the certificate and sends:
        the Received header names the protocol and cipher, and
        C{ESMTPS}; the log has Postfix's line.
        """
        self.startMaster()
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        client.ehlo("client.example")
        self.assertTrue(client.has_extn("starttls"))
        client._host = "localhost"  # the name smtplib checks the certificate for
        client.starttls(context=self.clientContext())
        client.ehlo("client.example")
        self.assertFalse(client.has_extn("starttls"))
        client.sendmail("alice@example.com", ["bob@localhost"],
                        b"Subject: over TLS\r\n\r\nsecret\r\n")
        client.quit()
        [text] = self.delivered()
        headers = text.split(b"\n\n", 1)[0].decode()
        self.assertRegex(headers, r"\(using TLSv1\.[23] with cipher \S+ \(\d+/\d+ bits\)\)")
        self.assertIn("with ESMTPS id", headers)
        waitFor(lambda: "Anonymous TLS connection established from localhost[127.0.0.1]: "
                "TLSv1." in self.master.log(), what="the handshake's log line")

    def test_pipelinedPlaintextDiscarded(self):
        """
        Commands pipelined in plaintext behind STARTTLS are thrown away:
        after the handshake the session knows no sender, and the
        injected recipient never reaches the queue.  (The default
        C{smtpd_forbid_unauth_pipelining = yes} would end the session
        instead: L{tests.test_hostile} shows that.)
        """
        self.startMaster(smtpd_forbid_unauth_pipelining="no")
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.addCleanup(raw.close)
        self.assertTrue(_readReply(raw).startswith(b"220 "))
        raw.sendall(b"EHLO client.example\r\n")
        _readReply(raw)
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@example.com>\r\n"
                    b"RCPT TO:<bob@localhost>\r\n")
        self.assertTrue(_readReply(raw).startswith(b"220 2.0.0"))
        tls = self.clientContext().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"EHLO client.example\r\n")
        self.assertIn(b"250 ", _readReply(tls))
        tls.sendall(b"RCPT TO:<bob@localhost>\r\n")
        self.assertTrue(_readReply(tls).startswith(b"503 5.5.1"))
        tls.sendall(b"DATA\r\n")
        self.assertTrue(_readReply(tls).startswith(b"503 5.5.1"))
        tls.sendall(b"QUIT\r\n")
        _readReply(tls)
        waitFor(lambda: "improper command pipelining after STARTTLS" in self.master.log(),
                what="the warning")

    def test_startTLSTwiceAndWithArgument(self):
        self.startMaster()
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.addCleanup(raw.close)
        _readReply(raw)
        raw.sendall(b"EHLO c\r\n")
        _readReply(raw)
        raw.sendall(b"STARTTLS now\r\n")
        self.assertTrue(_readReply(raw).startswith(b"501 5.5.4"))
        raw.sendall(b"STARTTLS\r\n")
        _readReply(raw)
        tls = self.clientContext().wrap_socket(raw, server_hostname="localhost")
        tls.sendall(b"STARTTLS\r\n")
        self.assertTrue(_readReply(tls).startswith(b"554 5.5.1"))

    def test_encryptRefusesPlaintextMail(self):
        """
        Under C{encrypt}, mail waits for STARTTLS.
        """
        self.startMaster(smtpd_tls_security_level="encrypt")
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=30)
        client.ehlo("client.example")
        code, text = client.mail("alice@example.com")
        self.assertEqual((code, text), (530, b"5.7.0 Must issue a STARTTLS command first"))
        client._host = "localhost"  # the name smtplib checks the certificate for
        client.starttls(context=self.clientContext())
        client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: must\r\n\r\nx\r\n")
        client.quit()
        self.delivered()

    def test_smtpsWithSmtplib(self):
        self.startMaster()
        client = smtplib.SMTP_SSL("localhost", self.smtps, timeout=30,
                                  context=self.clientContext())
        code, _ = client.ehlo("client.example")
        self.assertEqual(code, 250)
        self.assertFalse(client.has_extn("starttls"))
        client.sendmail("alice@example.com", ["bob@localhost"], b"Subject: smtps\r\n\r\nx\r\n")
        client.quit()
        [text] = self.delivered()
        self.assertIn(b"with ESMTPS id", text)

    def test_swaksOverSMTPS(self):
        if shutil.which("swaks") is None:
            raise SkipTest("swaks is not installed")
        self.startMaster()
        result = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.smtps), "--tlsc",
             "--from", "alice@example.com", "--to", "bob@localhost",
             "--header", "Subject: swaks smtps"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        [text] = self.delivered()
        self.assertIn(b"Subject: swaks smtps", text)

    def test_opensslShowsCertificate(self):
        if shutil.which("openssl") is None:
            raise SkipTest("openssl is not installed")
        self.startMaster()
        result = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"127.0.0.1:{self.port}", "-CAfile", self.ca.caFile, "-verify_hostname",
             "localhost"],
            input="QUIT\r\n", capture_output=True, text=True, timeout=60)
        self.assertIn("CN=localhost", result.stdout.replace(" = ", "="))
        self.assertIn("Verify return code: 0 (ok)", result.stdout)


class ClientCertificateTests(SynchronousTestCase):
    """
    Client certificates (C{smtpd_tls_ask_ccert}, C{smtpd_tls_req_ccert})
    and the restrictions that use them: C{permit_tls_all_clientcerts}
    (any certificate a CA of C{smtpd_tls_CAfile} issued),
    C{permit_tls_clientcerts} (the fingerprints in C{relay_clientcerts},
    trusted or not), C{check_ccert_access}.
    """

    def setUp(self):
        base = shortTemporaryDirectory(self)
        self.ca, other = TestCA(os.path.join(base, "ca")), TestCA(os.path.join(base, "other"))
        certFile, keyFile = self.ca.server("localhost")
        self.trusted = self.ca.server("trusted.client.example")
        self.untrusted = other.server("untrusted.client.example")
        self.ports = {name: freePort() for name in ("all", "listed", "access", "required")}
        relay = "reject_unauth_destination"
        access = os.path.join(base, "ccert-access")
        with open(access, "w") as f:
            f.write(f"{self.fingerprint(self.trusted[0])} REJECT go away\n")
        masterCf = MASTER_CF.format(port=self.ports["all"]).replace(
            f"{self.ports['all']}      inet  n       -       n       -       -       smtpd\n",
            f"{self.ports['all']}      inet  n       -       n       -       -       smtpd\n"
            f"  -o smtpd_relay_restrictions=permit_tls_all_clientcerts,{relay}\n")
        masterCf += (
            f"{self.ports['listed']} inet n - n - - smtpd\n"
            f"  -o smtpd_relay_restrictions=permit_tls_clientcerts,{relay}\n"
            f"{self.ports['access']} inet n - n - - smtpd\n"
            f"  -o smtpd_relay_restrictions=check_ccert_access,texthash:{access},permit\n"
            f"{self.ports['required']} inet n - n - - smtpd\n"
            "  -o smtpd_tls_security_level=encrypt\n  -o smtpd_tls_req_ccert=yes\n")
        self.master = Master(os.path.join(base, "conf"), {
            "myhostname": "localhost", "mydestination": "localhost",
            **localMaildirs(os.path.join(base, "mail") + "/"),
            "mynetworks": "127.0.0.2/32",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": certFile, "smtpd_tls_key_file": keyFile,
            "smtpd_tls_CAfile": self.ca.caFile,
            "smtpd_tls_ask_ccert": "yes",
            "smtpd_tls_loglevel": "1",
            "smtpd_tls_fingerprint_digest": "sha256",
            "relay_clientcerts": f"inline:{{ {self.fingerprint(self.untrusted[0])}=partner }}",
        }, masterCf).start()
        self.addCleanup(self.master.stop)

    @staticmethod
    def fingerprint(certFile: str) -> str:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        with open(certFile, "rb") as f:
            certificate = x509.load_pem_x509_certificates(f.read())[0]
        return ":".join(f"{b:02X}" for b in certificate.fingerprint(hashes.SHA256()))

    def relay(self, port: str, certificate=None):
        """
        The reply to a recipient elsewhere, after STARTTLS with
        C{certificate} (or none).
        """
        context = ssl.create_default_context(cafile=self.ca.caFile)
        context.check_hostname = False
        if certificate is not None:
            context.load_cert_chain(*certificate)
        client = smtplib.SMTP("127.0.0.1", self.ports[port], timeout=30)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        client.starttls(context=context)
        client.ehlo("client.example")
        client.mail("someone@client.example")
        return client.rcpt("x@elsewhere.example")

    def test_permitAllClientCerts(self):
        self.assertEqual(self.relay("all", self.trusted)[0], 250)
        self.assertEqual(self.relay("all", self.untrusted)[0], 554)
        self.assertEqual(self.relay("all")[0], 554)
        waitFor(lambda: "Trusted TLS connection established from" in self.master.log()
                and "Untrusted TLS connection established from" in self.master.log(),
                what="the TLS log lines")

    def test_permitListedClientCerts(self):
        # A listed fingerprint relays though no CA vouches for it; a
        # trusted certificate that is not listed does not.
        self.assertEqual(self.relay("listed", self.untrusted)[0], 250)
        self.assertEqual(self.relay("listed", self.trusted)[0], 554)

    def test_checkCcertAccess(self):
        code, reply = self.relay("access", self.trusted)
        self.assertEqual(code, 554)
        self.assertIn(b"Client certificate rejected: go away", reply)
        self.assertEqual(self.relay("access", self.untrusted)[0], 250)

    def test_requiredCertificate(self):
        """
        C{smtpd_tls_req_ccert}: without a trusted certificate the session
        ends after the handshake, with Postfix's 421.
        """
        import socket

        # Trusted: the session goes on (to the default relay refusal).
        self.assertEqual(self.relay("required", self.trusted)[0], 454)
        for certificate, why in ((None, b"No client certificate presented"),
                                 (self.untrusted, b"Client certificate not trusted")):
            context = ssl.create_default_context(cafile=self.ca.caFile)
            context.check_hostname = False
            if certificate is not None:
                context.load_cert_chain(*certificate)
            with socket.create_connection(("127.0.0.1", self.ports["required"]),
                                          timeout=30) as plain:
                plain.recv(1000)
                plain.sendall(b"EHLO client.example\r\n")
                while not plain.recv(1000).endswith(b"CHUNKING\r\n"):
                    pass
                plain.sendall(b"STARTTLS\r\n")
                self.assertTrue(plain.recv(1000).startswith(b"220 "))
                with context.wrap_socket(plain) as secure:
                    said = b""
                    while True:
                        chunk = secure.recv(1000)
                        if not chunk:
                            break
                        said += chunk
            self.assertEqual(said, b"421 4.7.1 localhost Error: " + why + b"\r\n")
