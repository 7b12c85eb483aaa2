"""
The message text of an SMTP session, by DATA or by BDAT chunks (RFC
3030 CHUNKING): streamed to cleanup as it arrives, and cleanup's answer
given to the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from twisted.internet import defer

from tmta.common.eager import eagerly
from tmta.logging import Logger
from tmta.mail import replies
from tmta.mail.received import receivedHeader
from tmta.smtpd.data import ChunkDecoder
from tmta.smtpd.proxy import ProxyTransfer
from tmta.smtpd.session import SessionState
from tmta.smtpd.transfer import CleanupLost, MessageTransfer, TooBig

log = Logger()

_BDAT = re.compile(r"^(\d{1,10})(?:[ \t]+(LAST))?$", re.I)


@dataclass
class _Chunk:
    """
    One BDAT chunk being read: its bytes are read whatever happens, and
    the reply given once they all arrived.

    @ivar error: the reply refusing the chunk, or C{None}.
    """

    size: int
    remaining: int
    last: bool
    error: Optional[str] = None


class DataCommands(SessionState):
    """
    DATA and BDAT, for L{tmta.smtpd.protocol.SMTPServer}: opens a message
    at cleanup, feeds it the decoded text (L{inData} and L{messageData}
    are what the command reader asks), and answers with cleanup's reply.
    """

    _notedBareNewline = False
    _chunk: Optional[_Chunk] = None

    def smtp_DATA(self, argument: str):
        if argument:
            self._error("501 5.5.4 Syntax: DATA")
            return None
        if self._transfer is not None:
            self._error("503 5.5.1 Error: BDAT in progress")
            return None
        if self.sender is None:
            self._error("503 5.5.1 Error: need MAIL command")
            return None
        if not self.recipients:
            self._error("554 5.5.1 Error: no valid recipients")
            return None
        return eagerly(self._startData())

    def smtp_BDAT(self, argument: str):
        match = _BDAT.match(argument.strip())
        if not match:
            # The chunk's length is unknown: its bytes cannot be told from
            # commands, so the session cannot go on (521, as Postfix).
            self.reply("521 5.5.4 Syntax: BDAT count [LAST]")
            self.close()
            return None
        size, last = int(match.group(1)), match.group(2) is not None
        chunk = _Chunk(size, size, last)
        if self.sender is None:
            chunk.error = "503 5.5.1 Error: need MAIL command"
        elif not self.recipients:
            chunk.error = "554 5.5.1 Error: no valid recipients"
        if chunk.error is not None or self._transfer is not None:
            self._chunk = chunk
            return None

        async def start():
            opened = await self._openTransfer(ChunkDecoder(self.bareNewlineMode))
            if not opened:
                self._resetTransaction()
                chunk.error = "554 5.5.1 Error: no transaction"
            self._chunk = chunk

        return eagerly(start())

    async def _startData(self) -> None:
        if await self._openTransfer():
            self.reply("354 End data with <CR><LF>.<CR><LF>")

    async def _openTransfer(self, decoder=None) -> bool:
        """
        Apply C{smtpd_data_restrictions} and open the message at cleanup.

        @param decoder: BDAT's L{ChunkDecoder}; C{None} for DATA.
        @return: whether the message is open; if not, the client has
            been answered.
        """
        refusal = await self.restrict("DATA")
        if refusal is not None:
            self.logRejection("DATA", refusal[1])
            self._error(refusal[1])
            return False
        if self.milters is not None:
            verdict = await self.milters.data()
            if self.milterRefused("DATA", verdict):
                return False
        if self.proxy is not None:
            return await self._openProxyTransfer(decoder)
        try:
            cleanup = await self.cleanupClient.open()
        except Exception as e:
            log.error("cannot connect to cleanup: {error}", error=e)
            self.reply(replies.line(replies.QUEUE_WRITE_ERROR))
            return False
        attributes = {**self.settings.receivingAttributes, **self.arrivalAttributes()}
        attributes.update(self.dsnAttributes)
        attributes.update(self.transactionActions.attributes())
        envelope = (self.sender, attributes,
                    [(r, r, notify, orcpt) if notify or orcpt else (r, r)
                     for r, (notify, orcpt) in zip(self.recipients, self.recipientDSN)])
        self._transfer = MessageTransfer(cleanup, envelope, self.settings.messageSizeLimit,
                                         self.bareNewlineMode, decoder)
        cleanup.throttle(self.pauseFor("cleanup"))
        return True

    def arrivalAttributes(self) -> dict:
        """
        How the message arrives, as its Received: header tells it: the
        client, its HELO name, the protocol, TLS, and who authenticated.
        """
        attributes = {
            "client_name": self.clientName,
            "client_address": self.clientAddress,
            "helo_name": self.helo or "",
            "protocol": self.receivedProtocol(),
        }
        tls = self.settings.tls
        if self.tlsSummary is not None and tls is not None and tls.receivedHeader:
            attributes["tls"] = self.tlsSummary
        if self.saslUsername is not None:
            attributes["sasl_method"] = self.saslMethod or ""
            attributes["sasl_username"] = self.saslUsername
            if self.settings.sasl is not None and self.settings.sasl.authenticatedHeader:
                attributes["sasl_header"] = "yes"
        return attributes

    async def _openProxyTransfer(self, decoder) -> bool:
        """
        Begin the message at the before-queue filter: its DATA, then
        smtpd's Received: header (and what PREPEND asked for) ahead of
        the text.
        """
        proxy = self.proxy
        assert proxy is not None
        accepted, reply = await proxy.command("DATA", "3")
        if not accepted:
            self._resetTransaction()
            self._error(reply)
            return False
        attributes = self.arrivalAttributes()
        actions = self.transactionActions
        for name in ("hold", "discard", "filter", "redirect"):
            if getattr(actions, name):
                log.warn("access table: with smtpd_proxy_filter specified, action {action} "
                         "is unavailable", action=name.upper())
        header = b"".join(line.encode("utf-8", "surrogateescape") + b"\n"
                          for line in actions.prepend)
        header += receivedHeader(attributes, self.settings.myhostname, None,
                                 self.recipients) + b"\n"
        self._transfer = ProxyTransfer(proxy, header, self.sender or "",
                                       self.settings.messageSizeLimit, self.bareNewlineMode,
                                       decoder)
        return True

    def inData(self) -> bool:
        return self._chunk is not None or (
            self._transfer is not None and not self._transfer.chunked)

    def messageData(self) -> bool:
        if self._chunk is not None:
            return self._chunkData()
        transfer = self._transfer
        assert transfer is not None, "message text outside DATA"
        self._buffer = transfer.feed(self._buffer)
        if not transfer.done:
            return False
        if transfer.failed:
            self._abortTransfer()
            self._resetTransaction()
            self.bareNewlineReceived()
            return True
        if transfer.decoder.sawBareNewline and not self._notedBareNewline:
            self._notedBareNewline = True
            log.info("{client}: bare <LF> received in the message text", client=self.client)
        # From here on the message is cleanup's to finish, whatever the
        # client does.
        self._transfer = None
        self.waitFor(defer.Deferred.fromCoroutine(self._endData(transfer)))
        return True

    async def _endData(self, transfer: MessageTransfer) -> None:
        refusal = await self.restrict("END-OF-MESSAGE")
        if refusal is not None:
            transfer.abort()
            transfer.release()
            self.logRejection("END-OF-MESSAGE", refusal[1])
            self._resetTransaction()
            self._error(refusal[1])
            return
        if isinstance(transfer, ProxyTransfer):
            await self._endProxyData(transfer)
            return
        milters = self.milters
        forwarded = self.forwardedSummary()
        try:
            code, reason, self.queueId = await transfer.finish(
                milters.lend if milters is not None else None)
        except TooBig:
            self.reply(replies.line(replies.TOO_BIG))
            log.info("NOQUEUE: reject: size limit exceeded from {client}", client=self.client)
            return
        except Exception as e:
            if not isinstance(e, CleanupLost):
                log.error("cleanup failed: {error}", error=e)
            self.reply(replies.line(replies.QUEUE_WRITE_ERROR))
            return
        finally:
            if milters is not None:
                milters.reclaim()
            transfer.release()
            self._resetTransaction()
        if code // 100 == 2:
            if self.saslUsername is not None:
                log.info("{queueId}: client={client}, sasl_method={method}, "
                         "sasl_username={username}{forwarded}", queueId=self.queueId,
                         client=self.client, method=self.saslMethod,
                         username=self.saslUsername, forwarded=forwarded)
            else:
                log.info("{queueId}: client={client}{forwarded}", queueId=self.queueId,
                         client=self.client, forwarded=forwarded)
            # The soft and junk limits count what a client does without
            # delivering mail.
            self.errors = self.junkCommands = 0
        else:
            log.info(
                "{queueId}: reject: END-OF-MESSAGE from {client}: {code} {reason}; "
                "from=<{sender}> proto={proto} helo=<{helo}>",
                queueId=self.queueId or "NOQUEUE", client=self.client, code=code,
                reason=reason, sender=transfer.sender, proto=self.protocolName,
                helo=self.helo or "",
            )
        self.reply(f"{code} {reason}")

    async def _endProxyData(self, transfer: ProxyTransfer) -> None:
        """
        End the message at the before-queue filter, whose reply is the
        client's, and log it as Postfix does (C{proxy-accept},
        C{proxy-reject}).
        """
        try:
            code, text, _ = await transfer.finish()
        except TooBig:
            self.reply(replies.line(replies.TOO_BIG))
            log.info("NOQUEUE: reject: size limit exceeded from {client}", client=self.client)
            return
        finally:
            transfer.release()
            sender, recipients = transfer.sender, list(self.recipients)
            self._resetTransaction()
        reply = f"{code} {text}"
        details = f" from=<{sender}>"
        if recipients:
            details += f" to=<{recipients[-1]}>"
        details += f" proto={self.protocolName} helo=<{self.helo or ''}>"
        if self.saslUsername is not None:
            details += f" sasl_username=<{self.saslUsername}>"
        log.info("proxy-{outcome}: END-OF-MESSAGE: {reply};{details}",
                 outcome="accept" if code // 100 == 2 else "reject",
                 reply=reply.replace("\r\n", " "), details=details)
        if code // 100 == 2:
            self.errors = self.junkCommands = 0
        self.reply(reply)

    def _chunkData(self) -> bool:
        chunk = self._chunk
        assert chunk is not None
        data = self._buffer[:chunk.remaining]
        self._buffer = self._buffer[len(data):]
        chunk.remaining -= len(data)
        transfer = self._transfer
        if chunk.error is None and transfer is not None and data:
            transfer.feed(data)
            if transfer.failed:
                self._chunk = None
                self._abortTransfer()
                self._resetTransaction()
                self.bareNewlineReceived()
                return True
        if chunk.remaining:
            return False
        self._chunk = None
        if chunk.error is not None:
            self._error(chunk.error)
            return True
        if chunk.last and transfer is not None:
            self._transfer = None
            self.waitFor(defer.Deferred.fromCoroutine(self._endData(transfer)))
            return True
        self.reply(f"250 2.0.0 Ok: {chunk.size} bytes")
        return True

    def _abortTransfer(self) -> None:
        """
        Give up the message whose text is being read.
        """
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            transfer.abort()
            transfer.release()
