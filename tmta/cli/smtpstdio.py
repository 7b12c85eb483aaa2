"""
C{tmta-sendmail -bs}: an SMTP conversation on standard input and output,
as Sendmail and Postfix offer it to programs that speak SMTP but run
the mailer as a command (some mail user agents, C{git send-email}).

Each message is posted the way C{tmta-sendmail} posts one -- a file in
C{maildrop/} written as the user -- so the user's identity, not the
C{MAIL FROM} given, is what pickup believes.
"""

from __future__ import annotations

import copy
from typing import BinaryIO, Callable, List, Optional

from tmta.mail.address import AddressError, checkAddress, parsePath

#: The longest command line accepted, as smtpd's limit.
LINE_LIMIT = 2048


class StdioSMTP:
    """
    One SMTP session over two byte streams.

    @param post: posts one message: C{post(posting, content)} returns
        its queue id, or raises C{OSError}.
    """

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, hostname: str, base,
                 post: Callable[[object, bytes], str], sizeLimit: int = 0) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.hostname = hostname
        self.base = base
        self.post = post
        self.sizeLimit = sizeLimit
        self.sender: Optional[str] = None
        self.recipients: List[str] = []

    def reply(self, text: str) -> None:
        self.stdout.write(text.encode("utf-8", "replace") + b"\r\n")
        self.stdout.flush()

    def _line(self) -> Optional[bytes]:
        line = self.stdin.readline(LINE_LIMIT + 2)
        if not line:
            return None
        return line.rstrip(b"\r\n")

    def run(self) -> int:
        self.reply(f"220 {self.hostname} ESMTP tmta (sendmail -bs)")
        while True:
            line = self._line()
            if line is None:
                return 0
            if len(line) > LINE_LIMIT:
                self.reply("500 5.5.0 Error: line too long")
                continue
            text = line.decode("utf-8", "replace")
            verb, _, argument = text.partition(" ")
            verb = verb.upper()
            handler = getattr(self, "smtp_" + verb, None)
            if handler is None:
                self.reply("500 5.5.2 Error: command not recognized")
                continue
            if handler(argument.strip()) == "quit":
                return 0

    def smtp_HELO(self, argument: str):
        self.reply(f"250 {self.hostname}")

    def smtp_EHLO(self, argument: str):
        lines = [self.hostname, "PIPELINING", "8BITMIME"]
        if self.sizeLimit:
            lines.append(f"SIZE {self.sizeLimit}")
        lines.append("ENHANCEDSTATUSCODES")
        for line in lines[:-1]:
            self.stdout.write(f"250-{line}\r\n".encode())
        self.reply(f"250 {lines[-1]}")

    def smtp_NOOP(self, argument: str):
        self.reply("250 2.0.0 Ok")

    def smtp_RSET(self, argument: str):
        self.sender, self.recipients = None, []
        self.reply("250 2.0.0 Ok")

    def smtp_QUIT(self, argument: str):
        self.reply("221 2.0.0 Bye")
        return "quit"

    def smtp_MAIL(self, argument: str):
        if self.sender is not None:
            self.reply("503 5.5.1 Error: nested MAIL command")
            return
        if not argument.upper().startswith("FROM:"):
            self.reply("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        try:
            address, _ = parsePath(argument[5:].strip())
            self.sender = checkAddress(address) if address else ""
        except AddressError as e:
            self.reply(f"501 5.1.7 Bad sender address syntax: {e}")
            return
        self.reply("250 2.1.0 Ok")

    def smtp_RCPT(self, argument: str):
        if self.sender is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        if not argument.upper().startswith("TO:"):
            self.reply("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        try:
            address, _ = parsePath(argument[3:].strip())
            if not address:
                raise AddressError("empty address")
            self.recipients.append(checkAddress(address))
        except AddressError as e:
            self.reply(f"501 5.1.3 Bad recipient address syntax: {e}")
            return
        self.reply("250 2.1.5 Ok")

    def smtp_DATA(self, argument: str):
        if self.sender is None:
            self.reply("503 5.5.1 Error: need MAIL command")
            return
        if not self.recipients:
            self.reply("554 5.5.1 Error: no valid recipients")
            return
        self.reply("354 End data with <CR><LF>.<CR><LF>")
        lines: List[bytes] = []
        size = 0
        tooBig = False
        while True:
            line = self.stdin.readline(1 << 20)
            if not line:
                return "quit"
            stripped = line.rstrip(b"\r\n")
            if stripped == b".":
                break
            if stripped.startswith(b"."):
                stripped = stripped[1:]
            size += len(stripped) + 1
            if self.sizeLimit and size > self.sizeLimit:
                tooBig = True
                continue
            lines.append(stripped)
        sender, recipients = self.sender, self.recipients
        self.sender, self.recipients = None, []
        if tooBig:
            self.reply("552 5.3.4 Error: message file too big")
            return
        posting = copy.copy(self.base)
        posting.sender = sender
        posting.recipients = recipients
        try:
            queueId = self.post(posting, b"\n".join(lines) + b"\n")
        except OSError as e:
            self.reply(f"451 4.3.0 Error: cannot queue the message: {e.strerror or e}")
            return
        self.reply(f"250 2.0.0 Ok: queued as {queueId}")
