"""
Shared pieces of the differential tests, which hold tmta against a
private Postfix on the same input: finding Postfix's programs, a
configuration directory for them, and the agreement figure each test
reports.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Dict, Iterable, List, Optional, Tuple

#: Where Debian's postfix package puts the programs the tests run.
POSTFIX_PROGRAMS = ("/usr/sbin/postmap", "/usr/sbin/postfix", "/usr/sbin/postconf")


def postfixMissing() -> Optional[str]:
    """
    Why the differential tests cannot run here, or C{None}.
    """
    for program in POSTFIX_PROGRAMS:
        if not os.access(program, os.X_OK):
            return f"Postfix is not installed ({program})"
    return None


def postfixHasTableType(kind: str, configDir: str) -> bool:
    """
    Whether the installed Postfix has table type C{kind} (C{pcre} comes
    in a package of its own).
    """
    try:
        out = subprocess.run(["/usr/sbin/postconf", "-c", configDir, "-m"],
                             capture_output=True, text=True,
                             check=False, timeout=30).stdout
    except OSError:
        return False
    return kind in out.split()


def configDirectory(path: str, settings: Optional[Dict[str, str]] = None) -> str:
    """
    Make C{path} a configuration directory Postfix's commands accept.
    """
    os.makedirs(path, exist_ok=True)
    values = {"compatibility_level": "3.6"}
    values.update(settings or {})
    with open(os.path.join(path, "main.cf"), "w") as f:
        for name, value in values.items():
            f.write(f"{name} = {value}\n")
    return path


def postmapQuery(configDir: str, spec: str, keys: Iterable[str]) -> Tuple[Dict[str, str],
                                                                         List[str]]:
    """
    Look every key up with C{postmap -q -}.

    @return: the values found, by key, and the warnings postmap gave.
    """
    keys = list(keys)
    result = subprocess.run(["/usr/sbin/postmap", "-c", configDir, "-q", "-", spec],
                            input="".join(k + "\n" for k in keys).encode("utf-8"),
                            capture_output=True, check=False, timeout=120)
    found: Dict[str, str] = {}
    for line in result.stdout.decode("utf-8", "surrogateescape").splitlines():
        key, _, value = line.partition("\t")
        found.setdefault(key, value)
    warnings = [line for line in result.stderr.decode("utf-8", "replace").splitlines()
                if ": warning: " in line]
    return found, warnings


def postmapBuild(configDir: str, spec: str, aliases: bool = False) -> List[str]:
    """
    Build a table's database with postmap (or postalias).

    @return: the warnings it gave.
    """
    program = "/usr/sbin/postalias" if aliases else "/usr/sbin/postmap"
    result = subprocess.run([program, "-c", configDir, spec], capture_output=True,
                            check=True, timeout=120)
    return [line for line in result.stderr.decode("utf-8", "replace").splitlines()
            if ": warning: " in line]


_LINE = re.compile(r"line (\d+)")


def warnedLines(warnings: Iterable[str]) -> List[int]:
    """
    The line numbers warnings name, sorted, each once.
    """
    return sorted({int(m.group(1)) for w in warnings for m in [_LINE.search(w)] if m})


def copyFile(source: str, directory: str) -> str:
    """
    A copy of C{source} in C{directory}, so each server builds its own
    database beside its own copy.
    """
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, os.path.basename(source))
    shutil.copyfile(source, target)
    return target


class Agreement:
    """
    Counts the cases where tmta and Postfix agree, and keeps those where
    they do not, for the report a test prints and the assertion it makes.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0
        self.differences: List[str] = []

    def compare(self, case: str, postfix: object, tmta: object, detail: str = "") -> None:
        self.total += 1
        if postfix != tmta:
            self.differences.append(f"{case}: Postfix {postfix!r}, tmta {tmta!r}"
                                    + (f" -- {detail}" if detail else ""))

    @property
    def agreed(self) -> int:
        return self.total - len(self.differences)

    def report(self) -> str:
        return f"{self.name}: {self.agreed}/{self.total} agree"


# -- SMTP sessions -------------------------------------------------------------

#: main.cf settings both servers run with, under each configuration's
#: own: no DNS, no sleeping after errors, loopback only.
SHARED_SETTINGS = {
    "compatibility_level": "3.6",
    "myhostname": "mx.test.example",
    "mydomain": "test.example",
    "inet_interfaces": "127.0.0.1",
    "inet_protocols": "ipv4",
    "smtpd_peername_lookup": "no",
    "smtpd_error_sleep_time": "0",
    "smtpd_soft_error_limit": "1000",
    "smtpd_hard_error_limit": "1000",
    "smtpd_junk_command_limit": "1000",
    "smtpd_forbid_unauth_pipelining": "no",
    "disable_dns_lookups": "yes",
    "smtp_host_lookup": "native",
    "mynetworks": "127.0.0.1/32",
    "alias_maps": "",
    "alias_database": "",
}


class SMTPStep:
    """
    What one step of a session sent, and the reply that came back:
    its code, and its enhanced status code when it has one.
    """

    _ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\b")

    def __init__(self, sent: bytes, reply: str) -> None:
        self.sent = sent
        self.reply = reply

    @property
    def outcome(self) -> Tuple[str, str]:
        last = self.reply.splitlines()[-1] if self.reply else ""
        code = last[:3]
        enhanced = self._ENHANCED.match(last[4:])
        return code, enhanced.group(1) if enhanced else ""


def runSession(port: int, steps: List[bytes], source: str = "127.0.0.1",
               timeout: float = 5) -> List[SMTPStep]:
    """
    Talk to an SMTP server on loopback: read the greeting, then send
    each step and read its whole reply, one step at a time.  A step the
    server answers by closing the connection gets the reply C{""}, and
    so do the steps after it.
    """
    import socket

    results: List[SMTPStep] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as sock:
        reader = sock.makefile("rb")
        results.append(SMTPStep(b"", _readReply(reader)))
        for step in steps:
            if results[-1].reply == "":
                results.append(SMTPStep(step, ""))
                continue
            try:
                sock.sendall(step)
                reply = _readReply(reader)
            except OSError:
                reply = ""
            results.append(SMTPStep(step, reply))
    return results


def _readReply(reader) -> str:
    lines = []
    while True:
        line = reader.readline(4096)
        if not line:
            return "\n".join(lines)
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            return "\n".join(lines)


class PostfixSMTP:
    """
    A private Postfix (Debian's package) whose smtpd listens on a
    loopback port with the given main.cf: every transport is deferred
    (C{defer_transports}), so what it accepts stays queued and is never
    delivered.
    """

    def __init__(self, base: str, settings: Dict[str, str]) -> None:
        import pwd

        from tests.support import freePort, privatePostfixMasterCf

        self.base = base
        self.port = freePort()
        self.conf = os.path.join(base, "conf")
        for sub in ("conf", "queue", "data"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        account = pwd.getpwnam("postfix")
        os.chown(os.path.join(base, "data"), account.pw_uid, account.pw_gid)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(privatePostfixMasterCf(self.port, leaveOut=("pickup",)))
        values = dict(SHARED_SETTINGS)
        values.update({
            "queue_directory": os.path.join(base, "queue"),
            "data_directory": os.path.join(base, "data"),
            "mail_owner": "postfix", "setgid_group": "postdrop",
            "maillog_file": os.path.join(base, "maillog"),
            "maillog_file_prefixes": base,
            "defer_transports": "local, virtual, smtp, relay, lmtp, error, retry, discard",
        })
        values.update(settings)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            for name, value in values.items():
                f.write(f"{name} = {value}\n")

    def start(self) -> "PostfixSMTP":
        from tests.support import endToEnd

        endToEnd()
        from tests.support import _accepts, waitFor

        subprocess.run(["/usr/sbin/postfix", "-c", self.conf, "start"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        waitFor(lambda: _accepts(self.port), what="Postfix to listen")
        return self

    def stop(self) -> None:
        subprocess.run(["/usr/sbin/postfix", "-c", self.conf, "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def tmtaSMTP(base: str, settings: Dict[str, str]):
    """
    tmta's master on a loopback port with the same main.cf, its queue
    manager left out as Postfix's is.

    @return: the started L{tests.support.Master} and its port.
    """
    from tests.support import Master, freePort
    from tmta.config.loader import EMBEDDED_MASTER_CF

    port = freePort()
    master = []
    for line in EMBEDDED_MASTER_CF.splitlines():
        words = line.split()
        if words and words[0] in ("qmgr", "pickup"):
            continue
        if words and words[0] == "2525":
            line = line.replace("2525     ", f"127.0.0.1:{port}", 1)
        master.append(line)
    values = dict(SHARED_SETTINGS)
    values.update(settings)
    return Master(os.path.join(base, "tmta"), values, "\n".join(master) + "\n"), port
