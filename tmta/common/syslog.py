"""
Logging as Postfix does outside the master's own log file: to syslog
(L{MaillogSyslogObserver}, twistd's C{--syslog}) and from commands run
by hand (L{CommandLog}, postsuper's queue operations).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional

from twisted.logger import ILogObserver, LogLevel
from zope.interface import implementer

from tmta.logging import (
    WORKER_LINES,
    _workerLineLevel,
    formatLine,
    maillogTime,
    printable,
    shortHostname,
)

#: syslog's facilities by name (C{syslog_facility}), and its severities.
SYSLOG_FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{n}": 16 + n for n in range(8)},
}
_SYSLOG_SEVERITY = {LogLevel.critical: 2, LogLevel.error: 3, LogLevel.warn: 4,
                    LogLevel.info: 6, LogLevel.debug: 7}


@implementer(ILogObserver)
class MaillogSyslogObserver:
    """
    twistd's C{--syslog}, as Postfix logs: each line to the system's
    syslog socket at C{syslog_facility} (C{mail}), tagged with its own
    program and pid (C{tmta/smtpd[1234]}), at the severity its prefix
    says (C{warning:}, C{error:}, C{fatal:}, C{panic:}).

    Lines are sent in the traditional syslog format (RFC 3164), which
    every syslog daemon reads; one that cannot be sent (syslog is not
    running) is dropped, as C{syslog(3)} drops it.

    @param address: the syslog socket (C{/dev/log}).
    @param facility: a name of L{SYSLOG_FACILITIES}.
    @param program: the tag of the master's own lines.
    """

    def __init__(self, address: str = "/dev/log", facility: str = "mail",
                 program: str = "tmta/master") -> None:
        if facility not in SYSLOG_FACILITIES:
            raise ValueError(f"syslog_facility = {facility}: not a syslog facility")
        self.address = address
        self.facility = SYSLOG_FACILITIES[facility]
        self.program = program
        self._socket: Optional[socket.socket] = None

    def configure(self, config) -> None:
        """
        Take the master's tag (C{syslog_name}) and the facility
        (C{syslog_facility}) from the configuration; an unknown facility
        leaves the one in use.
        """
        self.program = f"{config.get('syslog_name')}/master"
        self.facility = SYSLOG_FACILITIES.get(config.get("syslog_facility").strip().lower(),
                                              self.facility)

    def __call__(self, event: dict) -> None:
        lines = event.get(WORKER_LINES)
        if lines is None:
            text = formatLine(event)
            if text:
                level = _SYSLOG_SEVERITY.get(event.get("log_level"), 6)
                self._send(level, event.get("log_time") or time.time(),
                           f"{self.program}[{os.getpid()}]", text)
            return
        system = event.get("log_system", "-")
        for when, line in lines:
            self._send(_SYSLOG_SEVERITY[_workerLineLevel(line)], when, system, line)

    def _send(self, severity: int, when: float, tag: str, text: str) -> None:
        for line in text.split("\n"):
            # RFC 3164's time: the day padded with a space, as syslog(3) does.
            stamp = time.strftime("%b %e %H:%M:%S", time.localtime(when))
            data = f"<{self.facility * 8 + severity}>{stamp} {tag}: {line}"
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    # A stuck syslog daemon holds the master up a moment
                    # per line, not for good.
                    self._socket.settimeout(0.5)
                    self._socket.connect(self.address)
                self._socket.send(data.encode("utf-8", "replace")[:8192])
            except OSError:
                if self._socket is not None:
                    self._socket.close()
                self._socket = None


class CommandLog:
    """
    The maillog lines of a command run by hand (C{tmta queue hold}, as
    Postfix's C{postsuper} logs its queue operations): appended to
    C{maillog_file} when it is set, as Postfix 3.4's commands log, else
    sent to syslog at C{syslog_facility}, tagged C{syslog_name/program}.
    A line that cannot be written is dropped: logging never stops the
    command.

    @param config: main.cf.
    @param program: the command's name in the tag (C{postsuper}).
    @param syslogAddress: the syslog socket.
    """

    def __init__(self, config, program: str, syslogAddress: str = "/dev/log") -> None:
        self.tag = f"{config.get('syslog_name')}/{program}[{os.getpid()}]"
        self.path = config.get("maillog_file").strip()
        self.host = shortHostname()
        self._syslog: Optional[MaillogSyslogObserver] = None
        if not self.path:
            facility = config.get("syslog_facility").strip().lower()
            self._syslog = MaillogSyslogObserver(
                syslogAddress, facility if facility in SYSLOG_FACILITIES else "mail")

    def info(self, text: str) -> None:
        """
        Log one line.
        """
        when = time.time()
        if self._syslog is not None:
            self._syslog._send(_SYSLOG_SEVERITY[_workerLineLevel(text)], when, self.tag, text)
            return
        line = f"{maillogTime(when)} {self.host} {self.tag}: {printable(text)}\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError:
            return
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        except OSError:
            pass
        finally:
            os.close(fd)
