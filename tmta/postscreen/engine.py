"""
postscreen's own SMTP engine (Postfix's C{postscreen_smtpd.c}), for a
client that is not handed to smtpd this time: one that failed a test
with C{enforce}, or that still has tests after the greeting to take.
It completes the greeting and answers every command as an SMTP server
would, without PIPELINING, and watches for the after-greeting tests:
commands sent without waiting for the reply (pipelining), lines that
end in a bare newline, and what is no SMTP command at all (a header, or
C{smtpd_forbidden_commands}).  Every recipient is refused: with the
failed test's reply, or C{450} to a client that passed, which is handed
to smtpd when it comes back.
"""

from __future__ import annotations

import re
from typing import Optional

from tmta.logging import Logger
from tmta.postscreen.settings import BARE_NEWLINE, NON_SMTP, PIPELINING

log = Logger()

_COMMANDS = ("HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "ETRN",
             "QUIT", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD")
_HEADER = re.compile(rb"^[!-9;-~]+:")
_ADDRESS = re.compile(r"^\s*<([^<>]*)>")

#: The longest command line read.
LINE_LIMIT = 4096


def escape(data: bytes, limit: int = 100) -> str:
    """
    Client text for the log, as Postfix's C{escape()} writes it: C-style
    escapes for CR, LF, tab and other unprintable bytes.
    """
    out = []
    for byte in data:
        if byte == 13:
            out.append("\\r")
        elif byte == 10:
            out.append("\\n")
        elif byte == 9:
            out.append("\\t")
        elif 32 <= byte < 127 and byte != 92:
            out.append(chr(byte))
        elif byte == 92:
            out.append("\\\\")
        else:
            out.append(f"\\{byte:03o}")
    return "".join(out)[:limit]


class DummyEngine:
    """
    The SMTP dialogue of one client, on its L{PostscreenSession}.
    """

    def __init__(self, session) -> None:
        self.session = session
        self.settings = session.settings
        self.buffer = b""
        self.helo: Optional[str] = None
        self.protocol = "SMTP"
        self.sender: Optional[str] = None
        self.commands = 0
        self.where = "CONNECT"
        self._timer = None

    def start(self) -> None:
        self.write(f"220 {self.settings.smtpdBanner}")
        self._rearm()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _rearm(self) -> None:
        self.stop()
        self._timer = self.session.clock.callLater(self.settings.commandTimeLimit,
                                                   self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self.finish(f"421 4.4.2 {self.settings.myhostname} Error: timeout exceeded")

    def write(self, line: str) -> None:
        self.session.transport.write(line.encode("utf-8", "surrogateescape") + b"\r\n")

    def finish(self, reply: str) -> None:
        """
        End the session with C{reply}.
        """
        self.stop()
        session = self.session
        session.forward = False
        session.finalReply = reply
        session.conclude()

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        self.buffer += data
        while not session.ended:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > LINE_LIMIT:
                    self.buffer = self.buffer[:LINE_LIMIT]
                return
            line, self.buffer = self.buffer[:end + 1], self.buffer[end + 1:]
            self._rearm()
            self._line(line)

    def _line(self, line: bytes) -> None:
        session = self.session
        if not line.endswith(b"\r\n"):
            text = line[:-1]
            if session.deepTest(BARE_NEWLINE,
                                f"BARE NEWLINE from {session.where()} after {self.where}") \
                    == "drop":
                self.finish("521 5.5.1 Protocol error")
                return
        else:
            text = line[:-2]
        command = text.split(None, 1)[0].upper().decode("ascii", "replace") if text.strip() \
            else ""
        argument = text[len(command):].strip().decode("utf-8", "surrogateescape") \
            if command else ""
        known = command in _COMMANDS
        if not known and (_HEADER.match(text) or command in self.settings.forbiddenCommands):
            if session.deepTest(
                    NON_SMTP, f"NON-SMTP COMMAND from {session.where()} after {self.where}: "
                    f"{escape(text)}") == "drop":
                self.finish("521 5.7.0 Error: I can break rules, too. Goodbye.")
                return
        if self.buffer and command not in ("DATA", "BDAT"):
            if session.deepTest(
                    PIPELINING, f"COMMAND PIPELINING from {session.where()} after "
                    f"{command or 'unknown'}: {escape(self.buffer)}") == "drop":
                self.finish("521 5.5.1 Protocol error")
                return
        self.commands += 1
        if self.commands > self.settings.commandCountLimit and command != "QUIT":
            self.finish("421 4.7.0 " + self.settings.myhostname + " Error: too many commands")
            return
        self.where = command if known else "UNIMPL"
        handler = getattr(self, f"smtp_{command}", None) if known else None
        if handler is None:
            self.write("502 5.5.2 Error: command not recognized")
            return
        handler(argument)

    # -- commands

    def smtp_HELO(self, argument: str) -> None:
        if not argument:
            self.write("501 Syntax: HELO hostname")
            return
        self.helo, self.protocol = argument, "SMTP"
        self.write(f"250 {self.settings.myhostname}")

    def smtp_EHLO(self, argument: str) -> None:
        if not argument:
            self.write("501 Syntax: EHLO hostname")
            return
        self.helo, self.protocol = argument, "ESMTP"
        lines = [self.settings.myhostname]
        size = self.settings.messageSizeLimit
        lines.append(f"SIZE {size}" if size else "SIZE")
        if not self.settings.vrfyDisabled:
            lines.append("VRFY")
        lines += ["ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "CHUNKING"]
        for line in lines[:-1]:
            self.write(f"250-{line}")
        self.write(f"250 {lines[-1]}")

    def smtp_MAIL(self, argument: str) -> None:
        if self.helo is None:
            self.write("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.sender is not None:
            self.write("503 5.5.1 Error: nested MAIL command")
            return
        if not argument.upper().startswith("FROM:"):
            self.write("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        match = _ADDRESS.match(argument[5:])
        if match is None:
            self.write("501 5.1.7 Bad sender address syntax")
            return
        self.sender = match.group(1)
        self.write("250 2.1.0 Ok")

    def smtp_RCPT(self, argument: str) -> None:
        session = self.session
        if self.sender is None:
            self.write("503 5.5.1 Error: need MAIL command")
            return
        if not argument.upper().startswith("TO:"):
            self.write("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        match = _ADDRESS.match(argument[3:])
        if match is None:
            self.write("501 5.1.3 Bad recipient address syntax")
            return
        session.deepTestsPassed()
        reply = session.rcptReply
        if self.settings.softBounce and reply.startswith("5"):
            reply = "4" + reply[1:4] + "4" + reply[5:] if reply[4:5] == "5" \
                else "4" + reply[1:]
        log.info("NOQUEUE: reject: RCPT from {client}: {reply}; from=<{sender}>, "
                 "to=<{recipient}>, proto={protocol}, helo=<{helo}>",
                 client=session.where(), reply=reply, sender=self.sender,
                 recipient=match.group(1), protocol=self.protocol, helo=self.helo or "")
        self.write(reply)

    def smtp_DATA(self, argument: str) -> None:
        if argument:
            self.finish("501 5.5.4 Syntax: DATA")
            return
        if self.sender is None:
            self.write("503 5.5.1 Error: need RCPT command")
            return
        log.info("DATA without valid RCPT from {client}", client=self.session.where())
        self.finish("554 5.5.1 Error: no valid recipients")

    def smtp_BDAT(self, argument: str) -> None:
        if self.sender is None:
            self.finish("554 5.5.1 Error: need MAIL command")
            return
        log.info("BDAT without valid RCPT from {client}", client=self.session.where())
        self.finish("554 5.5.1 Error: no valid recipients")

    def smtp_RSET(self, argument: str) -> None:
        self.sender = None
        self.write("250 2.0.0 Ok")

    def smtp_NOOP(self, argument: str) -> None:
        self.write("250 2.0.0 Ok")

    def smtp_VRFY(self, argument: str) -> None:
        if not argument:
            self.write("501 5.5.4 Syntax: VRFY address")
        elif self.settings.vrfyDisabled:
            self.write("502 5.5.1 VRFY command is disabled")
        else:
            self.write(self.session.rcptReply)

    def smtp_ETRN(self, argument: str) -> None:
        if self.helo is None:
            self.write("503 5.5.1 Error: send HELO/EHLO first")
        elif not argument:
            self.write("500 Syntax: ETRN domain")
        else:
            self.write("458 Unable to queue messages")

    def smtp_QUIT(self, argument: str) -> None:
        self.finish("221 2.0.0 Bye")

    def smtp_STARTTLS(self, argument: str) -> None:
        self.write("502 5.5.1 Error: command not implemented")
