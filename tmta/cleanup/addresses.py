"""
cleanup's table-driven address rewriting, as Postfix's cleanup(8) does
it to the envelope: canonical(5) mapping (C{sender_canonical_maps},
C{recipient_canonical_maps}, C{canonical_maps}), address masquerading
(C{masquerade_domains}), virtual(5) aliasing (C{virtual_alias_maps},
one address to many, recursively) and automatic BCC (C{always_bcc},
C{sender_bcc_maps}, C{recipient_bcc_maps}).

All lookups are synchronous table lookups; a table that cannot be
consulted raises L{tmta.tables.TableLookupError}, and cleanup answers
with a temporary error.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable, List, Optional

from tmta.mail.address import splitAddress
from tmta.mail.addressmaps import (
    RECIPIENT_HEADERS,
    SENDER_HEADERS,
    AddressTables,
    mapHeaderAddresses,
    splitTargets,
)
from tmta.tables import openTables


class AliasExpansionError(Exception):
    """
    virtual alias expansion went too deep or too wide.
    """


class AddressMapper:
    """
    The envelope rewriting of one cleanup service, built from main.cf.

    @param isLocalDomain: whether a domain is one of
        C{mydestination} (canonical and virtual tables are then also
        looked up by the bare local part).
    """

    def __init__(self, config, isLocalDomain: Callable[[str], bool]) -> None:
        self.tables = AddressTables(config.get("recipient_delimiter"),
                                    config.getList("propagate_unmatched_extensions"),
                                    config.origin().lower(), isLocalDomain)
        self.senderCanonical = openTables(config.get("sender_canonical_maps"))
        self.recipientCanonical = openTables(config.get("recipient_canonical_maps"))
        self.canonical = openTables(config.get("canonical_maps"))
        self.virtual = openTables(config.get("virtual_alias_maps"))
        self.recursionLimit = config.getInt("virtual_alias_recursion_limit")
        self.expansionLimit = config.getInt("virtual_alias_expansion_limit")
        self.masquerade = [d.lower() for d in config.getList("masquerade_domains")]
        self.masqueradeClasses = set(config.getList("masquerade_classes"))
        self.masqueradeExceptions = {n.lower() for n in config.getList("masquerade_exceptions")}
        self.alwaysBcc = config.get("always_bcc").strip()
        self.senderBcc = openTables(config.get("sender_bcc_maps"))
        self.recipientBcc = openTables(config.get("recipient_bcc_maps"))
        self.rewritesHeaders = bool(self.senderCanonical or self.recipientCanonical
                                    or self.canonical or (self.masquerade and (
                                        {"header_sender", "header_recipient"}
                                        & self.masqueradeClasses)))
        self.active = bool(self.senderCanonical or self.recipientCanonical or self.canonical
                           or self.virtual or self.masquerade or self.alwaysBcc
                           or self.senderBcc or self.recipientBcc)

    @cached_property
    def remote(self) -> bool:
        """
        Whether one of the tables waits on another server.
        """
        from tmta.tables.remote import isRemote

        return isRemote(self.senderCanonical + self.recipientCanonical + self.canonical
                        + self.virtual + self.senderBcc + self.recipientBcc)

    # -- lookups

    def _canonical(self, tables, address: str) -> str:
        return self.tables.mapOne(tables, address, "canonical")

    def _masquerade(self, address: str) -> str:
        if not self.masquerade or not address:
            return address
        local, domain = splitAddress(address)
        if not domain or local.lower() in self.masqueradeExceptions:
            return address
        lowered = domain.lower()
        for entry in self.masquerade:
            if entry.startswith("!"):
                if lowered == entry[1:] or lowered.endswith("." + entry[1:]):
                    return address
                continue
            if lowered.endswith("." + entry):
                return f"{local}@{entry}"
        return address

    # -- the envelope

    def sender(self, address: str) -> str:
        """
        The envelope sender after canonical mapping and masquerading.
        """
        address = self._canonical(self.senderCanonical, address)
        address = self._canonical(self.canonical, address)
        if "envelope_sender" in self.masqueradeClasses:
            address = self._masquerade(address)
        return address

    def recipient(self, address: str) -> List[str]:
        """
        What one envelope recipient becomes: canonical mapping,
        masquerading (when C{masquerade_classes} says), then virtual
        alias expansion.

        @raise AliasExpansionError: the expansion loops or is too large.
        """
        address = self._canonical(self.recipientCanonical, address)
        address = self._canonical(self.canonical, address)
        if "envelope_recipient" in self.masqueradeClasses:
            address = self._masquerade(address)
        if not self.virtual:
            return [address]
        found: List[str] = []
        self._expand(address, 0, found, [])
        return list(dict.fromkeys(found))

    def _expand(self, address: str, depth: int, found: List[str], path: List[str]) -> None:
        if depth > self.recursionLimit:
            raise AliasExpansionError(f"virtual alias recursion limit exceeded for {address}")
        if address.lower() in path:
            # A loop back to an address already being expanded: it
            # stands for itself, as Postfix lets "a -> a, b" deliver to a.
            found.append(address)
            return
        value = self.tables.find(self.virtual, address, userKeys=True)
        if value is None:
            found.append(address)
            return
        text, kind, extension = value
        targets = splitTargets(text)
        for target in targets:
            if target.startswith("@"):
                local, _ = splitAddress(address)
                target = f"{local}{target}"
            target = self.tables.withExtension(self.tables.qualify(target), extension,
                                               "virtual")
            if target.lower() == address.lower():
                found.append(address)
            else:
                self._expand(target, depth + 1, found, path + [address.lower()])
            if len(found) > self.expansionLimit:
                raise AliasExpansionError(f"virtual alias expansion limit exceeded for {address}")

    def header(self, name: str, value: str) -> Optional[str]:
        """
        A sender or recipient header with its addresses mapped
        (canonical, then masquerading when C{masquerade_classes} names
        the header's class); C{None} when nothing changes, so that
        headers tmta has no reason to touch keep their exact text.
        """
        lowered = name.lower()
        if lowered in SENDER_HEADERS:
            tables, kind = self.senderCanonical, "header_sender"
        elif lowered in RECIPIENT_HEADERS:
            tables, kind = self.recipientCanonical, "header_recipient"
        else:
            return None
        def mapped(address: str) -> str:
            address = self._canonical(self.canonical, self._canonical(tables, address))
            return self._masquerade(address) if kind in self.masqueradeClasses else address

        return mapHeaderAddresses(value, mapped)

    def bcc(self, sender: str, recipients: List[str]) -> List[str]:
        """
        The recipients to add: C{always_bcc}, the sender's
        C{sender_bcc_maps} entry, and each recipient's
        C{recipient_bcc_maps} entry.
        """
        added: List[str] = []
        if self.alwaysBcc:
            added.append(self.tables.qualify(self.alwaysBcc))
        if self.senderBcc and sender:
            found = self.tables.find(self.senderBcc, sender, userKeys=False)
            if found is not None:
                added += [self.tables.qualify(a) for a in splitTargets(found[0])[:1]]
        if self.recipientBcc:
            for recipient in recipients:
                found = self.tables.find(self.recipientBcc, recipient, userKeys=False)
                if found is not None:
                    added += [self.tables.qualify(a) for a in splitTargets(found[0])[:1]]
        return list(dict.fromkeys(added))
