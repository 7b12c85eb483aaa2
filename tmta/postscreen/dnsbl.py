"""
postscreen's DNS list test: every zone of C{postscreen_dnsbl_sites} asked
at once, each listing that passes an entry's filter adding that entry's
weight to the client's score, as Postfix's C{postscreen_dnsbl.c} adds
them.  A score at or above C{postscreen_dnsbl_threshold} fails the test;
one at or below a negative C{postscreen_dnsbl_allowlist_threshold}
allows the client past the other tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.names import dns
from twisted.names import error as dnserror

from tmta.mail.dnslists import filterMatches, reversedAddress
from tmta.postscreen.settings import DNSListSite


@dataclass
class Score:
    """
    A client's DNS list score so far.

    @ivar name: the zone of the entry with the largest weight that
        listed the client (for the reply).
    @ivar failTTL: for how long a listing is believed (the least TTL of
        the listings that count against the client); C{None}: none.
    @ivar passTTL: for how long a clean answer is believed.
    """

    total: int = 0
    name: str = ""
    weight: Optional[int] = None
    failTTL: Optional[int] = None
    passTTL: Optional[int] = None

    def ttl(self, minimum: int, maximum: int) -> int:
        """
        For how long the result is kept in the cache.
        """
        ttl = self.failTTL if self.total > 0 else self.passTTL
        if ttl is None:
            ttl = maximum
        return max(minimum, min(maximum, ttl))

    def _lower(self, kind: str, ttl: int) -> None:
        if ttl < 0:
            return  # no TTL known: the longest applies
        current = getattr(self, kind)
        if current is None or ttl < current:
            setattr(self, kind, ttl)

    def answer(self, sites: Sequence[DNSListSite], addresses: List[str], ttl: int) -> None:
        """
        Count one zone's answer: C{addresses} (empty: not listed).
        """
        for site in sites:
            if addresses:
                if site.filter is None or any(filterMatches(a, site.filter)
                                              for a in addresses):
                    if self.weight is None or self.weight < site.weight:
                        self.name, self.weight = site.zone, site.weight
                    self.total += site.weight
                self._lower("failTTL" if site.weight > 0 else "passTTL", ttl)
            else:
                self._lower("passTTL" if site.weight > 0 else "failTTL", ttl)


def byZone(sites: Sequence[DNSListSite]) -> Dict[str, List[DNSListSite]]:
    zones: Dict[str, List[DNSListSite]] = {}
    for site in sites:
        zones.setdefault(site.zone, []).append(site)
    return zones


async def _ask(resolver, name: str, timeout: float) -> Tuple[List[str], Optional[int]]:
    """
    The 127.0.0.0/8 addresses C{name} has, and their TTL; none when the
    name does not exist, or the DNS does not answer in time (a list that
    cannot be asked does not count against the client).
    """
    try:
        answers, _, _ = await resolver.lookupAddress(name, timeout=(timeout,))
    except (dnserror.DomainError, dnserror.DNSNameError):
        return [], None
    except Exception:
        return [], None
    records = [a for a in answers if a.type == dns.A]
    addresses = [a.payload.dottedQuad() for a in records]
    listed = [a for a in addresses if a.startswith("127.")]
    ttl = min((a.ttl for a in records), default=None)
    return listed, ttl


def lookups(resolver, address: str, sites: Sequence[DNSListSite], timeout: float,
            score: Score) -> List[defer.Deferred]:
    """
    Ask every zone about C{address} at once; each answer is counted in
    C{score} as it comes.

    @return: a Deferred per zone, firing once its answer is counted.
    """
    reversed_ = reversedAddress(address)
    if reversed_ is None:
        return []
    pending = []
    for zone, zoneSites in byZone(sites).items():
        def counted(result, zoneSites=zoneSites):
            addresses, ttl = result
            score.answer(zoneSites, addresses, ttl if ttl is not None else -1)
        d = defer.Deferred.fromCoroutine(_ask(resolver, f"{reversed_}.{zone}", timeout))
        pending.append(d.addCallback(counted))
    return pending
