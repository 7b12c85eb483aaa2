"""
Tests for cleanup's table-driven rewriting (L{tmta.cleanup.addresses},
L{tmta.mail.contentchecks}): canonical and virtual alias mapping, masquerading,
automatic BCC, and header and body checks with their actions -- in
cleanup itself, and through a real master.
"""

import os

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import (
    MASTER_CF,
    Master,
    freePort,
    localMaildirs,
    sendMessage,
    shortTemporaryDirectory,
    waitFor,
)
from tests.test_cleanup import LocalRewriter
from tmta.cleanup.addresses import AddressMapper, AliasExpansionError
from tmta.cleanup.protocol import CleanupProtocol
from tmta.cleanup.state import Cleanup
from tmta.config import MainConfig
from tmta.queue.layout import createLayout
from tmta.queue.qfile import iterContent, readEnvelope
from tmta.queue.store import QueueStore
from tmta.rewrite import Rewriter


def _config(**params):
    settings = {"myhostname": "mx.example.org", "mydestination": "localhost, $myhostname",
                "recipient_delimiter": "+"}
    settings.update(params)
    return MainConfig(settings)


def _mapper(**params):
    config = _config(**params)
    return AddressMapper(config, Rewriter(config).isLocalDomain)


class AddressMapperTests(SynchronousTestCase):
    def test_canonical(self):
        mapper = _mapper(
            sender_canonical_maps="inline:{ alice@mx.example.org=Alice.Smith@example.com }",
            canonical_maps="inline:{ @old.example=@new.example, bob=robert }",
            recipient_canonical_maps="inline:{ carol@mx.example.org=caroline@example.net }")
        self.assertEqual(mapper.sender("alice@mx.example.org"), "Alice.Smith@example.com")
        self.assertEqual(mapper.sender("x@old.example"), "x@new.example")
        # "user" keys apply to our own domains only, and the extension
        # carries over (propagate_unmatched_extensions has canonical).
        self.assertEqual(mapper.recipient("bob+tag@mx.example.org"), ["robert+tag@mx.example.org"])
        self.assertEqual(mapper.recipient("bob@elsewhere.example"), ["bob@elsewhere.example"])
        self.assertEqual(mapper.recipient("carol@mx.example.org"), ["caroline@example.net"])
        self.assertEqual(mapper.sender("carol@mx.example.org"), "carol@mx.example.org")

    def test_virtualAliases(self):
        mapper = _mapper(virtual_alias_maps=(
            "inline:{ { team@virt.example = a@virt.example, b@virt.example }, "
            "a@virt.example=alice@mx.example.org, "
            "{ b@virt.example = b@virt.example, bob@mx.example.org }, "
            "@catch.example=postmaster@mx.example.org }"))
        self.assertEqual(mapper.recipient("team@virt.example"),
                         ["alice@mx.example.org", "b@virt.example", "bob@mx.example.org"])
        self.assertEqual(mapper.recipient("x@catch.example"), ["postmaster@mx.example.org"])
        self.assertEqual(mapper.recipient("other@virt.example"), ["other@virt.example"])

    def test_virtualLimits(self):
        mapper = _mapper(virtual_alias_maps="inline:{ a@x.example=b@x.example, "
                                            "b@x.example=c@x.example, c@x.example=a@x.example }")
        # A cycle ends where it comes back: the address stands for itself.
        self.assertEqual(mapper.recipient("a@x.example"), ["a@x.example"])
        many = ", ".join(f"u{i}@y.example" for i in range(20))
        mapper = _mapper(virtual_alias_maps=f"inline:{{ {{ list@x.example = {many} }} }}",
                         virtual_alias_expansion_limit="10")
        self.assertRaises(AliasExpansionError, mapper.recipient, "list@x.example")

    def test_masquerade(self):
        mapper = _mapper(masquerade_domains="!secure.example.com, example.com",
                         masquerade_exceptions="root")
        self.assertEqual(mapper.sender("joe@host.sub.example.com"), "joe@example.com")
        self.assertEqual(mapper.sender("joe@host.secure.example.com"),
                         "joe@host.secure.example.com")
        self.assertEqual(mapper.sender("root@host.example.com"), "root@host.example.com")
        # Recipients are not masqueraded unless masquerade_classes says.
        self.assertEqual(mapper.recipient("joe@host.example.com"), ["joe@host.example.com"])

    def test_headers(self):
        mapper = _mapper(
            sender_canonical_maps="inline:{ alice@mx.example.org=Alice.Smith@example.com }",
            masquerade_domains="example.com")
        self.assertEqual(mapper.header("From", '"Alice" <alice@mx.example.org>'),
                         "Alice <Alice.Smith@example.com>")
        self.assertEqual(mapper.header("To", "bob@host.example.com, carol@other.example"),
                         "bob@example.com, carol@other.example")
        # Unchanged headers, and headers that hold no addresses, are
        # left as they are.
        self.assertIsNone(mapper.header("Cc", "dave@other.example"))
        self.assertIsNone(mapper.header("Subject", "alice@mx.example.org"))

    def test_bcc(self):
        mapper = _mapper(always_bcc="archive@mx.example.org",
                         sender_bcc_maps="inline:{ @corp.example=audit@mx.example.org }",
                         recipient_bcc_maps="inline:{ boss@mx.example.org=copy@mx.example.org }")
        self.assertEqual(mapper.bcc("x@corp.example", ["boss@mx.example.org", "y@z.example"]),
                         ["archive@mx.example.org", "audit@mx.example.org",
                          "copy@mx.example.org"])


class CleanupRewritingTests(TestCase):
    def setUp(self):
        from twisted.internet import reactor

        self.directory = os.path.abspath(self.mktemp())
        createLayout(self.directory)
        self.store = QueueStore(self.directory, fsync=lambda fd: None)
        self.reactor = reactor
        self.wakeups = []

    def cleanup(self, **params):
        checks = self.mktemp()
        with open(checks, "w") as f:
            f.write("/^Subject: .*viagra/  REJECT no spam here\n"
                    "/^Subject: hold me/   HOLD for review\n"
                    "/^Subject: drop me/   DISCARD\n"
                    "/^X-Secret:/          IGNORE\n"
                    "/^X-Old: (.*)/        REPLACE X-New: $1\n"
                    "/^Subject: redirect/  REDIRECT <boss@mx.example.org>\n"
                    "/^Subject: filter/    FILTER scan:[127.0.0.1]:10025\n")
        body = self.mktemp()
        with open(body, "w") as f:
            f.write("/^bad line$/  REJECT body refused\n/^secret body/  REPLACE [removed]\n"
                    "/^send elsewhere$/  REDIRECT carol@mx.example.org\n"
                    "/^scan me$/  FILTER scan:[127.0.0.1]:10026\n")
        config = _config(**{"header_checks": f"regexp:{checks}",
                            "body_checks": f"regexp:{body}", **params})

        def notify(queueId):
            self.wakeups.append(queueId)
            return defer.succeed(None)

        return Cleanup(self.reactor, config, self.store, LocalRewriter(config), notify)

    async def submit(self, cleanup, content, recipients=("bob@mx.example.org",)):
        p = CleanupProtocol(cleanup)
        p.begin(1, "alice@mx.example.org", [{"name": "protocol", "value": "ESMTP"}])
        queueId = p.messages[1].queueId
        p.recipients(1, [{"address": r, "original": r} for r in recipients])
        for start in range(0, len(content), 5):
            p.content(1, content[start:start + 5])
        return queueId, await p.end(1)

    def read(self, queue, queueId):
        with self.store.open(queue, queueId) as f:
            env = readEnvelope(f)
            return env, b"".join(iterContent(f, env))

    def submitted(self, cleanup, content, **kw):
        return defer.Deferred.fromCoroutine(self.submit(cleanup, content, **kw))

    @defer.inlineCallbacks
    def test_headerActions(self):
        cleanup = self.cleanup()
        queueId, result = yield self.submitted(
            cleanup, b"Subject: fine\nX-Secret: s\nX-Old: value\n\nsecret body\nok\n")
        self.assertEqual(result["code"], 250)
        _, text = self.read("incoming", queueId)
        self.assertNotIn(b"X-Secret", text)
        self.assertIn(b"\nX-New: value\n", text)
        self.assertTrue(text.endswith(b"\n\n[removed]\nok\n"))

        queueId, result = yield self.submitted(cleanup, b"Subject: buy viagra\n\nx\n")
        self.assertEqual((result["code"], result["reason"]), (550, "5.7.1 no spam here"))
        self.assertFalse(os.path.exists(self.store.path("incoming", queueId)))

        queueId, result = yield self.submitted(cleanup, b"Subject: x\n\nbad line\n")
        self.assertEqual(result["code"], 550)
        self.assertIn("body refused", result["reason"])

    @defer.inlineCallbacks
    def test_mimeParts(self):
        """
        The headers of MIME parts go through mime_header_checks, and of
        an attached message through nested_header_checks (both
        header_checks by default); body_checks sees the rest.
        """
        mime = self.mktemp()
        with open(mime, "w") as f:
            f.write("/^Content-(Type|Disposition):.*name=\"?.*\\.exe/  REJECT no programs\n"
                    "/^X-Part-Secret:/  IGNORE\n")
        cleanup = self.cleanup(mime_header_checks=f"regexp:{mime}")
        message = (b"Subject: files\nMIME-Version: 1.0\n"
                   b"Content-Type: multipart/mixed; boundary=\"XX\"\n\n"
                   b"preamble\n--XX\nContent-Type: text/plain\nX-Part-Secret: s\n\n"
                   b"secret body\n--XX\nContent-Type: application/octet-stream;\n"
                   b"\tname=\"setup.EXE\"\n\nTVqQ\n--XX--\nepilogue\n")
        _, result = yield self.submitted(cleanup, message)
        self.assertEqual((result["code"], result["reason"]), (550, "5.7.1 no programs"))
        clean = message.replace(b"setup.EXE", b"notes.txt")
        queueId, result = yield self.submitted(cleanup, clean)
        self.assertEqual(result["code"], 250)
        _, text = self.read("incoming", queueId)
        self.assertNotIn(b"X-Part-Secret", text)
        self.assertIn(b"\n[removed]\n--XX\n", text)  # body_checks still apply
        # An attached message's own headers: nested_header_checks, here
        # header_checks by default, which rejects its subject.
        attached = (b"Subject: fwd\nContent-Type: multipart/mixed; boundary=YY\n\n"
                    b"--YY\nContent-Type: message/rfc822\n\n"
                    b"Subject: buy viagra\nFrom: x@y\n\nbody\n--YY--\n")
        _, result = yield self.submitted(self.cleanup(), attached)
        self.assertEqual(result["code"], 550)
        # The message's own MIME headers go through mime_header_checks
        # too: a single-part program is refused as one in a part is.
        single = (b"Subject: one file\nMIME-Version: 1.0\n"
                  b"Content-Type: application/octet-stream; name=\"x.exe\"\n\nTVqQ\n")
        _, result = yield self.submitted(cleanup, single)
        self.assertEqual((result["code"], result["reason"]), (550, "5.7.1 no programs"))
        # And so do an attached message's MIME headers.
        nested = (b"Subject: fwd\nContent-Type: multipart/mixed; boundary=YY\n\n"
                  b"--YY\nContent-Type: message/rfc822\n\n"
                  b"Subject: inner\nContent-Type: application/x-msdownload; name=a.exe\n\n"
                  b"MZ\n--YY--\n")
        _, result = yield self.submitted(cleanup, nested)
        self.assertEqual((result["code"], result["reason"]), (550, "5.7.1 no programs"))
        # A part header line is not a body line.
        partHeader = (b"Subject: x\nContent-Type: multipart/mixed; boundary=ZZ\n\n"
                      b"--ZZ\nContent-Type: text/plain\n\nok\n--ZZ--\n")
        queueId, result = yield self.submitted(
            self.cleanup(body_checks="inline:{ { Content-Type: text/plain = REJECT } }"),
            partHeader)
        self.assertEqual(result["code"], 250)

    @defer.inlineCallbacks
    def test_holdDiscardRedirectFilter(self):
        cleanup = self.cleanup()
        before = len(self.wakeups)
        held, result = yield self.submitted(cleanup, b"Subject: hold me\n\nx\n")
        self.assertEqual(result["code"], 250)
        self.assertTrue(os.path.exists(self.store.path("hold", held)))
        self.assertFalse(os.path.exists(self.store.path("incoming", held)))
        self.assertEqual(len(self.wakeups), before)

        dropped, result = yield self.submitted(cleanup, b"Subject: drop me\n\nx\n")
        self.assertEqual(result["code"], 250)
        self.assertFalse(os.path.exists(self.store.path("incoming", dropped)))

        redirected, _ = yield self.submitted(cleanup, b"Subject: redirect\n\nx\n",
                                       recipients=("a@x.example", "b@y.example"))
        env, _ = self.read("incoming", redirected)
        self.assertEqual([r.address for r in env.recipients], ["boss@mx.example.org"])

        filtered, _ = yield self.submitted(cleanup, b"Subject: filter\n\nx\n")
        env, _ = self.read("incoming", filtered)
        self.assertEqual(env.attributes["filter"], "scan:[127.0.0.1]:10025")

        # From the body, after the envelope was written: the message is
        # written again under the new envelope, and only that one stays.
        before = set(os.listdir(os.path.join(self.directory, "incoming")))
        first, result = yield self.submitted(cleanup, b"Subject: x\n\nline\nsend elsewhere\n"
                                             + b"more\n" * 5000,
                                             recipients=("a@x.example",))
        self.assertEqual(result["code"], 250)
        late = result["queue_id"]
        self.assertNotEqual(late, first)
        self.assertIn(late, result["reason"])
        env, text = self.read("incoming", late)
        self.assertEqual([r.address for r in env.recipients], ["carol@mx.example.org"])
        self.assertTrue(text.endswith(b"\nsend elsewhere\n" + b"more\n" * 5000))
        after = set(os.listdir(os.path.join(self.directory, "incoming")))
        self.assertEqual(after - before, {late})
        _, result = yield self.submitted(cleanup, b"Subject: x\n\nscan me\n")
        env, _ = self.read("incoming", result["queue_id"])
        self.assertEqual(env.attributes["filter"], "scan:[127.0.0.1]:10026")

    @defer.inlineCallbacks
    def test_envelopeMapping(self):
        cleanup = self.cleanup(
            virtual_alias_maps="inline:{ { sales@mx.example.org = ann@a.example, "
                               "ben@b.example } }",
            sender_canonical_maps="inline:{ alice@mx.example.org=alice@corp.example }",
            always_bcc="archive@mx.example.org")
        queueId, result = yield self.submitted(cleanup, b"Subject: x\n\nx\n",
                                         recipients=("sales@mx.example.org",))
        self.assertEqual(result["code"], 250)
        env, _ = self.read("incoming", queueId)
        self.assertEqual(env.sender, "alice@corp.example")
        self.assertEqual([(r.address, r.original) for r in env.recipients],
                         [("ann@a.example", "sales@mx.example.org"),
                          ("ben@b.example", "sales@mx.example.org"),
                          ("archive@mx.example.org", "archive@mx.example.org")])
        self.assertEqual(env.recipients[2].notify, "NEVER")

    @defer.inlineCallbacks
    def test_headerRewritingByClient(self):
        """
        Header addresses are rewritten for mail posted locally or from
        this host, not for mail from elsewhere
        (local_header_rewrite_clients).
        """
        cleanup = self.cleanup(
            sender_canonical_maps="inline:{ alice@mx.example.org=alice@corp.example }")
        content = b"From: Alice <alice@mx.example.org>\nSubject: x\n\nbody\n"
        local, _ = yield self.submitted(cleanup, content)
        _, text = self.read("incoming", local)
        self.assertIn(b"\nFrom: Alice <alice@corp.example>\n", text)

        p = CleanupProtocol(cleanup)
        p.begin(1, "alice@mx.example.org", [{"name": "client_address", "value": "192.0.2.7"}])
        remote = p.messages[1].queueId
        p.recipients(1, [{"address": "bob@mx.example.org", "original": "bob@mx.example.org"}])
        yield p.end(1, content)
        _, text = self.read("incoming", remote)
        self.assertIn(b"\nFrom: Alice <alice@mx.example.org>\n", text)

    @defer.inlineCallbacks
    def test_lookupFailureIsTemporary(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("x y\n")
        cleanup = self.cleanup(virtual_alias_maps=f"hash:{path}")  # never built
        _, result = yield self.submitted(cleanup, b"Subject: x\n\nx\n")
        self.assertEqual(result["code"], 451)


class ClientContentChecksTests(SynchronousTestCase):
    """
    The SMTP and LMTP clients' C{smtp_*_checks}: header_checks(5) with
    only the actions that edit what is sent.
    """

    def checks(self, headerRules: str, bodyRules: str = ""):
        from tmta.mail.contentchecks import ContentChecks

        base = self.mktemp()
        os.makedirs(base)
        settings = {}
        for name, rules in (("smtp_header_checks", headerRules),
                            ("smtp_body_checks", bodyRules)):
            if rules:
                path = os.path.join(base, name)
                with open(path, "w") as f:
                    f.write(rules)
                settings[name] = f"pcre:{path}"
        return ContentChecks(_config(**settings), "smtp_")

    def test_edits(self):
        """
        IGNORE and STRIP remove a header (continuation lines and all),
        REPLACE and PREPEND edit the header section, body_checks the
        body; the message keeps its shape.
        """
        checks = self.checks(
            "/^X-Originating-IP:/ IGNORE\n"
            "/^Received: from [\\s\\S]*\\(Authenticated sender: (\\S+)\\)/ "
            "REPLACE Received: from [127.0.0.1] by mail.example.org\n"
            "/^Message-Id:/ PREPEND X-MS-Reactions: disallow\n"
            "/^User-Agent:/ STRIP\n",
            "/^secret$/ REPLACE [removed]\n")
        sent = checks.message(
            b"Received: from client (host [192.0.2.1])\r\n"
            b"\t(Authenticated sender: ann@example.org)\r\n\tby mail; today\r\n"
            b"X-Originating-IP: 192.0.2.1\r\nUser-Agent: Mailer 1\r\n"
            b"Message-ID: <1@example.org>\r\nSubject: hello\r\n\r\nsecret\r\nkept\r\n",
            "QUEUEID")
        self.assertEqual(sent, b"Received: from [127.0.0.1] by mail.example.org\n"
                               b"X-MS-Reactions: disallow\nMessage-ID: <1@example.org>\n"
                               b"Subject: hello\n\n[removed]\nkept\n")

    def test_noDeliveryActions(self):
        """
        What would change whether or where mail goes (REJECT, DISCARD,
        HOLD, REDIRECT, FILTER) is not a client's to do: warned of and
        the line sent as it is, as Postfix's smtp does.
        """
        from twisted.logger import globalLogPublisher

        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        checks = self.checks("/^Subject: (reject|discard)/ REJECT no\n"
                             "/^To:/ REDIRECT other@example.org\n")
        message = b"To: ann@example.org\nSubject: reject me\n\nbody\n"
        self.assertEqual(checks.message(message, "QUEUEID"), message)
        warnings = [event["log_format"].format(**event) for event in logged
                    if "unsupported command" in event.get("log_format", "")]
        self.assertEqual(warnings, [
            "QUEUEID: unsupported command in smtp_header_checks map: REDIRECT",
            "QUEUEID: unsupported command in smtp_header_checks map: REJECT"])


class ContentChecksEndToEndTests(SynchronousTestCase):
    def test_rejectBouncesAndHoldHolds(self):
        """
        Through a real master: header_checks REJECT refuses the message
        at the end of DATA (so the client bounces it); HOLD puts it in
        the hold queue, where tmta queue release lets it go.
        """
        import smtplib
        import subprocess
        import sys

        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        checks = os.path.join(base, "header_checks")
        with open(checks, "w") as f:
            f.write("/^Subject: reject me/ REJECT not wanted\n/^Subject: hold me/ HOLD\n")
        port = freePort()
        conf = os.path.join(base, "conf")
        master = Master(conf, {
            "mydestination": "localhost", **localMaildirs(spool + "/"),
            "header_checks": f"regexp:{checks}"}, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        error = self.assertRaises(smtplib.SMTPDataError, sendMessage, port, "a@localhost",
                                  ["bob@localhost"], "reject me")
        self.assertEqual(error.smtp_code, 550)
        self.assertIn(b"not wanted", error.smtp_error)
        held = sendMessage(port, "a@localhost", ["bob@localhost"], "hold me")
        waitFor(lambda: os.path.exists(os.path.join(master.queue, "hold", held)),
                what="the held message")
        self.assertFalse(os.path.isdir(os.path.join(spool, "bob")))
        released = subprocess.run([sys.executable, "-m", "tmta.cli.admin", "-c", conf, "queue",
                                   "release", held], capture_output=True, text=True, timeout=60)
        self.assertEqual(released.returncode, 0, released.stderr)
        waitFor(lambda: os.path.isdir(os.path.join(spool, "bob", "new"))
                and os.listdir(os.path.join(spool, "bob", "new")), what="the delivery")


class VirtualAliasDomainTests(SynchronousTestCase):
    def test_aliasDomain(self):
        """
        A virtual alias domain's listed addresses are expanded by
        cleanup and delivered; its unlisted ones are refused at RCPT.
        """
        import smtplib

        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        port = freePort()
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(spool + "/"),
            "virtual_alias_domains": "alias.example",
            "virtual_alias_maps": "inline:{ { sales@alias.example = bob@localhost, "
                                  "carol@localhost } }"}, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        sendMessage(port, "a@localhost", ["sales@alias.example"], "to sales")
        for name in ("bob", "carol"):
            waitFor(lambda: os.path.isdir(os.path.join(spool, name, "new"))
                    and os.listdir(os.path.join(spool, name, "new")), what=f"{name}'s copy")
        error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, port,
                                  "a@localhost", ["nobody@alias.example"], "unknown")
        code, reply = error.recipients["nobody@alias.example"]
        self.assertEqual(code, 550)
        self.assertIn(b"User unknown in virtual alias table", reply)


class RelocatedTests(SynchronousTestCase):
    """
    C{relocated_maps}: mail for a user who moved is refused at RCPT, or
    bounced when it got in, with where the user went (5.1.6), as
    Postfix's trivial-rewrite resolves it.
    """

    RELOCATED = ("inline:{ old@localhost=new@example.net, "
                 "{ gone = ann at her new job }, @moved.example=moved-too.example }")

    def test_resolution(self):
        rewriter = Rewriter(_config(relocated_maps=self.RELOCATED,
                                    mydestination="localhost"))
        for address, moved in [("old@localhost", "new@example.net"),
                               ("gone@localhost", "ann at her new job"),
                               ("x@moved.example", "moved-too.example")]:
            resolution = rewriter.resolve(address)
            self.assertEqual((resolution.transport, resolution.nexthop, resolution.error),
                             ("error", f"5.1.6 User has moved to {moved}",
                              f"5.1.6 User has moved to {moved}"), address)
        self.assertIsNone(rewriter.resolve("stays@localhost").error)
        # A bare user name is looked up for this host's domains only.
        self.assertIsNone(rewriter.resolve("gone@elsewhere.example").error)

    def test_refusedOrBounced(self):
        from tests.support import maildirMessages

        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        port, unchecked = freePort(), freePort()
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(spool + "/"),
            "relocated_maps": self.RELOCATED,
        }, MASTER_CF.format(port=port)
            + f"{unchecked} inet n - n - - smtpd\n"
              "  -o receive_override_options=no_unknown_recipient_checks\n"
            + "error     unix  -       -       n       -       -       error\n").start()
        self.addCleanup(master.stop)
        import smtplib

        error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, port,
                                  "alice@localhost", ["old@localhost"], "to old")
        code, reply = error.recipients["old@localhost"]
        self.assertEqual((code, reply), (550, b"5.1.6 <old@localhost>: Recipient address "
                                              b"rejected: User has moved to new@example.net"))
        sendMessage(unchecked, "alice@localhost", ["old@localhost"], "to old, unchecked")
        waitFor(lambda: maildirMessages(spool).get("alice"), what="the bounce")
        [bounce] = maildirMessages(spool)["alice"]
        self.assertIn(b"User has moved to new@example.net", bounce)
        self.assertIn(b"Status: 5.1.6", bounce)
