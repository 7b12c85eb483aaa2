"""
One message on its way into the queue (Postfix's C{cleanup_envelope.c},
C{cleanup_message.c} and C{cleanup_final.c}): the envelope rewritten and
written first, the headers checked, completed and rewritten, the body
checked, then the file committed -- or held, discarded or refused as the
content checks say.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.python.failure import Failure

from tmta.cleanup.addresses import AddressMapper, AliasExpansionError
from tmta.cleanup.headers import (
    headerNames,
    messageId,
    missingHeaders,
    splitHeaderSection,
)
from tmta.cleanup.milters import LOCAL_CLIENT_ADDRESS, LOCAL_CLIENT_NAME, LocalSession
from tmta.cleanup.state import Cleanup
from tmta.common.eager import eagerly
from tmta.logging import Logger
from tmta.mail.contentchecks import Verdict
from tmta.mail.received import receivedHeader
from tmta.mail.receiving import (
    INTERNAL_ORIGINS,
    NO_ADDRESS_MAPPINGS,
    NO_HEADER_BODY_CHECKS,
    NO_MILTERS,
    OVERRIDE_ATTRIBUTE,
)
from tmta.mail.replies import INTERNAL_ERROR, TOO_BIG, storageFailure
from tmta.milter.client import MilterClient
from tmta.milter.client import Verdict as MilterVerdict
from tmta.milter.message import MessageEdits, milterMessage
from tmta.queue.qfile import DELIVERABLE_ATTRIBUTE, PROBE_ATTRIBUTE
from tmta.queue.store import QueueError
from tmta.queue.writer import QueueFileWriter
from tmta.tables import TableLookupError

log = Logger()


class Rejection(Exception):
    """
    The message cannot be queued: C{code} and C{reason} for the client.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Message:
    """
    One message on its way into the queue.

    Operations are applied in order on a Deferred chain, since rewriting
    the envelope asks another process while content keeps arriving.
    """

    def __init__(self, cleanup: Cleanup, sender: str, attributes: Dict[str, str],
                 createFile: bool = True) -> None:
        self.cleanup = cleanup
        self.sender = sender
        self.attributes = attributes
        self.recipients: List[Tuple[str, str, str, str]] = []
        self.error: Optional[Rejection] = None
        self.queueId = ""
        self.writer: Optional[QueueFileWriter] = None
        self.headerBuffer = b""
        self.inHeaders = True
        self.messageId = ""
        self.envelopeWritten = False
        self.verdict = Verdict()
        self.prepended: List[bytes] = []
        #: Copies an access table's BCC asked for.
        self.accessBcc: List[str] = []
        if any(name.startswith("access_") for name in attributes):
            self.attributes = attributes = self._accessActions(attributes)
        #: What C{receive_override_options} switched off for this mail
        #: (and what never applies to the mail system's own).
        self.overrides: frozenset = frozenset()
        if OVERRIDE_ATTRIBUTE in attributes:
            self.attributes = attributes = dict(attributes)
            self.overrides = frozenset(attributes.pop(OVERRIDE_ATTRIBUTE).split(","))
        #: Mail the mail system made itself (a bounce, forwarded mail).
        self.internal = attributes.get("origin") in INTERNAL_ORIGINS
        if self.internal:
            self.overrides |= {NO_HEADER_BODY_CHECKS, NO_MILTERS}
        self.bodyChecker: Any = None  # made once the headers say what the body is
        #: The milters smtpd lent for the content, and the macros it knew.
        self.milters: List[MilterClient] = []
        self.milterMacros: Dict[str, str] = {}
        #: The made-up session of C{non_smtpd_milters}, for a local
        #: submission.
        self.localSession: Optional[LocalSession] = None
        #: Where the Received: header added here is among the headers.
        self.ownReceived = -1
        #: Whether the message's signatures are verified, whether it is
        #: signed, and whether it is sealed (L{tmta.authentication}).
        self.authenticationRoles = cleanup.authentication.roles(
            attributes, PROBE_ATTRIBUTE in attributes)
        self.chain: defer.Deferred = defer.succeed(None)
        if not createFile:
            return
        try:
            self.queueId, self.writer = cleanup.store.create("incoming")
        except QueueError as e:
            log.error("cannot create a queue file: {error}", error=str(e))
            self.error = Rejection(*storageFailure(e))

    def _accessActions(self, attributes: Dict[str, str]) -> Dict[str, str]:
        """
        Take what smtpd's access tables asked for (C{access_hold},
        C{access_discard}, C{access_filter}, C{access_redirect},
        C{access_prepend}, C{access_bcc}) out of the attributes and into the verdict,
        as header_checks' actions are.
        """
        attributes = dict(attributes)
        verdict = self.verdict
        for name in ("hold", "discard", "redirect", "filter"):
            value = attributes.pop(f"access_{name}", None)
            if value:
                setattr(verdict, name, value)
        for header in attributes.pop("access_prepend", "").split("\n"):
            if re.match(r"^[!-9;-~]+:", header):
                self.prepended.append(header.encode("utf-8", "surrogateescape"))
        self.accessBcc = [a for a in attributes.pop("access_bcc", "").split("\n")
                          if "@" in a]
        return attributes

    @property
    def file(self) -> QueueFileWriter:
        """
        The queue file being written (there is one unless its creation
        failed, which C{error} then says).
        """
        assert self.writer is not None, "no queue file"
        return self.writer

    def _then(self, f, *args) -> defer.Deferred:
        def step(_):
            if self.error is None:
                return f(*args)

        self.chain.addCallback(step).addErrback(self._fail)
        return self.chain

    def addRecipients(self, recipients: List[Tuple[str, str, str, str]]) -> None:
        self.recipients.extend(recipients)

    def content(self, data: bytes) -> None:
        self._then(self._content, data)

    async def _writeEnvelope(self) -> None:
        rewrite = self.cleanup.rewriter.rewrite
        mapper = self.cleanup.addresses
        sender = (await rewrite(self.sender)) if self.sender else ""
        if not self.recipients:
            raise Rejection(554, "5.5.1 Error: no recipients")
        recipients = self.recipients
        if self.verdict.redirect:
            target = await rewrite(self.verdict.redirect)
            recipients = [(target, r[1], r[2], r[3]) for r in recipients[:1]]
        attributes = self.attributes
        if self.verdict.filter:
            attributes = dict(attributes, filter=self.verdict.filter)
        rewritten = []
        for address, original, notify, orcpt in recipients:
            rewritten.append((await rewrite(address), original, notify, orcpt))
        for extra in self.accessBcc:
            # BCC from an access table: a copy that asks for no notices.
            rewritten.append((await rewrite(extra), extra, "NEVER", ""))
        probe = attributes.get(PROBE_ATTRIBUTE) == "yes"
        if mapper.active and NO_ADDRESS_MAPPINGS not in self.overrides:
            try:
                result = self.cleanup.lookUp(self.cleanup.addressesRemote, self._mapEnvelope,
                                             mapper, sender, rewritten,
                                             not probe and not self.internal)
                if isinstance(result, defer.Deferred):
                    result = await result
                sender, mapped = result
                if probe and len(mapped) > 1:
                    # A probe is not verified address by address: several
                    # results for one query would overwrite each other.
                    attributes = dict(attributes, **{
                        DELIVERABLE_ATTRIBUTE: "aliased to multiple recipients"})
                else:
                    rewritten = mapped
            except TableLookupError as e:
                log.warn("{queueId}: table lookup failure: {error}", queueId=self.queueId,
                         error=str(e))
                raise Rejection(451, "4.3.0 Error: temporary lookup failure")
            except AliasExpansionError as e:
                log.warn("{queueId}: {error}", queueId=self.queueId, error=str(e))
                raise Rejection(554, f"5.4.6 Error: {e}")
        writer = self.file
        writer.envelope(time.time(), sender, attributes)
        # Each recipient once, as Postfix's duplicate filter does: the
        # same address given again (with the same original) is dropped,
        # for up to duplicate_filter_limit distinct recipients.
        seen: set = set()
        limit = self.cleanup.settings.duplicateFilterLimit
        for address, original, notify, orcpt in rewritten:
            key = (address, original)
            if key in seen:
                continue
            if len(seen) < limit:
                seen.add(key)
            writer.recipient(address, original, notify, orcpt)
        self.sender = sender
        self.envelopeWritten = True

    @staticmethod
    def _mapEnvelope(mapper: AddressMapper, sender: str, recipients, bcc: bool = True):
        """
        canonical, masquerade, virtual alias and BCC rewriting of the
        envelope (the addresses already in trivial-rewrite's form).

        @param bcc: add the automatic BCC recipients (not to probes,
            which are never delivered).
        """
        sender = mapper.sender(sender)
        mapped = []
        for address, original, notify, orcpt in recipients:
            for target in mapper.recipient(address):
                mapped.append((target, original, notify, orcpt))
        for extra in mapper.bcc(sender, [r[0] for r in mapped]) if bcc else ():
            # Automatic BCC recipients ask for no notices (NOTIFY=NEVER).
            mapped.append((extra, extra, "NEVER", ""))
        return sender, mapped

    def _content(self, data: bytes):
        limit = self.cleanup.settings.messageSizeLimit
        size = self.writer.size if self.writer is not None else 0
        if limit and size + len(self.headerBuffer) + len(data) > limit:
            self.error = Rejection(*TOO_BIG)
            return None
        if not self.inHeaders:
            self._body(data)
            return None
        self.headerBuffer += data
        buffered = self.headerBuffer
        if b"\n\n" not in buffered and len(buffered) <= self.cleanup.settings.headerSizeLimit:
            complete = buffered[: buffered.rfind(b"\n") + 1]
            _, rest = splitHeaderSection(complete)
            if not rest:
                # Still inside the header section: wait for more.
                return None
        # The envelope goes into the file once the header section is
        # known: header_checks may redirect the message or hold it.
        return eagerly(self._flushHeaders())

    def _body(self, data: bytes) -> None:
        if self.bodyChecker is not None:
            try:
                data = self.bodyChecker.feed(data, self.verdict, self.queueId)
            except TableLookupError as e:
                log.warn("{queueId}: content check: {error}", queueId=self.queueId, error=str(e))
                self.error = Rejection(451, "4.3.0 Error: temporary lookup failure")
                return
        if data:
            self.file.content(data)

    def _fail(self, reason):
        if reason.check(Rejection):
            self.error = reason.value
        elif reason.check(OSError):
            # Writing the queue file failed (a full disk): an error the
            # operator can act on, not a traceback.
            log.error("{queueId}: cannot write queue file: {error}",
                      queueId=self.queueId, error=reason.value.strerror or reason.value)
            self.error = Rejection(*storageFailure(reason.value))
        else:
            log.failure("{queueId}: cleanup failed", reason, queueId=self.queueId)
            self.error = Rejection(*INTERNAL_ERROR)

    async def _flushHeaders(self) -> None:
        """
        Process the header section: loop check, header_checks, the
        envelope, added headers, then write it and whatever body
        followed it.
        """
        headers, rest = splitHeaderSection(self.headerBuffer)
        if len(self.headerBuffer) > self.cleanup.settings.headerSizeLimit and not rest:
            # An endless header section: keep it, as body text.
            headers, rest = [], self.headerBuffer
        self.headerBuffer = b""
        self.inHeaders = False
        names = headerNames(headers)
        hops = names.get("received", 0) + names.get("delivered-to", 0)
        if hops >= self.cleanup.settings.hopcountLimit:
            self.error = Rejection(554, "5.4.6 Too many hops")
            return
        if self.authenticationRoles[0]:
            forged = set(self.cleanup.authentication.forged(headers))
            if forged:
                log.info("{queueId}: removed {count} Authentication-Results header(s) in "
                         "this host's name", queueId=self.queueId, count=len(forged))
                headers = [h for i, h in enumerate(headers) if i not in forged]
        checks = NO_HEADER_BODY_CHECKS not in self.overrides
        if checks and self.cleanup.checks.inspectsBody:
            self.bodyChecker = self.cleanup.checks.body(headers)
        if checks and self.cleanup.checks.inspectsHeaders:
            try:
                headers = self.cleanup.checks.headers(headers, self.verdict, self.queueId)
            except TableLookupError as e:
                log.warn("{queueId}: header_checks: {error}", queueId=self.queueId, error=str(e))
                raise Rejection(451, "4.3.0 Error: temporary lookup failure")
        if not self.envelopeWritten:
            await self._writeEnvelope()
        if self.cleanup.addresses.rewritesHeaders and \
                NO_ADDRESS_MAPPINGS not in self.overrides and \
                self.cleanup.rewritesHeadersFor(self.attributes):
            try:
                rewritten = self.cleanup.lookUp(
                    self.cleanup.addressesRemote,
                    lambda: [_rewriteHeader(self.cleanup.addresses, h) for h in headers])
                if isinstance(rewritten, defer.Deferred):
                    rewritten = await rewritten
                headers = rewritten
            except TableLookupError as e:
                log.warn("{queueId}: table lookup failure: {error}", queueId=self.queueId,
                         error=str(e))
                raise Rejection(451, "4.3.0 Error: temporary lookup failure")
        config = self.cleanup.settings
        now = time.time()
        added = missingHeaders(names, self.sender, self.queueId, config.myhostname, now,
                               self.attributes.get("full_name", ""))
        received = receivedHeader(
            self.attributes, config.myhostname, self.queueId,
            [r[0] for r in self.recipients], now,
        )
        self.messageId = messageId(headers + added)
        self.ownReceived = len(self.prepended)
        out = b"\n".join(self.prepended + [received] + headers + added) + b"\n"
        if not rest.startswith(b"\n"):
            out += b"\n"
        if self.bodyChecker is not None and rest:
            # The blank line that ends the header section is not a
            # body line.
            separator = b"\n" if rest.startswith(b"\n") else b""
            self.file.content(out + separator)
            self._body(rest[len(separator):])
        else:
            self.file.content(out + rest)

    async def finish(self) -> Tuple[int, str]:
        await self.chain
        try:
            if self.error is None and self.inHeaders:
                await self._flushHeaders()
            if self.error is None and not self.envelopeWritten:
                await self._writeEnvelope()
            if self.error is None and self.bodyChecker is not None:
                self.file.content(self.bodyChecker.end(self.verdict, self.queueId))
        except Rejection as e:
            self.error = e
        except TableLookupError as e:
            log.warn("{queueId}: content check: {error}", queueId=self.queueId, error=str(e))
            self.error = Rejection(451, "4.3.0 Error: temporary lookup failure")
        except OSError as e:
            self._fail(Failure(e))
        verdict = self.verdict
        if self.error is None and verdict.reject is not None:
            self.error = Rejection(*verdict.reject)
        if self.error is None and verdict.discard is None and self._takesLocalMilters():
            await self._lateStep(self._localSession)
        if self.milters or self.localSession is not None:
            try:
                if self.error is None and verdict.discard is None:
                    await self._lateStep(self._throughMilters)
            finally:
                self._releaseMilters()
        if self.error is None and verdict.discard is None and any(self.authenticationRoles):
            await self._lateStep(self._authenticate)
        if self.error is None and verdict.lateEnvelope and verdict.discard is None:
            await self._lateStep(self._rewriteUnderNewEnvelope)
        if self.error is not None and self._bouncesRefusals():
            await self._bounceRefused(self.error)
        if self.error is not None:
            self.abort()
            return self.error.code, self.error.reason
        if verdict.discard is not None:
            self.abort()
            log.info("{queueId}: discarded: {reason}", queueId=self.queueId,
                     reason=verdict.discard)
            return 250, f"2.0.0 Ok: queued as {self.queueId}"
        if verdict.hold is not None:
            try:
                self._moveToHold()
            except OSError as e:
                log.error("{queueId}: cannot move to hold: {error}", queueId=self.queueId,
                          error=e)
                self.abort()
                return storageFailure(e)
        error: Optional[BaseException]
        try:
            error = await self.cleanup.committer.submit(self.file)
        except Exception as e:
            error = e
        if error is not None:
            log.error("{queueId}: cannot store message: {error}", queueId=self.queueId, error=error)
            return storageFailure(error)
        log.info("{queueId}: message-id={mid}", queueId=self.queueId, mid=self.messageId)
        if verdict.hold is not None:
            return 250, f"2.0.0 Ok: queued as {self.queueId}"
        self.cleanup.wakeQmgr(self.queueId)
        return 250, f"2.0.0 Ok: queued as {self.queueId}"

    async def _lateStep(self, step) -> None:
        """
        Run a step taken once the content is in (the milters, a late
        envelope): its failure becomes the message's refusal.
        """
        try:
            await step()
        except Rejection as e:
            self.error = e
        except QueueError as e:
            self.error = Rejection(*storageFailure(e))
        except OSError as e:
            self._fail(Failure(e))
        except Exception:
            self._fail(Failure())

    def _bouncesRefusals(self) -> bool:
        """
        Whether a refusal for good is this message's sender's to hear of
        by a bounce: mail posted with sendmail, whose poster is gone by
        the time cleanup refuses it (Postfix's C{CLEANUP_FLAG_BOUNCE}).
        The message must be in the file, under its envelope.
        """
        error = self.error
        return (error is not None and error.code // 100 == 5
                and self.attributes.get("origin") == "pickup"
                and PROBE_ATTRIBUTE not in self.attributes
                and self.envelopeWritten and self.writer is not None)

    async def _bounceRefused(self, refusal: Rejection) -> None:
        """
        Queue the message for every recipient to be bounced with the
        refusal's reason (through the C{error} transport), instead of
        refusing it: its sender gets the bounce, with the message.
        """
        self.error = None
        self.verdict.filter = f"error:{refusal.reason}"
        self.verdict.hold = self.verdict.discard = None
        await self._lateStep(self._rewriteUnderNewEnvelope)
        if self.error is None:
            log.info("{queueId}: refused, bounced to the sender: {code} {reason}",
                     queueId=self.queueId, code=refusal.code, reason=refusal.reason)

    async def _rewriteUnderNewEnvelope(self) -> None:
        """
        A REDIRECT or FILTER from the body: write the message into a new
        queue file under the envelope it asks for, and give up the first
        (neither was committed, so qmgr never saw either).
        """
        old = self.file
        store = self.cleanup.store
        previous = self.queueId
        self.queueId, self.writer = store.create("incoming")
        self.envelopeWritten = False
        try:
            await self._writeEnvelope()
            for chunk in old.writtenContent():
                self.file.content(chunk)
        finally:
            old.abort()
        log.info("{previous}: content check changed the envelope; message is now {queueId}",
                 previous=previous, queueId=self.queueId)

    def _moveToHold(self) -> None:
        """
        Put the still-incomplete file in the hold queue, where qmgr does
        not look, before it is committed (HOLD from a content check).
        """
        store = self.cleanup.store
        target = store.path("hold", self.queueId)
        store.ensureDirectory(os.path.dirname(target))
        os.rename(self.file.path, target)
        self.file.path = target

    def addMilter(self, client: MilterClient, macros: Dict[str, str]) -> None:
        """
        Take a milter connection smtpd lent for this message's content.
        """
        self.milters.append(client)
        self.milterMacros.update(macros)

    def _releaseMilters(self) -> None:
        milters, self.milters = self.milters, []
        if self.localSession is not None:
            self.localSession.close()
            self.localSession = None
            return
        for client in milters:
            client.release()

    def _takesLocalMilters(self) -> bool:
        """
        Whether this message goes through C{non_smtpd_milters}: mail a
        user submitted (through pickup), unless C{receive_override_options}
        says C{no_milters}; never a C{sendmail -bv} report's.
        """
        return (bool(self.cleanup.localMilters) and not self.milters
                and self.attributes.get("origin") == "pickup"
                and NO_MILTERS not in self.overrides
                and PROBE_ATTRIBUTE not in self.attributes)

    async def _localSession(self) -> None:
        """
        Tell C{non_smtpd_milters} of the made-up session of a local
        submission up to DATA (L{LocalSession}); the message then goes
        through them as through smtpd's (L{_throughMilters}).
        """
        session = self.localSession = LocalSession(
            self.cleanup.localMilters, self.cleanup.reactor, self.cleanup.localMacros)
        session.macros["i"] = self.queueId
        verdict = await session.envelope(self.sender, [r[0] for r in self.recipients],
                                          self.attributes.get("helo_name"))
        self.milters = list(session.clients)
        if verdict.goesOn:
            return
        if session.event == "RCPT":
            log.warn("{queueId}: milter configuration error: can't reject recipient in "
                     "non-smtpd submission", queueId=self.queueId)
            log.warn("{queueId}: message not accepted, try again later", queueId=self.queueId)
        self._milterVerdict(verdict, f"{session.event} from {LOCAL_CLIENT_NAME}"
                                     f"[{LOCAL_CLIENT_ADDRESS}]")

    async def _throughMilters(self) -> None:
        """
        The message through smtpd's milters (L{milterMessage}), then what
        they decided: refused, discarded, held, or changed -- a changed
        message is written anew, as a content check's REDIRECT is.
        """
        content = b"".join(self.file.writtenContent())
        headers, body = _headerList(content)
        edits = MessageEdits(headers, body, self.sender, [r[0] for r in self.recipients],
                             ownReceived=self.ownReceived if self.ownReceived < len(headers)
                             else -1)
        macros = dict(self.milterMacros, i=self.queueId)
        if self.localSession is not None:
            macros.update(self.localSession.macros)
            client = (LOCAL_CLIENT_NAME, LOCAL_CLIENT_ADDRESS)
        else:
            client = (self.attributes.get("client_name", "unknown"),
                      self.attributes.get("client_address", ""))
        verdict = await milterMessage(self.milters, edits, macros.get)
        if verdict.goesOn and edits.produced:
            edits.headers = self.cleanup.checks.milterHeaders(
                edits.headers, edits.produced, self.verdict, self.queueId)
            if self.verdict.reject is not None:
                raise Rejection(*self.verdict.reject)
        if verdict.kind == "hold" or (verdict.goesOn and edits.quarantine):
            verdict = MilterVerdict("hold", edits.quarantine or "")
        self._milterVerdict(verdict, f"END-OF-MESSAGE from {client[0]}[{client[1]}]")
        if self.verdict.discard is None and edits.changed:
            await self._rewriteWithEdits(edits)

    async def _authenticate(self) -> None:
        """
        The whole message through the authenticators
        (L{tmta.authentication.pipeline}): their headers put on top of
        it, and what they decided done -- refused, deferred or held.
        """
        from tmta.authentication.message import MessageUnderTest

        headers, body = _headerList(self.file.contentText())
        verifying, signing, sealing = self.authenticationRoles
        message = MessageUnderTest(headers, body, self.sender, [r[0] for r in self.recipients],
                                   self.attributes, verifying, signing, self.queueId,
                                   sealing=sealing)
        try:
            await self.cleanup.authentication.examine(message)
        except TableLookupError as e:
            log.warn("{queueId}: DKIM signing: {error}", queueId=self.queueId, error=str(e))
            raise Rejection(451, "4.3.0 Error: temporary lookup failure")
        except ValueError as e:
            # A signing key that went missing, a key table naming no key.
            log.error("{queueId}: message authentication: {error}", queueId=self.queueId,
                      error=str(e))
            raise Rejection(451, "4.3.5 Server configuration error")
        except Exception:
            log.failure("{queueId}: message authentication failed", queueId=self.queueId)
            raise Rejection(451, "4.3.0 Error: message authentication failed")
        disposition = message.disposition
        if disposition is not None and disposition[0] in ("reject", "defer"):
            log.info("{queueId}: {action}: {text}", queueId=self.queueId,
                     action=disposition[0], text=f"{disposition[1]} {disposition[2]}")
            raise Rejection(disposition[1], disposition[2])
        if disposition is not None and disposition[0] == "hold":
            self.verdict.hold = disposition[1]
            log.info("{queueId}: hold: {reason}", queueId=self.queueId, reason=disposition[1])
        if message.prepend:
            self.file.prependContent(b"\n".join(message.prepend) + b"\n")

    def _milterVerdict(self, verdict: MilterVerdict, where: str) -> None:
        """
        Act on what the milters made of an event: refuse the message,
        discard it or hold it, with Postfix's log line.

        @raise Rejection: refused.
        """
        if verdict.kind in ("reply", "shutdown"):
            text = verdict.reply if verdict.kind == "reply" else \
                "421 4.7.0 Server closing connection"
            self._logMilterAction("milter-reject", where, text[4:])
            raise Rejection(int(text[:3]), text[4:])
        if verdict.kind == "discard":
            self._logMilterAction("milter-discard", where, "milter triggers DISCARD action")
            self.verdict.discard = "milter triggers DISCARD action"
        elif verdict.kind == "hold":
            reason = verdict.reply or "milter triggers HOLD action"
            self._logMilterAction("milter-hold", where, reason)
            self.verdict.hold = reason

    def _logMilterAction(self, action: str, where: str, text: str) -> None:
        """
        Log what a milter made cleanup do, in Postfix's words: the
        event, the client, the reply text, and the envelope (the last
        recipient), protocol and HELO name.
        """
        details = f" from=<{self.sender}>"
        if self.recipients:
            details += f" to=<{self.recipients[-1][0]}>"
        if self.attributes.get("protocol"):
            details += f" proto={self.attributes['protocol']}"
        if self.attributes.get("helo_name"):
            details += f" helo=<{self.attributes['helo_name']}>"
        log.info("{queueId}: {action}: {where}: {text};{details}", queueId=self.queueId,
                 action=action, where=where, text=text, details=details)

    async def _rewriteWithEdits(self, edits: MessageEdits) -> None:
        """
        Write the message as the milters left it anew, under the same
        queue id (the file was not committed: qmgr has not seen it).
        """
        deleted = set(edits.deleted)
        self.recipients = [r for r in self.recipients
                           if r[0].lower() not in deleted and r[1].lower() not in deleted]
        self.recipients += [(address, address, "", "") for address in edits.addedRecipients]
        self.sender = edits.sender
        path = self.file.path
        self.file.abort()
        self.writer = QueueFileWriter(path, self.cleanup.store.fsync)
        self.envelopeWritten = False
        await self._writeEnvelope()
        self.file.content(b"\n".join(edits.headers) + b"\n\n" + edits.body)

    def abort(self) -> None:
        self._releaseMilters()
        if self.writer is not None:
            self.writer.abort()
            self.writer = None




def _headerList(content: bytes) -> Tuple[List[bytes], bytes]:
    """
    A message's header section as a list of headers (continuation lines
    kept, after LF), and its body.
    """
    if content.startswith(b"\n"):
        return [], content[1:]
    section, separator, body = content.partition(b"\n\n")
    if not separator:
        section, body = content.rstrip(b"\n"), b""
    headers: List[bytes] = []
    for line in section.split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += b"\n" + line
        else:
            headers.append(line)
    return headers, body


def _rewriteHeader(mapper: AddressMapper, header: bytes) -> bytes:
    name, sep, value = header.partition(b":")
    if not sep:
        return header
    text = value.decode("utf-8", "surrogateescape")
    rewritten = mapper.header(name.decode("ascii", "replace").strip(),
                              " ".join(text.split()))
    if rewritten is None:
        return header
    return name + b": " + rewritten.encode("utf-8", "surrogateescape")
