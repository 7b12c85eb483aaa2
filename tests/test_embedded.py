"""
Tests for L{tmta.embedded}: tmta inside a Twisted application, with
every component in the application's process or with the master's
worker processes, and the example application of docs/examples.
"""

import os
import smtplib
import subprocess
import sys
import textwrap
import urllib.request

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import (
    REPO,
    UNPRIVILEGED_PYTHON,
    freePort,
    freePorts,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    stopProcess,
    testAccount,
    waitFor,
)
from tmta.embedded import EmbeddedMTA, _smtpdListener


class TacRunner:
    """
    C{twistd -ny FILE} in a test's directory, stopped by its pid.
    """

    def __init__(self, testCase, tac: str, env: dict, options=(),
                 python: str = sys.executable) -> None:
        self.directory = shortTemporaryDirectory(testCase)
        self.log = os.path.join(self.directory, "twistd.log")
        self.process = subprocess.Popen(
            [python, "-c", "from twisted.scripts.twistd import run; run()", "-ny", tac,
             "--pidfile=", f"--logfile={self.log}", *options],
            cwd=self.directory, env=dict(os.environ, PYTHONPATH=REPO, **env),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        testCase.addCleanup(self.stop)

    def text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stopProcess(self.process)


def _waitListening(port: int, runner: TacRunner) -> None:
    import socket

    def listening():
        if runner.process.poll() is not None:
            raise AssertionError(f"the application exited:\n{runner.text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    waitFor(listening, what=f"port {port}")


class ExampleApplicationTests(SynchronousTestCase):
    def test_mailappUnderUid(self):
        """
        Under twistd's C{--uid}/C{--gid} (started as root), the embedded
        tmta writes its queue as the user it runs as, listens, and takes
        mail.
        """
        import pwd

        if os.getuid() != 0:
            raise self.skipTest("twistd --uid needs root")
        if not os.access(UNPRIVILEGED_PYTHON, os.X_OK):
            raise self.skipTest(f"no Python an ordinary account can run ({UNPRIVILEGED_PYTHON})")
        account = pwd.getpwnam(testAccount())
        smtpPort, webPort = freePorts(2)
        tac = os.path.join(REPO, "docs", "examples", "mailapp.tac")
        runner = TacRunner(self, tac, {"TMTA_EXAMPLE_SMTP_PORT": str(smtpPort),
                                       "TMTA_EXAMPLE_WEB_PORT": str(webPort)},
                           options=[f"--uid={account.pw_uid}", f"--gid={account.pw_gid}"],
                           python=UNPRIVILEGED_PYTHON)
        os.chown(runner.directory, account.pw_uid, account.pw_gid)
        _waitListening(smtpPort, runner)
        sendMessage(smtpPort, "alice@example.com", ["inbox@mailapp.example"], "as a user")
        queue = os.path.join(runner.directory, "mailapp-data", "queue")
        self.assertEqual(os.stat(queue).st_uid, account.pw_uid)

    def test_mailapp(self):
        """
        docs/examples/mailapp.tac: mail sent to its SMTP port is handed
        to the application's own agent, and its web page lists the
        subjects, newest first.
        """
        smtpPort, webPort = freePorts(2)
        tac = os.path.join(REPO, "docs", "examples", "mailapp.tac")
        runner = TacRunner(self, tac, {"TMTA_EXAMPLE_SMTP_PORT": str(smtpPort),
                                       "TMTA_EXAMPLE_WEB_PORT": str(webPort)})
        _waitListening(smtpPort, runner)
        _waitListening(webPort, runner)
        sendMessage(smtpPort, "alice@example.com", ["inbox@mailapp.example"], "first <one>")
        sendMessage(smtpPort, "alice@example.com", ["other@mailapp.example"], "second")

        def page():
            with urllib.request.urlopen(f"http://127.0.0.1:{webPort}/", timeout=10) as r:
                return r.read().decode()

        waitFor(lambda: "second" in page(), what="the subjects on the page")
        text = page()
        self.assertLess(text.index("second"), text.index("first &lt;one&gt;"))
        # Nothing outside its own directory, and no open relay.
        self.assertTrue(os.path.isdir(os.path.join(runner.directory, "mailapp-data", "queue")))
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            sendMessage(smtpPort, "alice@example.com", ["x@elsewhere.example"], "relay?")


PROCESSES_TAC = """\
import os
from twisted.application.service import Application
from tmta.embedded import EmbeddedMTA

application = Application("withworkers")
EmbeddedMTA(os.path.abspath("mta"), {{
    "myhostname": "localhost",
    "mydestination": "localhost",
    "local_recipient_maps": "",
    "local_mailbox_accounts": "none",
    "mail_spool_directory": os.path.abspath("mail") + "/",
    {owner}
}}, smtpd="tcp:{port}:interface=127.0.0.1", processes=True).setServiceParent(application)
"""


class WorkerProcessTests(SynchronousTestCase):
    def test_withWorkerProcesses(self):
        """
        With C{processes=True} the application runs the master, whose
        workers deliver as under twistd tmta.
        """
        port = freePort()
        owner = f'"mail_owner": "{testAccount()}",' if os.getuid() == 0 else ""
        base = shortTemporaryDirectory(self)
        tac = os.path.join(base, "withworkers.tac")
        with open(tac, "w") as f:
            f.write(textwrap.dedent(PROCESSES_TAC.format(port=port, owner=owner)))
        runner = TacRunner(self, tac, {})
        _waitListening(port, runner)
        sendMessage(port, "alice@example.com", ["bob@localhost"], "from the workers")
        spool = os.path.join(runner.directory, "mail")
        waitFor(lambda: maildirMessages(spool).get("bob"), what="delivery")
        waitFor(lambda: "tmta/local" in runner.text(), what="local's log line")


class EmbeddedServiceTests(TestCase):
    """
    L{EmbeddedMTA} as a service: nothing happens before it starts, it
    listens on the endpoint it is given, and stopping it waits for its
    ports to close.
    """

    def start(self, mta):
        """
        Start C{mta}, and have the test stop it.
        """
        mta.startService()
        self.addCleanup(self.stop, mta)

    def stop(self, mta):
        if not mta.running:
            return None

        def forgetResolvers(result):
            # The in-process smtp agents' twisted.names resolvers re-read
            # resolv.conf on a timer that Twisted gives no way to stop.
            for call in reactor.getDelayedCalls():
                if getattr(call.func, "__name__", "") == "maybeParseConfig":
                    call.cancel()
            return result

        return mta.stopService().addBoth(forgetResolvers)

    def test_nothingWrittenUntilStarted(self):
        """
        Making the service writes nothing; starting it writes the
        configuration and the queue.
        """
        directory = os.path.join(shortTemporaryDirectory(self), "mta")
        mta = EmbeddedMTA(directory, {"myhostname": "localhost"})
        self.assertFalse(os.path.exists(directory))
        self.assertIsNone(mta.configuration)
        with self.assertRaises(RuntimeError):
            mta.config
        self.start(mta)
        self.assertTrue(os.path.exists(os.path.join(directory, "main.cf")))
        self.assertEqual(mta.config.get("myhostname"), "localhost")

    def test_smtpdAddresses(self):
        """
        smtpd's address is an endpoint or its description; the master
        (C{processes=True}) binds only TCP ones, named in master.cf as
        Postfix names them.
        """
        self.assertEqual(_smtpdListener(reactor, "tcp:2526:interface=127.0.0.1", True),
                         ("127.0.0.1:2526", None))
        self.assertEqual(_smtpdListener(reactor, "tcp6:port=2526:interface=\\:\\:1", True),
                         ("[::1]:2526", None))
        self.assertEqual(_smtpdListener(reactor, "127.0.0.1:2526", True),
                         ("127.0.0.1:2526", None))
        self.assertEqual(_smtpdListener(reactor, "[::1]:2526", True), ("[::1]:2526", None))
        self.assertEqual(_smtpdListener(reactor, None, False), (None, None))
        service, endpoint = _smtpdListener(reactor, "tcp:2526:interface=127.0.0.1", False)
        self.assertEqual(service, "127.0.0.1:2526")
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)
        with self.assertRaises(ValueError):
            _smtpdListener(reactor, "unix:/tmp/smtpd.sock", True)
        with self.assertRaises(ValueError):
            _smtpdListener(reactor, TCP4ServerEndpoint(reactor, 0), True)
        with self.assertRaises(ValueError):
            _smtpdListener(reactor, "tcp:interface=127.0.0.1", True)

    @defer.inlineCallbacks
    def test_listensOnItsEndpointAndStopWaitsForIt(self):
        """
        In-process, smtpd listens on the endpoint given, greets a client
        there, and the Deferred of stopService fires only once the port
        is closed.
        """
        directory = os.path.join(shortTemporaryDirectory(self), "mta")
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        mta = EmbeddedMTA(directory, {"myhostname": "localhost"}, smtpd=endpoint)
        self.start(mta)
        [context] = [c for c in mta._contexts if c.endpoint is endpoint]
        yield defer.gatherResults(context.listening)
        [port] = context.ports
        address = port.getHost()
        greeting = defer.Deferred()

        class Greeted(Protocol):
            def dataReceived(self, data):
                greeting.callback(data)
                self.transport.loseConnection()

        yield TCP4ClientEndpoint(reactor, "127.0.0.1", address.port).connect(
            Factory.forProtocol(Greeted))
        self.assertTrue((yield greeting).startswith(b"220 "))
        yield self.stop(mta)
        with self.assertRaises(ConnectionRefusedError):
            yield TCP4ClientEndpoint(reactor, "127.0.0.1", address.port).connect(
                Factory.forProtocol(Protocol))
