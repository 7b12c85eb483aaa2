"""
Address rewriting and resolution, the rules Postfix's trivial-rewrite
applies: the C{trivial-rewrite} service (L{tmta.rewrite}) answers with
them, and cleanup and local ask them in-process for the class of a
domain and an address's canonical form.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from zope.interface import implementer

from tmta.config import MainConfig
from tmta.interfaces import IAddressResolver, IAddressRewriter
from tmta.mail.address import splitAddress
from tmta.mail.addressmaps import AddressTables
from tmta.tables import TableLookupError, lookupAny, openTables
from tmta.tables.matchlist import MatchList
from tmta.tables.remote import isRemote

#: How the reason of a resolution that failed on a table begins.
LOOKUP_FAILURE = "table lookup failure"


@dataclass(frozen=True)
class Resolution:
    """
    Where an address goes.

    @ivar transport: the master.cf service that delivers it.
    @ivar nexthop: the destination that transport is given.
    @ivar recipient: the address as rewritten.
    @ivar addressClass: C{local}, C{alias}, C{virtual}, C{relay} or C{default}, as in Postfix's
        address classes.
    """

    transport: str
    nexthop: str
    recipient: str
    addressClass: str

    @classmethod
    def lookupFailure(cls, address: str, error: object) -> "Resolution":
        """
        The resolution of an address a table could not be consulted
        for: the C{retry} transport, which defers it with the reason.
        """
        return cls("retry", f"{LOOKUP_FAILURE}: {error}", address, "default")

    @property
    def error(self) -> Optional[str]:
        """
        Why mail for the address is bounced, when it resolves to the
        C{error} transport (a relocated user, an unknown user of a
        virtual alias domain, an C{error:} transport); else C{None}.
        """
        return self.nexthop if self.transport == "error" else None

    @property
    def lookupFailed(self) -> bool:
        """
        Whether this is a L{lookupFailure} (not a C{retry:} transport
        that a table chose).
        """
        return self.transport == "retry" and self.nexthop.startswith(LOOKUP_FAILURE)


def _transportAndNexthop(value: str, default: str):
    transport, _, nexthop = value.partition(":")
    return transport, nexthop or default


@implementer(IAddressRewriter, IAddressResolver)
class Rewriter:
    """
    Trivial rewriting and resolution from main.cf parameters.
    """

    def __init__(self, config: MainConfig) -> None:
        self.config = config
        self.myorigin = config.origin().lower()
        self.myhostname = config.get("myhostname").lower()
        self.appendAtMyorigin = config.getBool("append_at_myorigin")
        self.swapBangpath = config.getBool("swap_bangpath")
        self.percentHack = config.getBool("allow_percent_hack")
        self.localDomains = self._domains("mydestination")
        self.relayDomains = self._domains("relay_domains")
        self.virtualDomains = self._domains("virtual_mailbox_domains")
        self.aliasDomains = self._domains("virtual_alias_domains")
        self.virtualTransport = config.get("virtual_transport")
        self.localTransport = _transportAndNexthop(config.get("local_transport"), self.myhostname)
        self.relayTransport = config.get("relay_transport")
        self.defaultTransport = config.get("default_transport")
        self.relayhost = config.get("relayhost")
        self.delimiter = config.get("recipient_delimiter")
        self.transportMaps = openTables(config.get("transport_maps"))
        self.senderRelayhostMaps = openTables(config.get("sender_dependent_relayhost_maps"))
        self.nullSenderKey = config.get("empty_address_relayhost_maps_lookup_key") or "<>"
        self.senderTransportMaps = openTables(
            config.get("sender_dependent_default_transport_maps"))
        self.nullSenderTransportKey = config.get(
            "empty_address_default_transport_maps_lookup_key") or "<>"
        self.parentMatches = "transport_maps" in config.getList(
            "parent_domain_matches_subdomains")
        self.relocatedMaps = openTables(config.get("relocated_maps"))
        self.relocatedTables = AddressTables(self.delimiter, (), self.myorigin,
                                             self.isLocalDomain)

    @cached_property
    def remote(self) -> bool:
        """
        Whether a table this rewriter consults waits on another server,
        so that it must be asked in a lookup thread
        (L{tmta.tables.remote}).
        """
        return isRemote([self.localDomains, self.relayDomains, self.virtualDomains,
                         self.aliasDomains] + self.transportMaps + self.senderRelayhostMaps
                        + self.senderTransportMaps + self.relocatedMaps)

    def _domains(self, name: str) -> MatchList:
        """
        A domain list (names, C{.parent} names, C{/file/name} and
        C{type:table} items), matched as Postfix's match lists are.
        """
        return MatchList(name, self.config.get(name), parent=name in self.config.getList(
            "parent_domain_matches_subdomains"))

    def isLocalDomain(self, domain: str) -> bool:
        """
        Whether C{domain} is in C{mydestination} (or is this host's
        loopback address literal).

        @raise TableLookupError: the list could not be consulted.
        """
        domain = domain.lower().rstrip(".")
        if self.localDomains.matchName(domain):
            return True
        if domain.startswith("[") and domain.endswith("]"):
            # An address literal names this host when it is one of the
            # addresses mail is received on, as Postfix's resolve_local.
            from tmta.tables.networks import isOwnAddress

            literal = domain[1:-1]
            if literal.startswith("ipv6:"):
                literal = literal[len("ipv6:"):]
            elif ":" in literal:
                return False  # IPv6 needs its tag (RFC 5321 4.1.3)
            return isOwnAddress(literal, self.config, proxy=True)
        return False

    def isVirtualMailboxDomain(self, domain: str) -> bool:
        """
        Whether C{domain} is in C{virtual_mailbox_domains} (by default,
        has an entry in C{virtual_mailbox_maps}: C{@domain} or any
        address's domain table key).
        """
        return self.virtualDomains.matchName(domain)

    def isRelayDomain(self, domain: str) -> bool:
        return self.relayDomains.matchName(domain)

    def rewrite(self, address: str) -> str:
        """
        Canonical form: C{host!user} to C{user@host}, C{user%host} to
        C{user@host} when the outer domain is ours, and C{@$myorigin}
        appended to a bare name.
        """
        if not address:
            return address
        local, domain = splitAddress(address)
        if not domain and self.swapBangpath and "!" in local and not local.startswith('"'):
            host, _, user = local.partition("!")
            if host and user:
                local, domain = user, host
        if self.percentHack and "%" in local and not local.startswith('"'):
            if not domain or self.isLocalDomain(domain):
                user, _, host = local.rpartition("%")
                if user and host:
                    local, domain = user, host
        if not domain:
            if not self.appendAtMyorigin:
                return local
            domain = self.myorigin
        return f"{local}@{domain.lower().rstrip('.')}"

    def resolve(self, address: str, sender: Optional[str] = None) -> Resolution:
        """
        Decide the transport and next hop for an address: by its address
        class (local, relay, default), the relayhost (by the sender, when
        C{sender_dependent_relayhost_maps} has it), then
        C{transport_maps}, whose empty transport or next hop keeps the
        class's.  A table that cannot be consulted sends the address
        to the C{retry} transport, which defers it with the reason.
        """
        try:
            return self._resolve(address, sender)
        except TableLookupError as e:
            return Resolution.lookupFailure(address, e)

    def _resolve(self, address: str, sender: Optional[str]) -> Resolution:
        address = self.rewrite(address)
        _, domain = splitAddress(address)
        if not domain or self.isLocalDomain(domain):
            (transport, nexthop), addressClass = self.localTransport, "local"
        elif self.aliasDomains.matchName(domain):
            # cleanup has expanded every alias it knows: an address left
            # in a virtual alias domain has none.
            transport, nexthop = "error", "User unknown in virtual alias table"
            addressClass = "alias"
        elif self.isVirtualMailboxDomain(domain):
            transport, nexthop = _transportAndNexthop(self.virtualTransport, domain)
            addressClass = "virtual"
        else:
            if self.isRelayDomain(domain):
                channel, addressClass = self.relayTransport, "relay"
            else:
                channel = self._senderDependent(self.senderTransportMaps,
                                                self.nullSenderTransportKey,
                                                sender) or self.defaultTransport
                addressClass = "default"
            # The relayhost (by the sender first) replaces the domain; a
            # next hop the transport names replaces both, as in Postfix.
            transport, nexthop = _transportAndNexthop(
                channel, self._senderDependent(self.senderRelayhostMaps, self.nullSenderKey,
                                               sender) or self.relayhost or domain)
        if self.transportMaps:
            found = self._transportMap(address, domain)
            if found is not None:
                mapped, _, hop = found.strip().partition(":")
                transport, nexthop = mapped.strip() or transport, hop.strip() or nexthop
        if self.relocatedMaps:
            # Last, whatever the class or transport, as in Postfix: the
            # mail bounces with where the user went.
            moved = self.relocatedTables.find(self.relocatedMaps, address, userKeys=True)
            if moved is not None:
                transport, nexthop = "error", f"5.1.6 User has moved to {moved[0]}"
        return Resolution(transport, nexthop, address, addressClass)

    def _senderDependent(self, tables, nullKey: str, sender: Optional[str]) -> Optional[str]:
        """
        C{sender_dependent_relayhost_maps} or
        C{sender_dependent_default_transport_maps}: the value for the
        sender address, else for its C{@domain}; the null sender is
        looked up as C{nullKey}.  C{DUNNO} (or an empty value) means the
        global setting.
        """
        if sender is None or not tables:
            return None
        if not sender:
            keys = [nullKey]
        else:
            sender = sender.lower()
            _, domain = splitAddress(sender)
            keys = [sender] + ([f"@{domain}"] if domain else [])
        for key in keys:
            value = lookupAny(tables, key)
            if value is not None:
                value = value.strip()
                return None if value.upper() == "DUNNO" else value or None
        return None

    def _transportMap(self, address: str, domain: str) -> Optional[str]:
        """
        Look an address up in C{transport_maps} as Postfix does: the
        address, the address without its extension, the domain, its
        parent domains (as C{.parent}, or bare when
        C{parent_domain_matches_subdomains} lists C{transport_maps}),
        then C{*}.
        """
        address = address.lower()
        keys = [address]
        local, _ = splitAddress(address)
        for d in self.delimiter:
            if d in local:
                keys.append(f"{local.split(d, 1)[0]}@{domain}")
                break
        if domain:
            domain = domain.lower()
            keys.append(domain)
            labels = domain.split(".")
            for i in range(1, len(labels)):
                parent = ".".join(labels[i:])
                keys.append(parent if self.parentMatches else "." + parent)
        keys.append("*")
        for key in keys:
            value = lookupAny(self.transportMaps, key)
            if value is not None:
                return value
        return None
