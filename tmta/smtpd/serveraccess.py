"""
The access checks on a name's servers: C{check_{client,
reverse_client_hostname,helo,sender,recipient}_{a,mx,ns}_access}.  The
name's MX hosts (or name servers, or the host itself) are looked up in
the DNS, with twisted.names, and each server's name and addresses in
the access table, as Postfix's C{check_server_access} does: sites list
the mail and name servers of spam operations there.

A server's answer may refuse, never permit: whoever controls a domain
chooses its servers, so an C{OK} is a configuration error (as Postfix
has it).
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import defer
from twisted.names import dns
from twisted.names import error as dnserror
from zope.interface import implementer

from tmta.interfaces import ISMTPRestriction
from tmta.logging import Logger
from tmta.mail.address import isIPAddress
from tmta.smtpd.access import AccessCheck, applyAction, clientKeys, forbidPermit
from tmta.smtpd.dnschecks import addressesOf
from tmta.smtpd.verdicts import DEFER, DUNNO, RecipientContext, RestrictionEnvironment, chain
from tmta.tables import TableLookupError, lookupAny

log = Logger()

#: What each restriction looks at, and how a refusal names it.
_SUBJECTS = {
    "client": "Client host", "reverse_client_hostname": "Unverified Client host",
    "helo": "Helo command", "sender": "Sender address", "recipient": "Recipient address",
}


def _name(what: str, c: RecipientContext) -> Optional[str]:
    if what == "client":
        return c.clientName if c.clientName != "unknown" else None
    if what == "reverse_client_hostname":
        return c.reverseClientName if c.reverseClientName != "unknown" else None
    if what == "helo":
        return c.helo or None
    return (c.sender if what == "sender" else c.recipient) or None


@implementer(ISMTPRestriction)
class ServerAccess:
    """
    One C{check_WHAT_KIND_access TABLE}.

    @ivar kind: C{a}, C{mx} or C{ns}.
    """

    def __init__(self, what: str, kind: str, spec: str,
                 environment: RestrictionEnvironment) -> None:
        self.what, self.kind = what, kind
        self.name = f"check_{what}_{kind}_access {spec}"
        # The table is opened as the plain access check opens it (a table
        # that cannot be opened stops start-up).
        self.check = AccessCheck("client", spec, environment)
        self.environment = environment

    @classmethod
    def maker(cls, what: str, kind: str):
        return lambda spec, environment: cls(what, kind, spec, environment)

    def evaluate(self, context: RecipientContext):
        name = _name(self.what, context)
        if name is None or self.environment.resolver is None:
            return DUNNO, None
        return defer.Deferred.fromCoroutine(self._check(context, name))

    async def _check(self, c: RecipientContext, name: str):
        domain = name.rpartition("@")[2].rstrip(".").lower()
        prefix = f"<{name}>: {_SUBJECTS[self.what]} rejected"
        if domain.startswith("["):
            if self.kind == "ns" or not domain.endswith("]"):
                return DUNNO, None
            literal = domain[1:-1]
            literal = literal[5:] if literal[:5] == "ipv6:" else literal
            return await self._awaited(
                self._decide(c, prefix, name, self._addressKeys(literal))) or (DUNNO, None)
        for server in await self._servers(domain):
            keys: List[str] = []
            if isIPAddress(server):
                keys = self._addressKeys(server)
            elif self.kind != "a":
                keys = _domainKeys(server, self.check.parentMatches)
            decision = await self._awaited(self._decide(c, prefix, name, keys))
            if decision is not None:
                return decision
            if isIPAddress(server):
                continue
            for address in await self._addresses(server):
                decision = await self._awaited(
                    self._decide(c, prefix, name, self._addressKeys(address)))
                if decision is not None:
                    return decision
        return DUNNO, None

    @staticmethod
    async def _awaited(decision):
        if isinstance(decision, defer.Deferred):
            return await decision
        return decision

    def _decide(self, c: RecipientContext, prefix: str, name: str, keys: List[str]):
        """
        The decision of the first key the table has, or C{None}.
        """
        try:
            value = next((v for v in (lookupAny([self.check.table], key) for key in keys)
                          if v is not None), None)
        except TableLookupError as e:
            log.warn("{name}: {error}", name=self.name, error=str(e))
            return DEFER, f"451 4.3.0 <{name}>: Temporary lookup failure"
        if value is None:
            return None
        return chain(applyAction(value, self.environment, c, prefix, self.name),
                     forbidPermit, self.name, name)

    @staticmethod
    def _addressKeys(address: str) -> List[str]:
        return clientKeys(address, "", False)

    async def _servers(self, domain: str) -> List[str]:
        """
        The servers to check: the host itself (C{a}), its MX hosts (the
        domain itself when it has none; none for a null MX), or the name
        servers of the domain or of its nearest parent that has some.
        """
        resolver = self.environment.resolver
        if self.kind == "a":
            return [domain]
        if self.kind == "mx":
            try:
                answers, _, _ = await resolver.lookupMailExchange(domain)
            except dnserror.DNSNameError:
                return [domain]
            except Exception as e:
                log.warn("Unable to look up MX host for {domain}: {error}", domain=domain,
                         error=e)
                return []
            hosts = [str(a.payload.name).rstrip(".").lower() for a in answers
                     if a.type == dns.MX]
            if hosts == [""]:
                return []  # a null MX: no servers
            return hosts or [domain]
        labels = domain.split(".")
        for start in range(len(labels) - 1):
            zone = ".".join(labels[start:])
            try:
                answers, authority, _ = await resolver.lookupNameservers(zone)
            except dnserror.DNSNameError:
                continue
            except Exception as e:
                log.warn("Unable to look up NS host for {domain}: {error}", domain=domain,
                         error=e)
                return []
            # A server authoritative for the parent answers with a
            # referral: the zone's NS records in its authority section.
            hosts = [str(a.payload.name).rstrip(".").lower() for a in answers + authority
                     if a.type == dns.NS and str(a.name).rstrip(".").lower() == zone]
            if hosts:
                return hosts
        return []

    async def _addresses(self, host: str) -> List[str]:
        try:
            return await addressesOf(self.environment.resolver, host)
        except Exception:
            return []


def _domainKeys(name: str, parentMatches: bool) -> List[str]:
    """
    A server name and its parent domains, as check_domain_access looks
    them up.
    """
    labels = name.split(".")
    return [name] + [(".".join(labels[i:]) if parentMatches else "." + ".".join(labels[i:]))
                     for i in range(1, len(labels))]


RESTRICTIONS = {
    f"check_{what}_{kind}_access": ServerAccess.maker(what, kind)
    for what in _SUBJECTS for kind in ("a", "mx", "ns")
}
