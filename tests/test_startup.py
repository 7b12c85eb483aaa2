"""
Start-up as an operator meets it: the tmta config command, configuration
errors that stop the master, a missing mail_owner, and Debian's stock
Postfix master.cf.
"""

import io
import os
import re
import signal
import socket
import stat
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    REPO,
    Master,
    endToEnd,
    freePort,
    localMaildirs,
    maildirMessages,
    sendMessage,
    shortTemporaryDirectory,
    testAccount,
    waitFor,
)
from tests.test_config import DEBIAN_MASTER_CF
from tmta.cli.admin import showConfig
from tmta.config import loadConfiguration
from tmta.queue.layout import createLayout


def twistd(args, env=None, timeout=60):
    endToEnd()
    environ = dict(os.environ)
    environ["PYTHONPATH"] = REPO
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "tmta"] + args,
        capture_output=True, text=True, timeout=timeout, env=environ,
    )


class ConfigCommandTests(SynchronousTestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, "main.cf"), "w") as f:
            f.write("myhostname = mx.example.org\nmydestination = $myhostname, localhost\n")
        with open(os.path.join(self.directory, "master.cf"), "w") as f:
            f.write(DEBIAN_MASTER_CF)
        self.configuration = loadConfiguration(self.directory)

    def show(self, *names, **flags):
        out = io.StringIO()
        status = showConfig(self.configuration, list(names), out=out, **flags)
        return status, out.getvalue()

    def test_nonDefault(self):
        self.assertEqual(self.show(nonDefault=True),
                         (0, "mydestination = $myhostname, localhost\n"
                             "myhostname = mx.example.org\n"))

    def test_expanded(self):
        self.assertEqual(self.show("mydestination", expand=True)[1],
                         "mydestination = mx.example.org, localhost\n")

    def test_defaults(self):
        self.assertEqual(self.show("inet_interfaces", "relay_domains", defaults=True)[1],
                         "inet_interfaces = loopback-only\nrelay_domains = "
                         "${{$compatibility_level} <level {2} ? {$mydestination} : {}}\n")
        self.assertEqual(
            self.show("inet_interfaces", "relay_domains", defaults=True, expand=True)[1],
            "inet_interfaces = loopback-only\nrelay_domains =\n")

    def test_all(self):
        _, text = self.show(expand=True)
        self.assertIn("smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
                      "defer_unauth_destination\n", text)

    def test_services(self):
        _, text = self.show(services=True)
        self.assertIn("pickup     unix  n       -       y       60      1       pickup\n", text)
        self.assertIn("relay      unix  -       -       y       -       -       smtp "
                      "-o syslog_name=postfix/$service_name\n", text)

    def test_unknown(self):
        self.assertEqual(self.show("no_such_parameter")[0], 1)

    def test_mailConfigEnvironment(self):
        result = subprocess.run(
            [sys.executable, "-m", "tmta.cli.admin", "config", "-n"],
            capture_output=True, text=True, env=dict(os.environ, MAIL_CONFIG=self.directory,
                                                     PYTHONPATH=REPO),
        )
        self.assertIn("myhostname = mx.example.org", result.stdout)


class StartupErrorTests(SynchronousTestCase):
    def configDirectory(self, main, master="2525 inet n - n - - smtpd\n"):
        directory = shortTemporaryDirectory(self)
        with open(os.path.join(directory, "main.cf"), "w") as f:
            f.write(f"queue_directory = {directory}/queue\n" + main)
        with open(os.path.join(directory, "master.cf"), "w") as f:
            f.write(master)
        return directory

    def test_syntaxErrorStops(self):
        directory = self.configDirectory("good = 1\nthis line is wrong\n")
        result = twistd(["-c", directory])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{directory}/main.cf, line 3: missing '=' after",
                      result.stderr + result.stdout)

    def test_masterSyntaxErrorStops(self):
        directory = self.configDirectory("", "smtp inet n - n\n")
        result = twistd(["-c", directory])
        self.assertIn(f"{directory}/master.cf, line 1: expected at least 8 columns",
                      result.stderr + result.stdout)

    def test_missingMailOwner(self):
        if os.getuid() != 0:
            raise self.skipTest("only root changes to mail_owner")
        directory = self.configDirectory("mail_owner = no-such-account-tmta\n")
        result = twistd(["-c", directory])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("mail_owner: no account named 'no-such-account-tmta'",
                      result.stderr + result.stdout)

    def test_portInUse(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            directory = self.configDirectory("inet_protocols = ipv4\n",
                                             f"{port} inet n - n - - smtpd\n")
            result = twistd(["-c", directory])
        self.assertIn(f"cannot listen on 127.0.0.1:{port}", result.stderr + result.stdout)


    def test_unservedPortStops(self):
        """
        A master.cf inet service whose command tmta does not implement
        (Debian's qmqpd line) stops start-up, naming the line, rather than
        leaving the port unserved.
        """
        directory = self.configDirectory(
            "", "2525 inet n - n - - smtpd\n2526 inet n - n - - qmqpd\n")
        result = twistd(["-c", directory])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{directory}/master.cf, line 2: 2526/inet: command qmqpd is not "
                      "implemented", result.stderr + result.stdout)

    def test_unsafeSettingStops(self):
        directory = self.configDirectory(
            "", "2525 inet n - n - - smtpd\n  -o smtpd_sasl_auth_enable=yes\n")
        result = twistd(["-c", directory])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{directory}/master.cf, line 1: smtpd_sasl_auth_enable:",
                      result.stderr + result.stdout)

    def test_unopenableTableStops(self):
        """
        A table type tmta cannot open, anywhere in the configuration
        (here hosted domains kept in MySQL, as ISPmail-style setups do),
        stops start-up naming the file and line: hosted mail would
        otherwise be refused as relaying.
        """
        directory = self.configDirectory(
            "virtual_mailbox_domains = mysql:/nonexistent/mysql-domains.cf\n",
            "2525 inet n - n - - smtpd\n  -o transport_maps=nisplus:[alias],mail_aliases\n")
        result = twistd(["-c", directory])
        output = result.stderr + result.stdout
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{directory}/main.cf, line 2: virtual_mailbox_domains: "
                      "mysql:/nonexistent/mysql-domains.cf: [Errno 2] No such file", output)
        self.assertIn(f"{directory}/master.cf, line 1: 2525/inet: -o transport_maps: "
                      "unsupported table type 'nisplus'", output)

    def test_remoteTableWhereUnsupportedStops(self):
        """
        A table on another server where tmta would consult it on a
        daemon's only thread (here C{header_checks}) stops start-up
        rather than fail every lookup.
        """
        tables = os.path.abspath(self.mktemp())
        with open(tables, "w") as f:
            f.write("hosts = 127.0.0.1\ndbname = mail\nquery = SELECT 1 WHERE 0 = 1\n")
        directory = self.configDirectory(f"header_checks = pgsql:{tables}\n",
                                         "2525 inet n - n - - smtpd\n")
        result = twistd(["-c", directory])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"header_checks: pgsql:{tables}: a table on another server is not "
                      "supported in header_checks", result.stderr + result.stdout)

    def test_unreadableOriginStops(self):
        """
        C{myorigin = /etc/mailname} (Debian) is read from the file; a
        file that cannot be read stops start-up.
        """
        directory = self.configDirectory(f"myorigin = {os.path.abspath(self.mktemp())}\n",
                                         "2525 inet n - n - - smtpd\n")
        result = twistd(["-c", directory])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("line 2: myorigin:", result.stderr + result.stdout)


class StockMasterCfTests(SynchronousTestCase):
    def test_debianMasterCf(self):
        stock = "/etc/postfix/master.cf"
        if not os.path.exists(stock):
            raise self.skipTest("Debian's postfix package is not installed")
        port = freePort()
        with open(stock) as f:
            text = re.sub(r"^smtp(\s+inet)", rf"{port}\1", f.read(), count=1, flags=re.M)
        base = shortTemporaryDirectory(self)
        spool = os.path.join(base, "mail")
        master = Master(os.path.join(base, "conf"),
                        {"mydestination": "localhost", **localMaildirs(spool + "/")},
                        text).start()
        self.addCleanup(master.stop)
        log = master.log()
        self.assertEqual(log.count("services not implemented, skipped:"), 1)
        self.assertIn("flush/unix (flush)", log)
        for implemented in ("pickup/unix (pickup)", "showq/unix (showq)", "maildrop/unix (pipe)",
                            "virtual/unix (virtual)"):
            self.assertNotIn(implemented, log)
        self.assertEqual(log.count("chroot is not applied"), 1)
        sendMessage(port, "a@example.com", ["dora@localhost"], "stock")
        from tests.support import subjects

        waitFor(lambda: "stock" in subjects(spool), what="delivery")


class DaemonTests(SynchronousTestCase):
    def test_daemonizedAsRootDelivers(self):
        """
        Started as a daemon by root (twistd's umask 077) on a fresh queue
        directory, tmta delivers: the queue gets Postfix's modes, so the
        unprivileged services reach it.
        """
        endToEnd()
        if os.getuid() != 0:
            raise self.skipTest("starting as root needs root")
        base = shortTemporaryDirectory(self)
        os.chmod(base, 0o755)
        conf = os.path.join(base, "conf")
        os.makedirs(conf)
        port = freePort()
        spool = os.path.join(base, "mail")
        settings = {"queue_directory": os.path.join(base, "queue"), "inet_protocols": "ipv4",
                    "mail_owner": testAccount(), "myhostname": "localhost",
                    "mydestination": "localhost", **localMaildirs(spool + "/")}
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.writelines(f"{name} = {value}\n" for name, value in settings.items())
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=port))
        pidfile = os.path.join(base, "twistd.pid")
        log = os.path.join(base, "twistd.log")
        subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             f"--pidfile={pidfile}", f"--logfile={log}", "tmta", "-c", conf],
            check=True, timeout=60, cwd=base, env=dict(os.environ, PYTHONPATH=REPO))

        def stop():
            with open(pidfile) as f:
                pid = int(f.read())
            os.kill(pid, signal.SIGTERM)
            waitFor(lambda: not os.path.exists(f"/proc/{pid}"), what="the daemon's end")

        self.addCleanup(stop)
        waitFor(lambda: os.path.exists(pidfile), what="the daemon's pid file")

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        waitFor(listening, what="smtpd")
        sendMessage(port, "alice@example.com", ["bob@localhost"], "from the daemon")
        waitFor(lambda: maildirMessages(spool).get("bob"), what="delivery")
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(base, "queue")).st_mode), 0o755)


    def test_daemonRefusesAQueueItCannotUse(self):
        """
        A queue directory that cannot be used (here C{active} is a file)
        stops a daemonized start with a clear error, instead of a daemon
        whose smtpd accepts mail qmgr can never take up.
        """
        endToEnd()
        base = shortTemporaryDirectory(self)
        os.chmod(base, 0o755)
        conf = os.path.join(base, "conf")
        os.makedirs(conf)
        queue = os.path.join(base, "queue")
        createLayout(queue)
        os.rmdir(os.path.join(queue, "active"))
        with open(os.path.join(queue, "active"), "w"):
            pass
        port = freePort()
        settings = {"queue_directory": queue, "inet_protocols": "ipv4",
                    "myhostname": "localhost"}
        if os.getuid() == 0:
            settings["mail_owner"] = testAccount()
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.writelines(f"{name} = {value}\n" for name, value in settings.items())
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=port))
        pidfile = os.path.join(base, "twistd.pid")
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             f"--pidfile={pidfile}", f"--logfile={os.path.join(base, 'twistd.log')}",
             "tmta", "-c", conf],
            timeout=60, cwd=base, env=dict(os.environ, PYTHONPATH=REPO),
            capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("cannot use the queue", result.stdout + result.stderr)
        with open(os.path.join(base, "twistd.log")) as f:
            self.assertIn(f"{queue}/active: Not a directory", f.read())
        self.assertFalse(os.path.exists(pidfile))
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)


class ConfigurationDiscoveryTests(SynchronousTestCase):
    """
    Which configuration the master and the commands act on: C{-c}, then
    C{MAIL_CONFIG}, then a system installation in C{/etc/tmta}, then the
    user's own embedded default -- which only posting a message makes.
    """

    def setUp(self):
        self.system = os.path.join(self.mktemp(), "etc-tmta")
        os.makedirs(self.system)

    def install(self):
        with open(os.path.join(self.system, "main.cf"), "w") as f:
            f.write("myhostname = system.example\n")

    def test_precedence(self):
        from tmta.config.loader import findConfigDirectory

        self.assertIsNone(findConfigDirectory(None, {}, self.system))
        self.install()
        self.assertEqual(findConfigDirectory(None, {}, self.system), self.system)
        self.assertEqual(findConfigDirectory(None, {"MAIL_CONFIG": "/env"}, self.system), "/env")
        self.assertEqual(findConfigDirectory("/given", {"MAIL_CONFIG": "/env"}, self.system),
                         "/given")

    def test_commandsReadTheSystemInstallation(self):
        from tmta.config.loader import commandConfiguration

        self.install()
        configuration = commandConfiguration(None, environ={}, system=self.system)
        self.assertEqual(configuration.main.get("myhostname"), "system.example")

    def test_masterUsesItOnlyForRoot(self):
        """
        Root's master runs the system installation; an ordinary user's
        runs that user's own embedded default.
        """
        from tap.tmta import masterConfigDirectory

        self.install()
        environ = dict(os.environ)
        environ.pop("MAIL_CONFIG", None)
        self.patch(os, "environ", environ)
        self.assertEqual(masterConfigDirectory(0, self.system), self.system)
        self.assertIsNone(masterConfigDirectory(1000, self.system))

    def test_readingMakesNothing(self):
        """
        C{tmta config}, C{tmta-mailq} and C{tmta queue list} with no
        configuration anywhere say so and make no C{~/.tmta}; posting a
        message makes it, for the user's own tmta to deliver.
        """
        endToEnd()
        if os.path.exists("/etc/tmta/main.cf"):
            raise self.skipTest("a system installation is in /etc/tmta")
        home = self.mktemp()
        os.makedirs(home)
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        env.update(HOME=home, PYTHONPATH=REPO)
        mailq = "import sys; from tmta.cli.sendmail import mailq; sys.exit(mailq())"
        for command in (["-m", "tmta.cli.admin", "config", "mail_owner"],
                        ["-m", "tmta.cli.admin", "queue", "list"], ["-c", mailq]):
            result = subprocess.run([sys.executable] + command, capture_output=True, text=True,
                                    env=env, timeout=60)
            self.assertNotEqual(result.returncode, 0, command)
            self.assertIn("no configuration", result.stderr, command)
            self.assertFalse(os.path.exists(os.path.join(home, ".tmta")), command)
        result = subprocess.run(
            [sys.executable, "-c",
             "import sys; from tmta.cli.sendmail import main; sys.exit(main())", "bob@localhost"],
            input="Subject: x\n\nbody\n", capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(os.listdir(os.path.join(home, ".tmta", "queue", "maildrop"))), 1)
