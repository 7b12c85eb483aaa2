"""
The envelope commands of an SMTP session: MAIL, RCPT and VRFY, with the
checks each recipient goes through (restrictions, mailbox names, the
tables of known recipients).
"""

from __future__ import annotations

from typing import Dict, Optional

from twisted.internet import defer

from tmta.common.eager import eagerly
from tmta.logging import Logger
from tmta.mail import replies
from tmta.mail.address import AddressError, isSafeMailboxName, localName, parsePath
from tmta.mail.dsn import DSNError, parseEnvid, parseNotify, parseOrcpt, parseRet
from tmta.smtpd.proxy import ProxySession, ReplayedProxy
from tmta.smtpd.session import SessionState
from tmta.smtpd.verdicts import LOOKUP_FAILED
from tmta.tables import TableLookupError

log = Logger()

NEEDS_SMTPUTF8 = "553 5.6.7 Must declare SMTPUTF8 to send unicode address"


class EnvelopeCommands(SessionState):
    """
    MAIL, RCPT and VRFY, for L{tmta.smtpd.protocol.SMTPServer}: they
    build the transaction (C{sender}, C{recipients}, C{recipientDSN},
    C{dsnAttributes}, C{declaredSize}) that the DATA phase hands to
    cleanup.
    """

    @property
    def dsnOffered(self) -> bool:
        """
        Whether DSN is one of the session's extensions: not when
        C{smtpd_discard_ehlo_keywords} hides it.
        """
        return "dsn" not in self.settings.discardEhloKeywords

    def smtp_MAIL(self, argument: str):
        if self.settings.heloRequired and self.helo is None:
            self._error("503 5.5.1 Error: send HELO/EHLO first")
            return
        if self.sender is not None:
            self._error("503 5.5.1 Error: nested MAIL command")
            return
        if self.needsTLS():
            return
        if not argument[:5].upper() == "FROM:" or not argument[5:].strip(" \t"):
            self._error("501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        #: The command as the client gave it, for a before-queue filter.
        self.mailCommand = f"MAIL {argument}"
        try:
            sender, parameters = parsePath(argument[5:], self.settings.strictEnvelopes)
        except AddressError as e:
            self._error(f"501 5.1.7 Bad sender address syntax ({e})")
            return
        size = 0
        dsn: Dict[str, str] = {}
        utf8 = authSeen = False
        for parameter in parameters.replace("\t", " ").split(" "):
            if not parameter:
                continue
            name, equals, value = parameter.partition("=")
            name = name.upper()
            try:
                if name == "SIZE" and equals:
                    if not (value.isascii() and value.isdigit()):
                        self._error("501 5.5.4 Bad message size syntax")
                        return
                    size = int(value)
                elif name == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                    pass
                elif name == "SMTPUTF8" and not equals and self.settings.smtputf8:
                    utf8 = True  # as often as it is given, as Postfix takes it
                elif name == "REQUIRETLS" and not equals and self.requireTLSOffered():
                    # RFC 8689: the message goes on only over TLS that
                    # verifies its server (L{tmta.smtp.client}).
                    dsn["requiretls"] = "yes"
                elif name == "AUTH" and equals:
                    # RFC 4954's AUTH= is taken and not believed: the sender
                    # of a message is who logged in, never what a client says.
                    if authSeen:
                        self._error("503 5.5.4 Error: multiple AUTH= options")
                        return
                    authSeen = True
                elif name in ("RET", "ENVID") and equals:
                    if not self.dsnOffered:
                        self._error("501 5.7.1 DSN support is disabled")
                        return
                    if name == "RET":
                        if "dsn_ret" in dsn:
                            raise DSNError("501 5.5.4 Bad RET parameter syntax")
                        dsn["dsn_ret"] = parseRet(value)
                    else:
                        if "dsn_envid" in dsn:
                            raise DSNError("501 5.5.4 Bad ENVID parameter syntax")
                        dsn["dsn_envid"] = parseEnvid(value)
                else:
                    self._error(f"555 5.5.4 Unsupported option: {parameter}")
                    return
            except DSNError as e:
                self._error(str(e))
                return
        if sender is None:
            self._error("501 5.1.7 Bad sender address syntax")
            return
        if not utf8 and not sender.isascii():
            self._error(NEEDS_SMTPUTF8)
            return
        if utf8:
            dsn["smtputf8"] = "yes"
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
        if self.milters is not None:
            self.mailParameters = parameters.replace("\t", " ").split()
        restrictions = self.settings.restrictions
        if self.milters is None and not self.limits("message") and (restrictions is None or not any(
                lst.restrictions for lst in restrictions.forStage("MAIL"))):
            self.reply("250 2.1.0 Ok")
            return None
        return eagerly(self._checkSender())

    async def _checkSender(self) -> None:
        tooMuch = await self.limitExceeded("message")
        if tooMuch is not None:
            self._resetTransaction()
            self.reply(tooMuch)
            return
        refusal = await self.restrict("MAIL")
        if refusal is not None:
            self.logRejection("MAIL", refusal[1])
            self._resetTransaction()
            self._error(refusal[1])
            return
        if self.milters is not None and self.sender is not None:
            if self.sender:
                resolution = await self.resolve(self.sender)
                self.milterAddressMacros.update(mail_host=resolution.nexthop,
                                                mail_mailer=resolution.transport)
            verdict = await self.milters.mail(f"<{self.sender}>", self.mailParameters)
            if self.milterRefused("MAIL", verdict):
                self._resetTransaction()
                return
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
        if not argument[:3].upper() == "TO:" or not argument[3:].strip(" \t"):
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
        if not recipient.isascii() and "smtputf8" not in self.dsnAttributes:
            self._error(NEEDS_SMTPUTF8)
            return None
        notify = orcpt = ""
        for parameter in parameters.replace("\t", " ").split(" "):
            if not parameter:
                continue
            name, _, value = parameter.partition("=")
            name = name.upper()
            try:
                if name in ("NOTIFY", "ORCPT") and not self.dsnOffered:
                    self._error("501 5.7.1 DSN support is disabled")
                    return None
                if name == "NOTIFY":
                    if notify:
                        raise DSNError("501 5.5.4 Bad NOTIFY parameter syntax")
                    notify = parseNotify(value)
                elif name == "ORCPT":
                    if orcpt:
                        raise DSNError("501 5.5.4 Bad ORCPT parameter syntax")
                    orcpt = parseOrcpt(value)
                else:
                    self._error(f"555 5.5.4 Unsupported option: {parameter}")
                    return None
            except DSNError as e:
                self._error(str(e))
                return None
        if self.milters is not None:
            self.rcptParameters = parameters.replace("\t", " ").split()
        self.rcptCommand = f"RCPT {argument}"
        if len(self.recipients) >= self.settings.recipientLimit:
            # Past smtpd_recipient_overshoot_limit more, each one counts
            # as an error too.
            self.overshoot += 1
            if self.overshoot > self.settings.recipientOvershootLimit:
                self._error("452 4.5.3 Error: too many recipients")
            else:
                self.reply("452 4.5.3 Error: too many recipients")
            return None
        return eagerly(self._checkRecipient(recipient, notify, orcpt))

    async def _checkRecipient(self, recipient: str, notify: str = "", orcpt: str = "") -> None:
        tooMany = await self.limitExceeded("recipient")
        if tooMany is not None:
            self.reply(tooMany)
            return
        if recipient.lower() == "postmaster":
            # RFC 5321 4.5.1: the bare postmaster must be accepted, by
            # every list and table (as Postfix does).
            await self._milterRecipient(recipient, notify, orcpt, None)
            return
        resolution = await self.resolve(recipient)
        decision = await self.restrict("RCPT", self.restrictionContext(
            "RCPT", recipient,
            LOOKUP_FAILED if resolution.lookupFailed else resolution.addressClass))
        if decision is not None:
            await self._rejectRecipient(recipient, decision[1])
            return
        if resolution.addressClass == "local" and not isSafeMailboxName(
                localName(resolution.recipient, self.settings.recipientDelimiter)):
            # local would refuse it: refuse it now rather than bounce it
            # to a sender nobody checked.
            await self._rejectRecipient(
                recipient,
                f"550 5.1.3 <{recipient}>: Recipient address rejected: "
                "not a valid mailbox name",
            )
            return
        try:
            refusal = await self._unknown(resolution, recipient)
        except TableLookupError as e:
            log.warn("{client}: recipient table: {error}", client=self.client, error=str(e))
            refusal = f"451 4.3.0 <{recipient}>: Temporary lookup failure"
        if refusal is None and resolution.lookupFailed:
            refusal = f"451 4.3.0 <{recipient}>: Temporary lookup failure"
        if refusal is not None:
            await self._rejectRecipient(recipient, refusal)
            return
        if self.milters is None:
            accepted = self._acceptRecipient(recipient, notify, orcpt)
            if accepted is not None:
                await accepted
            return
        await self._milterRecipient(recipient, notify, orcpt, resolution)

    async def _milterRecipient(self, recipient: str, notify: str, orcpt: str,
                               resolution) -> None:
        """
        Accept a recipient the restrictions let through, unless a milter
        refuses it.
        """
        if self.milters is not None:
            if resolution is not None:
                self.milterAddressMacros.update(
                    rcpt_addr=resolution.recipient, rcpt_host=resolution.nexthop,
                    rcpt_mailer=resolution.transport)
            else:
                for name in ("rcpt_addr", "rcpt_host", "rcpt_mailer"):
                    self.milterAddressMacros.pop(name, None)
            verdict = await self.milters.rcpt(f"<{recipient}>", self.rcptParameters)
            if self.milterRefused("RCPT", verdict, recipient):
                return
        accepted = self._acceptRecipient(recipient, notify, orcpt)
        if accepted is not None:
            await accepted

    def _acceptRecipient(self, recipient: str, notify: str, orcpt: str):
        """
        Accept a recipient every check let through -- unless the
        before-queue filter, which hears of it now, refuses it.

        @return: C{None}, or with a before-queue filter a Deferred that
            fires once it answered.  (Without one no coroutine is made:
            this is every recipient's way.)
        """
        if self.settings.proxyFilter is not None:
            return defer.Deferred.fromCoroutine(
                self._acceptFiltered(recipient, notify, orcpt))
        self.recipients.append(recipient)
        self.recipientDSN.append((notify, orcpt))
        self.reply("250 2.1.5 Ok")
        return None

    async def _acceptFiltered(self, recipient: str, notify: str, orcpt: str) -> None:
        refusal = await self._proxyRecipient()
        if refusal is not None:
            # The filter's refusal (logged as Postfix logs it).
            self._error(refusal)
            return
        self.recipients.append(recipient)
        self.recipientDSN.append((notify, orcpt))
        self.reply("250 2.1.5 Ok")

    async def _proxyRecipient(self) -> Optional[str]:
        """
        Pass the recipient to the before-queue filter, opening the
        filter's transaction at the first one.

        @return: the reply refusing it, or C{None}.
        """
        proxy = self.proxy
        if proxy is None:
            settings = self.settings.proxyFilter
            assert settings is not None
            if settings.speedAdjust:
                proxy = ReplayedProxy(settings, self.clock, self.mailCommand,
                                      self.xforwardAttributes())
            else:
                session = ProxySession(settings, self.clock)
                refusal = await session.open(self.mailCommand, self.xforwardAttributes())
                if refusal is not None:
                    return refusal
                proxy = session
            self.proxy = proxy
        accepted, reply = await proxy.command(self.rcptCommand, "2")
        return None if accepted else reply

    def xforwardAttributes(self) -> dict:
        """
        What the before-queue filter is told of the client (XFORWARD).
        """
        transport = self.transport
        peer = transport.getPeer() if transport is not None else None
        return {"NAME": self.clientName, "ADDR": self.clientAddress,
                "PORT": str(getattr(peer, "port", "") or ""),
                "PROTO": self.protocolName, "HELO": self.helo or "", "SOURCE": "REMOTE"}

    async def _rejectRecipient(self, recipient: str, reply: str) -> None:
        """
        Refuse a recipient -- after telling the milters that asked to
        hear of refused recipients (C{SMFIP_RCPT_REJ}), with Postfix's
        macros for one: C{{rcpt_mailer}} C{error}, C{{rcpt_host}} the
        status code, C{{rcpt_addr}} the reason.
        """
        milters = self.milters
        if milters is not None and milters.wantRejected():
            status, _, reason = reply[4:].partition(" ")
            self.milterAddressMacros.update(rcpt_addr=reason, rcpt_host=status,
                                            rcpt_mailer="error")
            await milters.rejectedRcpt(f"<{recipient}>", self.rcptParameters)
        self.logRejection("RCPT", reply, recipient)
        self._error(reply)

    async def _unknown(self, resolution, given: str) -> Optional[str]:
        tables = self.settings.recipientTables
        if tables is None:
            return None
        restrictions = self.settings.restrictions
        if tables.remote and restrictions is not None:
            return await tables.unknownLater(restrictions.environment.lookupThreads(),
                                             resolution, given)
        return tables.unknown(resolution, given)

    def smtp_VRFY(self, argument: str):
        self._junk()
        if self.needsTLS():
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
                refusal = await self._unknown(resolution, address)
            except TableLookupError:
                self.reply(f"451 4.3.0 <{address}>: Temporary lookup failure")
                return
            if refusal is not None:
                self.reply(refusal)
            else:
                self.reply(f"252 2.0.0 {address}")

        return eagerly(verify())
