"""
DANE for SMTP (RFC 7672): C{smtp_tls_security_level = dane} and
C{dane-only} (or the same in C{smtp_tls_policy_maps}), under
C{smtp_dns_support_level = dnssec}.

A next hop's servers are found as ever (L{HostFinder}), but through a
L{ValidatingResolver}, which says which answers the validating resolver
vouched for.  A server's TLSA records (C{_25._tcp.HOST}) are looked up
only when the MX records that named it and its address records were
validated, as the RFC asks; each server then gets the TLS policy they
call for:

  - validated, usable TLSA records (DANE-TA(2) or DANE-EE(3)): TLS is
    required and the server must show a certificate they match
    (L{matchTLSA}); the log says C{Verified};
  - validated TLSA records none of which is usable: TLS is required,
    unauthenticated (C{encrypt});
  - no validated TLSA records: C{may} (with C{dane-only}, the server is
    not used);
  - a TLSA lookup that fails: the server is not used (it might be a
    downgrade attack), and the next one is tried.
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Tuple, Union

from OpenSSL import crypto
from twisted.names import dns

from tmta.mail.dnssec import TLSARecord, ValidatingResolver
from tmta.mail.tls import certificateDer, publicKeyDer
from tmta.smtp.nexthop import HostFinder, NextHopError, parseNexthop

#: The levels that ask for DANE.
DANE_LEVELS = ("dane", "dane-only")

#: A server to try: name, address, port, next hop, and its TLS policy.
Candidate = Tuple[str, str, int, str, Any]


def usable(record: TLSARecord) -> bool:
    """
    Whether a TLSA record is one SMTP can use (RFC 7672, section 3.1):
    DANE-TA(2) or DANE-EE(3), of a certificate or a public key, exact
    or by SHA-256 or SHA-512.
    """
    return record.usage in (2, 3) and record.selector in (0, 1) and \
        record.matchingType in (0, 1, 2)


def _selected(certificate: crypto.X509, selector: int) -> bytes:
    return certificateDer(certificate) if selector == 0 else publicKeyDer(certificate)


def _matches(record: TLSARecord, certificate: crypto.X509) -> bool:
    data = _selected(certificate, record.selector)
    if record.matchingType == 1:
        data = hashlib.sha256(data).digest()
    elif record.matchingType == 2:
        data = hashlib.sha512(data).digest()
    return data == record.data


def matchTLSA(records: List[TLSARecord], chain: List[crypto.X509]) -> Tuple[Optional[int],
                                                                            Optional[int]]:
    """
    What the server's chain (its own certificate first) matches.

    @return: C{(usage, depth)}: a DANE-EE(3) record matching the
        server's certificate (depth 0), else a DANE-TA(2) record matching
        a certificate of the chain and the depth of that certificate;
        C{(None, None)} when none matches.
    """
    if not chain:
        return None, None
    for record in records:
        if record.usage == 3 and _matches(record, chain[0]):
            return 3, 0
    for record in records:
        if record.usage == 2:
            for depth, certificate in enumerate(chain):
                if _matches(record, certificate):
                    return 2, depth
    return None, None


def chainsTo(chain: List[crypto.X509], depth: int) -> Optional[str]:
    """
    Why the server's certificate does not chain up to the trust anchor
    at C{depth} of the chain it sent (DANE-TA), or C{None} when it
    does.
    """
    store = crypto.X509Store()
    store.add_cert(chain[depth])
    context = crypto.X509StoreContext(store, chain[0], chain[1:depth] or None)
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as e:
        return str(e)
    return None


class DaneFinder:
    """
    The servers of a next hop whose policy asks for DANE, each with the
    TLS policy its TLSA records call for.

    @param atLevel: C{atLevel(policy, level, tlsa)}: the policy made
        C{level}, with C{tlsa} records (L{tmta.smtp.tls.TLSPolicies.atLevel}).
    @param servers: the resolvers to ask (those of C{/etc/resolv.conf}).
    """

    def __init__(self, reactor, config, lmtp: bool, atLevel,
                 servers: Optional[List[Tuple[str, int]]] = None) -> None:
        self.reactor = reactor
        self.config = config
        self.lmtp = lmtp
        self.atLevel = atLevel
        self.servers = servers

    async def find(self, nexthop: str, policy) -> List[Candidate]:
        """
        @raise NextHopError: no server can be used (mail is deferred).
        """
        resolver = ValidatingResolver(self.reactor, self.servers)
        finder = HostFinder(self.reactor, resolver, self.config, self.lmtp)
        hosts = await finder.find(nexthop)
        domain, _, viaMX = parseNexthop(nexthop.split(":", 1)[1]
                                        if nexthop.startswith("inet:") else nexthop,
                                        finder.defaultPort)
        namesSecure = not viaMX or finder.lmtp or resolver.validated(domain, dns.MX)
        # Each server (name and port) is decided once, whatever its
        # number of addresses: its policy, or why it is not used.
        decided: Dict[Tuple[str, int], Union[str, Any]] = {}
        found: List[Candidate] = []
        refused: List[str] = []
        for name, address, port in hosts:
            key = (name, port)
            if key not in decided:
                records = await self._tlsa(resolver, finder, name, port, namesSecure)
                decided[key] = self._decide(policy, name, port, records)
            decision = decided[key]
            if isinstance(decision, str):
                refused.append(decision)
            else:
                found.append((name, address, port, nexthop, decision))
        if not found:
            raise NextHopError(f"TLS is required, but {refused[0] if refused else 'no host'}",
                               "4.7.5")
        return found

    def _decide(self, policy, name: str, port: int, records):
        """
        The policy a server's TLSA records (L{_tlsa}'s answer) call for,
        or why it is not used.
        """
        if isinstance(records, Exception):
            return f"TLSA lookup error for {name}:{port}: {records}"
        if not records:
            if policy.level == "dane-only":
                return f"no validated TLSA records for {name}:{port}"
            return self.atLevel(policy, "may", [])
        good = [r for r in records if usable(r)]
        if good:
            return self.atLevel(policy, "dane", good)
        if policy.level == "dane-only":
            return f"no usable TLSA records for {name}:{port}"
        return self.atLevel(policy, "encrypt", [])

    async def _tlsa(self, resolver: ValidatingResolver, finder: HostFinder, name: str,
                    port: int, namesSecure: bool):
        """
        The validated TLSA records of C{name}, C{None} when there are
        none to trust, or the exception of a lookup that failed.
        """
        if not namesSecure or not port:
            return None
        asked = [t for t, family in ((dns.A, "ipv4"), (dns.AAAA, "ipv6"))
                 if family in finder.protocols and (name.rstrip(".").lower(), t)
                 in resolver.secure]
        if not asked or not all(resolver.validated(name, t) for t in asked):
            return None
        try:
            records, secure = await resolver.lookupTLSA(name, port)
        except Exception as e:
            return e
        return records if secure and records else None
