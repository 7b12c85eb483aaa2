"""
The servers a benchmark runs, each as a private instance on loopback in
a directory of its own: tmta (L{Tmta}), Postfix (L{Postfix}), smtp-sink
to relay to (L{Sink}), and OpenDKIM as the milter both may sign with
(L{OpenDKIM}).
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional

from load import countMaildir, waitPort
from repo import REPO

from tests.support import freePort
from tests.support.processes import descendants, processName

_DELAY = re.compile(r"\bdelay=([0-9.]+(?:e-?[0-9]+)?)")


def interpreter(python: str) -> str:
    """
    What C{python} is, for the report: its path, implementation and
    version.  The same code costs markedly different CPU on different
    builds of one Python version (see docs/performance.rst), so
    tmta's figures name the interpreter they were measured on.
    """
    try:
        version = subprocess.run(
            [python, "-c", "import platform; print(platform.python_implementation(), "
                           "platform.python_version())"],
            capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        version = "unknown version"
    return f"{python} ({version})"


class OpenDKIM:
    """
    A private OpenDKIM on loopback that signs mail from example.com (the
    load's sender domain) with a key of its own: the milter that
    C{--milter} puts on each server's smtpd, the same one for both.
    """

    def __init__(self, base: str) -> None:
        self.base = os.path.join(base, "opendkim")
        os.makedirs(self.base)
        subprocess.run(["opendkim-genkey", "-D", self.base, "-d", "example.com", "-s", "bench"],
                       check=True)
        self.port = freePort()
        self.conf = os.path.join(self.base, "opendkim.conf")
        with open(self.conf, "w") as f:
            f.write(f"Socket inet:{self.port}@127.0.0.1\nBackground no\nSyslog no\n"
                    "RequireSafeKeys no\nCanonicalization relaxed/simple\n"
                    f"PidFile {self.base}/opendkim.pid\nMode s\nDomain example.com\n"
                    f"Selector bench\nKeyFile {self.base}/bench.private\n"
                    "InternalHosts 127.0.0.1\n")
        self.process: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(["opendkim", "-f", "-x", self.conf],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # A milter says nothing until spoken to: a connection is enough.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"OpenDKIM does not listen on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


class MailboxDatabase:
    """
    A private PostgreSQL holding the benchmark's mailbox (and a thousand
    others), and the pgsql_table(5) file both servers read it with
    through C{proxy:}: C{--pgsql}.
    """

    def __init__(self, base: str) -> None:
        from tests.support.databases import PrivatePostgreSQL

        class _Owner:
            def addCleanup(self, *args) -> None:
                pass

        self.server = PrivatePostgreSQL(_Owner())
        self.config = os.path.join(base, "mailboxes.cf")

    def start(self) -> None:
        self.server.start()
        rows = ",".join(f"('user{n}@localhost', 'user{n}/')" for n in range(1000))
        self.server.createMailDatabase(
            "CREATE TABLE mailboxes (email VARCHAR(100) PRIMARY KEY, maildir VARCHAR(100));\n"
            f"INSERT INTO mailboxes VALUES ('bench@localhost', 'bench/'), {rows};\n")
        with open(self.config, "w") as f:
            f.write(f"hosts = 127.0.0.1:{self.server.port}\nuser = mailuser\n"
                    "password = secret\ndbname = mail\n"
                    "query = SELECT maildir FROM mailboxes WHERE email='%s'\n")
        os.chmod(self.config, 0o644)
        # Postfix waits for a table file written in the last second.
        os.utime(self.config, (time.time() - 60, time.time() - 60))

    @property
    def table(self) -> str:
        return f"proxy:pgsql:{self.config}"

    def stop(self) -> None:
        self.server.stop()
        import shutil

        shutil.rmtree(self.server.base, ignore_errors=True)


def milterSettings(milter: Optional[OpenDKIM]) -> str:
    """
    main.cf lines putting C{milter} on smtpd, the same for both servers.
    """
    if milter is None:
        return ""
    return f"smtpd_milters = {milter.address}\nmilter_default_action = tempfail\n"


class Sink:
    """
    Postfix's smtp-sink on loopback, keeping each message it receives as
    a file, so that relayed mail can be counted as it arrives.
    """

    def __init__(self, base: str, listening: bool = True) -> None:
        """
        @param listening: start listening now; otherwise its port is
            chosen (and refuses connections) until L{listen}.
        """
        self.port = freePort()
        self.dumps = os.path.join(base, "sink")
        os.makedirs(self.dumps)
        os.chmod(self.dumps, 0o777)
        self.process: Optional[subprocess.Popen] = None
        if listening:
            self.listen()

    def listen(self) -> None:
        self.process = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-d", os.path.join(self.dumps, "%M."),
             f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waitPort(self.port)

    def count(self) -> int:
        return len(os.listdir(self.dumps))

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)


class Server:
    name = ""
    maildir = ""
    root = 0
    sink: Optional[Sink] = None
    #: The server's mail log, with Postfix's C{delay=} on delivery lines.
    maillog = ""

    def delays(self) -> List[float]:
        """
        Each delivery's C{delay=}, from the mail log, in order: the time
        from the message's arrival to its delivery, which both servers
        log alike.
        """
        found = []
        try:
            with open(self.maillog, errors="replace") as f:
                for line in f:
                    if "status=sent" in line:
                        match = _DELAY.search(line)
                        if match:
                            found.append(float(match.group(1)))
        except OSError:
            pass
        return found

    def delivered(self) -> int:
        """
        How many messages have arrived where they go: the Maildir, or
        the sink when relaying.
        """
        return self.sink.count() if self.sink is not None else countMaildir(self.maildir)

    def sendmail(self) -> List[str]:
        """
        The command that posts one message (recipients follow).
        """
        raise NotImplementedError

    def sendmailEnvironment(self) -> Optional[Dict[str, str]]:
        return None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def resident(self) -> Dict[str, int]:
        raise NotImplementedError


class Tmta(Server):
    name = "tmta"

    def __init__(self, base: str, sink: Optional[Sink] = None,
                 certificate: Optional[str] = None, repo: str = REPO,
                 label: str = "tmta", python: str = sys.executable,
                 milter: Optional[OpenDKIM] = None,
                 mailboxes: Optional[MailboxDatabase] = None,
                 signWith: Optional[OpenDKIM] = None) -> None:
        """
        @param repo: the checkout whose code runs (C{--baseline}: an
            earlier commit's, to compare with).
        @param signWith: sign every message itself (C{--dkim}), with
            this OpenDKIM's key, domain and selector.
        @param label: the name of its directory under C{base}.
        @param python: the interpreter it runs on (C{--python}).
        @param mailboxes: deliver with virtual, the mailbox found in
            this database through proxymap (C{--pgsql}), rather than
            with local.
        """
        self.python = python
        self.sink = sink
        self.repo = repo
        self.base = os.path.join(base, label)
        self.port = freePort()
        conf = os.path.join(self.base, "conf")
        os.makedirs(conf)
        owner = "nobody"
        if os.getuid() == 0:
            for candidate in ("postfix", "nobody"):
                try:
                    pwd.getpwnam(candidate)
                    owner = candidate
                    break
                except KeyError:
                    continue
        else:
            owner = pwd.getpwuid(os.getuid()).pw_name
        with open(os.path.join(conf, "main.cf"), "w") as f:
            f.write(
                f"queue_directory = {self.base}/queue\n"
                f"mail_owner = {owner}\n"
                "mydestination = localhost\n"
                "local_recipient_maps =\n"
                "local_mailbox_accounts = none\n"
                f"mail_spool_directory = {self.base}/mail/\n"
                "inet_protocols = ipv4\n"
                + (f"relayhost = [127.0.0.1]:{sink.port}\n" if sink else "")
                + tlsSettings(certificate)
                + milterSettings(milter)
                + (self._virtual(mailboxes, owner) if mailboxes else "")
                + (f"dkim_signing_table = static:bench\ndkim_key_table = "
                   f"static:example.com:bench:{signWith.base}/bench.private\n"
                   "dkim_canonicalization = relaxed/simple\n" if signWith else "")
            )
        with open(os.path.join(conf, "master.cf"), "w") as f:
            f.write(
                f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
                "cleanup unix n - n - 0 cleanup\n"
                "qmgr unix n - n 300 1 qmgr\n"
                "rewrite unix - - n - - trivial-rewrite\n"
                "bounce unix - - n - 0 bounce\n"
                "local unix - n n - - local\n"
                "smtp unix - - n - - smtp\n"
                "relay unix - - n - - smtp\n"
                "pickup unix n - n 60 1 pickup\n"
                + ("virtual unix - n n - - virtual\nproxymap unix - - n - - proxymap\n"
                   "retry unix - - n - - error\n" if mailboxes else "")
            )
        self.conf = conf
        self.maildir = os.path.join(self.base, "mail", "bench", "new")
        self.maillog = os.path.join(self.base, "tmta.log")
        self.process: Optional[subprocess.Popen] = None

    def _virtual(self, mailboxes: MailboxDatabase, owner: str) -> str:
        account = pwd.getpwnam(owner)
        mail = os.path.join(self.base, "mail")
        os.makedirs(mail)
        os.chown(mail, account.pw_uid, account.pw_gid)
        return ("mydestination =\nvirtual_mailbox_domains = localhost\n"
                f"virtual_mailbox_base = {mail}\n"
                f"virtual_mailbox_maps = {mailboxes.table}\n"
                f"virtual_uid_maps = static:{account.pw_uid}\n"
                f"virtual_gid_maps = static:{account.pw_gid}\nvirtual_minimum_uid = 1\n")

    def sendmail(self) -> List[str]:
        return [self.python, "-c",
                "import sys; del sys.path[0]; from tmta.cli.sendmail import main; sys.exit(main())",
                "-C", self.conf, "-i"]

    def sendmailEnvironment(self) -> Optional[Dict[str, str]]:
        env = dict(os.environ, PYTHONPATH=self.repo)
        # As an installed command runs: from compiled modules, not
        # compiling every module at every posting.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=self.repo)
        self.process = subprocess.Popen(
            # The code of self.repo, whatever directory this runs in: not
            # what a tmta/ there holds (-c puts the directory first on
            # sys.path), as the twistd script would start it.  Started in
            # self.repo too: a tree from before tmta's master kept its
            # start directory off its workers' sys.path (--baseline) runs
            # its own workers only from there.
            [self.python, "-c",
             "import sys; del sys.path[0]; from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", f"--logfile={self.base}/tmta.log", "tmta", "-c", self.conf],
            env=env, stdin=subprocess.DEVNULL, cwd=self.repo,
        )
        self.root = self.process.pid
        waitPort(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)

    def resident(self) -> Dict[str, int]:
        wanted = {"forkserver", "qmgr", "pickup"}
        return {"master": self.root,
                **{processName(p): p for p in descendants(self.root) if processName(p) in wanted}}


class Postfix(Server):
    """
    A private Postfix instance delivering into one Maildir, either with
    its virtual(8) agent (no accounts, up to 20 deliveries at once per
    domain) or its local(8) agent through an alias to the Maildir (as
    tmta's local does, up to 2 deliveries at once per recipient).
    """

    def __init__(self, base: str, agent: str = "virtual", sink: Optional[Sink] = None,
                 certificate: Optional[str] = None, maxUse: Optional[int] = None,
                 milter: Optional[OpenDKIM] = None,
                 mailboxes: Optional[MailboxDatabase] = None) -> None:
        """
        @param maxUse: Postfix's C{max_use}, when not its default (100):
            raised, its smtpd, cleanup and delivery processes live through
            the run, and their CPU is shown by process name rather than
            only in the total (at the cost of Postfix's process starts).
        """
        self.sink = sink
        self.name = "postfix" if agent == "virtual" else f"postfix-{agent}"
        self.base = os.path.join(base, self.name)
        self.port = freePort()
        self.conf = os.path.join(self.base, "conf")
        for sub in ("conf", "queue", "data", "mail"):
            os.makedirs(os.path.join(self.base, sub))
        account = pwd.getpwnam("postfix")
        for sub in ("data", "mail"):
            os.chown(os.path.join(self.base, sub), account.pw_uid, account.pw_gid)
        with open("/etc/postfix/master.cf") as f:
            lines = []
            for line in f:
                words = line.split()
                if len(words) >= 8 and not line[0].isspace() and not line.startswith("#"):
                    if words[0] == "smtp" and words[1] == "inet":
                        words[0] = f"127.0.0.1:{self.port}"
                    words[4] = "n"  # no chroot: the instance has no chroot tree
                    line = " ".join(words) + "\n"
                lines.append(line)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.writelines(lines)
        mail = os.path.join(self.base, "mail")
        if agent == "virtual":
            delivery = (
                "mydestination =\nalias_maps =\nalias_database =\n"
                "virtual_mailbox_domains = localhost\n"
                f"virtual_mailbox_base = {mail}\n"
                f"virtual_mailbox_maps = {mailboxes.table if mailboxes else 'static:bench/'}\n"
                f"virtual_uid_maps = static:{account.pw_uid}\n"
                f"virtual_gid_maps = static:{account.pw_gid}\n"
            )
        else:
            # local(8) writes to a file or Maildir named by an alias as
            # default_privs (nobody).
            nobody = pwd.getpwnam("nobody")
            os.makedirs(os.path.join(mail, "bench"))
            os.chown(os.path.join(mail, "bench"), nobody.pw_uid, nobody.pw_gid)
            delivery = (
                "mydestination = localhost\nlocal_recipient_maps =\nalias_database =\n"
                f"alias_maps = inline:{{ bench={mail}/bench/ }}\n"
            )
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(
                "compatibility_level = 3.6\n"
                f"queue_directory = {self.base}/queue\n"
                f"data_directory = {self.base}/data\n"
                "mail_owner = postfix\nsetgid_group = postdrop\n"
                "inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\n"
                "myhostname = bench.localdomain\n"
                + delivery
                + (f"relayhost = [127.0.0.1]:{sink.port}\n" if sink else "")
                + f"maillog_file = {self.base}/maillog\nmaillog_file_prefixes = {self.base}\n"
                + tlsSettings(certificate)
                + milterSettings(milter)
                + (f"max_use = {maxUse}\n" if maxUse else "")
            )
        self.maildir = os.path.join(mail, "bench", "new")
        self.maillog = os.path.join(self.base, "maillog")

    def sendmail(self) -> List[str]:
        return ["sendmail", "-C", self.conf, "-i"]

    def _postfix(self, *args: str) -> None:
        subprocess.run(["postfix", "-c", self.conf, *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        self._postfix("start")
        with open(os.path.join(self.base, "queue", "pid", "master.pid")) as f:
            self.root = int(f.read().split()[0])
        waitPort(self.port)

    def stop(self) -> None:
        self._postfix("stop")

    def resident(self) -> Dict[str, int]:
        wanted = {"qmgr", "pickup"}
        return {"master": self.root,
                **{processName(p): p for p in descendants(self.root) if processName(p) in wanted}}


def tlsSettings(certificate: Optional[str]) -> str:
    """
    main.cf lines offering STARTTLS with C{certificate} (key and
    certificate in one file), the same for both servers.
    """
    if certificate is None:
        return ""
    return (f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {certificate}\n"
            f"smtpd_tls_key_file = {certificate}\n")
