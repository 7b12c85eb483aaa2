"""
Reading pipelined SMTP commands and answering them in order.
"""

from __future__ import annotations

from typing import Any, Optional, Set

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from tmta.logging import Logger

log = Logger()

#: How much unread input a session may hold while it waits for an
#: answer before it stops reading from its client.
MAX_BUFFERED_INPUT = 64 * 1024


@implementer(IPushProducer)
class _PauseReason:
    """
    One reason to stop reading from the client, handed to whoever may
    ask for a pause (the connection to cleanup, the client's own
    transport when its send buffer is full).
    """

    def __init__(self, reader: "CommandReader", name: str) -> None:
        self.reader = reader
        self.name = name

    def pauseProducing(self) -> None:
        self.reader._pauseReading(self.name)

    def resumeProducing(self) -> None:
        self.reader._resumeReading(self.name)

    def stopProducing(self) -> None:
        self.reader._resumeReading(self.name)


class CommandReader(protocol.Protocol, TimeoutMixin):
    """
    The input side of an SMTP session: splits what the client sends into
    command lines (or, in the DATA phase, hands it to L{messageData}) and
    answers one command at a time.

    A command whose handler returns a Deferred holds the rest of the
    input in the buffer until it fires, so pipelined commands are
    answered in order.  A Deferred that has already fired (a cached
    answer) is taken up by the same loop rather than by a nested call,
    however many such commands arrive in one write.

    The session stops reading from its client while it holds more than
    L{MAX_BUFFERED_INPUT} bytes of input it cannot yet act on, while
    its replies back up in the transport (a client that writes without
    reading), and while whoever receives the message text asks it to
    (see L{pauseFor}).

    @ivar lineLengthLimit: the longest command line accepted.
    """

    #: A TCP, UNIX or TLS connection: also a producer and a consumer.
    transport: Any

    lineLengthLimit = 2048
    #: Whether a command line ending in a bare LF ends the session
    #: (L{bareNewlineReceived}) instead of being read as a line.
    rejectBareNewline = False

    #: What the idle timeout (C{TimeoutMixin}) limits: C{"read"}, the
    #: time between two reads (Postfix's default), or C{"request"}, the
    #: time to send one whole command, or the message text at no less
    #: than L{minDataRate} bytes a second (C{smtpd_per_request_deadline}),
    #: so that a client that trickles a byte now and then is cut off.
    deadline = "read"
    minDataRate = 500
    timeoutPeriod: Optional[float] = None

    def __init__(self) -> None:
        self._buffer = b""
        self._busy = False
        self._inLoop = False
        self._closing = False
        self._skippingLongLine = False
        self._pausedFor: Set[str] = set()
        self._dataCredit = 0.0

    # -- what a subclass provides --------------------------------------

    def inData(self) -> bool:
        """
        Whether the input is message text (the DATA phase) now.
        """
        return False

    def messageData(self) -> bool:
        """
        Take message text from L{_buffer} (leaving what it cannot use
        yet); return whether the end of data was reached.  Called only
        while L{inData} is true, so a reader without a DATA phase needs
        neither.
        """
        return False

    def commandReceived(self, line: bytes) -> Optional[defer.Deferred]:
        """
        Answer one command line (without its line end); a Deferred holds
        further input until it fires.
        """

    def lineTooLong(self) -> None:
        """
        A command line over L{lineLengthLimit} was read and dropped.
        """

    def internalError(self, reason) -> None:
        """
        A command's Deferred failed.
        """

    def bareNewlineReceived(self) -> None:
        """
        A command line ended in a bare LF while L{rejectBareNewline}.
        """

    # -- the connection ----------------------------------------------------

    def connectionMade(self) -> None:
        # Replies that back up in the transport stop the reading.
        self.transport.registerProducer(self.pauseFor("output"), True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._closing = True
        self._buffer = b""

    def pauseFor(self, name: str) -> IPushProducer:
        """
        A producer whose pause stops the reading from the client until
        its resume (other reasons to pause aside).
        """
        return _PauseReason(self, name)

    def _pauseReading(self, name: str) -> None:
        if not self._pausedFor:
            self.transport.pauseProducing()
        self._pausedFor.add(name)

    def _resumeReading(self, name: str) -> None:
        if name not in self._pausedFor:
            return
        self._pausedFor.discard(name)
        if not self._pausedFor and not self._closing:
            self.transport.resumeProducing()

    def reply(self, text: str) -> None:
        if not self._closing:
            self.transport.write(text.encode("utf-8", "surrogateescape") + b"\r\n")

    def close(self) -> None:
        self._closing = True
        self._buffer = b""
        self.transport.loseConnection()

    # -- input -------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        deadline = self.deadline
        if deadline == "read":
            self.resetTimeout()
        elif self.inData():
            self._dataCredit += len(data) / self.minDataRate
        self._buffer += data
        self._process()

    def restartDeadline(self) -> None:
        """
        Start the time limit for the next record or request afresh.
        """
        self._dataCredit = 0.0
        self.setTimeout(self.timeoutPeriod)

    def extendDeadline(self) -> bool:
        """
        The time limit ran out: while message text arrives at the minimum
        rate (C{deadline = "request"}), grant it the time that text has
        earned.

        @return: whether the limit was extended.
        """
        credit, self._dataCredit = self._dataCredit, 0.0
        if credit <= 0 or not self.inData():
            return False
        self.setTimeout(credit)
        return True

    def waitFor(self, d: defer.Deferred) -> None:
        """
        Hold further input until C{d} fires.
        """
        self._busy = True

        def resume(_):
            self._busy = False
            if self.deadline == "request":
                self.restartDeadline()
            if not self._inLoop:
                self._process()

        d.addErrback(self.internalError).addCallback(resume)

    def _process(self) -> None:
        if self._inLoop:
            return
        self._inLoop = True
        try:
            self._readAvailable()
        finally:
            self._inLoop = False
        if self._busy and len(self._buffer) > MAX_BUFFERED_INPUT:
            self._pauseReading("input")
        elif "input" in self._pausedFor and len(self._buffer) <= MAX_BUFFERED_INPUT:
            self._resumeReading("input")

    def _readAvailable(self) -> None:
        # In the DATA phase with nothing buffered there may still be work:
        # a chunk of no bytes (BDAT 0 LAST) is complete as it starts.
        while not self._busy and not self._closing and (self._buffer or self.inData()):
            if self.inData():
                if not self.messageData():
                    return
                continue
            newline = self._buffer.find(b"\n")
            limit = self.lineLengthLimit
            if newline < 0:
                if len(self._buffer) > limit:
                    self._skippingLongLine = True
                    self._buffer = b""
                return
            line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
            if self.rejectBareNewline and not line.endswith(b"\r"):
                self.bareNewlineReceived()
                return
            if self._skippingLongLine or len(line) > limit:
                self._skippingLongLine = False
                self.lineTooLong()
                continue
            result = self.commandReceived(line.rstrip(b"\r"))
            if isinstance(result, defer.Deferred):
                self.waitFor(result)
            elif self.deadline == "request":
                self.restartDeadline()
