"""
Tests for DKIM in cleanup (L{tmta.authentication}): signatures tmta
makes verify with dkimpy's independent verifier, for each key type and
canonicalization; cleanup signs its own clients' mail by the signing
table and verifies incoming mail into one Authentication-Results
header, against a twisted.names server on loopback; the key command
writes keys and their records.
"""

import io
import os
import re

import dkim
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import loopbackResolver
from tmta.authentication.domainkeys import (
    KeyProblem,
    Signer,
    generateKey,
    loadPrivateKey,
    publicRecord,
)
from tmta.authentication.message import authservIdOf, forgedResults

HEADERS = [b"From: Alice <alice@example.com>", b"To: bob@example.org",
           b"Subject: a folded\n\tsubject  line", b"Date: Mon, 7 Dec 2026 10:00:00 +0000",
           b"Message-ID: <1@example.com>"]
BODY = b"Hello  there, \n\nwith trailing blank lines\n\n\n"


def wire(headers, body):
    return (b"\n".join(headers) + b"\n\n" + body).replace(b"\n", b"\r\n")


class SignerTests(SynchronousTestCase):
    """
    tmta's signatures, checked by dkimpy's verifier.
    """

    def verify(self, key, canonicalization="relaxed/relaxed", headers=HEADERS, body=BODY):
        signature = Signer(canonicalization).signatureHeader(headers, body, key)
        record = publicRecord(key).encode()
        message = wire([signature] + list(headers), body)
        return signature, dkim.verify(message, dnsfunc=lambda name, timeout=5: record)

    def test_rsaEveryCanonicalization(self):
        key = loadPrivateKey(generateKey("rsa", 2048), "example.com", "s1")
        for c in ("relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"):
            signature, good = self.verify(key, c)
            self.assertTrue(good, c)
            self.assertIn(f"c={c};".encode(), signature)

    def test_ed25519(self):
        key = loadPrivateKey(generateKey("ed25519"), "example.com", "s2")
        signature, good = self.verify(key)
        self.assertTrue(good)
        self.assertIn(b"a=ed25519-sha256;", signature)

    def test_alteredBodyFails(self):
        key = loadPrivateKey(generateKey(), "example.com", "s1")
        signature = Signer().signatureHeader(HEADERS, BODY, key)
        record = publicRecord(key).encode()
        message = wire([signature] + HEADERS, BODY + b"one more line\n")
        self.assertFalse(dkim.verify(message, dnsfunc=lambda name, timeout=5: record))

    def test_fromOversigned(self):
        """
        From: is signed once more than it is present, so none can be
        added; headers absent are not listed.
        """
        key = loadPrivateKey(generateKey(), "example.com", "s1")
        signature = Signer().signatureHeader(HEADERS, BODY, key)
        h = re.search(rb"h=([^;]*);", signature).group(1)
        self.assertEqual(b"".join(h.split()).split(b":"),
                         [b"from", b"from", b"subject", b"date", b"to", b"message-id"])
        self.assertFalse(any(len(line) > 78 for line in signature.split(b"\n")))

    def test_smallKeyRefused(self):
        import subprocess

        small = subprocess.run(["openssl", "genrsa", "768"], capture_output=True,
                               check=True).stdout
        self.assertRaises(KeyProblem, loadPrivateKey, small)
        self.assertRaises(KeyProblem, loadPrivateKey, b"neither pem nor base64 !")

    def test_ed25519Seed(self):
        """
        An Ed25519 key as dkimpy's dknewkey writes it: the seed in base64.
        """
        import base64

        key = loadPrivateKey(base64.b64encode(b"k" * 32) + b"\n", "example.com", "s")
        self.assertEqual(key.algorithm, "ed25519-sha256")

    def test_unknownCanonicalization(self):
        self.assertRaises(ValueError, Signer, "loose/relaxed")
        self.assertRaises(ValueError, Signer, signedHeaders=["subject"])


class ResultsHeaderTests(SynchronousTestCase):
    def test_authservId(self):
        self.assertEqual(authservIdOf(b"Authentication-Results: MX.example.org (x); dkim=pass"),
                         "mx.example.org")
        self.assertEqual(authservIdOf(b"Authentication-Results: (c) mx.example.org 1; none"),
                         "mx.example.org")
        self.assertEqual(authservIdOf(b"ARC-Authentication-Results: i=1; mx.example.org;"),
                         "mx.example.org")

    def test_forged(self):
        headers = [b"Received: x", b"Authentication-Results: mx.example.org; dkim=pass",
                   b"Authentication-results:\n\tMX.EXAMPLE.ORG; spf=pass",
                   b"Authentication-Results: other.example; dkim=pass"]
        self.assertEqual(forgedResults(headers, "mx.example.org"), [1, 2])


def zoneWith(*records):
    return ("zone = [\n"
            "    SOA('example.com', mname='ns.example.com', rname='root.example.com',\n"
            "        serial=1, refresh=60, retry=60, expire=60, minimum=60),\n"
            + "".join(f"    TXT({name!r}, *{_strings(text)!r}),\n" for name, text in records)
            + "]\n")


def _strings(text):
    return [text[i:i + 255].encode() for i in range(0, len(text), 255)]


class CleanupDKIMTests(TestCase):
    """
    cleanup signing and verifying, its keys in a signing table and a key
    table, their records served on loopback.
    """

    def setUp(self):
        from tests.test_cleanup import LocalRewriter
        from tmta.cleanup.state import Cleanup
        from tmta.config import MainConfig
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore

        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.keyPath = os.path.join(self.base, "s1.private")
        with open(self.keyPath, "wb") as f:
            f.write(generateKey())
        self.key = loadPrivateKey(open(self.keyPath, "rb").read(), "example.com", "s1")
        stray = loadPrivateKey(generateKey(), "example.com", "nokey")
        self.strayPath = os.path.join(self.base, "nokey.private")
        with open(self.strayPath, "wb") as f:
            f.write(stray.key.private_bytes(  # type: ignore[attr-defined]
                *self._pemFormat()))
        signing = os.path.join(self.base, "signing")
        with open(signing, "w") as f:
            f.write("example.com s1key\nstray@example.net strays\n")
        keys = os.path.join(self.base, "keys")
        with open(keys, "w") as f:
            f.write(f"s1key example.com:s1:{self.keyPath}\n"
                    f"strays example.net:nokey:{self.strayPath}\n")
        self.resolver = loopbackResolver(self, zoneWith(
            ("s1._domainkey.example.com", publicRecord(self.key))))
        directory = os.path.join(self.base, "queue")
        createLayout(directory)
        self.store = QueueStore(directory)
        self.config = MainConfig({
            "myhostname": "mx.example.org", "mynetworks": "127.0.0.0/8",
            "dkim_signing_table": f"texthash:{signing}",
            "dkim_key_table": f"texthash:{keys}", "dkim_verification": "yes"})
        from twisted.internet import reactor

        self.cleanup = Cleanup(reactor, self.config, self.store, LocalRewriter(self.config),
                               lambda queueId: defer.succeed(None),
                               resolver=lambda: self.resolver)

    @staticmethod
    def _pemFormat():
        from cryptography.hazmat.primitives import serialization

        return (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption())

    async def submit(self, content, attributes):
        from tmta.cleanup.protocol import CleanupProtocol
        from tmta.queue.qfile import iterContent, readEnvelope

        p = CleanupProtocol(self.cleanup)
        p.begin(1, "alice@example.com", [{"name": k, "value": v} for k, v in attributes.items()])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": "bob@example.org", "original": "bob@example.org"}])
        p.content(1, content)
        result = await p.end(1)
        if result["code"] != 250:
            return result, None
        with self.store.open("incoming", queueId) as f:
            env = readEnvelope(f)
            return result, b"".join(iterContent(f, env))

    def local(self, content):
        return defer.Deferred.fromCoroutine(self.submit(content, {"origin": "pickup",
                                                                  "protocol": "local"}))

    def incoming(self, content, client="192.0.2.1"):
        return defer.Deferred.fromCoroutine(self.submit(content, {
            "client_address": client, "client_name": "c.example", "helo_name": "c",
            "protocol": "ESMTP"}))

    MESSAGE = (b"From: Alice <alice@example.com>\nTo: bob@example.org\nSubject: hi\n"
               b"Date: Mon, 7 Dec 2026 10:00:00 +0000\nMessage-ID: <a@example.com>\n\n"
               b"Signed text.\n")

    @defer.inlineCallbacks
    def test_localSubmissionSigned(self):
        result, text = yield self.local(self.MESSAGE)
        self.assertEqual(result["code"], 250)
        self.assertTrue(text.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;"
                                        b" d=example.com; s=s1;"), text[:200])
        record = publicRecord(self.key).encode()
        self.assertTrue(dkim.verify(text.replace(b"\n", b"\r\n"),
                                    dnsfunc=lambda name, timeout=5: record))
        self.assertNotIn(b"Authentication-Results", text)

    @defer.inlineCallbacks
    def test_internalAndAuthenticatedSigned(self):
        """
        A client in dkim_internal_hosts (C{$mynetworks}) and an
        authenticated one are signed for, not verified.
        """
        _, fromNetwork = yield self.incoming(self.MESSAGE, client="127.0.0.1")
        _, text = yield defer.Deferred.fromCoroutine(self.submit(self.MESSAGE, {
            "client_address": "192.0.2.9", "sasl_username": "alice", "protocol": "ESMTPA"}))
        for message in (fromNetwork, text):
            self.assertTrue(message.startswith(b"DKIM-Signature:"))
            self.assertNotIn(b"Authentication-Results", message)

    @defer.inlineCallbacks
    def test_otherDomainNotSigned(self):
        _, text = yield self.local(self.MESSAGE.replace(b"alice@example.com",
                                                        b"alice@example.org"))
        self.assertNotIn(b"DKIM-Signature", text)

    @defer.inlineCallbacks
    def test_signedMailVerifies(self):
        _, signed = yield self.local(self.MESSAGE)
        result, text = yield self.incoming(signed)
        self.assertEqual(result["code"], 250)
        header = text.split(b"\n\n")[0].decode()
        self.assertRegex(header, r"^Authentication-Results: mx.example.org;\n\tdkim=pass "
                                 r"\(2048-bit key\) header.d=example.com"
                                 r" header.a=rsa-sha256 header.s=s1 header.b=\S{8}\n")

    @defer.inlineCallbacks
    def test_alteredMailFails(self):
        _, signed = yield self.local(self.MESSAGE)
        _, text = yield self.incoming(signed.replace(b"Signed text.", b"Signed text!"))
        self.assertIn(b"dkim=fail reason=\"body hash did not verify\" "
                      b"header.d=example.com", text)

    @defer.inlineCallbacks
    def test_unsigned(self):
        _, text = yield self.incoming(self.MESSAGE)
        self.assertTrue(text.startswith(b"Authentication-Results: mx.example.org;\n\tdkim=none\n"))

    @defer.inlineCallbacks
    def test_noPublishedKey(self):
        """
        A signature whose key is not in the DNS is a permanent error.
        """
        _, signed = yield self.local(self.MESSAGE.replace(b"alice@example.com",
                                                          b"stray@example.net"))
        self.assertIn(b"s=nokey", signed)
        _, text = yield self.incoming(signed)
        self.assertIn(b"dkim=permerror reason=\"no key for signature\" header.d=example.net",
                      text)

    @defer.inlineCallbacks
    def test_dnsFailure(self):
        """
        When the DNS cannot answer, the result is a temporary error.
        """
        from twisted.internet import reactor
        from twisted.names import client

        from tests.support import freePort

        _, signed = yield self.local(self.MESSAGE)
        self.resolver = client.Resolver(servers=[("127.0.0.1", freePort())], reactor=reactor)
        self.cleanup.authentication.verifiers[0].resolver = self.resolver
        self.cleanup.authentication.verifiers[0].timeout = 0.3
        _, text = yield self.incoming(signed)
        self.assertIn(b"dkim=temperror", text)

    @defer.inlineCallbacks
    def test_forgedResultsRemoved(self):
        forged = (b"Authentication-Results: mx.example.org; dkim=pass header.d=bank.example\n"
                  b"Authentication-Results: elsewhere.example; dkim=pass\n")
        _, text = yield self.incoming(forged + self.MESSAGE)
        self.assertEqual(text.count(b"Authentication-Results: mx.example.org;"), 1)
        self.assertNotIn(b"bank.example", text)
        self.assertIn(b"Authentication-Results: elsewhere.example; dkim=pass", text)

    @defer.inlineCallbacks
    def test_bouncesNeither(self):
        _, text = yield defer.Deferred.fromCoroutine(self.submit(self.MESSAGE, {
            "origin": "bounce", "protocol": "local"}))
        self.assertNotIn(b"DKIM-Signature", text)
        self.assertNotIn(b"Authentication-Results", text)

    @defer.inlineCallbacks
    def test_keyGoneDefers(self):
        """
        A key the key table names that cannot be read when mail comes
        makes the mail wait: it is never sent on unsigned.
        """
        with open(os.path.join(self.base, "keys"), "w") as f:
            f.write(f"s1key example.com:s1:{self.keyPath}.moved\n")
        result, _ = yield self.local(self.MESSAGE)
        self.assertEqual((result["code"], result["reason"]),
                         (451, "4.3.5 Server configuration error"))
        self.flushLoggedErrors()

    def test_startupProblems(self):
        from tmta.authentication.pipeline import authenticationProblems

        self.assertEqual(authenticationProblems(self.config), [])
        os.unlink(self.strayPath)
        [problem] = authenticationProblems(self.config)
        self.assertIn(f"cannot read DKIM key {self.strayPath}", problem)


class KeygenTests(SynchronousTestCase):
    def run_(self, *argv):
        import argparse

        from tmta.cli.admin import dkim as command

        parser = argparse.ArgumentParser()
        commands = parser.add_subparsers()
        command.addParser(commands)
        options = parser.parse_args(["dkim", *argv])
        out = io.StringIO()
        return options.run(options, parser, out), out.getvalue()

    def test_keygen(self):
        directory = self.mktemp()
        os.makedirs(directory)
        code, out = self.run_("keygen", "-d", "Example.COM", "-s", "mail", "-D", directory)
        self.assertEqual(code, 0)
        path = os.path.join(directory, "mail.private")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        key = loadPrivateKey(open(path, "rb").read(), "example.com", "mail")
        strings = "".join(re.findall(r'"([^"]*)"', out.splitlines()[0]))
        self.assertTrue(out.startswith("mail._domainkey.example.com. IN TXT ( "))
        self.assertEqual(strings, publicRecord(key))
        self.assertIn(f"example.com:mail:{os.path.abspath(path)}", out)
        code, again = self.run_("record", path, "-d", "example.com", "-s", "mail")
        self.assertEqual((code, again), (0, out))

    def test_ed25519(self):
        directory = self.mktemp()
        os.makedirs(directory)
        code, out = self.run_("keygen", "-t", "ed25519", "-d", "example.com", "-s", "ed",
                              "-D", directory)
        self.assertEqual(code, 0)
        self.assertIn('"v=DKIM1; k=ed25519; p=', out)


class OpenDKIMInteroperationTests(SynchronousTestCase):
    """
    tmta's DKIM and OpenDKIM's (Debian's opendkim and opendkim-tools),
    each verifying the other's signatures through a DNS server on
    loopback, in a private namespace (L{tests.dkimdriver}).
    """

    def test_eachVerifiesTheOther(self):
        import shutil

        from tests.support.namespace import runNamespaceDriver

        if not (shutil.which("opendkim") and shutil.which("opendkim-testkey")):
            raise self.skipTest("no OpenDKIM (Debian's opendkim and opendkim-tools)")
        observed = runNamespaceDriver(self, "dkimdriver.py")
        code, output = observed["testkey"]
        self.assertEqual(code, 0, output)
        self.assertIn("key OK", output)
        # Signed by tmta: OpenDKIM and tmta both find it good...
        self.assertIn("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=signer.test; "
                      "s=tmta;", observed["bob"])
        self.assertRegex(observed["carol"], r"Authentication-Results: opendkim.verifier;\s+"
                                            r"dkim=pass .*header.d=signer.test")
        self.assertRegex(observed["carol"], r"Authentication-Results: mx.example.org;\s+"
                                            r"dkim=pass \(2048-bit key\) header.d=signer.test")
        # ... and both find it altered.
        self.assertRegex(observed["dave"], r"Authentication-Results: opendkim.verifier;\s+"
                                           r"dkim=fail")
        self.assertRegex(observed["dave"], r"Authentication-Results: mx.example.org;\s+"
                                           r"dkim=fail reason=\"body hash did not verify\" "
                                           r"header.d=signer.test")
        # Signed by OpenDKIM: tmta finds it good, then altered.
        self.assertIn("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=odk.test; s=odk;",
                      observed["frank"])
        self.assertNotIn("d=signer.test", observed["frank"])
        self.assertRegex(observed["grace"], r"Authentication-Results: mx.example.org;\s+"
                                            r"dkim=pass \(\d+-bit key\) header.d=odk.test")
        self.assertRegex(observed["henry"], r"Authentication-Results: mx.example.org;\s+"
                                            r"dkim=fail reason=\"body hash did not verify\" "
                                            r"header.d=odk.test")


class ARCVerificationTests(TestCase):
    """
    cleanup's ARC verification (C{arc_verification = yes}) of messages
    sealed by dkimpy's ARC signer, as a forwarder would seal them, its
    key served on loopback.
    """

    def setUp(self):
        from twisted.internet import reactor

        from tests.test_cleanup import LocalRewriter
        from tmta.cleanup.state import Cleanup
        from tmta.config import MainConfig
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore

        self.pem = generateKey()
        key = loadPrivateKey(self.pem, "lists.example.net", "arc")
        resolver = loopbackResolver(self, zoneWith(
            ("arc._domainkey.lists.example.net", publicRecord(key))))
        directory = os.path.abspath(self.mktemp())
        createLayout(directory)
        self.store = QueueStore(directory)
        config = MainConfig({"myhostname": "mx.example.org", "arc_verification": "yes"})
        self.cleanup = Cleanup(reactor, config, self.store, LocalRewriter(config),
                               lambda queueId: defer.succeed(None), resolver=lambda: resolver)

    def sealed(self, body=b"Forwarded text.\r\n"):
        message = (b"Authentication-Results: lists.example.net; spf=pass "
                   b"smtp.mailfrom=alice@example.com\r\n"
                   b"From: alice@example.com\r\nTo: list@lists.example.net\r\nSubject: hi\r\n"
                   b"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <l@example.com>\r\n"
                   b"\r\nForwarded text.\r\n")
        seal = dkim.arc_sign(message, b"arc", b"lists.example.net", self.pem,
                             b"lists.example.net")
        return (b"".join(seal) + message).replace(b"Forwarded text.\r\n", body)

    async def _incoming(self, content):
        from tmta.cleanup.protocol import CleanupProtocol
        from tmta.queue.qfile import iterContent, readEnvelope

        p = CleanupProtocol(self.cleanup)
        p.begin(1, "list-bounces@lists.example.net",
                [{"name": "client_address", "value": "192.0.2.7"}])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": "bob@example.org", "original": "bob@example.org"}])
        p.content(1, content.replace(b"\r\n", b"\n"))
        await p.end(1)
        with self.store.open("incoming", queueId) as f:
            env = readEnvelope(f)
            return b"".join(iterContent(f, env)).decode()

    def incoming(self, content):
        return defer.Deferred.fromCoroutine(self._incoming(content))

    @defer.inlineCallbacks
    def test_intactChainPasses(self):
        text = yield self.incoming(self.sealed())
        self.assertIn("Authentication-Results: mx.example.org;\n\tarc=pass (i=1)\n", text)

    @defer.inlineCallbacks
    def test_alteredFails(self):
        text = yield self.incoming(self.sealed(b"Changed on the way.\r\n"))
        self.assertIn('\tarc=fail (i=1) reason="Most recent ARC-Message-Signature did not '
                      'validate"\n', text)

    @defer.inlineCallbacks
    def test_unsealed(self):
        text = yield self.incoming(b"From: a@example.com\r\nSubject: x\r\n\r\nx\r\n")
        self.assertIn("Authentication-Results: mx.example.org;\n\tarc=none\n", text)


class ARCSealingTests(TestCase):
    """
    cleanup sealing mail local(8) forwards (C{arc_signing_key}), the seal
    vouching for the results this host found on arrival; dkimpy's ARC
    verifier checks the chain.
    """

    def setUp(self):
        from twisted.internet import reactor

        from tests.test_cleanup import LocalRewriter
        from tmta.cleanup.state import Cleanup
        from tmta.config import MainConfig
        from tmta.queue.layout import createLayout
        from tmta.queue.store import QueueStore

        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.listPem = generateKey()
        sealPath = os.path.join(base, "seal.private")
        with open(sealPath, "wb") as f:
            f.write(generateKey())
        self.records = {
            b"arc._domainkey.lists.example.net.": publicRecord(
                loadPrivateKey(self.listPem, "lists.example.net", "arc")).encode(),
            b"seal._domainkey.example.org.": publicRecord(
                loadPrivateKey(open(sealPath, "rb").read(), "example.org", "seal")).encode()}
        resolver = loopbackResolver(self, zoneWith(
            *[(name.decode().rstrip("."), value.decode())
              for name, value in self.records.items()]))
        directory = os.path.abspath(self.mktemp())
        createLayout(directory)
        self.store = QueueStore(directory)
        config = MainConfig({"myhostname": "mx.example.org", "arc_verification": "yes",
                             "dkim_verification": "yes",
                             "arc_signing_key": f"example.org:seal:{sealPath}"})
        self.cleanup = Cleanup(reactor, config, self.store, LocalRewriter(config),
                               lambda queueId: defer.succeed(None), resolver=lambda: resolver)

    async def _submit(self, content, attributes):
        from tmta.cleanup.protocol import CleanupProtocol
        from tmta.queue.qfile import iterContent, readEnvelope

        p = CleanupProtocol(self.cleanup)
        p.begin(1, "alice@example.com", [{"name": k, "value": v} for k, v in attributes.items()])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": "bob@elsewhere.example",
                          "original": "bob@elsewhere.example"}])
        p.content(1, content.replace(b"\r\n", b"\n"))
        await p.end(1)
        with self.store.open("incoming", queueId) as f:
            env = readEnvelope(f)
            return b"".join(iterContent(f, env))

    @defer.inlineCallbacks
    def arrivedThenForwarded(self, message):
        arrived = yield defer.Deferred.fromCoroutine(self._submit(
            message, {"client_address": "192.0.2.7", "protocol": "ESMTP"}))
        forwarded = yield defer.Deferred.fromCoroutine(self._submit(
            b"Delivered-To: bob@example.org\n" + arrived,
            {"origin": "local", "protocol": "local"}))
        return arrived, forwarded

    def verify(self, message):
        return dkim.arc_verify(message.replace(b"\n", b"\r\n"),
                               dnsfunc=lambda name, timeout=5: self.records.get(name))

    MESSAGE = (b"From: alice@example.com\nTo: bob@example.org\nSubject: hi\n"
               b"Date: Mon, 7 Dec 2026 10:00:00 +0000\nMessage-ID: <f@example.com>\n\nText.\n")

    @defer.inlineCallbacks
    def test_forwardedMailSealed(self):
        arrived, forwarded = yield self.arrivedThenForwarded(self.MESSAGE)
        self.assertNotIn(b"ARC-Seal", arrived)
        self.assertTrue(forwarded.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; "
                                             b"d=example.org; s=seal;"), forwarded[:200])
        self.assertIn(b"ARC-Authentication-Results: i=1; mx.example.org;", forwarded)
        chain, _, why = self.verify(forwarded)
        self.assertEqual(chain, dkim.CV_Pass, why)

    @defer.inlineCallbacks
    def test_chainExtended(self):
        """
        Mail a list sealed arrives with arc=pass; forwarded on, it gets
        the second set, with cv=pass, and the whole chain verifies.
        """
        message = (b"Authentication-Results: lists.example.net; none\r\n"
                   + self.MESSAGE.replace(b"\n", b"\r\n"))
        seal = dkim.arc_sign(message, b"arc", b"lists.example.net", self.listPem,
                             b"lists.example.net")
        arrived, forwarded = yield self.arrivedThenForwarded(b"".join(seal) + message)
        self.assertIn(b"arc=pass (i=1)", arrived)
        self.assertTrue(forwarded.startswith(b"ARC-Seal: i=2; cv=pass;"), forwarded[:100])
        chain, results, why = self.verify(forwarded)
        self.assertEqual((chain, len(results)), (dkim.CV_Pass, 2), why)

    @defer.inlineCallbacks
    def test_localSubmissionNotSealed(self):
        """
        Mail with no results of this host's to vouch for gets no seal.
        """
        forwarded = yield defer.Deferred.fromCoroutine(self._submit(
            self.MESSAGE, {"origin": "local", "protocol": "local"}))
        self.assertNotIn(b"ARC-Seal", forwarded)

    def test_needsVerification(self):
        from tmta.authentication.pipeline import authenticationProblems
        from tmta.config import MainConfig

        config = MainConfig({"arc_signing_key": "example.org:seal:/nonexistent"})
        problems = authenticationProblems(config)
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("cannot read DKIM key /nonexistent", problems[0])
        self.assertIn("arc_signing_key needs arc_verification = yes", problems[1])
