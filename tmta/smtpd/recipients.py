"""
Whether smtpd knows a recipient (C{smtpd_reject_unlisted_recipient}):
what Postfix's smtpd asks of C{virtual_alias_maps},
C{local_recipient_maps} and C{virtual_mailbox_maps}, so that mail for
unknown users is refused during the SMTP session instead of bounced to a
sender nobody checked.
"""

from __future__ import annotations

from typing import List, Optional

from tmta.address import localName, splitAddress, unquoteLocal
from tmta.tables import lookupAny, openTables


def _addressKeys(address: str, delimiters: str) -> List[str]:
    local, domain = splitAddress(address.lower())
    keys = [address.lower()]
    base = localName(address, delimiters)
    if domain and base != unquoteLocal(local).lower():
        keys.append(f"{base}@{domain}")
    if domain:
        keys.append(f"@{domain}")
    return keys


class RecipientTables:
    """
    The tables that say which recipients exist, by address class.

    @param local: C{local_recipient_maps}, or C{None} when it is empty
        (every local name is accepted).
    """

    def __init__(self, local: Optional[List], virtualMailbox: List, virtualAlias: List,
                 delimiters: str, rejectUnlisted: bool = True, unknownLocalCode: int = 550,
                 unknownVirtualMailboxCode: int = 550,
                 unknownVirtualAliasCode: int = 550) -> None:
        self.local = local
        self.virtualMailbox = virtualMailbox
        self.virtualAlias = virtualAlias
        self.delimiters = delimiters
        self.rejectUnlisted = rejectUnlisted
        self.unknownLocalCode = unknownLocalCode
        self.unknownVirtualMailboxCode = unknownVirtualMailboxCode
        self.unknownVirtualAliasCode = unknownVirtualAliasCode

    @classmethod
    def fromConfig(cls, config) -> "RecipientTables":
        localValue = config.get("local_recipient_maps")
        return cls(
            openTables(localValue) if localValue.strip() else None,
            openTables(config.get("virtual_mailbox_maps")),
            openTables(config.get("virtual_alias_maps")),
            config.get("recipient_delimiter"),
            config.getBool("smtpd_reject_unlisted_recipient"),
            config.getInt("unknown_local_recipient_reject_code"),
            config.getInt("unknown_virtual_mailbox_reject_code"),
            config.getInt("unknown_virtual_alias_reject_code"),
        )

    def _listedLocal(self, address: str) -> bool:
        local, _ = splitAddress(address)
        name = unquoteLocal(local).lower()
        keys = [address.lower(), name]
        base = localName(address, self.delimiters)
        if base != name:
            keys.append(base)
        return any(lookupAny(self.local or [], key) is not None for key in keys)

    def _listed(self, tables: List, address: str) -> bool:
        return any(lookupAny(tables, key) is not None
                   for key in _addressKeys(address, self.delimiters))

    def unknown(self, addressClass: str, address: str, given: str) -> Optional[str]:
        """
        The reply refusing C{address} (as trivial-rewrite left it;
        C{given} as the client wrote it), or C{None} when it is known or
        nothing says who is known.

        @raise tmta.tables.TableLookupError: a table could not be read.
        """
        if not self.rejectUnlisted or addressClass in ("relay", "default"):
            return None
        if self.virtualAlias and self._listed(self.virtualAlias, address):
            return None
        if addressClass == "local":
            if self.local is None or self._listedLocal(address):
                return None
            return (f"{self.unknownLocalCode} 5.1.1 <{given}>: Recipient address rejected: "
                    "User unknown in local recipient table")
        if addressClass == "virtual":
            if self._listed(self.virtualMailbox, address):
                return None
            return (f"{self.unknownVirtualMailboxCode} 5.1.1 <{given}>: Recipient address "
                    "rejected: User unknown in virtual mailbox table")
        if addressClass == "alias":
            return (f"{self.unknownVirtualAliasCode} 5.1.1 <{given}>: Recipient address "
                    "rejected: User unknown in virtual alias table")
        return None
