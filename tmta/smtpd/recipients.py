"""
Whether smtpd knows a recipient (C{smtpd_reject_unlisted_recipient}):
what Postfix's smtpd asks of C{virtual_alias_maps},
C{local_recipient_maps} and C{virtual_mailbox_maps}, so that mail for
unknown users is refused during the SMTP session instead of bounced to a
sender nobody checked.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Generator, Iterable, List, Optional, Tuple

from tmta.mail.address import localName, splitAddress, unquoteLocal
from tmta.mail.receiving import NO_UNKNOWN_RECIPIENT_CHECKS, receiveOverrides
from tmta.mail.rewriting import Resolution
from tmta.tables import openTables
from tmta.tables.remote import Lookup, LookupThreads, decideLater, decideNow, isRemote


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
    @param checked: C{False} under C{receive_override_options =
        no_unknown_recipient_checks}: every address is known (mail back
        from a content filter was checked on its way in).
    @param canonical: C{recipient_canonical_maps} and C{canonical_maps}:
        an address they map is known, whatever its class, as Postfix's
        smtpd takes it (cleanup will give it its new address);
    @param senderCanonical: C{sender_canonical_maps}, which does the
        same for C{reject_unlisted_sender}.
    """

    def __init__(self, local: Optional[List], virtualMailbox: List, virtualAlias: List,
                 delimiters: str, rejectUnlisted: bool = True, unknownLocalCode: int = 550,
                 unknownVirtualMailboxCode: int = 550,
                 unknownVirtualAliasCode: int = 550, relay: Optional[List] = None,
                 unknownRelayCode: int = 550, rejectUnlistedSender: bool = False,
                 exemptLocal: Tuple[str, ...] = ("postmaster", "mailer-daemon",
                                                 "double-bounce"),
                 checked: bool = True, canonical: Iterable = (),
                 senderCanonical: Iterable = ()) -> None:
        self.local = local
        self.canonical = list(canonical)
        self.senderCanonical = list(senderCanonical)
        self.virtualMailbox = virtualMailbox
        self.virtualAlias = virtualAlias
        self.delimiters = delimiters
        self.rejectUnlisted = rejectUnlisted
        self.unknownLocalCode = unknownLocalCode
        self.unknownVirtualMailboxCode = unknownVirtualMailboxCode
        self.unknownVirtualAliasCode = unknownVirtualAliasCode
        self.relay = relay
        self.unknownRelayCode = unknownRelayCode
        self.rejectUnlistedSender = rejectUnlistedSender
        self.exemptLocal = exemptLocal
        self.checked = checked

    @classmethod
    def fromConfig(cls, config) -> "RecipientTables":
        localValue = config.get("local_recipient_maps")
        relayValue = config.get("relay_recipient_maps")
        return cls(
            openTables(localValue) if localValue.strip() else None,
            openTables(config.get("virtual_mailbox_maps")),
            openTables(config.get("virtual_alias_maps")),
            config.get("recipient_delimiter"),
            config.getBool("smtpd_reject_unlisted_recipient"),
            config.getInt("unknown_local_recipient_reject_code"),
            config.getInt("unknown_virtual_mailbox_reject_code"),
            config.getInt("unknown_virtual_alias_reject_code"),
            openTables(relayValue) if relayValue.strip() else None,
            config.getInt("unknown_relay_recipient_reject_code"),
            config.getBool("smtpd_reject_unlisted_sender"),
            ("postmaster", "mailer-daemon", config.get("double_bounce_sender").lower()),
            NO_UNKNOWN_RECIPIENT_CHECKS not in receiveOverrides(
                config.get("receive_override_options")),
            openTables(config.get("recipient_canonical_maps"))
            + openTables(config.get("canonical_maps")),
            openTables(config.get("sender_canonical_maps")),
        )

    @cached_property
    def remote(self) -> bool:
        """
        Whether one of the tables waits on another server: L{unknown} is
        then asked in a lookup thread.
        """
        return isRemote((self.local or []) + self.virtualMailbox + self.virtualAlias
                        + (self.relay or []) + self.canonical + self.senderCanonical)

    def _listedLocal(self, address: str) -> Generator[Lookup, Optional[str], bool]:
        local, _ = splitAddress(address)
        name = unquoteLocal(local).lower()
        keys = [address.lower(), name]
        base = localName(address, self.delimiters)
        if base != name:
            keys.append(base)
        for key in keys:
            if (yield Lookup(self.local or [], key)) is not None:
                return True
        return False

    def _listed(self, tables: List, address: str) -> Generator[Lookup, Optional[str], bool]:
        for key in _addressKeys(address, self.delimiters):
            if (yield Lookup(tables, key)) is not None:
                return True
        return False

    def unknown(self, resolution: Resolution, given: str, what: str = "Recipient",
                always: bool = False) -> Optional[str]:
        """
        The reply refusing the address C{resolution} is of (C{given} as
        the client wrote it), or C{None} when it is known or nothing says
        who is known.  An address that resolves to the C{error} transport
        (L{Resolution.error}) is refused with that reason unless a
        canonical or virtual table knows it, as Postfix's smtpd refuses
        it.

        @param what: C{Recipient}, or C{Sender} for
            C{reject_unlisted_sender}.
        @param always: check even with C{smtpd_reject_unlisted_recipient
            = no} (the restriction named in a list).
        @raise tmta.tables.TableLookupError: a table could not be read.
        """
        return decideNow(self._unknown(resolution.addressClass, resolution.recipient, given,
                                       what, always, resolution.error))

    async def unknownLater(self, threads: LookupThreads, resolution: Resolution, given: str,
                           what: str = "Recipient", always: bool = False) -> Optional[str]:
        """
        L{unknown}, on the reactor's thread, when a table waits on
        another server.
        """
        return await decideLater(self._unknown(resolution.addressClass, resolution.recipient,
                                               given, what, always, resolution.error),
                                 threads)

    def _unknown(self, addressClass: str, address: str, given: str, what: str,
                 always: bool, error: Optional[str] = None,
                 ) -> Generator[Lookup, Optional[str], Optional[str]]:
        if not self.checked or not (always or self.rejectUnlisted):
            return None
        if addressClass == "default" and error is None:
            return None
        known = self.canonical + (self.senderCanonical if what == "Sender" else []) \
            + self.virtualAlias
        if known and (yield from self._listed(known, address)):
            return None
        if error is not None:
            return self._bounced(addressClass, given, what, error)
        if addressClass == "local":
            if self.local is None or (yield from self._listedLocal(address)) or \
                    self._exempt(address):
                return None
            code, table = self.unknownLocalCode, "local recipient"
        elif addressClass == "virtual":
            if (yield from self._listed(self.virtualMailbox, address)):
                return None
            code, table = self.unknownVirtualMailboxCode, "virtual mailbox"
        elif addressClass == "alias":
            code, table = self.unknownVirtualAliasCode, "virtual alias"
        elif addressClass == "relay":
            if self.relay is None or (yield from self._listed(self.relay, address)):
                return None
            code, table = self.unknownRelayCode, "relay recipient"
        else:
            return None
        detail = "1.0" if what == "Sender" else "1.1"
        return (f"{code} {code // 100}.{detail} <{given}>: {what} address rejected: "
                f"User unknown in {table} table")

    def _bounced(self, addressClass: str, given: str, what: str, error: str) -> str:
        """
        The refusal of an address that resolves to the C{error}
        transport: its reason, with the DSN code the reason starts with
        (made permanent) or Postfix's for an unknown address.
        """
        from tmta.smtpd.access import fixStatus

        detail, _, text = error.partition(" ")
        if re.match(r"^[245]\.\d{1,3}\.\d{1,3}$", detail):
            dsn = "5" + detail[1:]
        else:
            dsn, text = ("5.1.0" if what == "Sender" else "5.1.1"), error
        dsn = fixStatus(dsn, f"{what} address")
        code = self.unknownVirtualAliasCode if addressClass == "alias" else 550
        return f"{code} {dsn} <{given}>: {what} address rejected: {text}"

    def _exempt(self, address: str) -> bool:
        """
        The local names mail must always reach, as Postfix exempts them
        from C{local_recipient_maps}.
        """
        return localName(address, "").lower() in self.exemptLocal
