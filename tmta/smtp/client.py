"""
The SMTP client protocol: one session that hands one message to a
server and learns what became of each recipient.

twisted.mail's client turns CRLF input into CR CR LF and dot-stuffs per
chunk, and it has no per-recipient results for a transaction it then
abandons; this protocol is small and does exactly what the delivery
agent needs.  Each stage has its own time limit, as Postfix's smtp(8)
has (C{smtp_helo_timeout}, C{smtp_mail_timeout}, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from twisted.internet import defer, protocol
from twisted.python.failure import Failure

_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass
class Reply:
    """
    One SMTP reply: its code and its text (lines joined with spaces).
    """

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"

    @property
    def dsn(self) -> str:
        """
        The enhanced status code the reply carries, or one made from its
        code's class.
        """
        match = _ENHANCED.match(self.text)
        if match:
            return ".".join(match.groups())
        return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(self.code // 100, "4.0.0")


class SessionFailed(Exception):
    """
    The session ended before the message was accepted: the server
    refused it as a whole, went silent, or went away.

    @ivar reply: the server's reply, when it gave one; C{None} for a
        time-out or a lost connection.
    @ivar stage: what the client was waiting for.
    """

    def __init__(self, stage: str, reply: Optional[Reply] = None, reason: str = "") -> None:
        self.stage = stage
        self.reply = reply
        self.reason = reason or (str(reply) if reply else "lost connection")
        super().__init__(f"{self.reason} (in reply to {stage})")


@dataclass
class Timeouts:
    """
    The time limit for each stage, Postfix's C{smtp_*_timeout}.
    """

    greeting: float = 300.0
    helo: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    dataInit: float = 120.0
    dataDone: float = 600.0
    quit: float = 300.0


@dataclass
class Transaction:
    """
    What one session is to send, and what it learned.

    @ivar replies: each recipient's reply by address (only those the
        server answered).
    @ivar final: the server's reply to the end of data, once sent.
    """

    sender: str
    recipients: List[str]
    content: bytes
    replies: Dict[str, Reply] = field(default_factory=dict)
    final: Optional[Reply] = None


def transparent(content: bytes) -> bytes:
    """
    The message as it goes on the wire: every line ending in CRLF, a dot
    doubled at the start of a line, and the end-of-data mark.
    """
    lines = content.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    return (body + b"\r\n" if lines else b"") + b".\r\n"


class SMTPClient(protocol.Protocol):
    """
    One SMTP session for one L{Transaction}.

    L{done} fires with the transaction (recipients answered, and the
    final reply when any recipient was accepted), or fails with
    L{SessionFailed}.
    """

    def __init__(self, transaction: Transaction, heloName: str, clock,
                 timeouts: Optional[Timeouts] = None, lmtp: bool = False) -> None:
        self.transaction = transaction
        self.heloName = heloName
        self.clock = clock
        self.timeouts = timeouts or Timeouts()
        self.lmtp = lmtp
        self.done: defer.Deferred = defer.Deferred()
        self.extensions: Dict[str, str] = {}
        self._buffer = b""
        self._lines: List[Tuple[int, str]] = []
        self._waiting: Optional[Tuple[str, defer.Deferred]] = None
        self._timer = None
        self._finished = False

    # -- the connection --------------------------------------------------

    def connectionMade(self) -> None:
        d = defer.Deferred.fromCoroutine(self._session())
        d.addBoth(self._end)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            match = _REPLY_LINE.match(line.rstrip(b"\r"))
            if match is None:
                self._fail(SessionFailed(self._stage(), reason="malformed reply "
                                         + repr(line[:100])))
                return
            code, more, text = match.groups()
            self._lines.append((int(code), text.decode("utf-8", "replace")))
            if more == b" ":
                lines, self._lines = self._lines, []
                self._deliver(Reply(lines[-1][0], " ".join(t for _, t in lines)), lines)

    def connectionLost(self, reason) -> None:
        if self._waiting is not None:
            self._fail(SessionFailed(self._stage()))

    # -- waiting for replies ---------------------------------------------

    def _stage(self) -> str:
        return self._waiting[0] if self._waiting else "end of session"

    def _expect(self, stage: str, timeout: float) -> defer.Deferred:
        d = defer.Deferred()
        self._waiting = (stage, d)
        self._timer = self.clock.callLater(timeout, self._timedOut)
        return d

    def _deliver(self, reply: Reply, lines) -> None:
        if self._waiting is None:
            return
        stage, d = self._waiting
        self._waiting = None
        self._cancelTimer()
        d.callback((reply, lines))

    def _timedOut(self) -> None:
        self._timer = None
        stage = self._stage()
        self._fail(SessionFailed(stage, reason=f"conversation timed out while receiving "
                                               f"the {stage} reply"))
        self.transport.abortConnection()

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _fail(self, error: SessionFailed) -> None:
        if self._waiting is not None:
            _, d = self._waiting
            self._waiting = None
            self._cancelTimer()
            d.errback(error)

    async def _command(self, line: str, stage: str, timeout: float) -> Reply:
        self.transport.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        reply, _ = await self._expect(stage, timeout)
        return reply

    # -- the session -----------------------------------------------------

    async def _session(self) -> Transaction:
        t = self.transaction
        greeting, _ = await self._expect("initial greeting", self.timeouts.greeting)
        if greeting.code != 220:
            raise SessionFailed("initial greeting", greeting)
        await self._hello()
        mail = f"MAIL FROM:<{t.sender}>"
        if "SIZE" in self.extensions:
            mail += f" SIZE={len(t.content)}"
        if "8BITMIME" in self.extensions and any(b > 127 for b in t.content):
            mail += " BODY=8BITMIME"
        reply = await self._command(mail, "MAIL FROM", self.timeouts.mail)
        if reply.code != 250:
            raise SessionFailed("MAIL FROM", reply)
        for recipient in t.recipients:
            t.replies[recipient] = await self._command(f"RCPT TO:<{recipient}>", "RCPT TO",
                                                       self.timeouts.rcpt)
        accepted = [r for r in t.recipients if t.replies[r].code // 100 == 2]
        if not accepted:
            await self._quit()
            return t
        reply = await self._command("DATA", "DATA", self.timeouts.dataInit)
        if reply.code != 354:
            raise SessionFailed("DATA", reply)
        self.transport.write(transparent(t.content))
        if self.lmtp:
            for recipient in accepted:
                t.replies[recipient], _ = await self._expect("end of data",
                                                             self.timeouts.dataDone)
            t.final = t.replies[accepted[-1]]
        else:
            t.final, _ = await self._expect("end of data", self.timeouts.dataDone)
        await self._quit()
        return t

    async def _hello(self) -> None:
        verb = "LHLO" if self.lmtp else "EHLO"
        self.transport.write(f"{verb} {self.heloName}\r\n".encode())
        reply, lines = await self._expect(verb, self.timeouts.helo)
        if reply.code == 250:
            for _, text in lines[1:]:
                keyword, _, value = text.partition(" ")
                self.extensions[keyword.upper()] = value
            return
        if self.lmtp or reply.code // 100 != 5:
            raise SessionFailed(verb, reply)
        reply = await self._command(f"HELO {self.heloName}", "HELO", self.timeouts.helo)
        if reply.code != 250:
            raise SessionFailed("HELO", reply)

    async def _quit(self) -> None:
        self._finished = True
        try:
            await self._command("QUIT", "QUIT", self.timeouts.quit)
        except SessionFailed:
            pass

    def _end(self, result) -> None:
        self._cancelTimer()
        if self.transport is not None and self.transport.connected:
            self.transport.loseConnection()
        if isinstance(result, Failure) and not result.check(SessionFailed):
            result = Failure(SessionFailed(self._stage(), reason=str(result.value)))
        self.done.callback(result) if not isinstance(result, Failure) else self.done.errback(result)
