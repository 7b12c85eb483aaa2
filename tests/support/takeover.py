"""
The machine of the take-over test (L{tests.test_takeover}): run as root
in private mount and network namespaces (C{unshare -mn}), it lays
overlays over C{/etc}, C{/usr} and C{/var} -- whatever it writes there
stays in its own directory -- and makes there a Debian Postfix "Internet
Site" the way Debian does (C{dpkg-reconfigure postfix}).  Then it does
what an operator would: C{tmta install-system --take-over}, C{tmta
start}, mail from an ordinary user through bsd-mailx, C{mailq},
C{flush}, C{reload}, C{stop}, C{tmta uninstall-system}; and it records
what each step showed, for the test to judge.

Usage: C{python -m tests.support.takeover BASE TMTA_BIN}, where C{BASE}
is an empty directory outside C{/etc}, C{/usr} and C{/var} and
C{TMTA_BIN} the directory of tmta's commands, runnable by every user.
Observations are written to C{BASE/observed.json}.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List

from tests.support import REPO, PrivatePostfix

OVERLAID = ("etc", "usr", "var")
MAILNAME = "mx.example.org"


def sh(*args: str, env=None, user=None, input=None, check=True, timeout=120):
    """
    Run a command (as C{user}, a login name, when given) and return its
    completed process; a failure raises with what it printed.
    """
    preexec = None
    if user is not None:
        account = pwd.getpwnam(user)

        def preexec():
            os.setgroups(os.getgrouplist(account.pw_name, account.pw_gid))
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)

    result = subprocess.run(list(args), env=env, input=input, capture_output=True,
                            text=True, timeout=timeout, preexec_fn=preexec)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {result.returncode}\n"
                           f"{result.stdout}{result.stderr}")
    return result


def waitUntil(condition: Callable[[], object], what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def overlay(base: str) -> None:
    for name in OVERLAID:
        upper, work = os.path.join(base, f"{name}-upper"), os.path.join(base, f"{name}-work")
        os.makedirs(upper)
        os.makedirs(work)
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir=/{name},upperdir={upper},workdir={work}", f"/{name}")


def debianInternetSite(relayPort: int) -> None:
    """
    Configure Postfix as Debian's installer does for an "Internet Site",
    then as its operator would: root's mail to alice, and a transport
    for the remote domain through the relay.
    """
    # Nothing is started by the package scripts (as in a container).
    with open("/usr/sbin/policy-rc.d", "w") as f:
        f.write("#!/bin/sh\nexit 101\n")
    os.chmod("/usr/sbin/policy-rc.d", 0o755)
    sh("debconf-set-selections", input=(
        "postfix postfix/main_mailer_type select Internet Site\n"
        f"postfix postfix/mailname string {MAILNAME}\n"))
    sh("dpkg-reconfigure", "-f", "noninteractive", "postfix",
       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    for user in ("alice", "bob"):
        sh("useradd", "-M", "-d", f"/nonexistent/{user}", "-s", "/bin/sh", user)
    with open("/etc/aliases", "a") as f:
        f.write("root: alice\n")
    sh("newaliases")
    with open("/etc/postfix/transport", "w") as f:
        f.write(f"remote.example smtp:[127.0.0.1]:{relayPort}\n")
    sh("postmap", "hash:/etc/postfix/transport")
    sh("postconf", "-e", "transport_maps = hash:/etc/postfix/transport")


def snapshot(top: str) -> Dict[str, List]:
    """
    What is in a directory tree: each entry's type, mode, owner, size
    and modification time.
    """
    found = {}
    for directory, subdirectories, files in os.walk(top):
        for name in sorted(subdirectories + files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            found[path] = [stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_size,
                           st.st_mtime_ns]
    return found


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(base: str, tmtaBin: str) -> Dict[str, object]:
    observed: Dict[str, object] = {}
    sh("ip", "link", "set", "lo", "up")
    overlay(base)
    relay = PrivatePostfix(os.path.join(base, "relay"), "remote.example")
    debianInternetSite(relay.port)
    postfixQueue = snapshot("/var/spool/postfix")
    postfixDatabases = {path: open(path, "rb").read()
                        for path in ("/etc/aliases.db", "/etc/postfix/transport.db")}

    # tmta's commands from a Python every user can run, with this
    # checkout's code.
    env = {"PATH": f"{tmtaBin}:/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": REPO,
           "LANG": "C.UTF-8"}
    userEnv = dict(env, PATH="/usr/bin:/bin", HOME="/tmp", LOGNAME="bob", USER="bob")

    def tmta(*words: str, check=True):
        return sh(os.path.join(tmtaBin, "tmta"), *words, env=env, check=check)

    installed = tmta("install-system", "--take-over", "--force", check=False)
    observed["install"] = [installed.returncode, installed.stderr]
    # The log where the test can read it (syslog has no reader here).
    with open("/etc/tmta/main.cf", "a") as f:
        f.write("maillog_file = /var/log/tmta.log\n")
    started = tmta("start", check=False)
    observed["start"] = [started.returncode, started.stderr]
    try:
        waitUntil(lambda: listening(25), "smtpd on port 25")
        observed["sendmail"] = os.readlink("/usr/sbin/sendmail")

        # An ordinary user mails root, as cron and scripts do.
        mailed = sh("mail", "-s", "subject", "root", user="bob", env=userEnv,
                    input="body\n", check=False)
        observed["mail"] = [mailed.returncode, mailed.stderr]
        box = "/var/mail/alice"
        waitUntil(lambda: os.path.exists(box) and "subject" in open(box).read(),
                  "the message in /var/mail/alice")
        st = os.stat(box)
        observed["mailbox"] = {"owner": pwd.getpwuid(st.st_uid).pw_name,
                               "group": st.st_gid, "mode": stat.S_IMODE(st.st_mode),
                               "text": open(box).read()}
        observed["mailGroup"] = __import__("grp").getgrnam("mail").gr_gid

        # Remote mail while the relay is down waits in the queue...
        sh("mail", "-s", "far", "someone@remote.example", user="bob", env=userEnv,
           input="far away\n")
        waitUntil(lambda: "someone@remote.example" in sh(
            "mailq", user="bob", env=userEnv, check=False).stdout,
            "the remote message in mailq")
        waitUntil(lambda: "connect to" in sh("mailq", user="bob", env=userEnv,
                                              check=False).stdout,
                  "the deferral reason in mailq")
        observed["mailq"] = sh("mailq", user="bob", env=userEnv, check=False).stdout
        # ...until a flush once the relay is up.
        relay.start()
        try:
            flushed = tmta("flush", check=False)
            observed["flush"] = flushed.returncode
            waitUntil(relay.messages, "the remote message at the relay")
            observed["relayed"] = relay.messages()[0].decode("utf-8", "replace")
            observed["mailqAfter"] = sh("mailq", user="bob", env=userEnv, check=False).stdout
        finally:
            relay.stop()

        reloaded = tmta("reload", check=False)
        observed["reload"] = reloaded.returncode
        waitUntil(lambda: "reload: configuration" in open("/var/log/tmta.log").read(),
                  "the reload in the log")
        sh("mail", "-s", "after reload", "root", user="bob", env=userEnv, input="again\n")
        waitUntil(lambda: "after reload" in open(box).read(), "mail after the reload")
        observed["mailboxAfterReload"] = open(box).read()
    finally:
        stopped = tmta("stop", check=False)
        observed["stop"] = [stopped.returncode, stopped.stderr]
        observed["status"] = tmta("status", check=False).returncode
        if os.path.exists("/var/log/tmta.log"):
            observed["log"] = open("/var/log/tmta.log").read()

    uninstalled = tmta("uninstall-system", check=False)
    observed["uninstall"] = [uninstalled.returncode, uninstalled.stderr]
    observed["sendmailAfter"] = (os.readlink("/usr/sbin/sendmail")
                                 if os.path.islink("/usr/sbin/sendmail") else "file")
    observed["postmap"] = sh("postmap", "-q", "remote.example",
                             "hash:/etc/postfix/transport", check=False).stdout
    observed["postalias"] = sh("postalias", "-q", "root", "hash:/etc/aliases",
                               check=False).stdout
    observed["postfixDatabasesKept"] = all(
        open(path, "rb").read() == content for path, content in postfixDatabases.items())
    observed["postfixQueueKept"] = snapshot("/var/spool/postfix") == postfixQueue
    return observed


def main(base: str, tmtaBin: str) -> int:
    try:
        observed = run(base, tmtaBin)
    except Exception:
        observed = {"error": traceback.format_exc()}
        if os.path.exists("/var/log/tmta.log"):
            observed["log"] = open("/var/log/tmta.log").read()
    with open(os.path.join(base, "observed.json"), "w") as f:
        json.dump(observed, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
