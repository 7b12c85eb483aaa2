"""
One connection to one milter (Postfix's C{milter8.c}): the negotiation,
each event and its answer, and the state that decides which events a
milter still gets -- none once it accepted or refused the connection,
none of the rest of a message it accepted, and, once it failed, the
answer C{milter_default_action} gives.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field, fields
from typing import Any, List, Optional, Sequence, Tuple

from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from tmta.common.endpoints import tcpClientEndpoint
from tmta.logging import Logger
from tmta.milter import protocol as p
from tmta.milter.settings import MilterSettings

log = Logger()

# The states of a milter, as Postfix's.
READY = "ready"  # negotiated; no CONNECT sent yet
ENVELOPE = "envelope"  # in a session, between or inside messages' envelopes
ACCEPTED_CONNECTION = "accepted connection"  # wants no more events
ACCEPTED_MESSAGE = "accepted message"  # wants no more of this message
REJECTED_CONNECTION = "rejected connection"  # every event gets the refusal
ERROR = "error"  # broken: every event gets the default action
CLOSED = "closed"

REJECTED = "550 5.7.1 Command rejected"
TEMPORARY = "451 4.7.1 Service unavailable - try again later"
SHUTDOWN = "421 4.7.0 Service unavailable - closing connection"

#: What each C{milter_default_action} answers for a milter that failed.
_DEFAULT_REPLIES = {
    "accept": None,
    "reject": "550 5.5.0 Service unavailable",
    "tempfail": TEMPORARY,
}


@dataclass(frozen=True)
class Verdict:
    """
    What milters made of an event.

    @ivar kind: C{continue}, C{reply} (refused: C{reply} is the SMTP
        reply, 4xx or 5xx), C{discard} (accept the message and drop it),
        C{hold} (quarantine it) or C{shutdown} (421 and hang up).
    """

    kind: str
    reply: str = ""

    @property
    def goesOn(self) -> bool:
        return self.kind == "continue"


CONTINUE = Verdict("continue")
DISCARD = Verdict("discard")
HOLD = Verdict("hold")


def replyVerdict(reply: Optional[str]) -> Verdict:
    return CONTINUE if reply is None else Verdict("reply", reply)


#: The steps each protocol version can do without.
_VERSION_STEPS = {
    2: p.NOCONNECT | p.NOHELO | p.NOMAIL | p.NORCPT | p.NOBODY | p.NOHDRS | p.NOEOH,
}
_VERSION_STEPS[3] = _VERSION_STEPS[2] | p.NOUNKNOWN
_VERSION_STEPS[4] = _VERSION_STEPS[3] | p.NODATA
_VERSION_STEPS[6] = p.ALL_STEPS

#: The events a milter of an older version does not know.
_UNKNOWN_TO_VERSION = {2: p.NOUNKNOWN | p.NODATA, 3: p.NODATA, 4: 0, 6: 0}


@dataclass
class MilterState:
    """
    What smtpd and cleanup share of a milter connection: all that the
    process taking it over needs to go on where the other stopped.
    """

    version: int = 6
    actions: int = 0
    #: Events it is not sent (protocol steps it declined, or does not
    #: know), and events it does not answer.
    noSend: int = 0
    noReply: int = 0
    state: str = READY
    defaultReply: Optional[str] = None
    #: Header values are sent with their leading space (HDR_LEADSPC).
    leadingSpace: bool = False
    #: It is told of recipients refused before it was asked (RCPT_REJ).
    rejectedRecipients: bool = False
    #: Macro lists it asked for in the negotiation, by event code.
    macroLists: List[Tuple[bytes, Tuple[str, ...]]] = field(default_factory=list)


class MilterClient(Protocol):
    """
    The MTA's end of one milter connection.

    Events are sent one at a time: the caller waits for each answer
    (L{event}) before the next.  Events the milter does not answer (its
    headers, say, with C{SMFIP_NR_HDR}) are held back and go out in one
    write with the next event it does answer (L{flush}), so a message's
    headers and body cost one system call, not one each.  At the end of
    a message the changes a milter asks for collect in L{edits}, in
    order.
    """

    def __init__(self, settings: MilterSettings, clock: IReactorTime,
                 shared: Optional[MilterState] = None) -> None:
        self.settings = settings
        self.clock = clock
        self.shared = shared if shared is not None else MilterState()
        self.edits: List[Tuple[bytes, bytes]] = []
        #: A quarantine reason, when the milter asked for one.
        self.quarantine: Optional[str] = None
        self._parser = p.PacketParser()
        self._waiting: Optional[defer.Deferred] = None
        self._event = b""
        self._timer: Optional[IDelayedCall] = None
        self._timeout = settings.commandTimeout
        self._skipEvent = b""
        self._lost = False
        self._released = False
        #: Packets not yet written: events that are not answered.
        self._held: List[bytes] = []

    # -- the connection

    def dataReceived(self, data: bytes) -> None:
        try:
            packets = self._parser.feed(data)
        except p.ProtocolError as e:
            self._communicationError(f"protocol error: {e}")
            return
        for command, payload in packets:
            if self._waiting is None:
                self._communicationError(f"unexpected reply {command!r}")
                return
            self._answer(command, payload)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self._lost = True
        self._cancelTimer()
        if self.shared.state != CLOSED and not self._released:
            self._communicationError("connection lost", shut=False)

    def close(self) -> None:
        """
        End the conversation: QUIT, then close.
        """
        if self.transport is not None and not self._lost:
            if self.shared.state not in (ERROR, CLOSED):
                self._held.append(p.packet(p.QUIT))
            self.flush()
            self.shared.state = CLOSED
            self.transport.loseConnection()
        self.shared.state = CLOSED

    def release(self) -> None:
        """
        Let go of a connection another process still holds (cleanup,
        done with smtpd's): close this end without shutting it down.
        """
        transport = self.transport
        if transport is not None and not self._lost:
            self.flush()
            # Twisted shuts a socket down before closing it unless told
            # not to: the milter would then be gone for smtpd too.
            transport._shouldShutdown = False  # type: ignore[attr-defined]
            self._released = True
            transport.loseConnection()

    # -- events

    def macroNames(self, event: bytes) -> Tuple[str, ...]:
        """
        The macros sent with C{event}: those the milter asked for in the
        negotiation, else those of the C{milter_*_macros} parameter.
        """
        for code, names in self.shared.macroLists:
            if code == event:
                return names
        return self.settings.macrosFor(event)

    def negotiate(self) -> defer.Deferred:
        """
        Offer the protocol's version, actions and steps; fire once the
        milter answered (or failed: it is then in L{ERROR}).
        """
        settings = self.settings
        version = settings.version
        steps = _VERSION_STEPS[version] | (p.NR_HDR if settings.noHeaderReply else 0)
        self._event = p.OPTNEG
        assert self.transport is not None, "not connected"
        self.transport.write(p.optionNegotiation(version, p.ALL_ACTIONS, steps))
        return self._wait(settings.commandTimeout)

    def event(self, command: bytes, data: bytes, macros: Sequence[Tuple[str, str]] = (),
              content: bool = False) -> defer.Deferred:
        """
        Send one event (after its macros), and fire with the milter's
        L{Verdict} once it answered -- at once when it does not answer
        that event, or does not want it.

        @param content: a header, body or end-of-message event, whose
            answer may take C{milter_content_timeout}.
        """
        shared = self.shared
        if shared.state in (ERROR, CLOSED) or self.transport is None or self._lost:
            return defer.succeed(replyVerdict(shared.defaultReply))
        noSendFlag, noReplyFlag = p.EVENT_FLAGS.get(command, (0, 0))
        unknownToVersion = _UNKNOWN_TO_VERSION.get(shared.version, 0)
        if noSendFlag & unknownToVersion:
            return defer.succeed(replyVerdict(shared.defaultReply))
        if self._skipEvent:
            if command == self._skipEvent:
                return defer.succeed(CONTINUE)
            self._skipEvent = b""
        if macros:
            self._held.append(p.macros(command, macros))
        if noSendFlag & shared.noSend:
            return defer.succeed(replyVerdict(shared.defaultReply))
        self._held.append(p.packet(command, data))
        if noReplyFlag & shared.noReply:
            return defer.succeed(replyVerdict(shared.defaultReply))
        self.flush()
        self._event = command
        timeout = self.settings.contentTimeout if content else self.settings.commandTimeout
        return self._wait(timeout)

    def send(self, command: bytes, data: bytes = b"") -> None:
        """
        Send what is not answered (ABORT, QUIT_NC), at once.
        """
        if self.transport is not None and not self._lost and self.shared.state not in (
                ERROR, CLOSED):
            self._held.append(p.packet(command, data))
            self.flush()

    def flush(self) -> None:
        """
        Write what is held back (before the connection is lent to, or
        given back by, another process too).
        """
        held, self._held = self._held, []
        if held and self.transport is not None and not self._lost:
            self.transport.write(b"".join(held))

    def _wait(self, timeout: float) -> defer.Deferred:
        self._waiting = defer.Deferred()
        self._timeout = timeout
        self._startTimer()
        return self._waiting

    def _startTimer(self) -> None:
        self._cancelTimer()
        self._timer = self.clock.callLater(self._timeout, self._timedOut)

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timedOut(self) -> None:
        self._timer = None
        self._communicationError(f"timeout after {self._timeout:g}s waiting for the answer "
                                 f"to event {self._event.decode('ascii', 'replace')}")

    def _finish(self, verdict: Verdict) -> None:
        self._cancelTimer()
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(verdict)

    # -- answers

    def _answer(self, command: bytes, data: bytes) -> None:
        event = self._event
        if event == p.OPTNEG:
            self._negotiated(command, data)
            return
        inConnect = event in (p.CONNECT, p.HELO)
        shared = self.shared
        if command == p.PROGRESS and not data:
            self._startTimer()
            return
        if command in (p.CONTINUE, p.ACCEPT, p.DISCARD, p.REJECT, p.TEMPFAIL, p.SHUTDOWN,
                       p.SKIP) and data:
            self._communicationError(f"reply {command!r} followed by {len(data)} bytes")
            return
        if command == p.CONTINUE:
            self._finish(replyVerdict(shared.defaultReply))
        elif command == p.ACCEPT:
            shared.state = ACCEPTED_CONNECTION if inConnect else ACCEPTED_MESSAGE
            self._finish(CONTINUE)
        elif command == p.DISCARD:
            if inConnect:
                log.warn("milter {name}: DISCARD action is not allowed for connect or helo",
                         name=self.settings.name)
                self._finish(replyVerdict(shared.defaultReply))
            else:
                shared.state = ACCEPTED_MESSAGE
                self._finish(DISCARD)
        elif command in (p.REJECT, p.TEMPFAIL, p.SHUTDOWN):
            reply = {p.REJECT: REJECTED, p.TEMPFAIL: TEMPORARY, p.SHUTDOWN: SHUTDOWN}[command]
            if command == p.SHUTDOWN or inConnect:
                shared.state = REJECTED_CONNECTION
                shared.defaultReply = reply
            self._finish(Verdict("shutdown", reply) if command == p.SHUTDOWN
                         else Verdict("reply", reply))
        elif command == p.REPLYCODE:
            text = p.replyText(data)
            if text is None:
                log.warn("milter {name}: malformed reply: {data!r}", name=self.settings.name,
                         data=data[:200])
                self._configurationError()
                return
            if inConnect:
                shared.state = REJECTED_CONNECTION
                shared.defaultReply = text
            self._finish(Verdict("reply", text))
        elif command == p.QUARANTINE:
            try:
                [self.quarantine] = p.splitStrings(data, 1, optional=1)
            except p.ProtocolError as e:
                self._communicationError(f"bad quarantine request: {e}")
        elif command == p.SKIP:
            self._skipEvent = event
            self._finish(replyVerdict(shared.defaultReply))
        elif event == p.BODYEOB and command in p.EDITS:
            self.edits.append((command, data))
        else:
            self._communicationError(f"unexpected reply {command!r} after event {event!r}")

    def _negotiated(self, command: bytes, data: bytes) -> None:
        if command != p.OPTNEG:
            self._communicationError(f"bad negotiation reply {command!r}")
            return
        try:
            version, actions, steps, lists = p.negotiated(data)
        except p.ProtocolError as e:
            self._communicationError(str(e))
            return
        ours = self.settings.version
        if version < 2 or version > max(ours, 6):
            self._communicationError(f"protocol version {version} is not supported")
            return
        offered = _VERSION_STEPS[ours] | (p.NR_HDR if self.settings.noHeaderReply else 0)
        shared = self.shared
        shared.version = min(version, ours)
        shared.actions = actions & p.ALL_ACTIONS
        wanted = steps & offered
        if steps & ~offered & ~p.HDR_LEADSPC:
            log.warn("milter {name}: asks for steps {steps:#x} not offered: ignored",
                     name=self.settings.name, steps=steps & ~offered)
        eventFlags = 0
        replyFlags = 0
        for noSend, noReply in p.EVENT_FLAGS.values():
            eventFlags |= noSend
            replyFlags |= noReply
        shared.noSend = wanted & eventFlags
        shared.noReply = wanted & replyFlags
        shared.leadingSpace = bool(wanted & p.HDR_LEADSPC)
        shared.rejectedRecipients = bool(wanted & p.RCPT_REJ)
        if shared.actions & p.SETSYMLISTS:
            for stage, names in lists:
                event = p.MACRO_STAGES.get(stage)
                if event is not None:
                    shared.macroLists.append((event, tuple(names.split())))
        self._finish(CONTINUE)

    # -- failures

    def _communicationError(self, why: str, shut: bool = True) -> None:
        """
        The milter broke off or broke the protocol: it gets no more
        events, and every event from now on gets the default action's
        answer.  Its socket is shut down, so that smtpd, which holds it
        too while cleanup works on a message, gives it up as well.
        """
        shared = self.shared
        if shared.state not in (ERROR, CLOSED):
            log.warn("milter {name}: {why}", name=self.settings.name, why=why)
        self._fail()
        if shut and self.transport is not None and not self._lost:
            self._lost = True
            try:
                self.transport.getHandle().shutdown(  # type: ignore[attr-defined]
                    socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
            self.transport.loseConnection()

    def _configurationError(self) -> None:
        self._fail()
        self.send(p.ABORT)

    def _fail(self) -> None:
        shared = self.shared
        action = self.settings.defaultAction
        if action == "quarantine":
            self.quarantine = self.quarantine or "milter default action"
            shared.defaultReply = None
        else:
            shared.defaultReply = _DEFAULT_REPLIES[action]
        shared.state = ERROR
        self._finish(HOLD if action == "quarantine" else replyVerdict(shared.defaultReply))


def failedClient(settings: MilterSettings, clock: IReactorTime, why: str) -> MilterClient:
    """
    A milter that could not be reached: in L{ERROR} from the start, it
    answers every event with its default action.
    """
    client = MilterClient(settings, clock)
    log.warn("milter {name}: {why}", name=settings.name, why=why)
    client._fail()
    return client


async def connectMilter(reactor, settings: MilterSettings) -> MilterClient:
    """
    Connect to a milter and negotiate, within C{connect_timeout} and
    C{command_timeout}.  A milter that cannot be reached is not an
    error: the client returned is in L{ERROR}, and answers with the
    default action.
    """
    endpoint: Any
    if settings.family == "unix":
        endpoint = endpoints.UNIXClientEndpoint(reactor, settings.path,
                                                timeout=settings.connectTimeout)
    else:
        endpoint = tcpClientEndpoint(reactor, settings.host, settings.port,
                                     settings.connectTimeout)
    try:
        client = await endpoint.connect(Factory.forProtocol(
            lambda: MilterClient(settings, reactor)))
    except Exception as e:
        return failedClient(settings, reactor, f"can't connect: {e}")
    await client.negotiate()
    return client


def describe(client: MilterClient) -> str:
    """
    What another process needs to go on with a milter connection (cleanup
    with smtpd's): its settings and its negotiated state, as JSON.
    """
    client.flush()
    settings, shared = client.settings, client.shared
    # Field by field, not dataclasses.asdict: it copies deeply, at a
    # cost paid for every milter of every message.
    return json.dumps({
        "settings": {**{f.name: getattr(settings, f.name) for f in fields(settings)},
                     "macros": [[code.decode("ascii"), list(names)]
                                for code, names in settings.macros]},
        "state": {**{f.name: getattr(shared, f.name) for f in fields(shared)},
                  "macroLists": [[code.decode("ascii"), list(names)]
                                 for code, names in shared.macroLists]},
    })


def restore(text: str) -> Tuple[MilterSettings, MilterState]:
    """
    The settings and state L{describe} gave.

    @raise ValueError: not what it gives.
    """
    try:
        found = json.loads(text)
        settings = dict(found["settings"])
        settings["macros"] = tuple((code.encode("ascii"), tuple(names))
                                   for code, names in settings["macros"])
        state = dict(found["state"])
        state["macroLists"] = [(code.encode("ascii"), tuple(names))
                               for code, names in state["macroLists"]]
        return MilterSettings(**settings), MilterState(**state)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"bad milter description: {e}")


def adoptMilter(reactor, settings: MilterSettings, shared: MilterState, fd: int,
                family: int) -> MilterClient:
    """
    Take over a milter connection another process opened (smtpd's, in
    cleanup): the descriptor is duplicated, and C{fd} may be closed.
    """
    client = MilterClient(settings, reactor, shared)
    reactor.adoptStreamConnection(fd, family, Factory.forProtocol(lambda: client))
    return client

