"""
One client of postscreen, from its connection until it is handed to
smtpd or sent away (Postfix's C{postscreen.c}, C{postscreen_early.c} and
C{postscreen_misc.c}).

The client is first looked up in C{postscreen_access_list} (allowed
clients go to smtpd at once, denied ones get C{postscreen_denylist_action})
and in the cache (a client whose tests all still count as passed goes to
smtpd at once).  Otherwise the tests before the greeting run together:
half a greeting (C{220-}) is sent and the client is watched, for
C{postscreen_greet_wait}, for talking before its turn (what it sends is
only peeked at, so that smtpd still reads it), while the DNS lists are
asked.  A client that passes is handed to smtpd -- whose own greeting
completes the one begun -- unless tests after the greeting remain, or a
test failed with C{enforce}: then postscreen's own SMTP engine
(L{tmta.postscreen.engine}) talks to it, and refuses its recipients.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import Protocol, connectionDone
from zope.interface import implementer

from tmta.logging import Logger
from tmta.postscreen import dnsbl
from tmta.postscreen.cache import NEVER
from tmta.postscreen.engine import DummyEngine, escape
from tmta.postscreen.settings import DEEP_TESTS, DNSBL, EARLY_TESTS, PREGREET, TESTS
from tmta.tables import TableLookupError, lookupAny
from tmta.tables.networks import inNetworks
from tmta.tables.remote import maybeInThread

log = Logger()

PROTOCOL_ERROR = {"drop": "521 5.5.1 Protocol error", "enforce": "550 5.5.1 Protocol error"}
DENYLISTED = {"drop": "521 5.3.2 Service currently unavailable",
              "enforce": "550 5.3.2 Service currently unavailable"}
#: What a client that passed the tests after the greeting hears at RCPT:
#: come back (it then goes to smtpd).
COME_BACK = "450 4.3.2 Service currently unavailable"


@implementer(IReadDescriptor)
class _EarlyTalk:
    """
    Watches a client's connection (through a descriptor of its own, so
    that the transport is left alone) for anything it sends before its
    turn.
    """

    def __init__(self, fd: int, talked) -> None:
        self.sock = socket.socket(fileno=os.dup(fd))
        self.talked = talked

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:
        try:
            data = self.sock.recv(1024, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.talked(data)

    def connectionLost(self, reason) -> None:
        pass

    def logPrefix(self) -> str:
        return "postscreen"

    def close(self) -> None:
        self.sock.close()


class PostscreenSession(Protocol):
    """
    One client connection, screened.

    @ivar expiry: until when each test counts as passed (from the cache).
    @ivar todo: the tests to run this time.
    @ivar passed: the tests passed this time.
    @ivar failed: the tests failed this time (with an action other than
        C{ignore}).
    @ivar forward: whether the client is handed to smtpd in the end.
    @ivar rcptReply: what postscreen's engine answers RCPT.
    @ivar finalReply: what a client sent away is told last.
    """

    transport: Any

    def __init__(self, screen) -> None:
        self.screen = screen
        self.settings = screen.settings
        self.clock = screen.reactor
        self.expiry: Dict[str, int] = {test: NEVER for test in TESTS}
        self.todo: Set[str] = set()
        self.passed: Set[str] = set()
        self.failed: Set[str] = set()
        self.updated = False
        self.new = True
        self.forward = True
        self.rcptReply = COME_BACK
        self.finalReply = ""
        self.teaserSent = False
        self.ended = False
        self.engine: Optional[DummyEngine] = None
        self._watcher: Optional[_EarlyTalk] = None
        self._timer = None
        self._score = dnsbl.Score()
        self._lookups: list = []
        self._dnsblDone = False
        self._pregreetDone = False
        #: Counted among the clients being screened (not handed over at once).
        self.screening = False
        self.started = 0.0
        #: The client's connections at the time this one was made.
        self.concurrency = 0

    # -- identity

    def where(self) -> str:
        return f"[{self.address}]:{self.port}"

    def elapsed(self) -> str:
        return f"{max(0.0, self.clock.seconds() - self.started):.2f}"

    # -- connection

    def connectionMade(self) -> None:
        transport = self.transport
        transport.pauseProducing()
        peer, host = transport.getPeer(), transport.getHost()
        self.address, self.port = peer.host, peer.port
        self.started = self.clock.seconds()
        log.info("CONNECT from {client} to [{server}]:{port}", client=self.where(),
                 server=host.host, port=host.port)
        screen = self.screen
        concurrency = self.concurrency = screen.connected(self.address)
        limit = self.settings.connectionCountLimit
        if limit > 0 and concurrency > limit:
            log.info("NOQUEUE: reject: CONNECT from {client}: too many connections",
                     client=self.where())
            self.drop("421 4.7.0 Error: too many connections")
            return
        decided = maybeInThread(screen.reactor, self.settings.accessListRemote,
                                self._accessList)
        if isinstance(decided, defer.Deferred):
            decided.addCallbacks(self._accessListDecided, self._accessListFailed)
        else:
            self._accessListDecided(decided)

    def _accessListFailed(self, failure) -> None:
        log.warn("postscreen_access_list: {error}: skipped for {client}",
                 error=failure.getErrorMessage(), client=self.where())
        self._accessListDecided((None, []))

    def _accessListDecided(self, decided: Tuple[Optional[str], List[str]]) -> None:
        """
        Go on with the access list's verdict: allow, deny, or screen.
        """
        verdict, warnings = decided
        for warning in warnings:
            log.warn("postscreen_access_list: {warning} for {client}", warning=warning,
                     client=self.where())
        if self.ended:
            return  # the client left while a table on another server was asked
        screen, concurrency = self.screen, self.concurrency
        if verdict == "permit":
            log.info("ALLOWLISTED {client}", client=self.where())
            self.conclude()
            return
        if verdict == "reject":
            log.info("DENYLISTED {client}", client=self.where())
            action = self.settings.denylistAction
            if action == "drop":
                self.drop(DENYLISTED["drop"])
                return
            if action == "enforce":
                self.enforce("denylist", DENYLISTED["enforce"])
        now = int(time.time())
        record = screen.cache.get(self.address) if not self.failed and concurrency == 1 \
            else None
        if record is not None:
            self.expiry.update(record)
            self.new = False
        self.todo = {test for test in self.settings.enabled if now > self.expiry[test]}
        if record is not None and not self.todo and not self.failed:
            log.info("PASS OLD {client}", client=self.where())
            self.conclude()
            return
        if self.settings.preQueueLimit > 0 and \
                screen.screening >= self.settings.preQueueLimit:
            log.info("reject: connect from {client}: all screening ports busy",
                     client=self.where())
            self.drop("421 4.3.2 All screening ports are busy")
            return
        screen.screening += 1
        self.screening = True
        if any(test in EARLY_TESTS for test in self.todo):
            self._earlyTests()
        elif self._needsEngine():
            self._startEngine()
        else:
            self.conclude()

    def _accessList(self) -> Tuple[Optional[str], List[str]]:
        """
        C{postscreen_access_list}: C{permit}, C{reject}, or C{None} (no
        element decided), and what to warn of.  It runs in a lookup
        thread when a table is on another server, so it logs nothing
        itself.
        """
        warnings: List[str] = []
        for kind, value in self.settings.accessList:
            if kind == "mynetworks":
                if inNetworks(self.address, value):
                    return "permit", warnings
                continue
            try:
                found = lookupAny(value, self.address)
            except TableLookupError as e:
                warnings.append(f"{e}: skipped")
                continue
            if found is None:
                continue
            word = found.strip().split(None, 1)[0].lower() if found.strip() else ""
            if word in ("permit", "reject"):
                return word, warnings
            if word != "dunno":
                warnings.append(f"unknown action {found!r}")
        return None, warnings

    # -- the tests before the greeting

    def _earlyTests(self) -> None:
        settings = self.settings
        if PREGREET in self.todo:
            self.transport.write(f"220-{settings.greetBanner}\r\n".encode(
                "utf-8", "surrogateescape"))
            self.teaserSent = True
            self._watcher = _EarlyTalk(self.transport.fileno(), self._talkedEarly)
            self.screen.reactor.addReader(self._watcher)
        else:
            self._pregreetDone = True
        if DNSBL in self.todo:
            self._lookups = dnsbl.lookups(self.screen.resolver, self.address,
                                          settings.dnsblSites, settings.dnsblTimeout,
                                          self._score)
            if self._lookups:
                defer.DeferredList(self._lookups).addCallback(lambda _: self._dnsblAnswered())
            else:
                self._dnsblDone = True
        else:
            self._dnsblDone = True
        self._timer = self.clock.callLater(settings.greetWait, self._earlyEnd)
        if self._dnsblDone and self._pregreetDone:
            self._earlyEnd()

    def _stopWatching(self) -> None:
        if self._watcher is not None:
            self.screen.reactor.removeReader(self._watcher)
            self._watcher.close()
            self._watcher = None

    def _talkedEarly(self, data: bytes) -> None:
        self._stopWatching()
        if self.ended:
            return
        if not data:
            self.hangup("tests before SMTP handshake")
            return
        log.info("PREGREET {count} after {elapsed} from {client}: {text}", count=len(data),
                 elapsed=self.elapsed(), client=self.where(), text=escape(data))
        action = self.settings.actions[PREGREET]
        self._pregreetDone = True
        if action == "drop":
            self.failed.add(PREGREET)
            self.drop(PROTOCOL_ERROR["drop"])
            return
        if action == "enforce":
            self.failed.add(PREGREET)
            self.enforce(PREGREET, PROTOCOL_ERROR["enforce"])
        if self._dnsblDone:
            self._earlyEnd()

    def _dnsblAnswered(self) -> None:
        self._dnsblDone = True
        if self.ended:
            return
        self._allowlistByScore()
        if self._pregreetDone:
            self._earlyEnd()

    def _allowlistByScore(self) -> None:
        """
        A score at or below a negative C{postscreen_dnsbl_allowlist_threshold}
        passes every other test, for as long as the DNS list's answer.
        """
        threshold = self.settings.allowlistThreshold
        if threshold >= 0 or self._score.total > threshold:
            return
        expires = int(time.time()) + self._score.ttl(self.settings.dnsblMinTTL,
                                                     self.settings.dnsblMaxTTL)
        for test in list(self.todo):
            if test != DNSBL and test not in self.failed:
                self.todo.discard(test)
                self.expiry[test] = expires
                self.updated = True
                log.debug("skip {test} test for {client}", test=test, client=self.where())
        if PREGREET not in self.todo:
            self._stopWatching()
            self._pregreetDone = True

    def _earlyEnd(self) -> None:
        """
        The greeting wait is over (or nothing is left to wait for): judge
        the tests before the greeting, then hand the client over or talk
        to it.
        """
        if self.ended or self._timer is None:
            return
        if self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._stopWatching()
        settings = self.settings
        now = int(time.time())
        if PREGREET in self.todo and PREGREET not in self.failed and not self._pregreetDone:
            self._pass(PREGREET, now + settings.ttls[PREGREET])
        if DNSBL in self.todo:
            for lookup in self._lookups:
                if not lookup.called:
                    lookup.cancel()
            score = self._score
            ttl = score.ttl(settings.dnsblMinTTL, settings.dnsblMaxTTL)
            if score.total < settings.dnsblThreshold:
                self._pass(DNSBL, now + ttl)
            else:
                log.info("DNSBL rank {score} for {client}", score=score.total,
                         client=self.where())
                reply = (f"5.7.1 Service unavailable; client [{self.address}] blocked using "
                         f"{self._replyName(score.name)}")
                action = settings.actions[DNSBL]
                if action == "drop":
                    self.failed.add(DNSBL)
                    self.drop(f"521 {reply}")
                    return
                if action == "enforce":
                    self.failed.add(DNSBL)
                    self.enforce(DNSBL, f"550 {reply}")
        if self._needsEngine():
            self._startEngine()
        else:
            self.conclude()

    def _replyName(self, site: str) -> str:
        """
        The DNS list's name for the client's ears
        (C{postscreen_dnsbl_reply_map}).
        """
        try:
            shown = lookupAny(self.settings.replyMap, site)
        except TableLookupError as e:
            log.warn("postscreen_dnsbl_reply_map: {error}", error=str(e))
            shown = None
        return shown.strip() if shown else site

    def _pass(self, test: str, expires: int) -> None:
        self.passed.add(test)
        self.expiry[test] = expires
        self.updated = True

    def _needsEngine(self) -> bool:
        return not self.forward or any(
            test in DEEP_TESTS and test not in self.passed for test in self.todo)

    # -- the tests after the greeting

    def _startEngine(self) -> None:
        self.engine = DummyEngine(self)
        self.engine.start()
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.engine is not None:
            self.engine.dataReceived(data)

    def deepTest(self, test: str, what: str) -> Optional[str]:
        """
        Record a failure of an after-greeting test (what the client did,
        for the log).

        @return: C{drop} when the client is to be dropped now, else C{None}.
        """
        if test not in self.todo or test in self.passed or test in self.failed:
            return None
        log.info(what)
        action = self.settings.actions[test]
        self.expiry[test] = NEVER
        if action == "ignore":
            self._pass(test, int(time.time()) + self.settings.dnsblMinTTL)
            return None
        self.failed.add(test)
        if action == "drop":
            return "drop"
        self.enforce(test, PROTOCOL_ERROR["enforce"])
        return None

    def deepTestsPassed(self) -> None:
        """
        The client got as far as a recipient without failing the tests
        after the greeting: they count as passed.
        """
        now = int(time.time())
        for test in self.todo:
            if test in DEEP_TESTS and test not in self.failed and test not in self.passed:
                self._pass(test, now + self.settings.ttls[test])

    # -- outcomes

    def enforce(self, test: str, reply: str) -> None:
        """
        A test failed with C{enforce}: the client is kept from smtpd, and
        its recipients refused.
        """
        self.rcptReply = reply
        self.forward = False

    def drop(self, reply: str) -> None:
        """
        Send the client away now with C{reply}.
        """
        self.forward = False
        self.finalReply = reply
        self.conclude()

    def hangup(self, phase: str) -> None:
        """
        The client left before it was done with.
        """
        if self.ended:
            return
        log.info("HANGUP after {elapsed} from {client} in {phase}", elapsed=self.elapsed(),
                 client=self.where(), phase=phase)
        self.forward = False
        self.finalReply = ""
        self.conclude(hungUp=True)

    def conclude(self, hungUp: bool = False) -> None:
        """
        Log the verdict, remember what was passed, and hand the client
        to smtpd or say goodbye.
        """
        if self.ended:
            return
        self.ended = True
        self._stopWatching()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.failed:
            self.passed.clear()
        elif self.passed and self.passed == self.todo:
            log.info("PASS {age} {client}", age="NEW" if self.new else "OLD",
                     client=self.where())
        if self.updated and not self.failed:
            self.screen.remember(self.address, self.expiry)
        if self.forward:
            self.screen.handOff(self)
            return
        if not hungUp and self.finalReply:
            self.transport.write(self.finalReply.encode() + b"\r\n")
        log.info("DISCONNECT {client}", client=self.where())
        self.transport.loseConnection()

    def connectionLost(self, reason=connectionDone) -> None:
        if not self.ended:
            phase = "tests after SMTP handshake" if self.engine is not None else \
                "tests before SMTP handshake"
            self.hangup(phase)
        if self.engine is not None:
            self.engine.stop()
        self.screen.disconnected(self)
