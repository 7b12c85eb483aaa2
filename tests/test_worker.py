"""
Tests for what a worker process starts with: its command line
(L{tmta.common.contract}) and what the fork server prepares
for it (L{tmta.master.forkserver}).
"""

import io
import subprocess
import sys
from contextlib import redirect_stderr

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO
from tmta.common.contract import (
    CONTROL_FD,
    FIRST_LISTENER_FD,
    WorkerArguments,
    parseArguments,
    workerDescriptors,
)


class ParseArgumentsTests(SynchronousTestCase):
    def test_full(self):
        """
        Every option the master writes is read back.
        """
        options = parseArguments(
            ["smtp/inet", "-c", "/etc/tmta", "--embedded", "-o", "a=1", "-o", "b=x=y",
             "--listen", "inet:4", "--listen", "unix:5"]
        )
        self.assertEqual(options.service, "smtp/inet")
        self.assertEqual(options.config, "/etc/tmta")
        self.assertTrue(options.embedded)
        self.assertEqual(options.overrides, ["a=1", "b=x=y"])
        self.assertEqual(options.listen, ["inet:4", "unix:5"])

    def test_writtenAsRead(self):
        """
        What the master writes (L{WorkerArguments.toArgv}) reads back the
        same, listeners numbered from the first listener descriptor.
        """
        arguments = WorkerArguments("smtp/inet", "/etc/tmta", embedded=True)
        arguments.overrides = ["a=1"]
        arguments.addListener("inet")
        arguments.addListener("unix")
        parsed = parseArguments(arguments.toArgv())
        self.assertEqual((parsed.service, parsed.config, parsed.embedded, parsed.overrides),
                         ("smtp/inet", "/etc/tmta", True, ["a=1"]))
        self.assertEqual([fd for fd, family in parsed.listeners()],
                         [FIRST_LISTENER_FD, FIRST_LISTENER_FD + 1])
        fds = workerDescriptors(10, 11, 12, [13, 14])
        self.assertEqual(fds.index(12), CONTROL_FD)
        self.assertEqual(fds.index(13), FIRST_LISTENER_FD)

    def test_minimal(self):
        options = parseArguments(["--config", "/c", "qmgr/unix"])
        self.assertEqual((options.service, options.config), ("qmgr/unix", "/c"))
        self.assertFalse(options.embedded)
        self.assertEqual((options.overrides, options.listen), ([], []))

    def assertUsage(self, argv, problem):
        errors = io.StringIO()
        with redirect_stderr(errors):
            with self.assertRaises(SystemExit) as raised:
                parseArguments(argv)
        self.assertEqual(raised.exception.code, 2)
        self.assertIn("usage: tmta-worker", errors.getvalue())
        self.assertIn(problem, errors.getvalue())

    def test_bad(self):
        """
        A command line the master would not write stops the worker with
        a usage message, as argparse would.
        """
        self.assertUsage(["-c", "/c"], "no service")
        self.assertUsage(["smtp/inet"], "no configuration directory")
        self.assertUsage(["smtp/inet", "-c"], "-c needs a value")
        self.assertUsage(["smtp/inet", "-c", "/c", "extra"], "unexpected argument 'extra'")
        self.assertUsage(["smtp/inet", "-c", "/c", "--verbose"], "unexpected argument '--verbose'")


class ForkServerTests(SynchronousTestCase):
    def test_interfaceDeclarationsSettled(self):
        """
        After the fork server's preload, a class that only inherits its
        interfaces already carries its own declaration, so a child does
        not compute it again.
        """
        script = (
            "import tmta.wire\n"
            "print('__implemented__' in vars(tmta.wire.ServiceAMP))\n"
            "from tmta.master.forkserver import preload\n"
            "preload()\n"
            "print('__implemented__' in vars(tmta.wire.ServiceAMP))\n"
        )
        output = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(output.split(), ["False", "True"])


class ReactorChoiceTests(SynchronousTestCase):
    """
    C{TMTA_WORKER_REACTOR}: which reactor a worker runs on.
    """

    def reactorAfter(self, name):
        script = (
            "from tmta.master.worker import installReactor\n"
            f"installReactor({name!r})\n"
            "from twisted.internet import reactor\n"
            "print(type(reactor).__name__)\n"
        )
        return subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()

    def test_default(self):
        """
        Unset, or C{direct}, installs tmta's own epoll reactor.
        """
        self.assertEqual(self.reactorAfter(""), "DirectEPollReactor")
        self.assertEqual(self.reactorAfter("direct"), "DirectEPollReactor")

    def test_epoll(self):
        """
        C{epoll} leaves Twisted's default reactor.
        """
        self.assertEqual(self.reactorAfter("epoll"), "EPollReactor")

    def test_asyncio(self):
        """
        C{asyncio} installs Twisted's asyncio reactor.
        """
        self.assertEqual(self.reactorAfter("asyncio"), "AsyncioSelectorReactor")

    def test_unknown(self):
        """
        Any other name is refused, before a reactor is installed.
        """
        from tmta.master.worker import installReactor

        self.assertRaises(ValueError, installReactor, "kqueue")


class ProfileTests(SynchronousTestCase):
    """
    C{TMTA_WORKER_PROFILE}: a worker's reactor run under cProfile.
    """

    def test_profileWritten(self):
        """
        With a directory, the run leaves C{SERVICE-PID.prof} there, a
        profile L{pstats} reads, naming what the reactor ran.
        """
        import os
        import pstats

        from tmta.master.worker import runReactor

        directory = self.mktemp()
        os.makedirs(directory)

        class Reactor:
            ran = False

            def run(self, installSignalHandlers):
                self.ran = installSignalHandlers

        reactor = Reactor()
        runReactor(reactor, directory, "127.0.0.1:25")
        self.assertTrue(reactor.ran)
        path = os.path.join(directory, f"127.0.0.1_25-{os.getpid()}.prof")
        functions = {name for _, _, name in pstats.Stats(path).stats}
        self.assertIn("run", functions)

    def test_noDirectory(self):
        """
        Without one, the reactor simply runs.
        """
        from tmta.master.worker import runReactor

        class Reactor:
            ran = False

            def run(self, installSignalHandlers):
                self.ran = True

        reactor = Reactor()
        runReactor(reactor, "", "qmgr")
        self.assertTrue(reactor.ran)
