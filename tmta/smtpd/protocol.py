"""
The SMTP server protocol.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, task
from twisted.logger import Logger

from tmta.address import (
    AddressError,
    isSafeMailboxName,
    localName,
    parsePath,
)
from tmta import replies
from tmta.dsn import DSNError, parseEnvid, parseNotify, parseOrcpt, parseRet
from tmta.smtpd.reader import CommandReader
from tmta.smtpd.restrictions import DEFER, REJECT, RecipientContext
from tmta.smtpd.transfer import CleanupLost, MessageTransfer, TooBig
from tmta.smtpd.recipients import RecipientTables
from tmta.tables import TableLookupError

log = Logger()

_VERB = re.compile(rb"^([A-Za-z]+)(?:[ \t]+(.*))?$")
_FORBIDDEN = {b"CONNECT", b"GET", b"POST"}
_NEEDS_SMTPUTF8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
_HELP = "214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"


@dataclass
class SMTPSettings:
    """
    The parameters an smtpd session obeys, read once per process.
    """

    myhostname: str
    banner: str
    timeout: float
    hardErrorLimit: int
    recipientLimit: int
    messageSizeLimit: int
    lineLengthLimit: int
    heloRequired: bool
    vrfyDisabled: bool
    strictEnvelopes: bool
    recipientDelimiter: str
    queueMinfree: int
    softErrorLimit: int = 10
    errorSleepTime: float = 1.0
    junkCommandLimit: int = 100
    deadline: str = "read"
    minDataRate: int = 500
    restrictionLists: List = field(default_factory=list)
    #: Who is known (L{tmta.smtpd.recipients.RecipientTables}); C{None}:
    #: every recipient is.
    recipientTables: Optional[RecipientTables] = None

    @classmethod
    def fromConfig(cls, config, restrictionLists,
                   recipientTables: Optional[RecipientTables]) -> "SMTPSettings":
        return cls(
            myhostname=config.get("myhostname"),
            banner=config.get("smtpd_banner"),
            timeout=config.getTime("smtpd_timeout"),
            hardErrorLimit=config.getInt("smtpd_hard_error_limit"),
            recipientLimit=config.getInt("smtpd_recipient_limit"),
            messageSizeLimit=config.getInt("message_size_limit"),
            lineLengthLimit=config.getInt("line_length_limit"),
            heloRequired=config.getBool("smtpd_helo_required"),
            vrfyDisabled=config.getBool("disable_vrfy_command"),
            strictEnvelopes=config.getBool("strict_rfc821_envelopes"),
            recipientDelimiter=config.get("recipient_delimiter"),
            queueMinfree=config.getInt("queue_minfree"),
            softErrorLimit=config.getInt("smtpd_soft_error_limit"),
            errorSleepTime=config.getTime("smtpd_error_sleep_time"),
            junkCommandLimit=config.getInt("smtpd_junk_command_limit"),
            deadline="request" if config.getBool("smtpd_per_request_deadline") else "read",
            minDataRate=max(1, config.getInt("smtpd_min_data_rate")),
            restrictionLists=restrictionLists,
            recipientTables=recipientTables,
        )


class SMTPServer(CommandReader):
    """
    One SMTP session: the commands, the transaction they build, and its
    hand-over to cleanup.

    @ivar cleanupClient: how messages reach cleanup (a
        L{tmta.cleanup.client.CleanupClient}, shared by the process's
        sessions).
    @ivar resolve: returns a Deferred firing with the
        L{tmta.rewrite.Resolution} of an address.
    """

    def __init__(
        self,
        settings: SMTPSettings,
        cleanupClient,
        resolve: Callable[[str], defer.Deferred],
        lookupName: Callable[[str], defer.Deferred],
        clock,
        freeSpace: Callable[[], Optional[int]] = lambda: None,
    ) -> None:
        CommandReader.__init__(self)
        self.settings = settings
        self.lineLengthLimit = settings.lineLengthLimit
        self.cleanupClient = cleanupClient
        self.resolve = resolve
        self.lookupName = lookupName
        self.freeSpace = freeSpace
        self.clock = clock
        # TimeoutMixin's clock, for smtpd_timeout.
        self.callLater = clock.callLater
        self.timeoutPeriod = settings.timeout
        self.deadline = settings.deadline
        self.minDataRate = settings.minDataRate
        self.junkCommands = 0
        self._transfer: Optional[MessageTransfer] = None
        self.errors = 0
        self.helo: Optional[str] = None
        self.protocolName = "SMTP"
        self.clientAddress = ""
        self.clientName = "unknown"
        self.queueId = ""
        self._resetTransaction()

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        CommandReader.connectionMade(self)
        peer = self.transport.getPeer()
        self.clientAddress = getattr(peer, "host", "") or "127.0.0.1"
        self.setTimeout(self.settings.timeout)
        d = self.lookupName(self.clientAddress)
        d.addErrback(lambda f: "unknown")
        d.addCallback(self._greet)
        self.waitFor(d)

    def _greet(self, name: str) -> None:
        self.clientName = name or "unknown"
        if self._closing:
            return
        log.info("connect from {client}", client=self.client)
        self.reply(f"220 {self.settings.banner}")

    @property
    def client(self) -> str:
        return f"{self.clientName}[{self.clientAddress}]"

    def connectionLost(self, reason) -> None:
        CommandReader.connectionLost(self, reason)
        self.setTimeout(None)
        self._abortTransfer()
        log.info("disconnect from {client}", client=self.client)

    def timeoutConnection(self) -> None:
        if self.extendDeadline():
            return
        log.info("timeout after {state} from {client}", state=self._state(), client=self.client)
        self.reply(f"421 4.4.2 {self.settings.myhostname} Error: timeout exceeded")
        self.close()

    def _state(self) -> str:
        if self._transfer is not None:
            return "DATA"
        if self.recipients:
            return "RCPT"
        if self.sender is not None:
            return "MAIL"
        return "CONNECT" if self.helo is None else "HELO"

    # -- input -------------------------------------------------------------

    def lineTooLong(self) -> None:
        self._error("500 5.5.2 Error: line too long")

    def internalError(self, reason) -> None:
        log.failure("smtpd: internal error", reason)
        self.reply(replies.line(replies.INTERNAL_ERROR))

    def commandReceived(self, line: bytes):
        settings = self.settings
        if self.errors >= settings.softErrorLimit and settings.errorSleepTime > 0:
            # A client that keeps making errors gets slower answers
            # (smtpd_error_sleep_time), until the hard limit ends it.
            return task.deferLater(self.clock, settings.errorSleepTime, self._command, line)
        return self._command(line)

    def _command(self, line: bytes):
        if self._closing:
            return None
        match = _VERB.match(line)
        if not match or b"\0" in line:
            self._error("500 5.5.2 Error: bad syntax")
            return None
        verb = match.group(1).upper()
        try:
            argument = (match.group(2) or b"").decode("utf-8").strip()
        except UnicodeDecodeError:
            self._error("500 5.5.2 Error: bad UTF-8 syntax")
            return None
        if verb in _FORBIDDEN:
            log.warn("non-SMTP command from {client}: {verb}", client=self.client,
                     verb=verb.decode("ascii"))
            self.reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
            self.close()
            return None
        handler = getattr(self, "smtp_" + verb.decode("ascii"), None)
        if handler is None:
            self._error("502 5.5.2 Error: command not recognized")
            return None
        return handler(argument)

    def _error(self, text: str) -> None:
        """
        Answer with an error that counts towards smtpd_hard_error_limit.
        """
        self.errors += 1
        if not self._tooManyErrors():
            self.reply(text)

    def _tooManyErrors(self) -> bool:
        """
        End the session when it reached smtpd_hard_error_limit.
        """
        if self.errors < self.settings.hardErrorLimit:
            return False
        log.warn("too many errors after {state} from {client}", state=self._state(),
                 client=self.client)
        self.reply(f"421 4.7.0 {self.settings.myhostname} Error: too many errors")
        self.close()
        return True

    def _junk(self) -> bool:
        """
        Count a command that moves no mail (NOOP, RSET, VRFY); past
        smtpd_junk_command_limit each counts as an error too.

        @return: whether the session was ended for it.
        """
        self.junkCommands += 1
        if self.junkCommands <= self.settings.junkCommandLimit:
            return False
        self.errors += 1
        return self._tooManyErrors()

    # -- commands ----------------------------------------------------------

    def _resetTransaction(self) -> None:
        self.sender: Optional[str] = None
        self.recipients: List[str] = []
        #: Each accepted recipient's RFC 3461 NOTIFY and ORCPT, in step
        #: with C{recipients}.
        self.recipientDSN: List[Tuple[str, str]] = []
        #: The transaction's RET and ENVID, when given.
        self.dsnAttributes: Dict[str, str] = {}
        self.declaredSize = 0

    def _badHelo(self, argument: str) -> bool:
        """
        Whether a HELO/EHLO argument is unfit for a Received header:
        control characters, white space inside, or over 255 characters.
        """
        return (
            len(argument) > 255
            or any(ord(c) < 33 or ord(c) == 127 for c in argument)
        )

    def _hello(self, verb: str, argument: str) -> bool:
        """
        Check and record a HELO or EHLO; C{False} when it was refused.
        """
        if not argument:
            self._error(f"501 5.5.4 Syntax: {verb} hostname")
            return False
        if self._badHelo(argument):
            self._error(f"501 5.5.2 Error: invalid {verb} name")
            return False
        self._resetTransaction()
        self.helo, self.protocolName = argument, "ESMTP" if verb == "EHLO" else "SMTP"
        return True

    def smtp_HELO(self, argument: str) -> None:
        if self._hello("HELO", argument):
            self.reply(f"250 {self.settings.myhostname}")

    def smtp_EHLO(self, argument: str) -> None:
        if not self._hello("EHLO", argument):
            return
        lines = [self.settings.myhostname, "PIPELINING", f"SIZE {self.settings.messageSizeLimit}"]
        if not self.settings.vrfyDisabled:
            lines.append("VRFY")
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        text = "\r\n".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)
        )
        self.reply(text)

    def smtp_MAIL(self, argument: str) -> None:
        if self.settings.heloRequired and self.helo is None:
            self._error("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.sender is not None:
            self._error("503 5.5.1 Error: nested MAIL command")
            return
        if not argument[:5].upper() == "FROM:":
            self._error("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        try:
            sender, parameters = parsePath(argument[5:], self.settings.strictEnvelopes)
        except AddressError as e:
            self._error(f"501 5.1.7 Bad sender address syntax ({e})")
            return
        if not sender.isascii():
            self._error(_NEEDS_SMTPUTF8)
            return
        size = 0
        dsn: Dict[str, str] = {}
        for parameter in parameters.split():
            name, _, value = parameter.partition("=")
            name = name.upper()
            try:
                if name == "SIZE" and value.isdigit():
                    size = int(value)
                elif name == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                    pass
                elif name == "RET" and "dsn_ret" not in dsn:
                    dsn["dsn_ret"] = parseRet(value)
                elif name == "ENVID" and "dsn_envid" not in dsn:
                    dsn["dsn_envid"] = parseEnvid(value)
                else:
                    self._error(f"555 5.5.4 Unsupported option: {parameter}")
                    return
            except DSNError as e:
                self._error(str(e))
                return
        limit = self.settings.messageSizeLimit
        if limit and size > limit:
            self._error(replies.line(replies.TOO_BIG))
            return
        if not self._roomFor(size):
            log.warn("not enough free space in the queue for a message of {size} bytes from "
                     "{client}", size=size, client=self.client)
            self.reply(replies.line(replies.INSUFFICIENT_STORAGE))
            return
        self.sender, self.declaredSize, self.dsnAttributes = sender, size, dsn
        self.reply("250 2.1.0 Ok")

    def _roomFor(self, size: int) -> bool:
        """
        Whether the queue has room for a message of C{size} bytes (0:
        not declared): as Postfix does, C{queue_minfree} must stay free,
        and one and a half times the declared size on top of it.
        """
        free = self.freeSpace()
        if free is None:
            return True
        return free - self.settings.queueMinfree >= 1.5 * size

    def smtp_RCPT(self, argument: str):
        if self.sender is None:
            self._error("503 5.5.1 Error: need MAIL command")
            return None
        if not argument[:3].upper() == "TO:":
            self._error("501 5.5.4 Syntax: RCPT TO:<address>")
            return None
        try:
            recipient, parameters = parsePath(argument[3:], self.settings.strictEnvelopes)
        except AddressError as e:
            self._error(f"501 5.1.3 Bad recipient address syntax ({e})")
            return None
        if not recipient:
            self._error("501 5.1.3 Bad recipient address syntax")
            return None
        if not recipient.isascii():
            self._error(_NEEDS_SMTPUTF8)
            return None
        notify = orcpt = ""
        for parameter in parameters.split():
            name, _, value = parameter.partition("=")
            name = name.upper()
            try:
                if name == "NOTIFY" and not notify:
                    notify = parseNotify(value)
                elif name == "ORCPT" and not orcpt:
                    orcpt = parseOrcpt(value)
                else:
                    self._error(f"555 5.5.4 Unsupported option: {parameter}")
                    return None
            except DSNError as e:
                self._error(str(e))
                return None
        if len(self.recipients) >= self.settings.recipientLimit:
            self.reply("452 4.5.3 Error: too many recipients")
            return None
        return defer.Deferred.fromCoroutine(self._checkRecipient(recipient, notify, orcpt))

    async def _checkRecipient(self, recipient: str, notify: str = "", orcpt: str = "") -> None:
        resolution = await self.resolve(recipient)
        context = RecipientContext(self.clientAddress, recipient, resolution.addressClass)
        for restrictions in self.settings.restrictionLists:
            decision = restrictions.evaluate(context)
            if isinstance(decision, defer.Deferred):
                decision = await decision
            decision, reply = decision
            if decision in (REJECT, DEFER):
                self._rejectRecipient(recipient, reply)
                return
        if resolution.addressClass == "local" and not isSafeMailboxName(
                localName(resolution.recipient, self.settings.recipientDelimiter)):
            # local would refuse it: refuse it now rather than bounce it
            # to a sender nobody checked.
            self._rejectRecipient(
                recipient,
                f"550 5.1.3 <{recipient}>: Recipient address rejected: "
                "not a valid mailbox name",
            )
            return
        try:
            refusal = self._unknown(resolution, recipient)
        except TableLookupError as e:
            log.warn("{client}: recipient table: {error}", client=self.client, error=str(e))
            refusal = f"451 4.3.0 <{recipient}>: Temporary lookup failure"
        if refusal is None and resolution.transport == "retry" and \
                resolution.nexthop.startswith("table lookup failure"):
            refusal = f"451 4.3.0 <{recipient}>: Temporary lookup failure"
        if refusal is not None:
            self._rejectRecipient(recipient, refusal)
            return
        self.recipients.append(recipient)
        self.recipientDSN.append((notify, orcpt))
        self.reply("250 2.1.5 Ok")

    def _rejectRecipient(self, recipient: str, reply: str) -> None:
        log.info(
            "NOQUEUE: reject: RCPT from {client}: {reply}; from=<{sender}> "
            "to=<{recipient}> proto={proto} helo=<{helo}>",
            client=self.client, reply=reply, sender=self.sender, recipient=recipient,
            proto=self.protocolName, helo=self.helo or "",
        )
        self._error(reply)

    def _unknown(self, resolution, given: str) -> Optional[str]:
        tables = self.settings.recipientTables
        if tables is None:
            return None
        return tables.unknown(resolution.addressClass, resolution.recipient, given)

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
            "protocol": self.protocolName,
        }
        attributes.update(self.dsnAttributes)
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
            log.info("{queueId}: client={client}", queueId=self.queueId, client=self.client)
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

    def smtp_RSET(self, argument: str) -> None:
        if self._junk():
            return
        self._resetTransaction()
        self.reply("250 2.0.0 Ok")

    def smtp_NOOP(self, argument: str) -> None:
        if not self._junk():
            self.reply("250 2.0.0 Ok")

    def smtp_QUIT(self, argument: str) -> None:
        self.reply("221 2.0.0 Bye")
        self.close()

    def smtp_HELP(self, argument: str) -> None:
        self.reply(_HELP)

    def smtp_VRFY(self, argument: str):
        if self._junk():
            return None
        if self.settings.vrfyDisabled:
            self._error("502 5.5.1 VRFY command is disabled")
            return None
        try:
            address, _ = parsePath(argument)
        except AddressError:
            self._error("501 5.1.3 Bad recipient address syntax")
            return None
        if not address:
            self._error("501 5.5.4 Syntax: VRFY address")
            return None

        async def verify():
            resolution = await self.resolve(address)
            try:
                refusal = self._unknown(resolution, address)
            except TableLookupError:
                self.reply(f"451 4.3.0 <{address}>: Temporary lookup failure")
                return
            if refusal is not None:
                self.reply(refusal)
            else:
                self.reply(f"252 2.0.0 {address}")

        return defer.Deferred.fromCoroutine(verify())
