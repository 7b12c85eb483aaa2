"""
C{twistd tmta}: parse the options, build the master service.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Optional

from twisted.logger import Logger
from twisted.python import usage
from twisted.python.logfile import LogFile

from tmta.common.syslog import MaillogSyslogObserver
from tmta.config import ConfigError, configDirectoryFromEnvironment, loadConfiguration
from tmta.config.loader import (
    SYSTEM_CONFIG_DIRECTORY,
    defaultDataDirectory,
    prepareEmbedded,
    systemConfigDirectory,
)
from tmta.logging import MaillogFileObserver

log = Logger()

#: The maillog of C{--logfile} is rotated when it reaches this size, and
#: this many rotated files are kept (C{FILE.1} the newest): a busy server
#: fills at most about 110 MB.  twistd's own default keeps every file it
#: rotates, a megabyte each.  SIGUSR1 rotates at once; with C{--syslog}
#: the lines go to the system's syslog (the mail facility), and its
#: rotation.
MAILLOG_ROTATE_LENGTH = 10_000_000
MAILLOG_ROTATED_FILES = 10


class Options(usage.Options):
    synopsis = "[-c CONFIG_DIR | -d DATA_DIR] [-o name=value ...]"
    longdesc = (
        "Run the tmta master.  With -c (or MAIL_CONFIG) it reads main.cf and "
        "master.cf from that directory; run by root with neither, the system "
        "installation's in /etc/tmta when there is one; else it runs the "
        "embedded default under DATA_DIR (default ~/.tmta): loopback only, no "
        "relaying, mail delivered into a Maildir per name."
    )
    optParameters = [
        ["config", "c", None, "configuration directory with main.cf and master.cf"],
        ["data-dir", "d", None, "data directory of the embedded default (default ~/.tmta)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["overrides"] = {}

    def opt_o(self, assignment: str) -> None:
        """
        Override a main.cf parameter: -o name=value (repeatable).
        """
        name, eq, value = assignment.partition("=")
        if not eq or not name.strip():
            raise usage.UsageError(f"-o wants name=value, not {assignment!r}")
        self["overrides"][name.strip()] = value.strip()

    def postOptions(self) -> None:
        if self["config"] and self["data-dir"]:
            raise usage.UsageError("-c and -d exclude each other")


def makeService(options: Options):
    from twisted.internet import reactor

    TwistdMaster = _twistdMasterClass()
    directory = options["config"] or (
        None if options["data-dir"] else masterConfigDirectory()
    )
    embedded = directory is None
    if embedded:
        data = options["data-dir"] or defaultDataDirectory()
        try:
            directory = prepareEmbedded(data)
        except OSError as e:
            raise SystemExit(f"tmta: fatal: cannot create data directory {data}: {e.strerror}")
        log.info(
            "embedded default: everything is under {data} (main.cf and master.cf to "
            "edit, queue/, mail/ with a Maildir per recipient)",
            data=directory,
        )

    def load():
        return loadConfiguration(directory, options["overrides"], embedded=embedded)

    try:
        return TwistdMaster(reactor, load, options["overrides"],
                            logObserver=maillogObserver(getattr(options, "parent", None)))
    except ConfigError as e:
        raise SystemExit(f"tmta: fatal: {e}")


def masterConfigDirectory(euid: Optional[int] = None,
                          system: str = SYSTEM_CONFIG_DIRECTORY) -> Optional[str]:
    """
    The configuration the master runs without C{-c}: C{MAIL_CONFIG}'s,
    else, for root, the system installation's (C{/etc/tmta}); C{None}
    for the embedded default (an ordinary user running tmta for
    themselves, or root on a machine with no system installation).
    """
    directory = configDirectoryFromEnvironment()
    if directory:
        return directory
    if (os.geteuid() if euid is None else euid) == 0:
        return systemConfigDirectory(system)
    return None


class DaemonStartFailure(Exception):
    """
    Why a daemonized master could not start.  twistd's waiting parent
    prints the first 100 bytes of C{traceback.format_exception_only}'s
    line for it: named this way, that line reads C{tmta: fatal: ...}.
    """

    __module__ = "builtins"
    __qualname__ = "tmta"


def _daemonized() -> bool:
    """
    Whether twistd has made this process a daemon: its standard input,
    output and error are all C{/dev/null}.
    """
    try:
        null = os.stat(os.devnull)
        return all(os.path.samestat(os.fstat(fd), null) for fd in (0, 1, 2))
    except OSError:
        return False


def _twistdMasterClass():
    from tmta.master.lock import MasterRunning
    from tmta.master.service import ListenError, MasterService

    class TwistdMaster(MasterService):
        """
        The master as twistd runs it: a start-up failure ends twistd with
        its message, and SIGHUP reloads the configuration.  (The library's
        L{MasterService} does neither, so that another program can embed
        it.)
        """

        def privilegedStartService(self) -> None:
            try:
                super().privilegedStartService()
            except (ConfigError, ListenError, MasterRunning, OSError) as e:
                if not _daemonized():
                    raise SystemExit(f"tmta: fatal: {e}")
                # A daemon's twistd parent waits for its child's word on
                # a pipe it also holds open itself: a SystemExit here
                # would leave it waiting for ever.  An Exception is
                # written into that pipe, and the parent prints it.
                log.critical("{error}", error=str(e))
                raise DaemonStartFailure(f"fatal: {e}") from None

        def startService(self) -> None:
            super().startService()
            if hasattr(signal, "SIGHUP"):
                signal.signal(signal.SIGHUP,
                              lambda *a: self.reactor.callFromThread(self.reload))

    return TwistdMaster


def maillogObserver(twistdOptions):
    """
    The log observer for the log twistd's options ask for, writing
    Postfix's maillog lines: syslog's mail facility with C{--syslog}
    (L{MaillogSyslogObserver}); else a text log (the file of
    C{--logfile}, C{twistd.log} for a daemon, standard output with
    C{-n}), opened as twistd itself would open it, including reopening
    on SIGUSR1.  C{None} to leave logging to twistd (C{--logger}, or no
    twistd options at all).
    """
    from twisted.internet import reactor

    if twistdOptions is None or twistdOptions.get("logger"):
        return None
    if twistdOptions.get("syslog"):
        return MaillogSyslogObserver()
    path = twistdOptions.get("logfile") or ""
    nodaemon = twistdOptions.get("nodaemon")
    if path == "-" or (nodaemon and not path):
        # twistd itself refuses a daemon that logs to standard output.
        return MaillogFileObserver(sys.stdout, reactor) if nodaemon else None
    logFile = LogFile.fromFullPath(path or "twistd.log", rotateLength=MAILLOG_ROTATE_LENGTH,
                                   maxRotatedFiles=MAILLOG_ROTATED_FILES)
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signalNumber, frame) -> None:
            reactor.callFromThread(logFile.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return MaillogFileObserver(logFile, reactor)
