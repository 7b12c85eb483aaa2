"""
SPF (RFC 7208) evaluation of a client for its HELO name and its MAIL
FROM address, by pyspf -- the library policyd-spf is built on, so that
results are policyd-spf's.

pyspf asks the DNS synchronously, so its evaluation runs in a thread of
the reactor's pool; every DNS question it asks is put to the reactor's
twisted.names resolver and waited for there.  Nothing blocks the reactor
thread, and the DNS answers come from the same resolver (and its
configuration) as every other DNS check of the process.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Callable, List, Optional

import spf
from twisted.internet import defer, threads
from twisted.names import dns
from twisted.names import error as dnserror

#: The record types pyspf asks for, as twisted.names numbers them.
_TYPES = {"A": dns.A, "AAAA": dns.AAAA, "MX": dns.MX, "PTR": dns.PTR, "TXT": dns.TXT,
          "SPF": dns.SPF, "CNAME": dns.CNAME}


@dataclass(frozen=True)
class SPFOutcome:
    """
    One identity's result.

    @ivar result: C{pass}, C{fail}, C{softfail}, C{neutral}, C{none},
        C{temperror} or C{permerror}.
    @ivar scope: C{mailfrom} or C{helo}: which identity was checked.
    @ivar identity: the address checked (C{postmaster@HELO} for the
        HELO name and the null sender).
    @ivar explanation: why, for a person (the domain's C{exp=} text for
        a C{fail}).
    @ivar header: the C{Received-SPF} header (RFC 7208 section 9.1).
    """

    result: str
    scope: str
    identity: str
    explanation: str
    header: str

    @property
    def domain(self) -> str:
        return self.identity.rpartition("@")[2].lower()


class _Query(spf.query):
    """
    pyspf's query, its DNS questions answered by C{lookUp(name, type)}
    (from its thread, through the reactor) and kept for the rest of the
    evaluation.
    """

    def __init__(self, lookUp: Callable, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lookUp = lookUp
        self.answers: dict = {}

    def dns(self, name, qtype, cnames=None, ignore_void=False):
        name = str(name).rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, qtype)
        if key not in self.answers:
            self.answers[key] = self.lookUp(name, qtype)
        result = self.answers[key]
        if not result and not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result


def _values(answers, qtype: str) -> List:
    """
    The answers of type C{qtype} (whatever their owner: the end of a
    CNAME chain) as pyspf takes them.
    """
    wanted = _TYPES[qtype]
    values: List = []
    for record in answers:
        if record.type != wanted:
            continue
        payload = record.payload
        if qtype in ("A", "AAAA"):
            values.append(payload.dottedQuad() if qtype == "A" else
                          socket.inet_ntop(socket.AF_INET6, payload.address))
        elif qtype == "MX":
            values.append((payload.preference, payload.name.name.decode("ascii", "replace")))
        elif qtype == "PTR":
            values.append(payload.name.name.decode("ascii", "replace"))
        else:
            values.append(tuple(payload.data))
    return values


class SPFEvaluator:
    """
    Evaluates SPF for a client, through a twisted.names resolver.

    @param receiver: this host's name, in C{Received-SPF}.
    @param timeout: how long one evaluation may take, all its DNS
        questions together (each asked with the resolver's own
        timeouts).
    """

    def __init__(self, reactor, resolver, receiver: str, timeout: float = 20) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.receiver = receiver
        self.timeout = timeout

    def _ask(self, name: str, qtype: str) -> defer.Deferred:
        d = self.resolver.query(dns.Query(name, _TYPES[qtype], dns.IN))

        def answered(result):
            answers, _, _ = result
            return _values(answers, qtype)

        def failed(reason):
            if reason.check(dnserror.DNSNameError):
                return []
            raise spf.TempError(f"DNS {reason.getErrorMessage() or reason.type.__name__}")

        return d.addCallbacks(answered, failed)

    def _lookUp(self, name: str, qtype: str):
        """
        From pyspf's thread: the answer of the resolver on the reactor.
        """
        return threads.blockingCallFromThread(self.reactor, self._ask, name, qtype)

    def _evaluate(self, clientAddress: str, sender: str, helo: str) -> SPFOutcome:
        """
        One identity's result (in pyspf's thread): the sender's, or,
        when C{sender} is empty, the HELO name's (C{postmaster@HELO}).
        """
        query = _Query(self._lookUp, clientAddress, sender, helo, receiver=self.receiver,
                       timeout=self.timeout)
        result, _, explanation = query.check()
        header = "Received-SPF: " + query.get_header(result, self.receiver)
        scope = "helo" if query.ident == "helo" else "mailfrom"
        return SPFOutcome(result, scope, query.s, explanation, header)

    def check(self, clientAddress: str, sender: Optional[str], helo: str
              ) -> defer.Deferred:
        """
        The SPF results of a client: its HELO name's (when it gave one
        that is a domain), then its MAIL FROM address's -- or, for the
        null sender, the HELO name's standing for it.

        @return: a Deferred firing with C{(helo, mailfrom)}, each an
            L{SPFOutcome} or C{None} when there was nothing to check.
        """
        pool = self.reactor.getThreadPool()

        async def both():
            heloOutcome = None
            if helo and "." in helo and not helo.startswith("["):
                heloOutcome = await threads.deferToThreadPool(
                    self.reactor, pool, self._evaluate, clientAddress, "", helo)
            mailOutcome = None
            if sender:
                mailOutcome = await threads.deferToThreadPool(
                    self.reactor, pool, self._evaluate, clientAddress, sender, helo)
            elif heloOutcome is not None:
                mailOutcome = heloOutcome
            return heloOutcome, mailOutcome

        return defer.Deferred.fromCoroutine(both())


__all__ = ["SPFEvaluator", "SPFOutcome"]
