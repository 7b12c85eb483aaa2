#!/usr/bin/env python3
"""
Load tmta -- and, when it is installed, private Postfix instances -- with
the same SMTP load on loopback, and print for each: accepted messages per
second, end-to-end messages per second (until every message is in the
Maildir), CPU-milliseconds per message over all of the server's
processes, and the memory of the resident processes at idle.

Postfix runs twice per round: delivering with virtual(8), and with
local(8) through an alias to the Maildir, the agent that does tmta
local's job (with the same concurrency limit, 2 per recipient).  The
servers take turns for several rounds and the medians are compared: on
this project's machines one run can differ from the next by a third.

    python bench/run.py                     # 2000 messages, 20 sessions, 2000 bytes, 5 rounds
    python bench/run.py -m 5000 -s 50 -l 10000 --no-postfix --rounds 1
    python bench/run.py --relay             # relayed through relayhost to smtp-sink
    python bench/run.py --sendmail          # posted by tmta-sendmail / Postfix's sendmail
    python bench/run.py --starttls          # every session says STARTTLS first
    python bench/run.py --all               # every tracked load, one after another
    python bench/run.py --reactor uvloop    # tmta's workers on asyncio's reactor over uvloop
    python bench/run.py --profile DIR       # cProfile each tmta worker; bench/profiles.py DIR
    python bench/run.py --baseline TREE     # and tmta as another checkout has it
    python bench/run.py --scratch /dev/shm  # queues and mailboxes on tmpfs: no disk
    python bench/run.py --journalled        # on a fresh journalled ext4 (as root)
    python bench/run.py --python PATH       # tmta on another interpreter (a PyPy venv's)

The load comes from Postfix's smtp-source (one connection per message)
when it is installed, else (and with --starttls, which smtp-source cannot
do) from a small asyncio client bundled here;
with --sendmail, from a loop running each server's sendmail command once
per message (--sessions loops at once), timed until all are delivered.
Everything listens on 127.0.0.1 only.  Servers are started in a fresh
temporary directory and stopped (by their own pid) afterwards; what they
wrote is deleted only at the end, each run's directory is placed away
from the others' where the file system allows (C{chattr +T}), and each
run first waits until the disk creates files at its usual cost
(C{--quiet-disk}).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_DELAY = re.compile(r"\bdelay=([0-9.]+(?:e-?[0-9]+)?)")


def percentile(values: List[float], fraction: float) -> float:
    """
    The value below which C{fraction} of C{values} lie (nearest rank).
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fileCreationCost(directory: str, count: int = 200) -> float:
    """
    CPU-microseconds this process spends creating, writing and closing
    one small file in C{directory} (a new one, kept: deleting the probe
    files would disturb what is probed).
    """
    os.makedirs(directory)
    started = time.process_time()
    for i in range(count):
        fd = os.open(os.path.join(directory, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x" * 2048)
        os.close(fd)
    return (time.process_time() - started) / count * 1e6


def spreadSubdirectories(path: str) -> None:
    """
    Mark C{path} as the top of unrelated hierarchies (C{chattr +T}, with
    tmta's own L{markTopDirectory}), so that ext2/3/4 put each directory
    made in it in a block group of its own choosing.  Each run's files
    then start in a group of their own, away from the other runs' (a
    group that a previous bench's clean-up has just emptied can still be
    chosen: its freed inodes are then searched past; see
    L{markTopDirectory}).  Nothing where the file system has no such
    flag.
    """
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from tmta.queue.layout import markTopDirectory

    markTopDirectory(path)


def waitForQuietDisk(base: str, limit: float, patience: float) -> float:
    """
    Wait until creating a file costs less than C{limit} CPU-microseconds,
    for at most C{patience} seconds; return the last cost measured.

    On ext4 without a journal, mounted with C{discard}, creating a file
    right after many were deleted costs ten to twenty times its usual
    CPU for a minute or more.  A server measured then pays for the
    previous run's clean-up, so every run waits for the disk first.
    """
    deadline = time.monotonic() + patience
    probes = os.path.join(base, "probes")
    os.makedirs(probes, exist_ok=True)
    number = len(os.listdir(probes))
    while True:
        cost = fileCreationCost(os.path.join(probes, str(number)))
        number += 1
        if cost < limit or time.monotonic() > deadline:
            return cost
        time.sleep(5)


def waitPort(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as s:
                s.recv(100)
                s.sendall(b"QUIT\r\n")
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def interpreter(python: str) -> str:
    """
    What C{python} is, for the report: its path, implementation and
    version.  The same code costs markedly different CPU on different
    builds of one Python version (see the README's "What costs"), so
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


def descendants(pid: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cpuFields(pid: int) -> List[int]:
    """
    A process's utime, stime, cutime and cstime, in clock ticks; zeros if
    it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]
    except OSError:
        return [0, 0, 0, 0]


def cpuTimes(pid: int) -> tuple:
    """
    (own, reaped children's) CPU seconds of a process; zeros if it is gone.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    fields = _cpuFields(pid)
    return (fields[0] + fields[1]) / ticks, (fields[2] + fields[3]) / ticks


def cpuSeconds(pids: List[int]) -> float:
    """
    CPU time of these processes and of their children already reaped:
    summed over a whole process tree, nothing is counted twice.
    """
    return sum(sum(cpuTimes(pid)) for pid in pids)


def userSystem(pid: int) -> tuple:
    """
    (user, system) CPU seconds of a process itself; zeros if it is gone.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    fields = _cpuFields(pid)
    return fields[0] / ticks, fields[1] / ticks


def cpuByName(pids: List[int]) -> Dict[str, tuple]:
    """
    (user, system) CPU seconds of each live process (its own, not its
    children's), summed by process name.
    """
    out: Dict[str, tuple] = {}
    for pid in pids:
        name = processName(pid)
        user, system = userSystem(pid)
        before = out.get(name, (0.0, 0.0))
        out[name] = (before[0] + user, before[1] + system)
    return out


def memory(pid: int) -> tuple:
    """
    (RSS, PSS) in MB.
    """
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss / 1024, pss / 1024


def processName(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def countMaildir(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return 0


async def _session(port: int, sender: str, recipient: str, body: bytes,
                   tls: Optional[ssl.SSLContext] = None) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line or line[3:4] != b"-":
                return line

    try:
        await reply()
        writer.write(b"EHLO load.example\r\n")
        await reply()
        if tls is not None:
            writer.write(b"STARTTLS\r\n")
            if not (await reply()).startswith(b"220"):
                return False
            await writer.start_tls(tls, server_hostname="localhost")
            writer.write(b"EHLO load.example\r\n")
            await reply()
        writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
        for _ in range(3):
            await reply()
        writer.write(body + b".\r\n")
        ok = (await reply()).startswith(b"250")
        writer.write(b"QUIT\r\n")
        await reply()
        return ok
    finally:
        writer.close()


async def _load(port: int, messages: int, sessions: int, size: int, recipient: str,
                tls: Optional[ssl.SSLContext] = None) -> int:
    line = b"X" * 78 + b"\r\n"
    body = b"Subject: load\r\n\r\n" + line * max(1, size // len(line))
    remaining = iter(range(messages))
    accepted = 0

    async def worker():
        nonlocal accepted
        for _ in remaining:
            if await _session(port, "load@example.com", recipient, body, tls):
                accepted += 1

    await asyncio.gather(*(worker() for _ in range(sessions)))
    return accepted


def runLoad(port: int, messages: int, sessions: int, size: int, recipient: str,
            starttls: bool = False) -> str:
    """
    Send the load: with smtp-source when it is installed, else (and
    always with C{starttls}, which smtp-source cannot do) with the
    bundled asyncio client.
    """
    if starttls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        asyncio.run(_load(port, messages, sessions, size, recipient, context))
        return "bundled asyncio client with STARTTLS"
    source = shutil.which("smtp-source")
    if source:
        subprocess.run(
            [source, "-s", str(sessions), "-l", str(size), "-m", str(messages),
             "-f", "load@example.com", "-t", recipient, f"127.0.0.1:{port}"],
            check=True,
        )
        return "smtp-source"
    asyncio.run(_load(port, messages, sessions, size, recipient))
    return "bundled asyncio client"


def runSendmail(command: List[str], messages: int, sessions: int, size: int,
                recipient: str, env: Optional[Dict[str, str]] = None) -> str:
    """
    Post C{messages} by running C{command recipient} once for each, from
    C{sessions} loops at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    line = b"X" * 78 + b"\n"
    body = b"Subject: load\n\n" + line * max(1, size // len(line))

    def loop(count: int) -> None:
        for _ in range(count):
            subprocess.run(command + [recipient], input=body, check=True, env=env,
                           stdout=subprocess.DEVNULL)

    shares = [messages // sessions + (1 if i < messages % sessions else 0)
              for i in range(sessions)]
    with ThreadPoolExecutor(sessions) as pool:
        for future in [pool.submit(loop, n) for n in shares if n]:
            future.result()
    return os.path.basename(command[0])


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
                 label: str = "tmta", python: str = sys.executable) -> None:
        """
        @param repo: the checkout whose code runs (C{--baseline}: an
            earlier commit's, to compare with).
        @param label: the name of its directory under C{base}.
        @param python: the interpreter it runs on (C{--python}).
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
            )
        self.conf = conf
        self.maildir = os.path.join(self.base, "mail", "bench", "new")
        self.maillog = os.path.join(self.base, "tmta.log")
        self.process: Optional[subprocess.Popen] = None

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
                 certificate: Optional[str] = None, maxUse: Optional[int] = None) -> None:
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
                "virtual_mailbox_maps = static:bench/\n"
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


def measure(server: Server, args) -> Dict[str, float]:
    server.start()
    try:
        recipient = "bench@remote.example" if server.sink else "bench@localhost"
        runLoad(server.port, 50, 5, args.size, recipient, args.starttls)
        deadline = time.monotonic() + 60
        while server.delivered() < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        already = server.delivered()
        tree = [server.root] + descendants(server.root)
        cpu0 = cpuSeconds(tree)
        byName0 = cpuByName(tree)
        start = time.monotonic()
        if args.sendmail:
            client = runSendmail(server.sendmail(), args.messages, args.sessions, args.size,
                                 recipient, server.sendmailEnvironment())
        else:
            client = runLoad(server.port, args.messages, args.sessions, args.size, recipient,
                             args.starttls)
        accepted = time.monotonic() - start
        deadline = time.monotonic() + 600
        while server.delivered() - already < args.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name}: not all messages were delivered")
            time.sleep(0.02)
        done = time.monotonic() - start
        # The log may lag the Maildir by a moment (workers batch lines).
        deadline = time.monotonic() + 10
        while len(server.delays()) < already + args.messages and time.monotonic() < deadline:
            time.sleep(0.2)
        delays = server.delays()[-args.messages:]
        tree = [server.root] + descendants(server.root)
        cpu = cpuSeconds(tree) - cpu0
        byName = cpuByName(tree)
        split = {n: (byName[n][0] - byName0.get(n, (0.0, 0.0))[0],
                     byName[n][1] - byName0.get(n, (0.0, 0.0))[1]) for n in byName}
        time.sleep(args.idle)
        resident = server.resident()
        mem = {name: memory(pid) for name, pid in resident.items()}
        return {
            "client": client,
            "accepted": args.messages / accepted,
            "e2e": args.messages / done,
            "cpu_ms": 1000 * cpu / args.messages,
            "rss": sum(r for r, p in mem.values()),
            "pss": sum(p for r, p in mem.values()),
            "split": ", ".join(
                f"{n} {1000 * (u + k) / args.messages:.2f} ({1000 * u / args.messages:.2f}"
                f"+{1000 * k / args.messages:.2f})"
                for n, (u, k) in sorted(split.items(), key=lambda x: -sum(x[1])) if u + k > 0),
            "resident": ", ".join(f"{n} {r:.0f}/{p:.0f}" for n, (r, p) in sorted(mem.items())),
            "delay_p50": percentile(delays, 0.50),
            "delay_p99": percentile(delays, 0.99),
        }
    finally:
        server.stop()
        if server.sink is not None:
            server.sink.stop()


#: The loads of C{--all}: a title and the options that make it.
SCENARIOS = [
    ("End to end into a Maildir, 20 sessions, 2 KB", []),
    ("End to end into a Maildir, 100 sessions, 2 KB", ["-s", "100"]),
    ("End to end into a Maildir, 20 sessions, 20 KB", ["-l", "20000"]),
    ("Relayed to smtp-sink, 20 sessions, 2 KB", ["--relay"]),
]


@contextmanager
def journalledScratch(size: str = "4G") -> Iterator[str]:
    """
    Make a fresh ext4 file system with a journal (mke2fs's defaults) in a
    sparse image in the system's temporary directory, mount it through a
    loop device, and give its mount point; unmount it and remove the
    image afterwards.  Root only.

    Without a journal, ext4 looks for a free inode past every inode freed
    in the last minutes (see L{spreadSubdirectories}); a journalled ext4
    does no such search, and is what most mail hosts run on.  The loop
    device's and the journal's kernel threads are counted for neither
    server.
    """
    image = tempfile.NamedTemporaryFile(prefix="tmta-bench-", suffix=".ext4", delete=False)
    image.close()
    mountPoint = tempfile.mkdtemp(prefix="tmta-bench-fs-")
    try:
        subprocess.run(["truncate", "-s", size, image.name], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", image.name], check=True)
        subprocess.run(["mount", "-o", "loop", image.name, mountPoint], check=True)
        try:
            yield mountPoint
        finally:
            subprocess.run(["umount", mountPoint], check=False)
    finally:
        os.rmdir(mountPoint)
        os.unlink(image.name)


def runAll(args) -> int:
    """
    Run each of L{SCENARIOS} with the other options given, printing each
    one's figures under its title.
    """
    common = ["--rounds", str(args.rounds), "-m", str(args.messages),
              "--cool-down", str(args.cool_down), "--quiet-disk", str(args.quiet_disk),
              "--postfix-agents", args.postfix_agents]
    if args.no_postfix:
        common.append("--no-postfix")
    if args.baseline:
        common += ["--baseline", args.baseline]
    if args.scratch:
        common += ["--scratch", args.scratch]
    if args.journalled:
        common.append("--journalled")
    if args.python != sys.executable:
        common += ["--python", args.python]
    for title, extra in SCENARIOS:
        print(f"\n=== {title} ===", flush=True)
        subprocess.run([sys.executable, os.path.abspath(__file__), *common, *extra],
                       check=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=2000)
    parser.add_argument("-s", "--sessions", type=int, default=20)
    parser.add_argument("-l", "--size", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds to let the servers settle before measuring memory")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--cool-down", type=float, default=10.0,
                        help="seconds between runs, for the previous server's processes and "
                             "writes to settle")
    parser.add_argument("--quiet-disk", type=float, default=60.0,
                        help="before each run, wait (up to 3 minutes) until creating a small file "
                             "costs less than this many CPU-microseconds; 0 not to wait")
    parser.add_argument("--rounds", type=int, default=5,
                        help="runs of each server, taken in turn; medians are reported")
    parser.add_argument("--postfix-agents", default="virtual,local",
                        help="Postfix delivery agents to compare with, of virtual and local")
    parser.add_argument("--postfix-max-use", type=int, default=None, metavar="N",
                        help="Postfix's max_use (default: its own, 100); a large N keeps its "
                             "smtpd, cleanup and delivery processes alive through the run, so "
                             "that their CPU is shown by process, not only in the total")
    parser.add_argument("--relay", action="store_true",
                        help="relay every message through relayhost to smtp-sink on loopback "
                             "instead of delivering it locally")
    parser.add_argument("--sendmail", action="store_true",
                        help="post with each server's sendmail command instead of SMTP "
                             "(default 500 messages)")
    parser.add_argument("--starttls", action="store_true",
                        help="every session says STARTTLS (both servers offer it with the same "
                             "self-signed certificate; the load comes from the bundled client)")
    parser.add_argument("--all", action="store_true",
                        help="every load the project tracks, one after another: 20 sessions "
                             "of 2 KB messages, 100 sessions, 20 KB messages, and relaying")
    parser.add_argument("--reactor", choices=("direct", "epoll", "asyncio", "uvloop"),
                        default="direct",
                        help="the reactor tmta's workers run on (TMTA_WORKER_REACTOR): tmta's "
                             "own epoll reactor (the default), Twisted's, or Twisted's asyncio "
                             "reactor on asyncio's own loop or on uvloop")
    parser.add_argument("--baseline", metavar="TREE",
                        help="also run tmta from another checkout (such as a git worktree of "
                             "an earlier commit) as tmta-baseline, in turn with the others, and "
                             "print tmta's ratios to it")
    parser.add_argument("--python", metavar="PATH", default=sys.executable,
                        help="the interpreter tmta runs on (default: the one running the "
                             "bench), such as a PyPy virtualenv's python with tmta's "
                             "dependencies installed; tmta-baseline keeps the bench's own")
    parser.add_argument("--scratch", metavar="DIR",
                        help="where the servers' queues and mailboxes go (default: the system's "
                             "temporary directory); a tmpfs such as /dev/shm takes the disk's "
                             "fsyncs, and their noise, out of the figures")
    parser.add_argument("--journalled", action="store_true",
                        help="put the scratch directory on a fresh ext4 with a journal, in an "
                             "image mounted through a loop device (root only): the kind of "
                             "file system most mail hosts run on, where no cost depends on "
                             "which block group each server's files happen to land in")
    parser.add_argument("--profile", metavar="DIR",
                        help="run tmta's workers under cProfile (TMTA_WORKER_PROFILE), each "
                             "leaving SERVICE-PID.prof in DIR when it exits; summarise them "
                             "with bench/profiles.py DIR")
    args = parser.parse_args()
    if args.reactor != "direct":
        os.environ["TMTA_WORKER_REACTOR"] = args.reactor
    if args.profile:
        args.profile = os.path.abspath(args.profile)
        os.makedirs(args.profile, exist_ok=True)
        # Workers run as the mail owner, not as whoever runs the bench.
        os.chmod(args.profile, 0o1777)
        os.environ["TMTA_WORKER_PROFILE"] = args.profile
    if args.all:
        return runAll(args)
    if args.journalled:
        if args.scratch:
            parser.error("--journalled makes its own scratch directory; not with --scratch")
        if os.getuid() != 0:
            parser.error("--journalled mounts a file system: run as root")
        with journalledScratch() as scratch:
            args.scratch = scratch
            return bench(args, parser)
    return bench(args, parser)


def bench(args, parser) -> int:
    """
    Run the servers in turn for C{args.rounds} rounds and print the
    figures.
    """
    if args.sendmail and args.starttls:
        parser.error("--sendmail posts no SMTP; it does not go with --starttls")
    if args.sendmail and args.relay:
        parser.error("--sendmail delivers locally; it does not go with --relay")
    if args.sendmail and "-m" not in sys.argv and "--messages" not in sys.argv:
        args.messages = 500
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if not os.path.isdir(os.path.join(args.baseline, "tmta")):
            parser.error(f"--baseline {args.baseline}: not a tmta checkout")
    base = tempfile.mkdtemp(prefix="tmta-bench-", dir=args.scratch)
    os.chmod(base, 0o755)
    spreadSubdirectories(base)
    certificate = None
    if args.starttls:
        sys.path.insert(0, REPO)
        from tmta.config.selfsigned import writeSelfSignedCertificate

        certificate = os.path.join(base, "tls", "smtpd.pem")
        writeSelfSignedCertificate(certificate, "localhost")
    if args.relay:
        if not shutil.which("smtp-sink"):
            parser.error("--relay needs Postfix's smtp-sink")
        makers = [("tmta", lambda where: Tmta(where, Sink(os.path.join(where, "tmta-sink")),
                                              certificate, python=args.python))]
        if not args.no_postfix and shutil.which("postfix") and os.getuid() == 0:
            makers.append(("postfix", lambda where: Postfix(
                where, "virtual", Sink(os.path.join(where, "postfix-sink")), certificate,
                args.postfix_max_use)))
    else:
        makers = [("tmta", lambda where: Tmta(where, None, certificate, python=args.python))]
    if args.baseline:
        makers.insert(1, ("tmta-baseline", lambda where: Tmta(
            where, Sink(os.path.join(where, "baseline-sink")) if args.relay else None,
            certificate, repo=args.baseline, label="tmta-baseline")))
    if not args.relay and not args.no_postfix and shutil.which("postfix") and os.getuid() == 0:
        for agent in [a.strip() for a in args.postfix_agents.split(",") if a.strip()]:
            if agent not in ("virtual", "local"):
                parser.error(f"unknown Postfix agent {agent!r}")
            name = "postfix" if agent == "virtual" else f"postfix-{agent}"
            makers.append((name, lambda where, agent=agent: Postfix(
                where, agent, None, certificate, args.postfix_max_use)))
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name, _ in makers}
    try:
        first = True
        for round in range(args.rounds):
            # Each round starts with another server, so that none always
            # runs right after the same one.
            shift = round % len(makers)
            for name, make in makers[shift:] + makers[:shift]:
                if not first:
                    time.sleep(args.cool_down)
                first = False
                disk = ""
                if args.quiet_disk:
                    cost = waitForQuietDisk(base, args.quiet_disk, 180)
                    disk = f"  (file creation {cost:.0f} us before)"
                where = os.path.join(base, f"round{round}")
                if not os.path.isdir(where):
                    os.makedirs(where)
                    spreadSubdirectories(where)
                # Each run's files are kept until the end: deleting them
                # would slow the next run's file creation (see
                # waitForQuietDisk).
                result = measure(make(where), args)
                runs[name].append(result)
                print(f"round {round + 1}: {name:15} e2e {result['e2e']:6.0f}/s  "
                      f"CPU {result['cpu_ms']:.2f} ms/msg{disk}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    how = ("posted with sendmail, " if args.sendmail else "") + (
        "STARTTLS on every session, " if args.starttls else "")
    print(f"\n{args.messages} messages, {args.sessions} sessions, {args.size} bytes, {how}"
          f"{'relayed to smtp-sink' if args.relay else 'delivered to a Maildir'}, "
          f"load from {runs['tmta'][0]['client']}; medians of {args.rounds} rounds")
    print(f"tmta ran on {interpreter(args.python)}"
          + (f"; tmta-baseline on {interpreter(sys.executable)}" if args.baseline else ""))
    print(f"{'server':15} {'accepted/s':>11} {'e2e/s':>8} {'CPU ms/msg':>11} "
          f"{'idle RSS MB':>12} {'idle PSS MB':>12}  resident RSS/PSS (last round)")
    for name, _ in makers:
        last = runs[name][-1]
        print(f"{name:15} {median(name, 'accepted'):11.0f} {median(name, 'e2e'):8.0f} "
              f"{median(name, 'cpu_ms'):11.2f} {median(name, 'rss'):12.0f} "
              f"{median(name, 'pss'):12.0f}  {last['resident']}")
    print("Delay from arrival to delivery (the delay= of each delivery line), medians of the "
          "rounds' figures:")
    for name, _ in makers:
        print(f"  {name}: median {1000 * median(name, 'delay_p50'):.0f} ms, "
              f"99th percentile {1000 * median(name, 'delay_p99'):.0f} ms")
    print("CPU ms per message by process (user+system), last round (workers that exited are "
          "not shown):")
    for name, _ in makers:
        print(f"  {name}: {runs[name][-1]['split']}")
    for name, _ in makers[1:]:
        ratios = [t["e2e"] / p["e2e"] for t, p in zip(runs["tmta"], runs[name])]
        cpuRatios = [t["cpu_ms"] / p["cpu_ms"] for t, p in zip(runs["tmta"], runs[name])]
        print(f"tmta/{name}: accepted {median('tmta', 'accepted') / median(name, 'accepted'):.2f}, "
              f"end to end {median('tmta', 'e2e') / median(name, 'e2e'):.2f} "
              f"(per round {', '.join(f'{r:.2f}' for r in ratios)}), "
              f"CPU per message {median('tmta', 'cpu_ms') / median(name, 'cpu_ms'):.2f} "
              f"(per round {', '.join(f'{r:.2f}' for r in cpuRatios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
