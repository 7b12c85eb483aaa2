"""
The AMP protocol tmta's processes speak: L{QuietAMP} sends, answers and
takes answers of tmta's own commands without Twisted's dispatch, and
holds writes to send a burst of boxes together (L{heldWrites});
L{ServiceAMP} is a service's side.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import CoroutineType
from typing import Any, ContextManager, Dict, Iterator, List

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import ILoggingContext, IProtocol
from twisted.internet.protocol import connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer_only

from tmta.common.twistedcompat import (
    ampCanBatch,
    ampParsesPlainBoxes,
    ampSwitched,
)
from tmta.logging import Logger
from tmta.wire.amp import Command
from tmta.wire.codec import serializeBox
from tmta.wire.triggers import Wakeup

log = Logger()


def _direct(commandType) -> bool:
    """
    Whether L{QuietAMP} may send, answer and take answers of
    C{commandType} itself: one of tmta's L{Command}s with no sending
    behaviour of its own (not a TLS start or a protocol switch) and
    plain boxes both ways.
    """
    direct = commandType.__dict__.get("_tmtaDirect")
    if direct is None:
        direct = (
            isinstance(commandType, type) and issubclass(commandType, Command)
            and commandType._doCommand is amp.Command._doCommand
            and commandType.commandType is amp.Box and commandType.responseType is amp.Box
        )
        setattr(commandType, "_tmtaDirect", direct)
    return direct


# What AMP declares, but for IFileDescriptorReceiver (see below).
@implementer_only(amp.IBoxSender, amp.IBoxReceiver, amp.IResponderLocator, IProtocol,
                  ILoggingContext)
class QuietAMP(amp.AMP):
    """
    AMP without a log line for every connection made and lost: tmta
    makes connections per message and per delivery, and the maillog is
    for mail.

    It also parses the boxes it receives itself.  Twisted's parser goes
    through a state machine with several method calls per key and per
    value, which costs about three times as much as a loop over the
    buffer; every message crosses several AMP connections, so that
    shows.  The wire format and its limits are Twisted's: a key of 1 to
    255 bytes, a value of up to 65,535, an empty key ending the box.
    A connection whose protocol was switched (or TLS started) is left to
    Twisted's parser.

    It takes no file descriptors (C{amp.Descriptor} arguments): nothing
    tmta's processes say to each other carries any, and its connections
    then read with C{recv} rather than C{recvmsg} (L{PlainReadMixin}).

    And it sends, answers and takes the answers of tmta's own commands
    (L{tmta.wire.amp.Command}) without Twisted's generic layers: a
    command's round trip there goes through about a dozen Deferred
    callbacks and a sorted re-encoding of each box, which cost as much
    again as the two processes' reads and writes.  What goes on the wire,
    the errors a caller sees and what an unhandled failure does (the
    connection is dropped) are Twisted's.

    What the handlers of one read's boxes send is written once per
    connection when the read is handled (L{heldWrites}): the queue
    manager, woken for a batch of new messages, hands their deliveries
    to an agent in one write, and the agent wakes once for all of them.
    """

    _boxBuffer = b""
    _together: "List[bytes] | None" = None
    #: The command of each request under way that this class sends itself.
    _directCalls: "Dict[bytes, Any] | None" = None

    # -- sending commands ---------------------------------------------------

    def callRemote(self, commandType, *a, **kw):
        if a or not _direct(commandType):
            return super().callRemote(commandType, *a, **kw)
        try:
            command = commandType(**kw)
            box = commandType.makeArguments(command.structured, self)
        except BaseException:
            return defer.fail()
        requiresAnswer = commandType.requiresAnswer
        if self._failAllReason is not None:
            return defer.fail(self._failAllReason) if requiresAnswer else None
        box[amp.COMMAND] = commandType.commandName
        tag = self._nextTag()
        if not requiresAnswer:
            self.sendBox(box)
            return None
        box[amp.ASK] = tag
        self.sendBox(box)
        question = self._outstandingRequests[tag] = defer.Deferred()
        if self._directCalls is None:
            self._directCalls = {}
        self._directCalls[tag] = commandType
        return question

    def _directQuestion(self, tag: bytes):
        """
        The command and Deferred of a request this class sent itself
        (L{callRemote}) that C{tag} answers, the Deferred made to drop
        the connection on a failure nobody handles, as Twisted's are;
        C{None} for a request Twisted sent.
        """
        commandType = self._directCalls.pop(tag, None) if self._directCalls else None
        if commandType is None:
            return None
        question = self._outstandingRequests.pop(tag)  # type: ignore[attr-defined]
        question.addErrback(self.unhandledError)
        return commandType, question

    def _answerReceived(self, box) -> None:
        direct = self._directQuestion(box[amp.ANSWER])
        if direct is None:
            return super()._answerReceived(box)
        commandType, question = direct
        try:
            answer = commandType.parseResponse(box, self)
        except BaseException:
            question.errback(Failure())
        else:
            question.callback(answer)

    def _errorReceived(self, box) -> None:
        direct = self._directQuestion(box[amp.ERROR])
        if direct is None:
            return super()._errorReceived(box)
        commandType, question = direct
        code = box[amp.ERROR_CODE]
        description = box[amp.ERROR_DESCRIPTION].decode("utf-8", "replace")
        error: Exception
        if code in amp.PROTOCOL_ERRORS:
            error = amp.PROTOCOL_ERRORS[code](code, description)
        else:
            # The command's own error for the code, as callRemote gives it.
            error = commandType.reverseErrors.get(code, amp.UnknownRemoteError)(description)
        question.errback(Failure(error))

    def failAllOutgoing(self, reason) -> None:
        self._directCalls = None
        super().failAllOutgoing(reason)

    # -- answering commands ---------------------------------------------------

    def _commandReceived(self, box) -> None:
        entry = self._commandDispatch.get(box[amp.COMMAND]) if self.locator is self else None
        if entry is None or not _direct(entry[0]):
            return super()._commandReceived(box)
        commandType, responder = entry
        ask = box.get(amp.ASK)
        try:
            result = responder(self, **commandType.parseArguments(box, self))
        except BaseException:
            self._answerFailed(Failure(), commandType, ask)
            return
        if type(result) is CoroutineType:
            result = defer.Deferred.fromCoroutine(result)
        if isinstance(result, defer.Deferred):
            result.addCallbacks(self._answer, self._answerFailed,
                                callbackArgs=(commandType, ask),
                                errbackArgs=(commandType, ask))
        elif isinstance(result, Failure):
            self._answerFailed(result, commandType, ask)
        else:
            self._answer(result, commandType, ask)

    def _answer(self, result, commandType, ask: "bytes | None") -> None:
        try:
            answer = commandType.makeResponse(result, self)
        except BaseException:
            self._answerFailed(Failure(amp.BadLocalReturn(
                f"{commandType!r} could not serialize {result!r}", Failure())),
                commandType, ask)
            return
        if ask is not None:
            answer[amp.ANSWER] = ask
            self._emit(answer)

    def _answerFailed(self, failure: Failure, commandType, ask: "bytes | None") -> None:
        known = failure.check(*commandType.allErrors)
        if ask is None:
            self.unhandledError(failure)
            return
        if known is not None:
            code = commandType.allErrors[known]
            description = str(failure.value).encode("utf-8", "replace")
            error = amp.QuitBox() if known in commandType.fatalErrors else amp.AmpBox()
        else:
            log.failure("while answering {command}", failure,
                        command=commandType.commandName.decode("ascii", "replace"))
            code, description = amp.UNKNOWN_ERROR_CODE, b"Unknown Error"
            error = amp.QuitBox()
        error[amp.ERROR] = ask
        error[amp.ERROR_DESCRIPTION] = description
        error[amp.ERROR_CODE] = code
        self._emit(error)

    def _emit(self, box) -> None:
        try:
            box._sendTo(self)
        except (amp.ProtocolSwitched, ConnectionLost):
            pass
        except BaseException:
            self.unhandledError(Failure())

    # -- the wire -------------------------------------------------------------

    def makeConnection(self, transport) -> None:
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    @contextmanager
    def together(self) -> Iterator[None]:
        """
        Send the boxes sent inside the block in one write at its end, so
        that the peer reads them with one wake-up rather than one each.
        """
        if self._together is not None:
            yield
            return
        self._together = []
        try:
            yield
        finally:
            self._sendTogether()

    def _sendTogether(self) -> None:
        pending, self._together = self._together, None
        if pending and self.transport is not None:
            self.transport.write(b"".join(pending))

    def sendBox(self, box) -> None:
        if ampCanBatch(self):
            data = serializeBox(box)
            if self._together is not None:
                self._together.append(data)
            elif _held is not None:
                self._together = [data]
                _held.append(self)
            else:
                self.transport.write(data)  # type: ignore[union-attr]
            return
        super().sendBox(box)

    def dataReceived(self, data: bytes) -> None:
        if not ampParsesPlainBoxes(self):
            return super().dataReceived(data)
        # What the boxes' handlers send goes out in one write per
        # connection once the read is handled.
        with _HOLD:
            self._parseBoxes(data)

    def _parseBoxes(self, data: bytes) -> None:
        buffer = self._boxBuffer + data if self._boxBuffer else data
        end = len(buffer)
        position = 0
        while True:
            box = amp.AmpBox()
            cursor = position
            while True:
                if cursor + 2 > end:
                    self._boxBuffer = buffer[position:]
                    return
                keyLength = (buffer[cursor] << 8) | buffer[cursor + 1]
                cursor += 2
                if keyLength == 0:
                    break
                if keyLength > 255:
                    self._boxBuffer = b""
                    self.lengthLimitExceeded(keyLength)
                    return
                valueAt = cursor + keyLength
                if valueAt + 2 > end:
                    self._boxBuffer = buffer[position:]
                    return
                valueLength = (buffer[valueAt] << 8) | buffer[valueAt + 1]
                valueEnd = valueAt + 2 + valueLength
                if valueEnd > end:
                    self._boxBuffer = buffer[position:]
                    return
                box[buffer[cursor:valueAt]] = buffer[valueAt + 2:valueEnd]
                cursor = valueEnd
            position = cursor
            self._boxBuffer = b""
            self.boxReceiver.ampBoxReceived(box)
            if self.transport is None or ampSwitched(self):
                # The connection went, or a box switched the protocol:
                # what follows is not for this parser.
                rest = buffer[position:]
                if rest and self.innerProtocol is not None:
                    self.innerProtocol.dataReceived(rest)
                return
            if position == end:
                return

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None


_held: "List[QuietAMP] | None" = None


class _HeldWrites:
    """
    The context of L{heldWrites}: a plain class rather than a generator,
    since every read of every connection enters it.  Reactor thread
    only.
    """

    depth = 0

    def __enter__(self) -> None:
        global _held
        if self.depth == 0:
            _held = []
        self.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        global _held
        self.depth -= 1
        if self.depth == 0:
            held, _held = _held, None
            for protocol in held or ():
                protocol._sendTogether()


_HOLD = _HeldWrites()


def heldWrites() -> ContextManager[None]:
    """
    Hold what every L{QuietAMP} connection sends inside the block, and
    send each connection's boxes in one write at its end.

    For a burst of answers: when a batch of messages is stored, cleanup
    answers each message and wakes qmgr for each, and its clients and
    qmgr then read all of it with one wake-up each.  Each read of a
    connection is handled inside one too.
    """
    return _HOLD


class ServiceAMP(QuietAMP):
    """
    The server side of a tmta service: answers the wake-up trigger that
    the master sends every service on its timer (a no-op unless the
    service overrides it).
    """

    @Wakeup.responder
    def wakeup(self, reason=None, queue_id=None):
        return {}
