"""
Restrictions that ask the DNS (with twisted.names, never blocking):
C{reject_unknown_sender_domain}, C{reject_unknown_recipient_domain},
C{reject_unknown_helo_hostname}, C{reject_rbl_client},
C{reject_rhsbl_client}, C{reject_rhsbl_reverse_client},
C{reject_rhsbl_sender}, C{reject_rhsbl_recipient}, C{reject_rhsbl_helo},
C{permit_dnswl_client} and C{permit_rhswl_client}.

A DNS list argument may carry Postfix's result filter:
C{zone=127.0.0.2}, C{zone=127.0.0.[2..11]}, C{zone=127.0.0.[2;4;8]}.
"""

from __future__ import annotations

import ipaddress
from typing import List, Optional, Tuple

from twisted.internet import defer
from twisted.names import dns
from twisted.names import error as dnserror
from zope.interface import implementer

from tmta.interfaces import ISMTPRestriction
from tmta.logging import Logger
from tmta.mail.address import splitAddress
from tmta.mail.dnslists import filterMatches, parseFilter, reversedAddress
from tmta.smtpd.spfcheck import checkSPF
from tmta.smtpd.verdicts import (
    DEFER,
    DEFER_IF_REJECT,
    DUNNO,
    PERMIT,
    REJECT,
    RecipientContext,
    RestrictionEnvironment,
    tempfailDecision,
    unauthorizedDestination,
)

log = Logger()


async def _domainExists(resolver, domain: str, nullMX: bool = False) -> Optional[bool]:
    """
    Whether C{domain} has an MX, A or AAAA record; C{None} when the DNS
    cannot tell now.

    @param nullMX: whether a null MX (RFC 7505: the domain takes no
        mail) counts, as for a host name (an MTA's own name may refuse
        mail); for a mail domain it does not.
    """
    try:
        answers, _, _ = await resolver.lookupMailExchange(domain)
        mx = [a for a in answers if a.type == dns.MX]
        if mx:
            return nullMX or not (len(mx) == 1 and str(mx[0].payload.name) in ("", "."))
    except dnserror.DNSNameError:
        return False
    except (dnserror.DomainError, dnserror.DNSQueryRefusedError):
        pass
    except Exception:
        return None
    for lookup in (resolver.lookupAddress, resolver.lookupIPV6Address):
        try:
            answers, _, _ = await lookup(domain)
        except dnserror.DNSNameError:
            return False
        except (dnserror.DomainError, dnserror.DNSQueryRefusedError):
            continue
        except Exception:
            return None
        if any(a.type in (dns.A, dns.AAAA) for a in answers):
            return True
    return False


def _unknownDomain(what: str):
    def decide(env: RestrictionEnvironment, c: RecipientContext):
        address = c.sender if what == "Sender" else c.recipient
        if not address or env.resolver is None:
            return DUNNO, None
        _, domain = splitAddress(address)
        if not domain or domain.startswith("["):
            return DUNNO, None

        async def check():
            if c.resolve is not None:
                # Mail this machine takes itself needs no DNS: local,
                # virtual alias and virtual mailbox domains pass, as
                # Postfix's RESOLVE_CLASS_FINAL.
                resolution = await c.resolve(address)
                if resolution.transport == "retry":
                    return DEFER, f"451 4.3.0 <{address}>: Temporary lookup failure"
                if resolution.addressClass in ("local", "alias", "virtual"):
                    return DUNNO, None
            exists = await _domainExists(env.resolver, domain.rstrip("."))
            dsn = "4.1.8" if what == "Sender" else "4.1.2"
            if exists is None:
                return (tempfailDecision(env.config, "unknown_address_tempfail_action"),
                        f"450 {dsn} <{address}>: {what} address rejected: Domain not found")
            if exists:
                return DUNNO, None
            code = env.code("unknown_address_reject_code")
            return (DEFER if code < 500 else REJECT,
                    f"{code} {str(code // 100) + dsn[1:]} <{address}>: {what} address "
                    "rejected: Domain not found")

        return defer.Deferred.fromCoroutine(check())
    return decide


@implementer(ISMTPRestriction)
class DNSList:
    """
    One C{reject_rbl_client zone[=filter]} (or rhsbl, or dnswl): the
    reversed client address (or a domain) looked up under C{zone}; a
    listing is an A record in 127.0.0.0/8 that passes the filter.

    @ivar what: C{client} (an address list), C{rhsbl_client},
        C{rhsbl_sender}, C{rhsbl_helo}; C{permit} for a DNS white list.
    """

    def __init__(self, name: str, what: str, argument: str,
                 environment: RestrictionEnvironment, permit: bool = False) -> None:
        self.name = f"{name} {argument}"
        self.what = what
        zone, _, spec = argument.partition("=")
        self.zone = zone.strip(".").lower()
        if not self.zone:
            raise ValueError(f"{name}: no DNS list domain")
        self.filter = parseFilter(spec) if spec else None
        self.environment = environment
        self.permit = permit

    @classmethod
    def maker(cls, name: str, what: str, permit: bool = False):
        return lambda argument, environment: cls(name, what, argument, environment, permit)

    def query(self, c: RecipientContext) -> Optional[Tuple[str, str]]:
        """
        The name to look up and what the reply names, or C{None}.
        """
        if self.what == "client":
            reversed_ = reversedAddress(c.clientAddress)
            if reversed_ is None:
                return None
            return f"{reversed_}.{self.zone}", c.clientAddress
        if self.what == "rhsbl_client":
            domain = c.clientName if c.clientName != "unknown" else ""
        elif self.what == "rhsbl_reverse_client":
            domain = c.reverseClientName if c.reverseClientName != "unknown" else ""
        elif self.what == "rhsbl_sender":
            domain = splitAddress(c.sender or "")[1]
        elif self.what == "rhsbl_recipient":
            domain = splitAddress(c.recipient or "")[1]
        else:
            domain = c.helo if not c.helo.startswith("[") else ""
        if domain.startswith("["):
            return None
        domain = domain.rstrip(".").lower()
        if not domain:
            return None
        return f"{domain}.{self.zone}", domain

    def evaluate(self, context: RecipientContext):
        env = self.environment
        if self.permit and context.stage == "RCPT" and context.recipient and \
                unauthorizedDestination(context):
            # A white list never lets a client relay: only mail this
            # machine may take anyway is let through.
            return DUNNO, None
        query = self.query(context)
        if query is None or env.resolver is None:
            return DUNNO, None
        return defer.Deferred.fromCoroutine(self._check(context, *query))

    async def _check(self, c: RecipientContext, name: str, subject: str):
        resolver = self.environment.resolver
        try:
            answers, _, _ = await resolver.lookupAddress(name)
        except dnserror.DNSNameError:
            return DUNNO, None
        except Exception:
            if self.permit:
                # A white list that cannot be asked: a later reject is
                # only deferred, as Postfix does.
                return DEFER_IF_REJECT, (f"450 4.7.1 <{subject}>: Client host rejected: "
                                         "Service unavailable")
            # A block list that cannot be asked: as Postfix, pass.
            return DUNNO, None
        listed = [a.payload.dottedQuad() for a in answers if a.type == dns.A]
        listed = [a for a in listed if a.startswith("127.")
                  and (self.filter is None or filterMatches(a, self.filter))]
        if not listed:
            return DUNNO, None
        if self.permit:
            return PERMIT, None
        reason = ""
        try:
            texts, _, _ = await resolver.lookupText(name)
            reason = " ".join(b"".join(t.payload.data).decode("utf-8", "replace")
                              for t in texts if t.type == dns.TXT)
        except Exception:
            pass
        what = {"client": "Client host", "rhsbl_client": "Client host",
                "rhsbl_reverse_client": "Unverified Client host",
                "rhsbl_sender": "Sender address", "rhsbl_recipient": "Recipient address",
                "rhsbl_helo": "Helo command"}[self.what]
        code = self.environment.code("maps_rbl_reject_code")
        text = (f"{code} {code // 100}.7.1 Service unavailable; {what} [{subject}] blocked "
                f"using {self.zone}")
        if reason:
            text += "; " + _printable(reason)
        return (DEFER if code < 500 else REJECT), text


def _printable(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:200]


def _unknownHeloHostname(env: RestrictionEnvironment, c: RecipientContext):
    """
    C{reject_unknown_helo_hostname}: the HELO name has no A, AAAA or MX
    record (an address literal must be a valid one).  When the DNS
    cannot tell, what would be accepted is deferred
    (C{defer_if_permit}), as Postfix does by default.
    """
    from tmta.smtpd.verdicts import heloLiteralCheck

    name = c.helo
    if not name:
        return DUNNO, None
    if name.startswith("["):
        return heloLiteralCheck(env, name)
    if env.resolver is None:
        return DUNNO, None

    async def check():
        exists = await _domainExists(env.resolver, name.rstrip("."), nullMX=True)
        if exists:
            return DUNNO, None
        reply = f"<{name}>: Helo command rejected: Host not found"
        if exists is None:
            return (tempfailDecision(env.config, "unknown_helo_hostname_tempfail_action"),
                    f"450 4.7.1 {reply}")
        code = env.code("unknown_hostname_reject_code")
        return (DEFER if code < 500 else REJECT), f"{code} {code // 100}.7.1 {reply}"

    return defer.Deferred.fromCoroutine(check())


async def addressesOf(resolver, host: str) -> List[str]:
    """
    The IPv4 and IPv6 addresses of C{host}.

    @raise Exception: neither lookup answered.
    """
    found: List[str] = []
    failures = []
    for lookup, kind in ((resolver.lookupAddress, dns.A),
                         (resolver.lookupIPV6Address, dns.AAAA)):
        try:
            answers, _, _ = await lookup(host)
        except Exception as e:
            failures.append(e)
            continue
        for answer in answers:
            if answer.type == kind == dns.A:
                found.append(answer.payload.dottedQuad())
            elif answer.type == kind == dns.AAAA:
                found.append(str(ipaddress.IPv6Address(answer.payload.address)))
    if len(failures) == 2 and not isinstance(failures[0], dnserror.DNSNameError):
        raise failures[0]
    return found


def _permitMxBackup(env: RestrictionEnvironment, c: RecipientContext):
    """
    C{permit_mx_backup}: permit mail for a domain this machine takes
    itself, or for which it is a backup MX -- one of the MX hosts past
    the lowest preference, never a primary -- and, with
    C{permit_mx_backup_networks}, whose primary MX hosts are all in
    those networks.
    """
    from tmta.smtpd.verdicts import DEFER_IF_REJECT, untrustedRouting
    from tmta.tables.networks import inNetworks, isOwnAddress, parseNetworks

    if not c.recipient or c.resolve is None:
        return DUNNO, None
    subject = f"<{c.recipient}>: Recipient address rejected"

    async def check():
        resolution = await c.resolve(c.recipient)
        if resolution.transport == "retry":
            return DEFER, f"451 4.3.0 <{c.recipient}>: Temporary lookup failure"
        _, domain = splitAddress(resolution.recipient)
        if not domain:
            return PERMIT, None
        if untrustedRouting(c.recipient):
            return DUNNO, None
        if resolution.addressClass in ("local", "alias", "virtual", "relay"):
            return PERMIT, None
        if domain.startswith("[") or env.resolver is None:
            return DUNNO, None
        try:
            answers, _, _ = await env.resolver.lookupMailExchange(domain)
        except dnserror.DNSNameError:
            return DUNNO, None
        except Exception as e:
            return DEFER_IF_REJECT, (f"450 4.4.4 {subject}: Unable to look up mail exchanger "
                                     f"information: {e}")
        mx = sorted(((a.payload.preference, str(a.payload.name).rstrip(".").lower())
                     for a in answers if a.type == dns.MX))
        if not mx:
            return DUNNO, None
        primaries = [host for preference, host in mx if preference == mx[0][0]]
        backups = [host for preference, host in mx if preference != mx[0][0]]
        unknown: List[str] = []
        addresses = {}
        for host in primaries + backups:
            try:
                addresses[host] = await addressesOf(env.resolver, host)
            except Exception as e:
                addresses[host] = []
                unknown.append(f"450 4.4.4 {subject}: Unable to look up mail exchanger host "
                               f"{host}: {e}")

        def mine(host: str) -> bool:
            return any(isOwnAddress(a, env.config) for a in addresses[host])

        permitted = not any(mine(h) for h in primaries) and any(mine(h) for h in backups)
        networks = env.config.get("permit_mx_backup_networks")
        if permitted and networks.strip():
            allowed = parseNetworks(env.config.getList("permit_mx_backup_networks"),
                                    "permit_mx_backup_networks")
            permitted = all(any(inNetworks(a, allowed) for a in addresses[h])
                            for h in primaries)
        if permitted:
            return PERMIT, None
        return (DEFER_IF_REJECT, unknown[0]) if unknown else (DUNNO, None)

    return defer.Deferred.fromCoroutine(check())


def _rejectMapsRbl(env: RestrictionEnvironment, c: RecipientContext):
    """
    C{reject_maps_rbl}, the old form of C{reject_rbl_client}: the client
    against each of C{maps_rbl_domains} in turn.
    """
    lists = [DNSList("reject_maps_rbl", "client", zone, env)
             for zone in env.config.getList("maps_rbl_domains")]
    query = lists[0].query(c) if lists else None
    if query is None or env.resolver is None:
        return DUNNO, None

    async def check():
        for dnsList in lists:
            result = await dnsList._check(c, *dnsList.query(c))
            if result[0] != DUNNO:
                return result
        return DUNNO, None

    return defer.Deferred.fromCoroutine(check())


RESTRICTIONS = {
    "permit_mx_backup": _permitMxBackup,
    "reject_maps_rbl": _rejectMapsRbl,
    "reject_unknown_sender_domain": _unknownDomain("Sender"),
    # Postfix's older name for the same check.
    "reject_unknown_address": _unknownDomain("Sender"),
    "reject_unknown_recipient_domain": _unknownDomain("Recipient"),
    "reject_unknown_helo_hostname": _unknownHeloHostname,
    "reject_unknown_hostname": _unknownHeloHostname,
    "check_spf": checkSPF,
}

ARGUMENT_RESTRICTIONS = {
    "reject_rbl_client": DNSList.maker("reject_rbl_client", "client"),
    # Postfix's older name for reject_rbl_client.
    "reject_rbl": DNSList.maker("reject_rbl", "client"),
    "reject_rhsbl_client": DNSList.maker("reject_rhsbl_client", "rhsbl_client"),
    "reject_rhsbl_sender": DNSList.maker("reject_rhsbl_sender", "rhsbl_sender"),
    "reject_rhsbl_helo": DNSList.maker("reject_rhsbl_helo", "rhsbl_helo"),
    "permit_dnswl_client": DNSList.maker("permit_dnswl_client", "client", permit=True),
    "reject_rhsbl_recipient": DNSList.maker("reject_rhsbl_recipient", "rhsbl_recipient"),
    "reject_rhsbl_reverse_client": DNSList.maker("reject_rhsbl_reverse_client",
                                                 "rhsbl_reverse_client"),
    "permit_rhswl_client": DNSList.maker("permit_rhswl_client", "rhsbl_client", permit=True),
}
