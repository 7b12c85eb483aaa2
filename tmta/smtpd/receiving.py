"""
The DATA phase of an SMTP session: the message text streamed to cleanup
as it arrives, and cleanup's answer given to the client.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from tmta import replies
from tmta.smtpd.transfer import CleanupLost, MessageTransfer, TooBig

log = Logger()


class DataCommands:
    """
    DATA, for L{tmta.smtpd.protocol.SMTPServer}: opens a message at
    cleanup, feeds it the decoded text (L{inData} and L{messageData} are
    what the command reader asks), and answers with cleanup's reply.
    """

    def smtp_DATA(self, argument: str):
        if argument:
            self._error("501 5.5.4 Syntax: DATA")
            return None
        if self.sender is None:
            self._error("503 5.5.1 Error: need MAIL command")
            return None
        if not self.recipients:
            self._error("554 5.5.1 Error: no valid recipients")
            return None
        return defer.Deferred.fromCoroutine(self._startData())

    async def _startData(self) -> None:
        refusal = await self.restrict("DATA")
        if refusal is not None:
            self.logRejection("DATA", refusal[1])
            self._error(refusal[1])
            return
        try:
            cleanup = await self.cleanupClient.open()
        except Exception as e:
            log.error("cannot connect to cleanup: {error}", error=e)
            self.reply(replies.line(replies.QUEUE_WRITE_ERROR))
            return
        attributes = {
            "client_name": self.clientName,
            "client_address": self.clientAddress,
            "helo_name": self.helo or "",
            "protocol": self.receivedProtocol(),
        }
        if self.tlsSummary is not None and self.settings.tls.receivedHeader:
            attributes["tls"] = self.tlsSummary
        if self.saslUsername is not None:
            attributes["sasl_method"] = self.saslMethod or ""
            attributes["sasl_username"] = self.saslUsername
            if self.settings.sasl.authenticatedHeader:
                attributes["sasl_header"] = "yes"
        attributes.update(self.dsnAttributes)
        attributes.update(self.transactionActions.attributes())
        envelope = (self.sender, attributes,
                    [(r, r, notify, orcpt) if notify or orcpt else (r, r)
                     for r, (notify, orcpt) in zip(self.recipients, self.recipientDSN)])
        self._transfer = MessageTransfer(cleanup, envelope, self.settings.messageSizeLimit)
        cleanup.throttle(self.pauseFor("cleanup"))
        self.reply("354 End data with <CR><LF>.<CR><LF>")

    def inData(self) -> bool:
        return self._transfer is not None

    def messageData(self) -> bool:
        self._buffer = self._transfer.feed(self._buffer)
        if not self._transfer.done:
            return False
        # From here on the message is cleanup's to finish, whatever the
        # client does.
        transfer, self._transfer = self._transfer, None
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
        try:
            code, reason, self.queueId = await transfer.finish()
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
            transfer.release()
            self._resetTransaction()
        if code // 100 == 2:
            if self.saslUsername is not None:
                log.info("{queueId}: client={client}, sasl_method={method}, "
                         "sasl_username={username}", queueId=self.queueId, client=self.client,
                         method=self.saslMethod, username=self.saslUsername)
            else:
                log.info("{queueId}: client={client}", queueId=self.queueId,
                         client=self.client)
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

    def _abortTransfer(self) -> None:
        """
        Give up the message whose text is being read.
        """
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            transfer.abort()
            transfer.release()
