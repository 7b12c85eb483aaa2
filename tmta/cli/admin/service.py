"""
The verbs of Postfix's C{postfix} command: C{tmta start}, C{stop},
C{reload}, C{status}, C{check}, C{flush} (also C{tmta queue flush})
and C{set-permissions}.

The master started here is C{twistd tmta} as a daemon, its pid in the
queue's C{pid/master.pid} (where Postfix keeps its master's), logging to
C{maillog_file} when that is set and to syslog's mail facility
otherwise, as Postfix logs.
"""

from __future__ import annotations

import argparse
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from typing import List, Optional, TextIO

from tmta.cli.admin.common import configuration
from tmta.config import ConfigError, Configuration
from tmta.config.loader import loadConfiguration
from tmta.master.startup import startupProblems
from tmta.queue.layout import (
    DIRECTORY_MODES,
    LOGS,
    QUEUE_DIRECTORY_MODE,
    QUEUES,
    createLayout,
)

#: How long C{stop} waits for the master and its workers to leave.
STOP_WAIT = 60.0


def masterPidFile(chosen: Configuration) -> str:
    """
    Where the master started by C{tmta start} keeps its pid.
    """
    return os.path.join(chosen.main.get("queue_directory"), "pid", "master.pid")


def runningMaster(chosen: Configuration) -> Optional[int]:
    """
    The pid of the master running on this configuration's queue, or
    C{None}.
    """
    try:
        with open(masterPidFile(chosen)) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def startMaster(chosen: Configuration, err: TextIO = sys.stderr) -> int:
    """
    C{postfix start}: check the configuration, then start the master as
    a daemon.
    """
    if runningMaster(chosen) is not None:
        err.write("tmta: fatal: the tmta mail system is already running\n")
        return 1
    try:
        problems = startupProblems(loadConfiguration(chosen.directory))
    except ConfigError as e:
        problems = [str(e)]
    if problems:
        err.writelines(f"tmta: fatal: {problem}\n" for problem in problems)
        return 1
    createLayout(chosen.main.get("queue_directory"))
    logFile = chosen.main.get("maillog_file").strip()
    logging = [f"--logfile={logFile}"] if logFile else ["--syslog"]
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         f"--pidfile={masterPidFile(chosen)}", *logging, "tmta", "-c", chosen.directory],
        cwd="/", capture_output=True, text=True)
    if result.returncode != 0:
        err.write(result.stderr or result.stdout)
        return 1
    return 0


def signalMaster(chosen: Configuration, number: int, err: TextIO = sys.stderr) -> int:
    """
    Send the running master a signal; 1 when none runs.
    """
    pid = runningMaster(chosen)
    if pid is None:
        err.write("tmta: fatal: the tmta mail system is not running\n")
        return 1
    os.kill(pid, number)
    return 0


def stopMaster(chosen: Configuration, err: TextIO = sys.stderr,
               wait: float = STOP_WAIT) -> int:
    """
    C{postfix stop}: ask the master to stop, and wait until it has.
    """
    pid = runningMaster(chosen)
    status = signalMaster(chosen, signal.SIGTERM, err)
    if status:
        return status
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if runningMaster(chosen) != pid:
            return 0
        time.sleep(0.1)
    err.write(f"tmta: fatal: the master (pid {pid}) did not stop within {wait:.0f} s\n")
    return 1


def checkInstallation(chosen: Configuration, out: TextIO = sys.stdout) -> int:
    """
    C{postfix check}: the configuration reads and would start (nothing
    in it stops the master's start-up), the accounts
    it names exist, and the queue's directories have the owners and
    modes the master gives them.  Each problem is one warning line.

    @return: 0, or 1 when anything is wrong.
    """
    problems: List[str] = []
    try:
        problems += startupProblems(loadConfiguration(chosen.directory))
    except ConfigError as e:
        problems.append(str(e))
    main = chosen.main
    owner = None
    for parameter in ("mail_owner", "default_privs"):
        name = main.get(parameter)
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            problems.append(f"{parameter}: no account named {name!r}")
            continue
        if account.pw_uid == 0:
            problems.append(f"{parameter}: {name} is root, which tmta never runs as")
        elif parameter == "mail_owner":
            owner = account
    queue = main.get("queue_directory")
    problems += _queueProblems(queue, owner)
    for problem in problems:
        out.write(f"tmta: warning: {problem}\n")
    return 1 if problems else 0


def _queueProblems(queue: str, owner: Optional[pwd.struct_passwd]) -> List[str]:
    try:
        top = os.lstat(queue)
    except OSError as e:
        return [f"queue_directory {queue}: {e.strerror}"]
    problems = []
    if not stat.S_ISDIR(top.st_mode):
        return [f"queue_directory {queue}: not a directory"]
    if stat.S_IMODE(top.st_mode) != QUEUE_DIRECTORY_MODE:
        problems.append(f"bad mode {stat.S_IMODE(top.st_mode):o} "
                        f"(want {QUEUE_DIRECTORY_MODE:o}): {queue}")
    for name, mode in DIRECTORY_MODES.items():
        path = os.path.join(queue, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"missing: {path}")
            continue
        if not stat.S_ISDIR(st.st_mode):
            problems.append(f"not a directory: {path}")
            continue
        if stat.S_IMODE(st.st_mode) != mode:
            problems.append(f"bad mode {stat.S_IMODE(st.st_mode):o} (want {mode:o}): {path}")
        if os.geteuid() == 0 and owner is not None and st.st_uid != owner.pw_uid:
            problems.append(f"not owned by {owner.pw_name}: {path}")
    return problems


def setPermissions(chosen: Configuration, err: TextIO = sys.stderr) -> int:
    """
    C{postfix set-permissions}: give the queue's directories, and the
    queue files in them, the owners and modes the master gives them.
    """
    from tmta.mail.accounts import mailOwner

    try:
        owner = mailOwner(chosen.main, chosen.embedded) if os.geteuid() == 0 else None
    except ConfigError as e:
        err.write(f"tmta: fatal: {e}\n")
        return 1
    queue = chosen.main.get("queue_directory")
    if owner is None:
        createLayout(queue)
        return 0
    uid, gid = owner.pw_uid, owner.pw_gid
    createLayout(queue, uid, gid)
    for name in QUEUES + LOGS:
        if name == "maildrop":
            continue  # posted files stay their posters'
        for directory, subdirectories, files in os.walk(os.path.join(queue, name)):
            for entry in subdirectories + files:
                os.lchown(os.path.join(directory, entry), uid, gid)
    return 0


def addParser(commands) -> None:
    for name, summary in (
            ("start", "start the mail system (postfix start)"),
            ("stop", "stop the mail system and wait for it (postfix stop)"),
            ("reload", "re-read the configuration (postfix reload)"),
            ("status", "whether the mail system runs (postfix status)"),
            ("check", "check the configuration, accounts and queue (postfix check)"),
            ("flush", "try to deliver every deferred message now (postfix flush)"),
            ("set-permissions", "repair the queue's owners and modes "
                                "(postfix set-permissions)")):
        parser = commands.add_parser(name, help=summary)
        parser.add_argument("-c", "--config", default=argparse.SUPPRESS,
                            help="configuration directory")
        parser.set_defaults(run=run, verb=name, listOf=None)


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    chosen = configuration(options)
    verb = options.verb
    if verb == "start":
        return startMaster(chosen)
    if verb == "stop":
        return stopMaster(chosen)
    if verb == "reload":
        return signalMaster(chosen, signal.SIGHUP)
    if verb == "status":
        pid = runningMaster(chosen)
        if pid is None:
            sys.stderr.write("tmta: the tmta mail system is not running\n")
            return 1
        sys.stderr.write(f"tmta: the tmta mail system is running: PID: {pid}\n")
        return 0
    if verb == "check":
        return checkInstallation(chosen)
    if verb == "flush":
        from tmta.cli.admin.queue import flushQueue

        return flushQueue(chosen)
    return setPermissions(chosen)
