"""
Tests for the pipe delivery agent (L{tmta.pipe}): master.cf attributes,
macros, flags, exit statuses, and a real master routing a domain to a
pipe service with transport_maps.
"""

import os
import pwd

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    Master,
    activeRequest,
    endToEnd,
    freePort,
    localMaildirs,
    sendMessage,
    shortTemporaryDirectory,
    testAccount,
    waitFor,
)
from tmta.config import MainConfig
from tmta.delivery import BOUNCED, DEFERRED, SENT
from tmta.mail.pipecommand import CommandConfigError
from tmta.pipe import PipeAgent, parsePipeArguments
from tmta.queue.layout import createLayout
from tmta.queue.store import QueueStore

SCRIPT = """#!/bin/sh
id -u > {out}/uid
for a in "$@"; do echo "$a"; done > {out}/args
cat > {out}/msg
echo "said something" >&2
exit {status}
"""


def _unprivileged():
    return "nobody" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


class ArgumentTests(SynchronousTestCase):
    def test_parsed(self):
        command = parsePipeArguments(["flags=DRhu", f"user={_unprivileged()}", "size=1000",
                                      "argv=/bin/cat", "-o", "${recipient}"])
        self.assertEqual(command.argv, ["/bin/cat", "-o", "${recipient}"])
        self.assertEqual((command.flags, command.sizeLimit), ("DRhu", 1000))
        self.assertEqual(command.uid, pwd.getpwnam(_unprivileged()).pw_uid)

    def test_refused(self):
        for arguments in (
            ["argv=/bin/cat"],                                   # no user=
            ["user=root", "argv=/bin/cat"],                       # root
            [f"user={_unprivileged()}"],                          # no argv=
            [f"user={_unprivileged()}", "flags=Z", "argv=/bin/cat"],
            [f"user={_unprivileged()}", "argv=/bin/cat", "${nosuch}"],
            ["user=no-such-account-xyz", "argv=/bin/cat"],
        ):
            self.assertRaises(CommandConfigError, parsePipeArguments, arguments)


class AgentTests(SynchronousTestCase):
    def setUp(self):
        self.base = shortTemporaryDirectory(self)
        os.chmod(self.base, 0o755)
        self.out = os.path.join(self.base, "out")
        os.mkdir(self.out)
        os.chmod(self.out, 0o1777)
        queue = os.path.join(self.base, "queue")
        createLayout(queue)
        self.store = QueueStore(queue)

    def request(self, recipients, content=b"Subject: s\n\n.leading dot\nFrom me\nbody\n"):
        return activeRequest(self.store, recipients, content, "Pipe.Example",
                             "Alice@Example.com", {"client_address": "127.0.0.9"})

    def agent(self, status=0, flags="", extra=()):
        script = os.path.join(self.base, "script")
        with open(script, "w") as f:
            f.write(SCRIPT.format(out=self.out, status=status))
        os.chmod(script, 0o755)
        command = parsePipeArguments(
            [f"flags={flags}", f"user={_unprivileged()}", "argv=" + script, *extra])
        return PipeAgent(command, "mypipe", MainConfig({"recipient_delimiter": "+"}))

    def read(self, name):
        with open(os.path.join(self.out, name), "rb") as f:
            return f.read()

    def test_macrosAndFlags(self):
        agent = self.agent(flags="DORFhu.>X", extra=[
            "-f", "${sender}", "-h", "${nexthop}", "--", "${user}", "ext=${extension}",
            "${domain}", "${size}", "${client_address}", "${original_recipient}"])
        statuses = agent.deliverAll(self.request(["Bob+Tag@Pipe.Example", "carol@pipe.example"]))
        self.assertEqual([s.status for s in statuses], [SENT, SENT])
        self.assertEqual([s.action for s in statuses], ["", ""])
        args = self.read("args").decode().splitlines()
        self.assertEqual(args[:5], ["-f", "Alice@Example.com", "-h", "pipe.example", "--"])
        # A recipient macro's argument comes once per recipient.
        self.assertEqual(args[5:7], ["bob", "carol"])
        self.assertEqual(args[7:9], ["ext=Tag", "ext="])
        self.assertEqual(args[9], "pipe.example")
        self.assertEqual(args[11], "127.0.0.9")
        self.assertEqual(args[12:], ["Bob+Tag@Pipe.Example", "carol@pipe.example"])
        message = self.read("msg")
        self.assertTrue(message.startswith(b"From Alice@Example.com  "))
        self.assertIn(b"Return-Path: <Alice@Example.com>\nDelivered-To: Bob+Tag@Pipe.Example\n"
                      b"X-Original-To: Bob+Tag@Pipe.Example\n", message)
        self.assertIn(b"\n..leading dot\n>From me\n", message)
        if os.getuid() == 0:
            self.assertEqual(self.read("uid").strip(), str(pwd.getpwnam("nobody").pw_uid).encode())

    def test_crlfAndRelayed(self):
        script = os.path.join(self.base, "script")
        agent = self.agent()
        agent.command.eol = b"\r\n"
        [status] = agent.deliverAll(self.request(["bob@pipe.example"]))
        self.assertEqual((status.status, status.action), (SENT, "relayed"))
        self.assertIn(b"Subject: s\r\n\r\n.leading dot\r\n", self.read("msg"))
        self.assertTrue(os.path.exists(script))

    def test_exitStatuses(self):
        [status] = self.agent(status=75).deliverAll(self.request(["bob@pipe.example"]))
        self.assertEqual((status.status, status.dsn), (DEFERRED, "4.3.0"))
        [status] = self.agent(status=67).deliverAll(self.request(["bob@pipe.example"]))
        self.assertEqual((status.status, status.dsn), (BOUNCED, "5.1.1"))
        self.assertIn("said something", status.reason)

    def test_sizeLimit(self):
        agent = self.agent()
        agent.command.sizeLimit = 10
        [status] = agent.deliverAll(self.request(["bob@pipe.example"]))
        self.assertEqual((status.status, status.dsn), (BOUNCED, "5.2.3"))
        self.assertFalse(os.path.exists(os.path.join(self.out, "msg")))


def scriptDirectory(testCase, text):
    """
    A temporary directory with an C{out/} anyone may write to and an
    executable C{deliver} script of C{text} (C{{out}} filled in).

    @return: (the directory, C{out/}, the script).
    """
    base = shortTemporaryDirectory(testCase)
    os.chmod(base, 0o755)
    out = os.path.join(base, "out")
    os.mkdir(out)
    os.chmod(out, 0o1777)
    script = os.path.join(base, "deliver")
    with open(script, "w") as f:
        f.write(text.replace("{out}", out))
    os.chmod(script, 0o755)
    return base, out, script


class PipeServiceTests(SynchronousTestCase):
    def test_routedToPipe(self):
        """
        A domain routed by transport_maps to a pipe service in master.cf:
        the command gets the message, as user=.
        """
        base, out, script = scriptDirectory(self, SCRIPT.replace("{status}", "0"))
        port = freePort()
        user = _unprivileged() if os.getuid() == 0 else testAccount()
        masterCf = MASTER_CF.format(port=port) + (
            "mypipe    unix  -       n       n       -       2       pipe\n"
            f"  flags=Rq user={user} argv={script} ${{sender}} ${{recipient}}\n")
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(base + "/mail/"),
            "relay_domains": "pipe.example",
            "transport_maps": "inline:{ pipe.example=mypipe }",
        }, masterCf).start()
        self.addCleanup(master.stop)
        sendMessage(port, "alice@localhost", ["bob@pipe.example"], "piped")
        waitFor(lambda: os.path.exists(os.path.join(out, "msg"))
                and b"piped" in open(os.path.join(out, "msg"), "rb").read(), what="the pipe")
        with open(os.path.join(out, "args")) as f:
            self.assertEqual(f.read().split(), ["alice@localhost", "bob@pipe.example"])
        waitFor(lambda: "relay=mypipe" in master.log() and "status=sent" in master.log(),
                what="the log line")

    def test_rootRefusedAtStart(self):
        endToEnd()
        base = shortTemporaryDirectory(self)
        masterCf = MASTER_CF + "mypipe unix - n n - - pipe user=root argv=/bin/cat\n"
        master = Master(os.path.join(base, "conf"), {}, masterCf.format(port=freePort()))
        error = self.assertRaises(AssertionError, master.start)
        self.assertIn("never run as root", str(error))


class PassingTests(SynchronousTestCase):
    def test_mailboxAndFallbackTransport(self):
        """
        local hands a user's mail to mailbox_transport (a pipe service
        here, as Dovecot's LMTP would be elsewhere), and mail for names
        without an account to fallback_transport.
        """
        if os.getuid() != 0:
            raise self.skipTest("system accounts need root")
        base, out, script = scriptDirectory(
            self, "#!/bin/sh\necho \"$1\" >> {out}/recipients\ncat > /dev/null\n")
        port = freePort()
        user = testAccount()
        masterCf = MASTER_CF.format(port=port) + (
            "mbox      unix  -       n       n       -       -       pipe\n"
            "  user=nobody argv=" + script + " ${recipient}\n"
            "other     unix  -       n       n       -       -       pipe\n"
            "  user=nobody argv=" + script + " fallback:${recipient}\n")
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", "local_recipient_maps": "", "alias_maps": "",
            "local_mailbox_accounts": "system", "mail_spool_directory": base + "/spool",
            "mailbox_transport": "mbox", "fallback_transport": "other"}, masterCf).start()
        self.addCleanup(master.stop)
        sendMessage(port, "a@localhost", [f"{user}@localhost", "no-account-here@localhost"],
                    "passed on")
        path = os.path.join(out, "recipients")
        waitFor(lambda: os.path.exists(path) and len(open(path).read().split()) == 2,
                what="both deliveries")
        with open(path) as f:
            self.assertEqual(sorted(f.read().split()),
                             sorted([f"{user}@localhost", "fallback:no-account-here@localhost"]))
        waitFor(lambda: master.log().count("relay=local") == 2
                and "status=bounced" not in master.log(), what="the log lines")
