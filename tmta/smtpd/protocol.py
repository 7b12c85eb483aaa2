"""
The SMTP server protocol: one session, from the greeting to QUIT.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, task
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from tmta.common.eager import eagerly
from tmta.config import ConfigError
from tmta.logging import Logger
from tmta.mail import replies
from tmta.milter.session import SessionMilters
from tmta.smtpd.auth import AuthCommands
from tmta.smtpd.checking import RestrictionChecks
from tmta.smtpd.envelope import EnvelopeCommands
from tmta.smtpd.hello import HelloCommands
from tmta.smtpd.milters import milterMacro
from tmta.smtpd.reader import CommandReader
from tmta.smtpd.receiving import DataCommands
from tmta.smtpd.settings import SMTPSettings
from tmta.smtpd.starttls import TLSCommands
from tmta.smtpd.stats import CommandCounts
from tmta.smtpd.transcript import CLASSES as TRANSCRIPT_CLASSES
from tmta.smtpd.transcript import Transcript
from tmta.smtpd.transfer import MessageTransfer
from tmta.smtpd.verdicts import TransactionActions
from tmta.smtpd.xforward import XForwardCommands
from tmta.tables import TableLookupError
from tmta.tables.networks import inNetworks

__all__ = ["SMTPServer", "SMTPSettings"]

log = Logger()

_VERB = re.compile(rb"^([A-Za-z]+)(?:[ \t]+(.*))?$")
#: A word that is a header name with its colon (C{Subject:}): message
#: text sent as commands.
_HEADER_NAME = re.compile(r"^[!-9;-~]+:$")
#: Replies that report a protocol error (for notify_classes protocol).
_PROTOCOL_ERRORS = frozenset({"500", "501", "502", "503", "504", "555"})
#: Control characters no command may hold (TAB is white space).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Commands after which a client must wait for the answer (RFC 2920,
#: with STARTTLS and AUTH, which change the session).
_ENDS_GROUP = frozenset({b"EHLO", b"HELO", b"DATA", b"VRFY", b"EXPN", b"NOOP", b"QUIT",
                         b"STARTTLS", b"AUTH", b"ETRN", b"TURN", b""})
_HELP = ("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP "
         "STARTTLS AUTH")


@implementer(IHandshakeListener)
class SMTPServer(HelloCommands, EnvelopeCommands, DataCommands, AuthCommands, TLSCommands,
                 XForwardCommands, RestrictionChecks, CommandReader):
    """
    One SMTP session: the connection, command dispatch, error limits and
    the session commands (RSET, NOOP, QUIT, ETRN, HELP).  HELO and EHLO
    are L{HelloCommands}', the envelope commands L{EnvelopeCommands}',
    the DATA phase
    L{DataCommands}' (listed before L{CommandReader}, whose C{inData}
    and C{messageData} they override), STARTTLS L{TLSCommands}', AUTH
    L{AuthCommands}', and the restriction lists are applied through
    L{RestrictionChecks}.

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
        self.callLater = clock.callLater  # type: ignore[method-assign]
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
        self.transactionNumber = 0
        self._anvilCounted = False
        #: The refusal the client heard at connect (C{smtpd_delay_reject
        #: = no}): every command but QUIT is refused after it.
        self.accessDenied: Optional[str] = None
        #: The session's milters (C{smtpd_milters}), once connected.
        self.milters: Optional[SessionMilters] = None
        self.transcript: Optional[Transcript] = None
        if settings.notifyClasses & TRANSCRIPT_CLASSES:
            self.transcript = Transcript(settings.notifyClasses)
        self._resetTransaction()

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        CommandReader.connectionMade(self)
        #: The session's commands, for the disconnect line.
        self.commandCounts = CommandCounts()
        peer = self.transport.getPeer()
        self.clientAddress = getattr(peer, "host", "") or "127.0.0.1"
        settings = self.settings
        self.bareNewlineMode = settings.bareNewline
        if settings.bareNewlineExclusions and inNetworks(self.clientAddress,
                                                         settings.bareNewlineExclusions):
            self.bareNewlineMode = "normalize"
        self.rejectBareNewline = self.bareNewlineMode == "reject"
        self.setTimeout(self.settings.timeout)
        welcome = eagerly(self._welcome())
        if isinstance(welcome, defer.Deferred):
            self.waitFor(welcome)

    async def _welcome(self) -> None:
        """
        Look the client's name up, wait for the TLS handshake in wrapper
        mode, count the connection at anvil, and greet: at once, with no
        Deferred, when none of these has to wait.
        """
        try:
            names = await self.lookupName(self.clientAddress)
        except Exception:
            names = "unknown"
        names = self.awaitHandshake(names)
        if isinstance(names, defer.Deferred):
            names = await names
        name = self._admit(names)
        if isinstance(name, defer.Deferred):
            name = await name
        self.clientName = name or "unknown"
        restrictions = self.settings.restrictions
        if restrictions is not None and any(
                lst.restrictions for lst in restrictions.forStage("CONNECT")) \
                and not self._closing:
            # smtpd_delay_reject = no: the client list answers at once; a
            # refused client hears the refusal instead of the greeting,
            # and nothing but QUIT after it (as Postfix).
            refusal = await self.restrict("CONNECT")
            if refusal is not None:
                self.accessDenied = refusal[1]
                self.logRejection("CONNECT", refusal[1])
                self.reply(refusal[1])
                if refusal[1][:3] in ("421", "521"):
                    self.close()
                return
        if (self.settings.milters or self.settings.milterMaps is not None) \
                and not self._closing:
            refused = await self._connectMilters()
            if refused:
                return
        self._greet()

    async def _connectMilters(self) -> bool:
        """
        Connect to the milters and tell them of the client.  As Postfix,
        a refusal is not the client's greeting: 554 (or 421, and the
        session ends) instead of 220, and the milter's own refusal for
        MAIL and what follows.

        @return: whether the client was refused.
        """
        chosen = self.settings.milters
        maps = self.settings.milterMaps
        if maps is not None:
            try:
                if maps.remote and self.settings.restrictions is not None:
                    found = await self.settings.restrictions.environment.lookupThreads().run(
                        maps.lookup, self.clientAddress)
                else:
                    found = maps.lookup(self.clientAddress)
            except (TableLookupError, ConfigError) as e:
                # Neither these milters nor none: no mail is taken now.
                log.warn("smtpd_milter_maps: {client}: {error}", client=self.client,
                         error=getattr(e, "reason", None) or str(e))
                self.reply(f"421 4.3.0 {self.settings.myhostname} Server configuration error")
                self.close()
                return True
            if found is not None:
                chosen = found
        if not chosen:
            return False
        milters = self.milters = SessionMilters(chosen, self.clock, self.milterMacro)
        self.milterAddressMacros, self.mailParameters, self.rcptParameters = {}, [], []
        await milters.start()
        peer = self.transport.getPeer() if self.transport is not None else None
        verdict = await milters.connect(self.clientName, self.clientAddress,
                                        getattr(peer, "port", 0) or 0)
        if verdict.goesOn or self._closing:
            return False
        reply = verdict.reply
        self.logRejection("CONNECT", reply, action="milter-reject")
        myhostname = self.settings.myhostname
        if verdict.kind == "shutdown" or reply.startswith("421"):
            self.reply(f"421 {myhostname} Service unavailable - try again later")
            self.close()
            return True
        if reply.startswith("5"):
            self.errors += 1
            self.reply(f"554 {myhostname} ESMTP not accepting connections")
            return True
        return False

    def milterRefused(self, stage: str, verdict, recipient: str = "") -> bool:
        """
        Act on what the milters made of MAIL, RCPT or DATA: a refusal is
        the client's reply (and logged as Postfix's C{milter-reject});
        DISCARD and HOLD mark the transaction.

        @return: whether the command was refused (and answered).
        """
        if verdict.goesOn:
            return False
        if verdict.kind in ("discard", "hold"):
            text = f"milter triggers {verdict.kind.upper()} action"
            setattr(self.transactionActions, verdict.kind, text)
            log.info("NOQUEUE: milter-{kind}: {stage} from {client}: {text}",
                     kind=verdict.kind, stage=stage, client=self.client, text=text)
            return False
        if verdict.kind == "shutdown":
            self.logRejection(stage, verdict.reply, recipient, action="milter-reject")
            self.reply("421 4.7.0 Server closing connection")
            self.close()
            return True
        self.logRejection(stage, verdict.reply, recipient, action="milter-reject")
        self._error(verdict.reply)
        return True

    def milterMacro(self, name: str) -> Optional[str]:
        """
        The value of a milter macro in the session's present state, as
        Postfix's smtpd gives it (C{None}: not defined now).
        """
        return milterMacro(self, name)

    def _admit(self, names):
        """
        Take the client's names (C{(name, reverseName)}, or one name for
        both), and count the connection at anvil
        (C{smtpd_client_connection_*_limit}); past a limit the client
        hears 421 and nothing more.
        """
        if isinstance(names, tuple):
            name, reverse = names
        else:
            name = reverse = names
        self.clientName = name or "unknown"
        self.reverseClientName = reverse or "unknown"
        limits = self.settings.limits
        if limits is None or self._closing or limits.exempt(self.clientAddress):
            return name

        async def admit():
            refusal = await limits.connect(self.clientAddress, self.client,
                                           self.settings.myhostname)
            self._anvilCounted = True
            if refusal is not None and not self._closing:
                self.reply(refusal)
                self.close()
            return name

        return eagerly(admit())

    async def limitExceeded(self, event: str) -> Optional[str]:
        """
        Count a C{message}, C{recipient}, C{newtls} or C{auth} event at
        anvil: the reply refusing it past its limit, or C{None}.
        """
        limits = self.settings.limits
        if limits is None or event not in limits.eventLimits or \
                limits.exempt(self.clientAddress):
            return None
        return await limits.event(event, self.clientAddress, self.client)

    def limits(self, event: str) -> bool:
        """
        Whether C{event} is counted for this client.
        """
        limits = self.settings.limits
        return limits is not None and event in limits.eventLimits and \
            not limits.exempt(self.clientAddress)

    def _greet(self) -> None:
        if self._closing:
            return
        if self._buffer and self._improperPipelining(b""):
            return
        log.info("connect from {client}", client=self.client)
        self.reply(f"220 {self.settings.banner}")

    @property
    def client(self) -> str:
        return f"{self.clientName}[{self.clientAddress}]"

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        CommandReader.connectionLost(self, reason)
        self.setTimeout(None)
        self.tlsConnectionLost()
        self._authDone()
        if self._anvilCounted and self.settings.limits is not None:
            self.settings.limits.disconnect(self.clientAddress)
        self._abortTransfer()
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        if self.milters is not None:
            self.milters.abort()
            self.milters.quit()
        log.info("disconnect from {client}{counts}", client=self.client,
                 counts=self.commandCounts.summary())
        if self.transcript is not None and self.transcript.wanted:
            defer.Deferred.fromCoroutine(self._sendTranscript()).addErrback(
                lambda f: log.warn("cannot send the session transcript: {error}",
                                   error=f.getErrorMessage()))

    async def _sendTranscript(self) -> None:
        """
        Mail the session's transcript to C{error_notice_recipient}.
        """
        recipient = self.settings.errorNoticeRecipient
        transcript = self.transcript
        assert transcript is not None
        await self.cleanupClient.post("", {"protocol": "local"}, [(recipient, recipient)],
                                      transcript.message(self.settings.myhostname,
                                                         self.client, recipient))

    def reply(self, text: str) -> None:
        self.commandCounts.replied(text)
        if self.transcript is not None and not self._closing:
            self.transcript.outgoing(text)
        CommandReader.reply(self, text)

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
        if self.transcript is not None:
            self.transcript.incoming(line)
        if self.authResponseDue:
            return self.authResponse(line)
        settings = self.settings
        if self.errors >= settings.softErrorLimit and settings.errorSleepTime > 0:
            # A client that keeps making errors gets slower answers
            # (smtpd_error_sleep_time), until the hard limit ends it.
            return task.deferLater(self.clock, settings.errorSleepTime, self._command, line)
        return self._command(line)

    def _command(self, line: bytes):
        if self._closing or self._tooManyErrors():
            return None
        match = _VERB.match(line)
        verb = match.group(1).upper() if match else b""
        self.commandCounts.received(verb.decode("ascii"))
        if self._buffer and self._improperPipelining(verb):
            return None
        handler = getattr(self, "smtp_" + verb.decode("ascii"), None) if match else None
        if handler is None and self._forbidden(line):
            return None
        if not match or _CONTROL.search(line):
            self._error("500 5.5.2 Error: bad syntax")
            return None
        if self.accessDenied is not None and verb != b"QUIT":
            self._error(f"503 5.7.0 Error: access denied for {self.client}")
            return None
        if self.milters is not None and verb in (b"AUTH", b"VRFY", b"ETRN", b"EXPN"):
            refusal = self.milters.refusal()
            if refusal is not None:
                self._error(refusal)
                return None
        try:
            argument = (match.group(2) or b"").decode("utf-8").strip(" \t")
        except UnicodeDecodeError:
            self._error("500 5.5.2 Error: bad UTF-8 syntax")
            return None
        if handler is None:
            if self.milters is not None:
                return eagerly(self._unknownToMilters(line.decode("utf-8", "replace")))
            self._error("500 5.5.2 Error: command not recognized")
            return None
        return handler(argument)

    async def _unknownToMilters(self, line: str) -> None:
        assert self.milters is not None
        verdict = await self.milters.unknown(line)
        self._error(verdict.reply if verdict.kind == "reply"
                    else "500 5.5.2 Error: command not recognized")

    def _forbidden(self, line: bytes) -> bool:
        """
        End the session when a line that is no command of ours is one of
        C{smtpd_forbidden_commands} (by default HTTP's, and anything
        not starting with a letter) or looks like a message header:
        the client is not speaking SMTP, or has lost its place.
        """
        words = line.split(None, 1)
        word = words[0].decode("utf-8", "replace") if words else ""
        try:
            forbidden = bool(word) and (_HEADER_NAME.match(word) is not None
                                        or self.settings.forbiddenCommands.matchString(word))
        except TableLookupError:
            forbidden = False  # as Postfix: a non-critical feature
        if not forbidden:
            return False
        log.warn("non-SMTP command from {client}: {line}", client=self.client,
                 line=line[:100].decode("utf-8", "replace"))
        self.reply("221 2.7.0 Error: I can break rules, too. Goodbye.")
        self.close()
        return True

    def _improperPipelining(self, verb: bytes) -> bool:
        """
        The client sent more before this command's answer: allowed only
        after EHLO announced PIPELINING, and then not behind a command
        that must end a group (RFC 2920).  The session is marked for
        C{reject_unauth_pipelining}; with C{smtpd_forbid_unauth_pipelining}
        it ends.

        @return: whether the session was ended.
        """
        if self._mayPipeline() and verb not in _ENDS_GROUP:
            return False
        self.pipelinedNow = True
        if not self.settings.forbidUnauthPipelining:
            return False
        log.info("improper command pipelining after {verb} from {client}: {rest!r}",
                 verb=verb.decode("ascii", "replace") or "CONNECT", client=self.client,
                 rest=self._buffer[:100])
        self.reply("554 5.5.0 Error: SMTP protocol synchronization")
        self.close()
        return True

    def bareNewlineReceived(self) -> None:
        """
        A line ended in a bare LF under C{smtpd_forbid_bare_newline =
        reject}: refuse, and end the session.
        """
        log.info("disconnect: bare <LF> received from {client}", client=self.client)
        self.reply(f"{self.settings.bareNewlineCode} 5.5.2 {self.settings.myhostname} "
                   "Error: bare <LF> received")
        self.close()

    def _mayPipeline(self) -> bool:
        return self.protocolName == "ESMTP" and \
            "pipelining" not in self.settings.discardEhloKeywords

    def _error(self, text: str) -> None:
        """
        Answer with an error that counts towards smtpd_hard_error_limit.
        """
        self.errors += 1
        if self.transcript is not None and text[:3] in _PROTOCOL_ERRORS:
            self.transcript.earn("protocol")
        self.reply(text)
        if text[:3] in ("421", "521"):
            # The reply says the server closes the channel (RFC 5321
            # 3.8, RFC 7504): an access table's 421 or 521 does.
            self.close()

    def _tooManyErrors(self) -> bool:
        """
        End the session when it reached smtpd_hard_error_limit: checked
        as each command arrives, so the error that reaches the limit is
        still answered, as in Postfix.
        """
        if self.errors < self.settings.hardErrorLimit:
            return False
        log.warn("too many errors after {state} from {client}", state=self._state(),
                 client=self.client)
        self.reply(f"421 4.7.0 {self.settings.myhostname} Error: too many errors")
        self.close()
        return True

    def _junk(self) -> None:
        """
        Count a command that moves no mail (NOOP, RSET, VRFY); past
        smtpd_junk_command_limit each counts as an error too.
        """
        if self.junkCommands > self.settings.junkCommandLimit:
            self.errors += 1
        self.junkCommands += 1

    # -- commands ----------------------------------------------------------

    def _resetTransaction(self) -> None:
        if getattr(self, "_transfer", None) is not None:
            # RSET, HELO or EHLO in the middle of BDAT chunks.
            self._abortTransfer()
        proxy = getattr(self, "proxy", None)
        if proxy is not None:
            # The before-queue filter's transaction ends with this one.
            proxy.close()
        #: The before-queue filter's transaction (L{tmta.smtpd.proxy}).
        self.proxy: Optional[Any] = None
        self.forwarded = None
        self.sender: Optional[str] = None
        self.recipients: List[str] = []
        #: Each accepted recipient's RFC 3461 NOTIFY and ORCPT, in step
        #: with C{recipients}.
        self.recipientDSN: List[Tuple[str, str]] = []
        #: The transaction's RET and ENVID, when given.
        self.dsnAttributes: Dict[str, str] = {}
        self.declaredSize = 0
        self.overshoot = 0
        self.transactionActions = TransactionActions()
        self.transactionNumber += 1
        milters = getattr(self, "milters", None)
        if milters is not None:
            #: What the milter macros {mail_host}, {rcpt_addr}... say now,
            #: and the parameters of MAIL and RCPT, for the milters.
            self.milterAddressMacros: Dict[str, str] = {}
            self.mailParameters: List[str] = []
            self.rcptParameters: List[str] = []
            milters.abort()

    def smtp_RSET(self, argument: str) -> None:
        self._junk()
        self._resetTransaction()
        self.reply("250 2.0.0 Ok")

    def smtp_NOOP(self, argument: str) -> None:
        self._junk()
        self.reply("250 2.0.0 Ok")

    def smtp_QUIT(self, argument: str) -> None:
        self.reply("221 2.0.0 Bye")
        self.close()

    def smtp_ETRN(self, argument: str) -> None:
        """
        ETRN (RFC 1985) is refused politely: tmta keeps no per-site
        queue to flush, and deferred mail is retried on its own.
        """
        self._junk()
        if self.helo is None:
            self._error("503 5.5.1 Error: send HELO/EHLO first")
        elif self.sender is not None:
            self._error("503 5.5.1 Error: MAIL transaction in progress")
        elif self.needsTLS():
            pass
        elif not argument:
            self._error("500 Syntax: ETRN domain")  # as Postfix, no status
        else:
            self.reply(f"459 <{argument}>: service unavailable")  # as Postfix, no status

    def smtp_HELP(self, argument: str) -> None:
        self.reply(_HELP)
