"""
DANE for mail leaving the host (RFC 7672, L{tmta.smtp.dane}): TLSA
matching, and a real sending master whose resolver is a private,
validating Unbound (L{tests.danedriver}, in a private namespace).
"""

from __future__ import annotations

import hashlib
import shutil

from OpenSSL import crypto
from twisted.trial.unittest import SynchronousTestCase

from tests.support import TestCA
from tmta.mail.dnssec import TLSARecord, parseTLSA
from tmta.smtp.dane import matchTLSA, usable


class TLSAMatchTests(SynchronousTestCase):
    def setUp(self):
        ca = TestCA(self.mktemp())
        certFile, _ = ca.server("mx.example.test")
        with open(certFile, "rb") as f:
            pem = f.read()
        blocks = [b"-----BEGIN CERTIFICATE-----" + block
                  for block in pem.split(b"-----BEGIN CERTIFICATE-----")[1:]]
        self.chain = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
        self.leafSpki = crypto.dump_publickey(crypto.FILETYPE_ASN1, self.chain[0].get_pubkey())
        self.caDer = crypto.dump_certificate(crypto.FILETYPE_ASN1, self.chain[1])

    def test_parse(self):
        self.assertEqual(parseTLSA(b"\x03\x01\x01" + b"\xab" * 32),
                         TLSARecord(3, 1, 1, b"\xab" * 32))
        self.assertRaises(ValueError, parseTLSA, b"\x03\x01")
        self.assertEqual(str(TLSARecord(2, 0, 1, b"\x01\x02")), "2 0 1 0102")

    def test_usable(self):
        self.assertTrue(usable(TLSARecord(3, 1, 1, b"")))
        self.assertTrue(usable(TLSARecord(2, 0, 2, b"")))
        for record in (TLSARecord(0, 1, 1, b""), TLSARecord(1, 0, 1, b""),
                       TLSARecord(3, 2, 1, b""), TLSARecord(3, 1, 3, b"")):
            self.assertFalse(usable(record), record)

    def test_matching(self):
        """
        DANE-EE matches the server's own key or certificate, exactly or
        by digest; DANE-TA matches a certificate of the chain; anything
        else matches nothing.
        """
        spki256 = hashlib.sha256(self.leafSpki).digest()
        self.assertEqual(matchTLSA([TLSARecord(3, 1, 1, spki256)], self.chain), (3, 0))
        self.assertEqual(matchTLSA([TLSARecord(3, 1, 0, self.leafSpki)], self.chain), (3, 0))
        self.assertEqual(matchTLSA([TLSARecord(3, 1, 2, hashlib.sha512(self.leafSpki)
                                               .digest())], self.chain), (3, 0))
        self.assertEqual(matchTLSA([TLSARecord(2, 0, 1, hashlib.sha256(self.caDer).digest())],
                                   self.chain), (2, 1))
        # DANE-EE of the CA, DANE-TA of nothing: no match.
        self.assertEqual(matchTLSA([TLSARecord(3, 0, 1, hashlib.sha256(self.caDer).digest()),
                                    TLSARecord(2, 1, 1, b"\x00" * 32)], self.chain),
                         (None, None))


class DaneDeliveryTests(SynchronousTestCase):
    """
    A sending master under C{smtp_tls_security_level = dane}, against a
    private Unbound that validates a signed test zone.
    """

    def test_dane(self):
        from tests.support.namespace import runNamespaceDriver

        for program in ("unbound", "ldns-signzone", "ldns-keygen"):
            if shutil.which(program) is None:
                raise self.skipTest(f"{program} is not installed (Debian's unbound, ldnsutils)")
        seen = runNamespaceDriver(self, "danedriver.py", timeout=300)
        outcomes, tls = seen["outcomes"], seen["tls"]
        log = seen.get("log", "")
        # A matching DANE-EE record, and a DANE-TA record whose CA signed
        # the server's certificate: delivered, "Verified".
        self.assertTrue(outcomes["dane.test"].startswith("sent"), log)
        self.assertEqual(tls["mx.dane.test"], "Verified", log)
        self.assertTrue(outcomes["ta.dane.test"].startswith("sent"), log)
        self.assertEqual(tls["mxta.dane.test"], "Verified", log)
        # A record of another key: deferred, never sent unauthenticated.
        self.assertTrue(outcomes["bad.dane.test"].startswith("deferred"), log)
        self.assertIn("no TLSA record matches", outcomes["bad.dane.test"])
        # Records none of which SMTP can use: TLS, unauthenticated.
        self.assertTrue(outcomes["unusable.dane.test"].startswith("sent"), log)
        self.assertEqual(tls["mxu.dane.test"], "Untrusted", log)
        # An unsigned zone: opportunistic TLS; dane-only refuses it.
        self.assertTrue(outcomes["plain.test"].startswith("sent"), log)
        self.assertEqual(tls["mx.plain.test"], "Untrusted", log)
        self.assertTrue(outcomes["strict.plain.test"].startswith("deferred"), log)
        self.assertIn("no validated TLSA records", outcomes["strict.plain.test"])
        self.assertNotIn("Traceback", log)
