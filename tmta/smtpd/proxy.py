"""
The before-queue content filter (C{smtpd_proxy_filter}; Postfix's
C{smtpd_proxy.c}): smtpd passes each mail transaction, as it happens, to
an SMTP filter, which passes it on to a second smtpd that queues it; the
filter's replies are the client's, so mail the filter refuses is refused
during the SMTP session, not bounced later.

smtpd first applies its own restrictions to every command.  At the
first recipient that passes them it connects to the filter, reads its
greeting, says EHLO (C{smtpd_proxy_ehlo}), forwards what it knows of the
client with XFORWARD when the filter offers it, and sends the client's
MAIL command; then each RCPT and DATA as the client gives them, the
message text with smtpd's Received: header ahead of it, and the end of
data, whose reply the client gets.  A filter that cannot be reached, or
that does not answer within C{smtpd_proxy_timeout}, costs the client a
temporary refusal: nothing is accepted unfiltered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

from twisted.internet import defer, endpoints
from twisted.internet.protocol import Factory, Protocol

from tmta.common.endpoints import tcpClientEndpoint
from tmta.logging import Logger
from tmta.mail.dsn import xtextEncode
from tmta.smtpd.data import DataDecoder
from tmta.smtpd.transfer import TooBig

log = Logger()

#: What the client hears when the filter fails (Postfix's reply).
PROXY_ERROR = "451 4.3.0 Error: queue file write error"

#: The XFORWARD attributes smtpd sends, when the filter offers them.
XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "SOURCE")


class ProxyError(Exception):
    """
    The filter could not be talked to: unreachable, gone, or silent.
    """


@dataclass(frozen=True)
class ProxySettings:
    """
    Where the filter listens and how it is talked to.

    @ivar service: C{smtpd_proxy_filter} as written, for the log.
    """

    service: str
    family: str
    host: str = ""
    port: int = 0
    path: str = ""
    ehlo: str = ""
    timeout: float = 100.0
    #: C{smtpd_proxy_options = speed_adjust}: the filter hears of the
    #: transaction only once the whole message is in (L{ReplayedProxy}).
    speedAdjust: bool = False

    @classmethod
    def fromConfig(cls, config) -> Optional["ProxySettings"]:
        """
        @return: C{None} when no filter is set.
        @raise ValueError: an address that is not C{host:port},
            C{inet:host:port} or C{unix:path}.
        """
        value = config.get("smtpd_proxy_filter").strip()
        if not value:
            return None
        common = {"service": value, "ehlo": config.get("smtpd_proxy_ehlo")
                  or config.get("myhostname"),
                  "timeout": config.getTime("smtpd_proxy_timeout"),
                  "speedAdjust": "speed_adjust" in {
                      o.lower() for o in config.getList("smtpd_proxy_options")}}
        if value.lower().startswith("unix:"):
            path = value[5:]
            if not path.startswith("/"):
                import os

                path = os.path.join(config.get("queue_directory"), path)
            return cls(family="unix", path=path, **common)
        address = value[5:] if value.lower().startswith("inet:") else value
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"smtpd_proxy_filter = {value}: not host:port, inet:host:port "
                             "or unix:path")
        return cls(family="inet", host=host, port=int(port), **common)

    def endpoint(self, reactor):
        if self.family == "unix":
            return endpoints.UNIXClientEndpoint(reactor, self.path, timeout=self.timeout)
        return tcpClientEndpoint(reactor, self.host, self.port, self.timeout)


class _ReplyReader(Protocol):
    """
    The SMTP client end of the connection to the filter: one command at
    a time, each answered by a (possibly multi-line) reply.
    """

    transport: Any

    def __init__(self, clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self._buffer = b""
        self._lines: List[str] = []
        self._waiting: Optional[defer.Deferred] = None
        self._timer = None
        self.lost = False

    def expect(self, line: Optional[str]) -> defer.Deferred:
        """
        Send C{line} (C{None}: nothing, for the greeting) and wait for
        the reply.
        """
        self._waiting = defer.Deferred()
        self._timer = self.clock.callLater(self.timeout, self._timedOut)
        if line is not None:
            self.transport.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        self._answer()
        return self._waiting

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._answer()

    def _answer(self) -> None:
        while self._waiting is not None:
            end = self._buffer.find(b"\n")
            if end < 0:
                return
            line = self._buffer[:end].rstrip(b"\r").decode("utf-8", "replace")
            self._buffer = self._buffer[end + 1:]
            self._lines.append(line)
            if len(line) >= 3 and line[:3].isdigit() and line[3:4] in ("", " "):
                lines, self._lines = self._lines, []
                self._fire("\r\n".join(lines))
            elif not (len(line) >= 4 and line[:3].isdigit() and line[3] == "-"):
                lines, self._lines = self._lines, []
                self._fire(ProxyError(f"received garbage: {line[:100]}"))

    def _fire(self, result) -> None:
        waiting, self._waiting = self._waiting, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if waiting is not None:
            if isinstance(result, Exception):
                waiting.errback(result)
            else:
                waiting.callback(result)

    def _timedOut(self) -> None:
        self._timer = None
        self._fire(ProxyError("timeout"))
        self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        self.lost = True
        self._fire(ProxyError("lost connection"))


class ProxySession:
    """
    One mail transaction's conversation with the filter.
    """

    def __init__(self, settings: ProxySettings, reactor) -> None:
        self.settings = settings
        self.reactor = reactor
        self.reader: Optional[_ReplyReader] = None

    async def open(self, mailCommand: str, xforward: Dict[str, str]) -> Optional[str]:
        """
        Connect, say EHLO, forward the client's particulars and its
        MAIL command.

        @return: C{None} when the filter took MAIL; else the reply for
            the client (the filter's refusal of MAIL, or L{PROXY_ERROR}).
        """
        settings = self.settings
        try:
            self.reader = await settings.endpoint(self.reactor).connect(
                Factory.forProtocol(lambda: _ReplyReader(self.reactor, settings.timeout)))
        except Exception as e:
            log.warn("connect to proxy filter {service}: {error}", service=settings.service,
                     error=str(e))
            return PROXY_ERROR
        ok, reply = await self.command(None, "2")
        if ok:
            ok, reply = await self.command(f"EHLO {settings.ehlo}", "2")
        if ok:
            offered = _xforwardOffered(reply)
            attributes = [f"{name}={xtextEncode(xforward.get(name) or '[UNAVAILABLE]')}"
                          for name in XFORWARD_ATTRIBUTES if name in offered]
            if attributes:
                ok, reply = await self.command("XFORWARD " + " ".join(attributes), "2")
        if not ok:
            self.close()
            return PROXY_ERROR
        ok, reply = await self.command(mailCommand, "2")
        if not ok:
            self.close()
            return reply
        return None

    async def command(self, line: Optional[str], expect: str) -> Tuple[bool, str]:
        """
        Send C{line} and read the filter's reply.

        @param expect: the first digit of the reply wanted (C{""}: any).
        @return: whether it came, and the reply for the client: the
            filter's own when it refused, else L{PROXY_ERROR}.
        """
        reader = self.reader
        if reader is None or reader.lost:
            return False, PROXY_ERROR
        try:
            reply = await reader.expect(line)
        except ProxyError as e:
            log.warn("{problem} (proxy {service})", problem=str(e),
                     service=self.settings.service)
            self.close()
            return False, PROXY_ERROR
        if not expect or reply[:1] == expect:
            return True, reply
        log.warn('proxy {service} rejected "{request}": "{reply}"',
                 service=self.settings.service,
                 request=line if line is not None else "connection request", reply=reply)
        if reply[:1] in ("2", "3") or not reply[:3].isdigit():
            return False, PROXY_ERROR
        return False, reply

    def write(self, data: bytes) -> None:
        if self.reader is not None and not self.reader.lost:
            self.reader.write(data)

    def close(self) -> None:
        """
        Say QUIT and hang up (the transaction is over, or failed).
        """
        reader, self.reader = self.reader, None
        if reader is not None and not reader.lost:
            reader.transport.write(b"QUIT\r\n")
            reader.transport.loseConnection()


class ReplayedProxy:
    """
    The filter's transaction under C{smtpd_proxy_options = speed_adjust}:
    the recipients and the message are taken (each recipient that
    passed smtpd's checks is accepted at once) and kept, and only at the
    end of data is the filter connected to and told all of it, so a slow
    client holds no filter process.  As Postfix warns, the filter should
    then take or refuse the message whole: a recipient it refuses now
    refuses the message.
    """

    def __init__(self, settings: ProxySettings, reactor, mailCommand: str,
                 xforward: Dict[str, str]) -> None:
        self.session = ProxySession(settings, reactor)
        self.mailCommand = mailCommand
        self.xforward = xforward
        self.recipients: List[str] = []
        self.text: List[bytes] = []

    async def command(self, line: Optional[str], expect: str) -> Tuple[bool, str]:
        if line is not None and line.upper().startswith("RCPT"):
            self.recipients.append(line)
            return True, "250 2.1.5 Ok"
        if line == "DATA":
            return True, "354 End data with <CR><LF>.<CR><LF>"
        if line == ".":
            return await self._replay()
        return await self.session.command(line, expect)

    def write(self, data: bytes) -> None:
        self.text.append(data)

    async def _replay(self) -> Tuple[bool, str]:
        session = self.session
        refusal = await session.open(self.mailCommand, self.xforward)
        if refusal is not None:
            return False, refusal
        for line in self.recipients:
            accepted, reply = await session.command(line, "2")
            if not accepted:
                session.close()
                return False, reply
        accepted, reply = await session.command("DATA", "3")
        if not accepted:
            session.close()
            return False, reply
        text, self.text = b"".join(self.text), []
        session.write(text)
        return await session.command(".", "")

    def close(self) -> None:
        self.text = []
        self.session.close()


def _xforwardOffered(ehloReply: str) -> Set[str]:
    offered: Set[str] = set()
    for line in ehloReply.split("\r\n"):
        words = line[4:].split()
        if words and words[0].upper() == "XFORWARD":
            offered.update(w.upper() for w in words[1:])
    return offered


class ProxyTransfer:
    """
    The message text after DATA (or in BDAT chunks), decoded as for
    cleanup and sent on to the filter as SMTP text: CRLF line ends, dots
    doubled, after C{header} (smtpd's Received: header, and what an
    access table's PREPEND asked for).  The end of data is the filter's
    to answer.

    The same interface as L{tmta.smtpd.transfer.MessageTransfer}.
    """

    def __init__(self, proxy: Any, header: bytes, sender: str, sizeLimit: int,
                 bareNewline: str = "normalize", decoder=None) -> None:
        self.proxy = proxy
        self.sender = sender
        self.sizeLimit = sizeLimit
        self.chunked = decoder is not None
        self.decoder: Any = decoder if decoder is not None else DataDecoder(bareNewline)
        self.size = 0
        self.tooBig = False
        self._lineStart = True
        self._send(header)

    @property
    def done(self) -> bool:
        return self.decoder.done or self.decoder.failed

    @property
    def failed(self) -> bool:
        return self.decoder.failed

    def feed(self, data: bytes) -> bytes:
        text, rest = self.decoder.feed(data)
        self._add(text)
        return rest

    def _add(self, text: bytes) -> None:
        if not text or self.tooBig:
            return
        self.size += len(text)
        if self.sizeLimit and self.size > self.sizeLimit:
            self.tooBig = True
            return
        self._send(text)

    def _send(self, text: bytes) -> None:
        if not text:
            return
        stuffed = text.replace(b"\n.", b"\n..")
        if self._lineStart and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        self._lineStart = stuffed.endswith(b"\n")
        self.proxy.write(stuffed.replace(b"\n", b"\r\n"))

    async def finish(self, beforeEnd=None) -> Tuple[int, str, str]:
        """
        Send the end of data and return the filter's reply, as
        C{(code, text, "")}: the text is the whole reply after the code
        of its first line.

        @raise TooBig: the message was over the size limit.
        """
        if self.chunked:
            self._add(self.decoder.flush())
        if self.tooBig:
            self.proxy.close()
            raise TooBig()
        if not self._lineStart:
            self.proxy.write(b"\r\n")
        _, reply = await self.proxy.command(".", "")
        return int(reply[:3]), reply[4:], ""

    def abort(self) -> None:
        self.proxy.close()

    def release(self) -> None:
        self.proxy.close()


__all__ = ["PROXY_ERROR", "ProxySession", "ProxySettings", "ProxyTransfer", "ReplayedProxy"]
