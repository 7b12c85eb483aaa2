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

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    REPO,
    freePort,
    freePorts,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    stopProcess,
    testAccount,
    waitFor,
)


class TacRunner:
    """
    C{twistd -ny FILE} in a test's directory, stopped by its pid.
    """

    def __init__(self, testCase, tac: str, env: dict) -> None:
        self.directory = shortTemporaryDirectory(testCase)
        self.log = os.path.join(self.directory, "twistd.log")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-ny", tac,
             "--pidfile=", f"--logfile={self.log}"],
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
}}, smtpd="127.0.0.1:{port}", processes=True).setServiceParent(application)
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
