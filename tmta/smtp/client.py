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
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tmta.mail.dsn import xtextEncode
from tmta.smtp.mime import downgrade8bit
from tmta.smtp.transaction import Reply, SessionFailed, Timeouts, Transaction

if TYPE_CHECKING:
    from tmta.smtp.tls import PeerTrust

#: Bounds on what a server may send as one reply.
MAX_REPLY_LINE = 64 * 1024
MAX_REPLY_LINES = 1000
TRANSCRIPT_LINES = 200

_REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


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


@implementer(IHandshakeListener)
class SMTPClient(protocol.Protocol):
    """
    One SMTP (or LMTP) session, which may carry several transactions
    one after another (the delivery agent keeps idle sessions for
    reuse).

    L{ready} fires with this protocol once the server greeted it and
    answered EHLO (or HELO, or LHLO), or fails with L{SessionFailed}.
    L{send} then runs one transaction; L{quit} ends the session.  With
    PIPELINING offered, MAIL, every RCPT and DATA go out in one write.

    @param tls: the session's TLS (L{tmta.smtp.tls.ClientTLS}), or
        C{None} for none: with it, STARTTLS is used when offered, and
        required when its policy says so.
    @param sasl: the login for this server (L{tmta.smtp.sasl.SASLLogin}),
        or C{None}: with it, the session authenticates when the server
        offers AUTH.
    @ivar trust: what the TLS handshake showed, once done
        (L{tmta.smtp.tls.PeerTrust}).
    """

    #: A TCP connection, which STARTTLS may turn into a TLS one.
    transport: Any

    def __init__(self, heloName: str, clock, timeouts: Optional[Timeouts] = None,
                 lmtp: bool = False, tls=None, sasl=None) -> None:
        self.heloName = heloName
        self.tls = tls
        self.sasl = sasl
        self.trust: Optional[PeerTrust] = None
        #: The session's commands and replies (not the message), the
        #: latest L{TRANSCRIPT_LINES}, for a postmaster notice.
        self.transcript: Deque[str] = deque(maxlen=TRANSCRIPT_LINES)
        #: Why the server broke the protocol, when it did.
        self.protocolError: Optional[str] = None
        self._authenticating = False
        self.clock = clock
        self.timeouts = timeouts or Timeouts()
        self.lmtp = lmtp
        self.ready: defer.Deferred = defer.Deferred()
        self.extensions: Dict[str, str] = {}
        self.transactions = 0
        self.busy = False
        self._dirty = False
        self._buffer = b""
        self._lines: List[Tuple[int, str]] = []
        self._waiting: List[Tuple[str, float, defer.Deferred]] = []
        self._timer = None
        self._lost = False

    @property
    def usable(self) -> bool:
        """
        Whether the session may take another transaction now.
        """
        return not self._lost and not self.busy and self.transport is not None \
            and self.transport.connected

    # -- the connection --------------------------------------------------

    def connectionMade(self) -> None:
        d = defer.Deferred.fromCoroutine(self._open())
        d.addCallbacks(lambda _: self.ready.callback(self), self._openFailed)

    def _openFailed(self, failure: Failure) -> None:
        self._close()
        self.ready.errback(_asSessionFailed(failure, "initial greeting"))

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\n" not in self._buffer and len(self._buffer) > MAX_REPLY_LINE:
            self._protocolError(f"reply line longer than {MAX_REPLY_LINE} bytes")
            return
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            match = _REPLY_LINE.match(line.rstrip(b"\r"))
            if match is None or len(self._lines) >= MAX_REPLY_LINES:
                self._note("In", line.rstrip(b"\r")[:200].decode("utf-8", "replace"))
                self._protocolError("malformed reply " + repr(line[:100]) if match is None
                                    else f"reply longer than {MAX_REPLY_LINES} lines")
                return
            code, more, text = match.groups()
            text = text.decode("utf-8", "replace")
            self.transcript.append(f"In: {code.decode()}{more.decode()}{text}")
            self._lines.append((int(code), text))
            if more == b" ":
                lines, self._lines = self._lines, []
                self._deliver(Reply(lines[-1][0], " ".join(t for _, t in lines)), lines)

    def _protocolError(self, reason: str) -> None:
        self.protocolError = reason
        self._failAll(SessionFailed(self._stage(), reason=reason, protocol=True))
        self._close()

    def _note(self, direction: str, line: str) -> None:
        self.transcript.append(f"{direction}: {line}")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        stage = self._stage()
        if stage == "TLS handshake":
            self._failAll(SessionFailed(stage, reason=f"Cannot start TLS: handshake failure "
                                                      f"({_tlsError(reason)})", tls=True))
        else:
            self._failAll(SessionFailed(stage))

    def handshakeCompleted(self) -> None:
        if self._waiting and self._waiting[0][0] == "TLS handshake":
            self._deliver(None, None)

    # -- waiting for replies ---------------------------------------------

    def _stage(self) -> str:
        return self._waiting[0][0] if self._waiting else "end of session"

    def _expect(self, stage: str, timeout: float) -> defer.Deferred:
        """
        The next reply not yet asked for (replies come in order).
        """
        d: defer.Deferred = defer.Deferred()
        if self._lost:
            d.errback(SessionFailed(stage))
            return d
        self._waiting.append((stage, timeout, d))
        if len(self._waiting) == 1:
            self._armTimer()
        return d

    def _armTimer(self) -> None:
        self._cancelTimer()
        if self._waiting:
            self._timer = self.clock.callLater(self._waiting[0][1], self._timedOut)

    def _deliver(self, reply: Optional[Reply], lines) -> None:
        if not self._waiting:
            return
        _, _, d = self._waiting.pop(0)
        self._armTimer()
        d.callback((reply, lines))

    def _timedOut(self) -> None:
        self._timer = None
        stage = self._stage()
        self._failAll(SessionFailed(stage, reason=f"conversation timed out while receiving "
                                                  f"the {stage} reply"))
        self._close(abort=True)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _failAll(self, error: SessionFailed) -> None:
        waiting, self._waiting = self._waiting, []
        self._cancelTimer()
        for stage, _, d in waiting:
            d.errback(SessionFailed(stage, error.reply, error.reason, protocol=error.protocol)
                      if stage != error.stage else error)

    def _write(self, *lines: str) -> None:
        for line in lines:
            # Logins stay out of transcripts.
            if line.upper().startswith("AUTH "):
                line = " ".join(line.split(" ", 2)[:2]) + " (login data)"
            elif self._authenticating:
                line = "(login data)"
            self._note("Out", line)
        self.transport.write(b"".join(line.encode("utf-8", "surrogateescape") + b"\r\n"
                                      for line in lines))

    async def _command(self, line: str, stage: str, timeout: float) -> Reply:
        self._write(line)
        reply, _ = await self._expect(stage, timeout)
        return reply

    def _close(self, abort: bool = False) -> None:
        self._lost = True
        if self.transport is not None and self.transport.connected:
            if abort:
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()

    # -- the session -----------------------------------------------------

    async def _open(self) -> None:
        greeting, _ = await self._expect("initial greeting", self.timeouts.greeting)
        if greeting.code != 220:
            raise SessionFailed("initial greeting", greeting)
        await self._hello()
        if self.tls is not None and self.tls.policy.level != "none":
            await self._startTLS()
        if self.sasl is not None and "AUTH" in self.extensions:
            await self._authenticate()

    async def _authenticate(self) -> None:
        encrypted = self.trust is not None
        mechanisms = self.sasl.mechanisms(self.extensions["AUTH"], encrypted)
        if not mechanisms:
            raise SessionFailed("AUTH", reason="SASL authentication failed: no mechanism "
                                "available (the server offers "
                                f"{self.extensions['AUTH'] or 'none'})", sasl=True)
        command, answers = self.sasl.exchange(mechanisms[0])
        self._authenticating = True
        try:
            reply = await self._command(command, "AUTH", self.timeouts.helo)
            while reply.code == 334 and answers:
                reply = await self._command(answers.pop(0), "AUTH", self.timeouts.helo)
            if reply.code == 334:
                self._write("*")  # a challenge we have no answer for: cancel
                reply, _ = await self._expect("AUTH", self.timeouts.helo)
        finally:
            self._authenticating = False
        if reply.code != 235:
            raise SessionFailed("AUTH", reply, reason=f"SASL authentication failed; server "
                                f"said: {reply}", sasl=True)

    async def _startTLS(self) -> None:
        required = self.tls.policy.required
        if "STARTTLS" not in self.extensions:
            if required:
                raise SessionFailed("EHLO", reason="TLS is required, but was not offered by "
                                                   "host", tls=True)
            return
        reply = await self._command("STARTTLS", "STARTTLS", self.timeouts.starttls)
        if reply.code != 220:
            if required:
                raise SessionFailed("STARTTLS", reply, tls=True)
            return  # may: on in plaintext, as Postfix goes on
        handshake = self._expect("TLS handshake", self.timeouts.starttls)
        self.transport.startTLS(self.tls)
        await handshake
        trust = self.trust = self.tls.judge(self.transport.getHandle())
        if trust.problem is not None:
            raise SessionFailed("TLS handshake", reason=trust.problem, tls=True)
        # What the server offered in plaintext counts for nothing now.
        self.extensions = {}
        await self._hello()

    async def _hello(self) -> None:
        verb = "LHLO" if self.lmtp else "EHLO"
        self._write(f"{verb} {self.heloName}")
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

    async def send(self, t: Transaction) -> Transaction:
        """
        Run one transaction.

        @return: C{t}, with each recipient's reply and the final reply
            (when a recipient was accepted).
        @raise SessionFailed: the session failed, or the server refused
            the whole transaction (the reply says which).
        """
        self.busy = True
        try:
            return await self._transaction(t)
        except SessionFailed:
            self._close()
            raise
        finally:
            self.busy = False
            self.transactions += 1

    def _requireTLSMet(self) -> bool:
        """
        Whether this session may carry REQUIRETLS mail: verified TLS to a
        server that offers REQUIRETLS.
        """
        return (self.trust is not None and self.trust.status == "Verified"
                and "REQUIRETLS" in self.extensions)

    async def _transaction(self, t: Transaction) -> Transaction:
        timeouts = self.timeouts
        if self._dirty:
            reply = await self._command("RSET", "RSET", timeouts.mail)
            if reply.code != 250:
                raise SessionFailed("RSET", reply)
        content = t.content
        eightBit = not content.isascii()
        if eightBit and "8BITMIME" not in self.extensions:
            # As Postfix does: 8-bit parts as quoted-printable, rather
            # than 8-bit octets to a server that did not ask for them.
            content = downgrade8bit(content)
            eightBit = not content.isascii()
        international = not (t.sender.isascii() and all(t.sentAs.get(r, r).isascii()
                                                        for r in t.recipients))
        if international and "SMTPUTF8" not in self.extensions:
            raise SessionFailed("MAIL FROM", Reply(550, "5.6.7 SMTPUTF8 is required"),
                                "SMTPUTF8 is required, but was not offered by host",
                                local=True)
        requireTLS = t.requireTLS
        if requireTLS and not t.sender and not self._requireTLSMet():
            # RFC 8689 section 4.3: a bounce of REQUIRETLS mail is not
            # lost for want of REQUIRETLS on its way back; it goes without.
            requireTLS = False
        if requireTLS:
            trust = getattr(self, "trust", None)
            if trust is None or trust.status != "Verified":
                raise SessionFailed(
                    "MAIL FROM", Reply(550, "5.7.30 REQUIRETLS support required"),
                    "REQUIRETLS: the message requires TLS that verifies the server, but the "
                    f"session is {'not under TLS' if trust is None else trust.status} with host",
                    local=True)
            if "REQUIRETLS" not in self.extensions:
                raise SessionFailed(
                    "MAIL FROM", Reply(550, "5.7.30 REQUIRETLS support required"),
                    "REQUIRETLS is required, but was not offered by host", local=True)
        limit = self.extensions.get("SIZE", "").strip()
        if limit.isdigit() and int(limit) and len(content) > int(limit):
            # Refused for good before anything is sent, as Postfix does.
            raise SessionFailed("MAIL FROM", Reply(552, "5.3.4 Message too big"),
                                f"message size {len(content)} exceeds size limit {limit} "
                                "of server", local=True)
        self._dirty = True
        if t.xforward and "XFORWARD" in self.extensions:
            await self._xforward(t.xforward)
        mail = f"MAIL FROM:<{t.sender}>"
        if "SIZE" in self.extensions:
            mail += f" SIZE={len(content)}"
        if eightBit and "8BITMIME" in self.extensions:
            mail += " BODY=8BITMIME"
        if international:
            mail += " SMTPUTF8"
        if requireTLS:
            mail += " REQUIRETLS"
        t.dsnPassed = "DSN" in self.extensions
        rcpts = [f"RCPT TO:<{t.sentAs.get(r, r)}>" for r in t.recipients]
        if t.dsnPassed:
            if t.ret:
                mail += f" RET={t.ret}"
            if t.envid:
                mail += f" ENVID={xtextEncode(t.envid)}"
            rcpts = [command + _dsnParameters(*t.dsn.get(r, ("", "")))
                     for command, r in zip(rcpts, t.recipients)]
        commands = [mail] + rcpts
        if "PIPELINING" in self.extensions:
            # One write for the whole group, replies read in order.
            data = () if t.verifyOnly else ("DATA",)
            self._write(*commands, *data)
            answers = [self._expect("MAIL FROM", timeouts.mail)]
            answers += [self._expect("RCPT TO", timeouts.rcpt) for _ in t.recipients]
            if data:
                answers.append(self._expect("DATA", timeouts.dataInit))
            replies = [reply for reply, _ in await defer.gatherResults(answers,
                                                                       consumeErrors=True)
                       .addErrback(lambda f: f.value.subFailure.raiseException())]
            mailReply, rcptReplies = replies[0], replies[1:len(t.recipients) + 1]
            dataReply = replies[-1] if data else None
        else:
            mailReply = await self._command(mail, "MAIL FROM", timeouts.mail)
            rcptReplies, dataReply = [], None
            if mailReply.code == 250:
                for command in commands[1:]:
                    rcptReplies.append(await self._command(command, "RCPT TO", timeouts.rcpt))
        if mailReply.code != 250:
            raise SessionFailed("MAIL FROM", mailReply)
        t.replies = dict(zip(t.recipients, rcptReplies))
        accepted = [r for r in t.recipients if t.replies[r].code // 100 == 2]
        if t.verifyOnly:
            return t
        if dataReply is None and accepted:
            dataReply = await self._command("DATA", "DATA", timeouts.dataInit)
        if not accepted:
            if dataReply is not None and dataReply.code == 354:
                # A server that said go ahead with nobody to send to.
                self.transport.write(b".\r\n")
                await self._expect("end of data", timeouts.dataDone)
            return t
        assert dataReply is not None, "DATA was sent: a recipient was accepted"
        if dataReply.code != 354:
            raise SessionFailed("DATA", dataReply)
        self.transport.write(transparent(content))
        if self.lmtp:
            for recipient in accepted:
                t.replies[recipient], _ = await self._expect("end of data",
                                                             timeouts.dataDone)
            t.final = t.replies[accepted[-1]]
        else:
            t.final, _ = await self._expect("end of data", timeouts.dataDone)
        self._dirty = False
        return t

    async def _xforward(self, attributes: Dict[str, str]) -> None:
        """
        XFORWARD the attributes the server offers, each known value as
        xtext and each unknown one as C{[UNAVAILABLE]}, in commands short
        enough for any server.
        """
        offered = {w.upper() for w in self.extensions["XFORWARD"].split()}
        words = [f"{name}={xtextEncode(attributes.get(name) or '[UNAVAILABLE]')}"
                 for name in ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
                 if name in offered]
        commands: List[str] = []
        for word in words:
            if commands and len(commands[-1]) + len(word) + 1 <= 500:
                commands[-1] += " " + word
            else:
                commands.append("XFORWARD " + word)
        for command in commands:
            reply = await self._command(command, "XFORWARD", self.timeouts.mail)
            if reply.code != 250:
                raise SessionFailed("XFORWARD", reply)

    def quit(self) -> None:
        """
        End the session politely (without waiting for the answer for
        long).
        """
        if self._lost or self.transport is None:
            return
        d = defer.Deferred.fromCoroutine(self._command("QUIT", "QUIT", self.timeouts.quit))
        d.addBoth(lambda _: self._close())


def _asSessionFailed(failure: Failure, stage: str) -> Failure:
    if failure.check(SessionFailed):
        return failure
    return Failure(SessionFailed(stage, reason=str(failure.value)))


def _dsnParameters(notify: str, orcpt: str) -> str:
    text = f" NOTIFY={notify}" if notify else ""
    if orcpt and ";" in orcpt:
        kind, address = orcpt.split(";", 1)
        text += f" ORCPT={kind};{xtextEncode(address)}"
    return text


def _tlsError(reason) -> str:
    """
    OpenSSL's complaint in a lost TLS connection, short.
    """
    value = getattr(reason, "value", reason)
    args = getattr(value, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        last = args[0][-1]
        if isinstance(last, tuple) and last:
            return str(last[-1])
    return str(value) or type(value).__name__
