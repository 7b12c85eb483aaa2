"""
Helpers for end-to-end tests: a real master in a temporary directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

from twisted.trial.unittest import SkipTest

from tests.support.processes import commandLine, descendants

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Set TMTA_FAST (to anything) for the fast run: the tests that start a
#: master, a private Postfix or Dovecot, or twistd skip, and the rest
#: runs in well under a minute (TMTA_FAST=1 python -m twisted.trial -j4
#: tests).
FAST = bool(os.environ.get("TMTA_FAST"))


def endToEnd() -> None:
    """
    Skip the calling test in the fast run (L{FAST}): it starts real
    processes.
    """
    if FAST:
        raise SkipTest("end to end: runs without TMTA_FAST")


#: The services every end-to-end master runs: smtpd on C{{port}}, and
#: what takes mail in and queues it.
CORE_MASTER_CF = """\
{port}      inet  n       -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
"""

#: The master.cf of most end-to-end tests: the core, and what delivers
#: into a Maildir.
MASTER_CF = CORE_MASTER_CF + """\
local     unix  -       n       n       -       -       local
discard   unix  -       -       n       -       -       discard
"""

#: A Python an ordinary account can run (.ci/run makes it), for the tests
#: of tmta run by an ordinary user.
UNPRIVILEGED_PYTHON = os.environ.get("TMTA_UNPRIVILEGED_PYTHON",
                                     "/opt/tmta-unprivileged/bin/python")


def freePort(host: str = "127.0.0.1") -> int:
    """
    A TCP port on loopback that nothing listens on right now.
    """
    return freePorts(1, host)[0]


def freePorts(count: int, host: str = "127.0.0.1") -> List[int]:
    """
    C{count} different TCP ports on loopback that nothing listens on right
    now (each is held until all are chosen: the kernel could otherwise
    hand the same free port out twice).
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            sockets.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def waitFor(
    condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05, what: str = ""
):
    """
    Poll C{condition} until it returns something true; return it.

    @raise AssertionError: it did not within C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(interval)


def shortTemporaryDirectory(testCase) -> str:
    """
    A temporary directory with a short path, removed after the test:
    UNIX socket paths are limited to 107 bytes, too few for trial's.
    """
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="tmta-")
    os.chmod(path, 0o755)
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


TEST_ACCOUNT = "tmta-test"


def testAccount() -> str:
    """
    The name of a real unprivileged account for tests run as root,
    created on first use: permission tests mean nothing otherwise.
    """
    import pwd

    try:
        pwd.getpwnam(TEST_ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             TEST_ACCOUNT],
            check=True,
        )
    return TEST_ACCOUNT


class Master:
    """
    A real C{twistd -n tmta} process on a configuration directory.
    """

    def __init__(
        self,
        directory: str,
        main: Dict[str, str],
        masterCf: str,
        extraPath: List[str] = (),
        cwd: Optional[str] = None,
    ) -> None:
        """
        @param cwd: the directory the master is started in (by default
            C{directory}).
        """
        self.directory = os.path.abspath(directory)
        self.cwd = cwd or self.directory
        os.makedirs(self.directory, exist_ok=True)
        self.queue = os.path.join(self.directory, "queue")
        settings = {"queue_directory": self.queue, "inet_protocols": "ipv4",
                    "data_directory": os.path.join(self.directory, "data")}
        if os.getuid() == 0:
            settings["mail_owner"] = testAccount()
        settings.update(main)
        with open(os.path.join(self.directory, "main.cf"), "w") as f:
            for name, value in settings.items():
                f.write(f"{name} = {value}\n")
        with open(os.path.join(self.directory, "master.cf"), "w") as f:
            f.write(masterCf)
        self.logPath = os.path.join(self.directory, "master.log")
        self.extraPath = list(extraPath)
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "Master":
        endToEnd()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            self.extraPath + [REPO] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                # As the twistd script starts: the directory it is started
                # in is not on sys.path.
                "import sys; del sys.path[0]; from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                f"--logfile={self.logPath}",
                "tmta",
                "-c",
                self.directory,
            ],
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.logPath + ".stderr", "w"),
        )
        before = self.log().count("daemon started")
        waitFor(lambda: self.log().count("daemon started") > before
                or self.process.poll() is not None,
                what="the master to start")
        if self.process.poll() is not None:
            raise AssertionError(f"master exited at start:\n{self.log()}")
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        text = ""
        for path in (self.logPath, self.logPath + ".stderr"):
            try:
                with open(path, errors="replace") as f:
                    text += f.read()
            except FileNotFoundError:
                pass
        return text

    def workers(self, name: str = "") -> List[int]:
        """
        The worker processes (not the fork server) whose command line
        contains C{name}.
        """
        return [
            p for p in descendants(self.pid)
            if name in commandLine(p) and "forkserver" not in commandLine(p)
        ]

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def stop(self, timeout: float = 30) -> None:
        """
        SIGTERM the master and wait; kill -9 whatever is left of its
        workers.
        """
        if self.process is None or self.process.poll() is not None:
            return
        workers = descendants(self.pid)
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def kill(self) -> List[int]:
        """
        kill -9 the master and every worker at once.
        """
        workers = descendants(self.pid)
        for pid in [self.pid] + workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.process.wait()
        return workers


def sendMessage(port: int, sender: str, recipients, subject: str,
                body: str = "hello\r\n", source: Optional[str] = None,
                mailOptions=(), rcptOptions=()) -> str:
    """
    Send one message with smtplib; return the queue id from the 250 reply.

    @param mailOptions: ESMTP parameters for MAIL FROM (C{RET=HDRS});
        @param rcptOptions: for every RCPT TO (C{NOTIFY=NEVER}).
    @raise smtplib.SMTPException: it was not accepted.
    """
    import smtplib

    client = smtplib.SMTP("127.0.0.1", port, timeout=30,
                          source_address=(source, 0) if source else None)
    try:
        client.ehlo("test.example")
        code, text = client.mail(sender, list(mailOptions))
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, sender)
        for r in recipients:
            code, text = client.rcpt(r, list(rcptOptions))
            if code != 250:
                raise smtplib.SMTPRecipientsRefused({r: (code, text)})
        code, text = client.data(f"Subject: {subject}\r\n\r\n{body}".encode())
        if code != 250:
            raise smtplib.SMTPDataError(code, text)
        return text.decode().rsplit(" ", 1)[-1]
    finally:
        try:
            client.quit()
        except Exception:
            client.close()


def maildirMessages(spool: str) -> Dict[str, List[bytes]]:
    """
    Every message in the Maildirs under C{spool}, by mailbox name.
    """
    found: Dict[str, List[bytes]] = {}
    if not os.path.isdir(spool):
        return found
    for name in os.listdir(spool):
        new = os.path.join(spool, name, "new")
        if os.path.isdir(new):
            for entry in os.listdir(new):
                with open(os.path.join(new, entry), "rb") as f:
                    found.setdefault(name, []).append(f.read())
    return found


def subjects(spool: str) -> List[str]:
    """
    The Subject of every message delivered under C{spool}.
    """
    import re

    out = []
    for messages in maildirMessages(spool).values():
        for text in messages:
            match = re.search(rb"^Subject: (.*)$", text, re.M)
            if match:
                out.append(match.group(1).decode())
    return out


def smallFilesystem(testCase, size: str = "512k") -> str:
    """
    A directory on a tmpfs of its own of C{size}, unmounted after the
    test, so that a test can really fill a disk.  Skips the test where
    mounting is not allowed (not root, no mount namespace rights).
    """
    import subprocess

    from twisted.trial.unittest import SkipTest

    path = shortTemporaryDirectory(testCase)
    if os.geteuid() != 0:
        raise SkipTest("mounting a small file system needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                             "tmta-test", path], capture_output=True)
    if result.returncode != 0:
        raise SkipTest(f"cannot mount a tmpfs: {result.stderr.decode(errors='replace')}")
    testCase.addCleanup(subprocess.run, ["umount", "-l", path], capture_output=True)
    return path


def fillFilesystem(path: str) -> None:
    """
    Fill the file system C{path} is on until not one more byte fits.
    """
    with open(os.path.join(path, "filler"), "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)  # unbuffered: a short write, then ENOSPC
        except OSError:
            pass


def resolveOnLoopback(directory: str) -> None:
    """
    In a private mount and network namespace (C{unshare -mn}): bring up
    its loopback and point this namespace's /etc/resolv.conf (a copy in
    C{directory}, bind-mounted) at a DNS server on 127.0.0.1, as the
    test then starts one.
    """
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    resolv = os.path.join(directory, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--bind", resolv, "/etc/resolv.conf"], check=True)


def loopbackResolver(testCase, zone: str, timeout: float = 2):
    """
    A twisted.names resolver asking a twisted.names server, in this
    process, on a loopback port, that serves C{zone} (twisted.names'
    Python zone syntax); the server stops when C{testCase} ends.
    """
    from twisted.internet import reactor
    from twisted.names import authority, client, dns, server

    path = os.path.abspath(testCase.mktemp() + ".zone")
    with open(path, "w") as f:
        f.write(zone)
    factory = server.DNSServerFactory(authorities=[authority.PySourceAuthority(path)])
    udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    testCase.addCleanup(udp.stopListening)
    resolver = client.Resolver(servers=[("127.0.0.1", udp.getHost().port)], reactor=reactor)
    resolver.timeout = (timeout,)
    return resolver


def serveZoneOnLoopback(directory: str, zone: str) -> subprocess.Popen:
    """
    In a private namespace (L{resolveOnLoopback}): point resolv.conf at
    127.0.0.1 and serve C{zone} (twisted.names' Python zone syntax) there
    on port 53 with twistd's DNS server, as the system's resolver and
    every program that reads resolv.conf then ask it.

    @return: the server's process; stop it with L{stopProcess}.
    """
    resolveOnLoopback(directory)
    path = os.path.join(directory, "zone.py")
    with open(path, "w") as f:
        f.write(zone)
    process = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "--logfile=" + os.path.join(directory, "dns.log"), "dns",
         "--pyzone", path, "-i", "127.0.0.1", "-p", "53"])
    waitFor(lambda: "DNSDatagramProtocol starting on 53" in open(
        os.path.join(directory, "dns.log")).read() if os.path.exists(
        os.path.join(directory, "dns.log")) else False, what="the DNS server")
    return process


def privatePostfixMasterCf(port: int, leaveOut: Tuple[str, ...] = ()) -> str:
    """
    Debian's stock Postfix master.cf for a private instance: smtpd on a
    loopback port, nothing chrooted, the services in C{leaveOut} left
    out.
    """
    lines = []
    with open("/etc/postfix/master.cf") as f:
        for line in f:
            words = line.split()
            if len(words) >= 8 and not line[0].isspace() and not line.startswith("#"):
                if words[0] in leaveOut:
                    continue
                if words[0] == "smtp" and words[1] == "inet":
                    words[0] = f"127.0.0.1:{port}"
                words[4] = "n"
                line = " ".join(words) + "\n"
            lines.append(line)
    return "".join(lines)


class PrivatePostfix:
    """
    A private Postfix instance (Debian's package) on a loopback port,
    receiving mail for C{domain} into one Maildir with virtual(8): a real
    peer for tmta's smtp client.  Needs root and Postfix.
    """

    def __init__(self, base: str, domain: str, main: Optional[Dict[str, str]] = None) -> None:
        import pwd
        import shutil as _shutil

        from twisted.trial.unittest import SkipTest

        if os.geteuid() != 0 or not _shutil.which("postfix"):
            raise SkipTest("a private Postfix needs root and Debian's postfix package")
        self.base = base
        self.port = freePort()
        self.conf = os.path.join(base, "conf")
        for sub in ("conf", "queue", "data", "mail"):
            os.makedirs(os.path.join(base, sub))
        account = pwd.getpwnam("postfix")
        for sub in ("data", "mail"):
            os.chown(os.path.join(base, sub), account.pw_uid, account.pw_gid)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(privatePostfixMasterCf(self.port))
        self.maildir = os.path.join(base, "mail", "box", "new")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": os.path.join(base, "queue"),
            "data_directory": os.path.join(base, "data"),
            "mail_owner": "postfix", "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "myhostname": f"mx.{domain}", "mydestination": "",
            "alias_maps": "", "alias_database": "",
            "virtual_mailbox_domains": domain,
            "virtual_mailbox_base": os.path.join(base, "mail"),
            "virtual_mailbox_maps": "static:box/",
            "virtual_uid_maps": f"static:{account.pw_uid}",
            "virtual_gid_maps": f"static:{account.pw_gid}",
            "maillog_file": os.path.join(base, "maillog"),
            "maillog_file_prefixes": base,
        }
        settings.update(main or {})
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            for name, value in settings.items():
                f.write(f"{name} = {value}\n")

    def _postfix(self, *args: str) -> None:
        subprocess.run(["postfix", "-c", self.conf, *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> "PrivatePostfix":
        endToEnd()
        self._postfix("start")
        waitFor(lambda: _accepts(self.port), what="Postfix to listen")
        return self

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", self.conf, "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def messages(self) -> List[bytes]:
        found = []
        if os.path.isdir(self.maildir):
            for name in os.listdir(self.maildir):
                with open(os.path.join(self.maildir, name), "rb") as f:
                    found.append(f.read())
        return found


def stopProcess(process: subprocess.Popen, grace: float = 30) -> None:
    """
    SIGTERM a process the test started (by its pid), and SIGKILL it
    after C{grace} seconds.
    """
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PrivateDovecot:
    """
    A private Dovecot (Debian's dovecot-core) serving only its
    authentication service, on a UNIX socket under C{base}, with the
    users of a passwd-file: a real peer for C{smtpd_sasl_type = dovecot}.
    Needs root and Dovecot.
    """

    def __init__(self, base: str, users: Dict[str, str]) -> None:
        import shutil as _shutil

        from twisted.trial.unittest import SkipTest

        if os.geteuid() != 0 or not _shutil.which("dovecot"):
            raise SkipTest("a private Dovecot needs root and Debian's dovecot-core package")
        self.base = base
        os.makedirs(os.path.join(base, "run"), exist_ok=True)
        self.socket = os.path.join(base, "auth")
        self.config = os.path.join(base, "dovecot.conf")
        self.logPath = os.path.join(base, "dovecot.log")
        with open(os.path.join(base, "users"), "w") as f:
            for name, password in users.items():
                f.write(f"{name}:{{PLAIN}}{password}\n")
        with open(self.config, "w") as f:
            f.write(f"""\
base_dir = {base}/run
state_dir = {base}/state
log_path = {self.logPath}
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener {self.socket} {{
    mode = 0666
  }}
}}
service anvil {{
  chroot =
}}
""")
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> "PrivateDovecot":
        endToEnd()
        self.process = subprocess.Popen(["dovecot", "-F", "-c", self.config],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        waitFor(lambda: os.path.exists(self.socket) or self.process.poll() is not None,
                what="Dovecot's auth socket")
        if self.process.poll() is not None:
            raise AssertionError(f"Dovecot exited at start: {self.log()}")
        return self

    def log(self) -> str:
        try:
            with open(self.logPath, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stopProcess(self.process)


def accepting(port: int) -> bool:
    """
    Whether something accepts TCP connections on C{port} of 127.0.0.1.
    """
    return _accepts(port)


def inThread(f, *args, timeout: float = 60):
    """
    C{f(*args)} in a thread of its own, its result returned and its
    exception raised here: tables on other servers refuse the reactor's
    thread, which trial registers as the test's.
    """
    import threading

    outcome: List = []

    def run():
        try:
            outcome.append((True, f(*args)))
        except BaseException as e:
            outcome.append((False, e))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def settled(path: str) -> None:
    """
    Date a file a minute back: Postfix waits for a configuration file
    written within the last second to settle before it reads it.
    """
    past = time.time() - 60
    os.utime(path, (past, past))


def _accepts(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class TestCA:
    """
    A certificate authority made for a test, with server certificates
    it signs: PEM files in C{directory}.

    @ivar caFile: the CA's certificate.
    """

    def __init__(self, directory: str) -> None:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ec = x509, hashes, ec
        self._serialization, self._NameOID = serialization, NameOID
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._now = datetime.datetime.now(datetime.timezone.utc)
        self._day = datetime.timedelta(days=1)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tmta test CA")])
        self._name = name
        self._cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self._now - self._day).not_valid_after(self._now + self._day)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256()))
        self.caFile = os.path.join(directory, "ca.pem")
        with open(self.caFile, "wb") as f:
            f.write(self._cert.public_bytes(serialization.Encoding.PEM))

    def server(self, *names: str) -> Tuple[str, str]:
        """
        A server certificate for C{names} (DNS names, the first also the
        common name), signed by this CA.

        @return: the paths of the certificate (with the CA's after it)
            and of the key.
        """
        x509, NameOID = self._x509, self._NameOID
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - self._day).not_valid_after(self._now + self._day)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(self._key, self._hashes.SHA256()))
        encoding = self._serialization.Encoding.PEM
        certFile = os.path.join(self.directory, f"{names[0]}.pem")
        keyFile = os.path.join(self.directory, f"{names[0]}.key")
        with open(certFile, "wb") as f:
            f.write(cert.public_bytes(encoding) + self._cert.public_bytes(encoding))
        with open(keyFile, "wb") as f:
            f.write(key.private_bytes(encoding, self._serialization.PrivateFormat.PKCS8,
                                      self._serialization.NoEncryption()))
        os.chmod(keyFile, 0o600)
        return certFile, keyFile

    def certificate(self, *names: str):
        """
        A pyOpenSSL X509 certificate for C{names}, signed by this CA.
        """
        from OpenSSL import crypto

        certFile, _ = self.server(*names)
        with open(certFile, "rb") as f:
            return crypto.load_certificate(crypto.FILETYPE_PEM, f.read())


def activeRequest(store, recipients, content: bytes, nexthop: str,
                  sender: str = "alice@example.com", attributes: Optional[Dict[str, str]] = None):
    """
    Queue a message as cleanup would, move it to the active queue as qmgr
    would, and return the L{tmta.delivery.DeliveryRequest} an agent gets
    for all of its recipients (arrival and activation at 1000.0).
    """
    from tmta.delivery import DeliveryRequest, RequestRecipient

    queueId, writer = store.create("incoming")
    writer.envelope(1000.0, sender, attributes or {})
    for r in recipients:
        writer.recipient(r)
    writer.content(content)
    writer.commit()
    store.move(queueId, "incoming", "active")
    env = store.readEnvelope("active", queueId)
    return DeliveryRequest(
        queueId, store.path("active", queueId), env.sender, nexthop,
        [RequestRecipient(r.address, r.original, r.offset) for r in env.recipients],
        1000.0, 1000.0)


class FsyncRecorder:
    """
    Records which files are fsynced, by path, in order.
    """

    def __init__(self):
        self.paths = []

    def __call__(self, fd):
        self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)


def localMaildirs(spool: str) -> Dict[str, str]:
    """
    main.cf settings under which local(8) needs no system accounts: mail
    for any name at a local domain goes into a Maildir of that name
    under C{spool} (which ends in C{/}), written as C{mail_owner}.
    """
    return {"local_recipient_maps": "", "local_mailbox_accounts": "none",
            "mail_spool_directory": spool}


def dumpedMessages(directory: str) -> List[bytes]:
    """
    The messages smtp-sink has written out whole to C{directory} (it
    makes each file before it writes it).
    """
    texts = []
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            text = f.read()
        if text.endswith(b"\n"):
            texts.append(text)
    return texts


class SmtpSink:
    """
    Postfix's smtp-sink on a loopback port, writing each message it
    takes to a file of its own (with C{X-Rcpt-Args: <address>} lines for
    its recipients): a real SMTP (or, with C{lmtp}, LMTP) peer to deliver to.
    """

    def __init__(self, testCase, base: str, lmtp: bool = False) -> None:
        import shutil as _shutil

        from twisted.trial.unittest import SkipTest

        if _shutil.which("smtp-sink") is None:
            raise SkipTest("Debian's postfix package (smtp-sink) is not installed")
        self.dumps = os.path.join(base, "lmtp-dumps" if lmtp else "smtp-dumps")
        os.makedirs(self.dumps)
        os.chmod(self.dumps, 0o777)
        self.port = freePort()
        self.process = subprocess.Popen(
            ["smtp-sink", *(["-L"] if lmtp else []), "-u", "nobody",
             "-d", os.path.join(self.dumps, "%M."), f"127.0.0.1:{self.port}", "20"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        testCase.addCleanup(stopProcess, self.process)
        waitFor(lambda: _accepts(self.port), what="smtp-sink to listen")

    def messages(self) -> List[bytes]:
        return dumpedMessages(self.dumps)

    def recipients(self) -> List[str]:
        """
        Every recipient of every message taken, sorted.
        """
        import re

        return sorted(address.decode() for text in self.messages()
                      for address in re.findall(rb"^X-Rcpt-Args: <([^>]*)>", text, re.M))
