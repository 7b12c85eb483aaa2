"""
Where a message goes next (Postfix's C{smtp_addr.c}): a next hop parsed
into host and port, the host's MX records and addresses found with
twisted.names (or the system's resolver, as C{smtp_host_lookup} says),
filtered and ordered by C{inet_protocols} and C{smtp_address_preference}.
"""

from __future__ import annotations

import os
import random
import socket
from typing import List, Optional, Tuple

from twisted.internet import threads
from twisted.names import dns
from twisted.names import error as dnserror

from tmta.mail.address import isIPAddress


class NextHopError(Exception):
    """
    The next hop cannot be reached; C{permanent} when retrying cannot
    help (no such domain, a null MX, mail that loops back).
    """

    def __init__(self, reason: str, dsn: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.dsn, self.permanent = reason, dsn, permanent


def parseNexthop(nexthop: str, defaultPort: int = 25) -> Tuple[str, int, bool]:
    """
    Split a next hop into C{(host, port, lookUpMX)}: C{[host]} and
    C{[host]:port} skip the MX lookup, C{host} and C{host:port} do not.
    A service name after the colon (C{smtp}) means its port.
    """
    text = nexthop.strip()
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if host.lower().startswith("ipv6:"):
            host = host[5:]
        port = rest[1:] if rest.startswith(":") else ""
        mx = False
    else:
        host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        mx = True
    if not port:
        return host, defaultPort, mx
    if port.isdigit():
        return host, int(port), mx
    return host, socket.getservbyname(port, "tcp"), mx


def nexthopName(nexthop: str) -> str:
    """
    How a log line names a next hop that is not a host (a UNIX socket).
    """
    return nexthop.split(":", 1)[0] if ":" in nexthop else nexthop


def _ipv6(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, packed)


def errorReason(e: Exception) -> str:
    """
    A failure to connect or look up, in the words Postfix logs.
    """
    text = str(e).strip()
    if "refused" in text.lower():
        return "Connection refused"
    if "timeout" in text.lower() or "timed out" in text.lower():
        return "Connection timed out"
    return text or type(e).__name__


class HostFinder:
    """
    Finds the servers of a next hop.

    @param resolver: a twisted.names resolver (C{lookupMailExchange},
        C{lookupAddress}, C{lookupIPV6Address}).
    @param config: main.cf (C{queue_directory}, which a C{unix:} next
        hop is relative to, C{inet_protocols}, C{smtp_host_lookup} and
        the rest).
    """

    def __init__(self, reactor, resolver, config, lmtp: bool = False) -> None:
        prefix = "lmtp" if lmtp else "smtp"
        self.reactor = reactor
        self.resolver = resolver
        self.lmtp = lmtp
        self.defaultPort = 24 if lmtp else 25
        self.myhostname = config.get("myhostname").lower()
        self.queueDirectory = config.get("queue_directory")
        self.mxAddressLimit = config.getInt(f"{prefix}_mx_address_limit")
        protocols = {p.lower() for p in config.getList("inet_protocols")}
        if "all" in protocols:
            protocols = {"ipv4", "ipv6"}
        self.protocols = protocols
        self.addressPreference = config.get(f"{prefix}_address_preference").strip().lower()
        self.hostLookup = [m.lower() for m in config.getList(f"{prefix}_host_lookup")] or ["dns"]
        support = config.get(f"{prefix}_dns_support_level").strip().lower()
        # disable_dns_lookups (older) or smtp_dns_support_level = disabled:
        # no MX lookups, names looked up as the system does.
        self.dnsDisabled = support == "disabled" or (
            not support and config.getBool("disable_dns_lookups"))
        if self.dnsDisabled:
            self.hostLookup = ["native"]

    async def find(self, nexthop: str) -> List[Tuple[str, str, int]]:
        """
        The C{(name, address, port)} to try for C{nexthop}, in order.

        @raise NextHopError: none can be found.
        """
        if nexthop.startswith("unix:"):
            # LMTP to a UNIX socket, relative to the queue directory
            # (lmtp:unix:private/dovecot-lmtp).
            path = os.path.join(self.queueDirectory, nexthop[len("unix:"):])
            return [(path, path, 0)]
        if nexthop.startswith("inet:"):
            nexthop = nexthop[len("inet:"):]
            host, port, _ = parseNexthop(nexthop, self.defaultPort)
            mx = False
        else:
            host, port, mx = parseNexthop(nexthop, self.defaultPort)
        if not host:
            raise NextHopError("no next hop", "5.3.5", permanent=True)
        if isIPAddress(host):
            return [(host, address, port) for address in self.preferred([host])]
        names: List[str] = [host]
        if mx and not self.lmtp and not self.dnsDisabled:
            names = await self.mxHosts(host)
        found: List[Tuple[str, str, int]] = []
        for name in names:
            for address in await self.addresses(name, permanent=not mx or len(names) == 1):
                found.append((name, address, port))
        if not found:
            raise NextHopError(f"Host or domain name not found: no address for {host}",
                               "4.4.3")
        return found[: max(1, self.mxAddressLimit)] if self.mxAddressLimit else found

    async def mxHosts(self, domain: str) -> List[str]:
        resolver = self.resolver
        try:
            answers, _, _ = await resolver.lookupMailExchange(domain)
        except dnserror.DNSNameError:
            raise NextHopError(f"Host or domain name not found. Name service error for "
                               f"name={domain} type=MX: Host not found", "5.4.4",
                               permanent=True)
        except (dnserror.DomainError, dnserror.AuthoritativeDomainError):
            return [domain]
        except Exception as e:
            raise NextHopError(f"Host or domain name not found. Name service error for "
                               f"name={domain} type=MX: {errorReason(e)}", "4.4.3")
        records = [(a.payload.preference, str(a.payload.name).rstrip(".").lower())
                   for a in answers if a.type == dns.MX]
        if not records:
            return [domain]
        if any(name == "" for _, name in records):
            raise NextHopError(f"Domain {domain} does not accept mail (nullMX)", "5.1.10",
                               permanent=True)
        random.shuffle(records)
        records.sort(key=lambda r: r[0])
        names: List[str] = []
        for _, name in records:
            if name == self.myhostname:
                # This host and everything less preferred is out.
                if not names:
                    raise NextHopError(f"mail for {domain} loops back to myself", "5.4.6",
                                       permanent=True)
                break
            names.append(name)
        return names

    async def addresses(self, name: str, permanent: bool) -> List[str]:
        """
        The addresses of C{name} this host may connect to
        (C{inet_protocols}), the preferred family first
        (C{smtp_address_preference}), looked up as C{smtp_host_lookup}
        says: C{dns}, C{native} (the system's resolver, with
        C{/etc/hosts}), or both in turn.
        """
        addresses: List[str] = []
        notFound: Optional[NextHopError] = None
        for method in self.hostLookup:
            try:
                if method == "dns":
                    addresses = await self._dnsAddresses(name, permanent)
                elif method == "native":
                    addresses = await self._nativeAddresses(name, permanent)
            except NextHopError as e:
                notFound = e  # the next method may know it
                continue
            if addresses:
                break
        if not addresses and notFound is not None:
            raise notFound
        return self.preferred(addresses)

    def preferred(self, addresses: List[str]) -> List[str]:
        allowed = [a for a in addresses
                   if ("ipv6" if ":" in a else "ipv4") in self.protocols]
        if self.addressPreference in ("ipv4", "ipv6"):
            first = self.addressPreference == "ipv6"
            allowed.sort(key=lambda a: (":" in a) != first)
        return allowed

    async def _dnsAddresses(self, name: str, permanent: bool) -> List[str]:
        resolver = self.resolver
        addresses: List[str] = []
        lookups = []
        if "ipv4" in self.protocols:
            lookups.append(resolver.lookupAddress)
        if "ipv6" in self.protocols:
            lookups.append(resolver.lookupIPV6Address)
        for lookup in lookups:
            try:
                answers, _, _ = await lookup(name)
            except dnserror.DNSNameError:
                if permanent and lookup == lookups[0]:
                    raise NextHopError(f"Host or domain name not found. Name service error "
                                       f"for name={name} type=A: Host not found", "5.4.4",
                                       permanent=True)
                continue
            except Exception:
                continue
            for answer in answers:
                if answer.type in (dns.A, dns.AAAA):
                    addresses.append(answer.payload.dottedQuad() if answer.type == dns.A
                                     else _ipv6(answer.payload.address))
        return addresses

    async def _nativeAddresses(self, name: str, permanent: bool) -> List[str]:
        def lookup():
            return socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)

        try:
            infos = await threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                                    lookup)
        except socket.gaierror as e:
            if permanent and e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
                raise NextHopError(f"Host or domain name not found. Name service error for "
                                   f"name={name} type=A: Host not found", "5.4.4",
                                   permanent=True)
            return []
        return list(dict.fromkeys(info[4][0] for info in infos))

