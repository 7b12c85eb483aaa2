"""
AMP as tmta's processes speak it to each other.

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from types import CoroutineType
from typing import Any, ContextManager, Dict, Iterator, List, Sequence, Set, Tuple

from twisted.internet import defer, endpoints, unix
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import ILoggingContext, IProtocol
from twisted.internet.protocol import Factory, connectionDone
from twisted.protocols import amp
from twisted.python.failure import Failure
from zope.interface import implementer_only

from tmta.common.amp import Command
from tmta.common.transports import EagerWriteMixin, PlainReadMixin
from tmta.common.triggers import Wakeup
from tmta.common.twistedcompat import (
    ampCanBatch,
    ampParsesPlainBoxes,
    ampSwitched,
    connectorMaking,
)
from tmta.logging import Logger
from tmta.queue.layout import socketPath

log = Logger()

#: One encoder for every record list: C{json.dumps} with options builds a
#: new one each call.
_compactJSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class RecordList(amp.Argument):
    """
    A list of flat records (each a dict of C{str} and C{int} fields) in
    one AMP value, as a JSON array of arrays.

    C{amp.AmpList} serialises every field of every record as a key and a
    value of a nested box; decoding that costs more than the rest of a
    small command.  One JSON value, parsed in C and then checked field
    by field against the declared shape, says the same for a fraction of
    the work.  Like every AMP value it holds at most 65,535 bytes.
    """

    def __init__(self, fields: Sequence[Tuple[Any, ...]], optional: bool = False) -> None:
        super().__init__(optional)
        self.fields = [(field[0], field[1]) for field in fields]
        #: Defaults of the trailing fields that have one: a record may
        #: leave them out, and they are left off the wire when they
        #: have their default (older peers send and expect none).
        self.defaults = {field[0]: field[2] for field in fields if len(field) > 2}
        names = [field[0] for field in fields]
        if any(name not in self.defaults for name in names[len(names) - len(self.defaults):]):
            raise TypeError("only trailing fields may have defaults")
        self.required = len(names) - len(self.defaults)
        for name, kind in self.fields:
            if kind not in (str, int):
                raise TypeError(f"field {name}: only str and int fields are supported")

    def toString(self, records: List[Dict[str, Any]]) -> bytes:
        if not self.defaults:
            rows = [[record[name] for name, _ in self.fields] for record in records]
        else:
            rows = []
            for record in records:
                row = [record.get(name, self.defaults.get(name)) for name, _ in self.fields]
                while len(row) > self.required and row[-1] == self.defaults[
                        self.fields[len(row) - 1][0]]:
                    row.pop()
                rows.append(row)
        return _compactJSON.encode(rows).encode("utf-8")

    def fromString(self, data: bytes) -> List[Dict[str, Any]]:
        rows = json.loads(data.decode("utf-8"))
        if not isinstance(rows, list):
            raise ValueError("a record list must be a JSON array")
        width = len(self.fields)
        required = self.required
        records = []
        for row in rows:
            if not isinstance(row, list) or not required <= len(row) <= width:
                raise ValueError(f"a record must be an array of {width} fields")
            record = {}
            for (name, kind), value in zip(self.fields, row):
                if type(value) is not kind:
                    raise ValueError(f"field {name} must be {kind.__name__}")
                record[name] = value
            for name, _ in self.fields[len(row):]:
                record[name] = self.defaults[name]
            records.append(record)
        return records


def serializeBox(box: Dict[bytes, bytes]) -> bytes:
    """
    A box in AMP's wire format, as C{AmpBox.serialize} writes it but in
    one pass and in the box's own key order (AMP does not order keys).

    @raise TypeError: a key or value is not C{bytes}.
    @raise amp.TooLong: a key or value is over AMP's limits.
    """
    parts: List[bytes] = []
    append = parts.append
    for key, value in box.items():
        if type(key) is not bytes or type(value) is not bytes:
            raise TypeError(f"AMP keys and values must be bytes: {key!r}: {value!r}")
        if len(key) > amp.MAX_KEY_LENGTH:
            raise amp.TooLong(True, True, key, None)
        if len(value) > amp.MAX_VALUE_LENGTH:
            raise amp.TooLong(False, True, value, key)
        append(len(key).to_bytes(2, "big"))
        append(key)
        append(len(value).to_bytes(2, "big"))
        append(value)
    append(b"\0\0")
    return b"".join(parts)


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
    (L{tmta.common.amp.Command}) without Twisted's generic layers: a
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


def connectService(reactor, queueDirectory: str, service: str, private: bool = True,
                   protocol: amp.AMP | None = None, timeout: float = 10):
    """
    Connect to a service's socket under C{queueDirectory}.

    @return: a Deferred firing with the connected AMP protocol.
    """
    path = socketPath(queueDirectory, service, private)
    endpoint = endpoints.UNIXClientEndpoint(_EagerUNIXConnecting(reactor), path, timeout=timeout)
    factory = _OneConnection(protocol or QuietAMP())
    return endpoint.connect(factory)


class _EagerUNIXClient(PlainReadMixin, EagerWriteMixin, unix.Client):
    pass


_EagerUNIXConnector = connectorMaking(_EagerUNIXClient)


class _EagerUNIXConnecting:
    """
    The C{connectUNIX} of a reactor, making connections whose writes go
    out at once (L{EagerWriteMixin}): every command a service sends is
    one write, and the answer is awaited before anything else is sent.
    """

    def __init__(self, reactor) -> None:
        self._reactor = reactor

    def connectUNIX(self, address, factory, timeout=30, checkPID=0):
        connector = _EagerUNIXConnector(address, factory, timeout, self._reactor, checkPID)
        connector.connect()
        return connector


class _OneConnection(Factory):
    """
    Hands out one given protocol, without logging (Twisted's own
    one-shot factory logs its start and stop).
    """

    noisy = False

    def __init__(self, protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr):
        return self.protocol_


class SharedConnection:
    """
    One connection to a service, used by any number of requests at once.

    AMP matches every answer to its question, so requests in flight
    together need no connection each: the service's worker counts one
    client (a pool would make it one per request in flight, and turn
    its workers over C{max_use} times faster), and the caller holds one
    descriptor.  The connection is made when first wanted, made again
    when it was lost, and closed after C{idle} seconds without a user.
    """

    def __init__(self, connect, clock, idle: float = 5.0) -> None:
        self._connect = connect
        self.clock = clock
        self.idle = idle
        self._protocol = None
        self.users = 0
        self._lastRelease = 0.0
        self._waiting: list = []
        self._timer = None

    def acquire(self):
        """
        @return: a Deferred firing with the connected protocol, for the
            caller to use (among others) until it calls L{release}.
        """
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            self.users += 1
            return defer.succeed(protocol)
        self._protocol = None
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            self._connect().addBoth(self._connected)
        return waiter

    def _connected(self, result) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            for waiter in waiting:
                waiter.errback(result)
            return
        self._protocol, self.users = result, len(waiting)
        for waiter in waiting:
            waiter.callback(result)

    def release(self, protocol) -> None:
        """
        The caller is done with C{protocol} (for now).
        """
        if protocol is not self._protocol:
            return
        self.users -= 1
        if self.users == 0:
            self._lastRelease = self.clock.seconds()
            if self._timer is None:
                self._timer = self.clock.callLater(self.idle, self._expire)

    def _expire(self) -> None:
        self._timer = None
        protocol = self._protocol
        if protocol is None or self.users:
            return
        left = self._lastRelease + self.idle - self.clock.seconds()
        if left > 0:
            self._timer = self.clock.callLater(left, self._expire)
            return
        self._protocol = None
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.loseConnection()


class ConnectionPool:
    """
    Connections to one service, each for one request at a time, kept
    open between uses.

    For services whose workers take one request at a time (delivery
    agents: local changes identity per delivery), where one connection
    cannot carry several (L{SharedConnection}).  Reusing a connection
    spares the worker the cost of a client per request.  Idle
    connections are closed after C{idle} seconds.
    """

    def __init__(self, connect, clock, idle: float = 5.0) -> None:
        self._connect = connect
        self.clock = clock
        self.idle = idle
        # (protocol, when it was released), oldest first.  One timer for
        # the pool closes what has idled too long: a timer per release
        # (set, then cancelled by the next acquire) cost more than the
        # rest of a reuse.
        self._free: list = []
        self._timer = None

    def acquire(self):
        """
        @return: a Deferred firing with a connected protocol for the
            caller's sole use until L{release} or L{discard}.
        """
        while self._free:
            protocol, _ = self._free.pop()
            if protocol.transport is not None:
                return defer.succeed(protocol)
        return self._connect()

    def release(self, protocol) -> None:
        """
        Return a connection that is in a clean state for the next user.
        """
        if protocol.transport is None:
            return
        self._free.append((protocol, self.clock.seconds()))
        if self._timer is None:
            self._timer = self.clock.callLater(self.idle, self._expire)

    def discard(self, protocol) -> None:
        """
        Close a connection whose state is unknown (an error mid-request).
        """
        if protocol.transport is not None:
            protocol.transport.loseConnection()

    def retire(self, protocol) -> None:
        """
        In place of L{release}, by a request whose answer said the
        worker at the other end takes no more (it has reached
        C{max_use}): the connection is closed once the requests under
        way on it are done, instead of being kept for reuse.
        """
        self.discard(protocol)

    def _expire(self) -> None:
        self._timer = None
        now = self.clock.seconds()
        cutoff = now - self.idle
        expired = 0
        while expired < len(self._free) and self._free[expired][1] <= cutoff:
            expired += 1
        old, self._free = self._free[:expired], self._free[expired:]
        for protocol, _ in old:
            self.discard(protocol)
        if self._free:
            # Never below zero, however the clock moved meanwhile.
            delay = max(0.0, self._free[0][1] - cutoff)
            self._timer = self.clock.callLater(delay, self._expire)

    def close(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for protocol, _ in self._free:
            self.discard(protocol)
        self._free = []


class MultiplexingPool(ConnectionPool):
    """
    Connections to one service, each carrying up to C{perConnection}
    requests at once.

    For delivery agents that serve the requests on a connection
    together, as one batch (local syncs a Maildir's directory once for
    all of them).  A request goes to the connection with the most
    requests under way that still has room: packed, not spread, so
    that the agent has a batch to serve.  A connection with none under
    way idles as in L{ConnectionPool}.
    """

    def __init__(self, connect, clock, perConnection: int, idle: float = 5.0) -> None:
        super().__init__(connect, clock, idle)
        self.perConnection = max(1, perConnection)
        #: Requests under way, by connection.
        self.busy: Dict[Any, int] = {}
        #: Waiters for each connection being made, in the order asked.
        self._making: List[List[defer.Deferred]] = []
        #: Connections whose worker takes no more requests.
        self._retired: Set[Any] = set()

    def acquire(self):
        best = None
        for protocol, users in self.busy.items():
            if users < self.perConnection and protocol.transport is not None and (
                    best is None or users > self.busy[best]) and protocol not in self._retired:
                best = protocol
        if best is not None:
            self.busy[best] += 1
            return defer.succeed(best)
        for waiters in self._making:
            if len(waiters) < self.perConnection:
                waiter: defer.Deferred = defer.Deferred()
                waiters.append(waiter)
                return waiter
        while self._free:
            protocol, _ = self._free.pop()
            if protocol.transport is not None:
                self.busy[protocol] = 1
                return defer.succeed(protocol)
        waiters = [defer.Deferred()]
        self._making.append(waiters)
        self._connect().addBoth(self._made, waiters)
        return waiters[0]

    def _made(self, result, waiters: List[defer.Deferred]) -> None:
        self._making.remove(waiters)
        if isinstance(result, Failure):
            for waiter in waiters:
                waiter.errback(result)
            return
        self.busy[result] = len(waiters)
        for waiter in waiters:
            waiter.callback(result)

    def release(self, protocol) -> None:
        users = self.busy.pop(protocol, 0) - 1
        if users > 0:
            self.busy[protocol] = users
        elif protocol in self._retired:
            self._retired.discard(protocol)
            super().discard(protocol)
        else:
            super().release(protocol)

    def retire(self, protocol) -> None:
        # No new request goes to it; the last one under way closes it.
        self._retired.add(protocol)
        self.release(protocol)

    def discard(self, protocol) -> None:
        self.busy.pop(protocol, None)
        self._retired.discard(protocol)
        super().discard(protocol)
