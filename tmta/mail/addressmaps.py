"""
Address mapping by table, as canonical(5), virtual(5) and generic(5)
describe the lookups: the address, the address without its extension,
the bare local part for this host's own domains, then C{@domain}; a
C{@domain} result keeps the local part, and an unmatched extension is
carried over when C{propagate_unmatched_extensions} names the kind of
mapping.  cleanup maps with it (canonical and virtual tables), and so
do the SMTP and LMTP clients (C{smtp_generic_maps}), each on the
envelope and on the address headers.
"""

from __future__ import annotations

from email.utils import formataddr, getaddresses
from typing import Callable, List, Optional, Tuple

from tmta.mail.address import splitAddress

#: Headers whose addresses are rewritten, as sender or recipient
#: addresses (canonical(5)'s classes).
SENDER_HEADERS = frozenset(("from", "sender", "reply-to", "return-receipt-to", "errors-to",
                            "resent-from", "resent-sender", "resent-reply-to"))
RECIPIENT_HEADERS = frozenset(("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc",
                               "apparently-to", "disposition-notification-to"))


def splitTargets(value: str) -> List[str]:
    """
    The addresses of a table's result, separated by commas or space.
    """
    return [item for item in value.replace(",", " ").split() if item]


class AddressTables:
    """
    How addresses are looked up and mapped in tables.

    @param delimiter: C{recipient_delimiter}.
    @param propagate: C{propagate_unmatched_extensions}.
    @param myorigin: what an unqualified result is qualified with.
    @param isLocalDomain: whether a domain is this host's own (its
        addresses are then also looked up by the bare local part).
    """

    def __init__(self, delimiter: str, propagate, myorigin: str,
                 isLocalDomain: Callable[[str], bool]) -> None:
        self.delimiter = delimiter
        self.propagate = set(propagate)
        self.myorigin = myorigin
        self.isLocalDomain = isLocalDomain

    def find(self, tables, address: str, userKeys: bool) -> Optional[Tuple[str, str, str]]:
        """
        Look C{address} up: the address, without its extension, then
        (for our own domains) the local part, and last C{@domain}.

        @return: (value, the key's kind -- C{address} or C{domain} --,
            the extension to propagate), or C{None}.
        @raise tmta.tables.TableLookupError: a table could not be read.
        """
        local, domain = splitAddress(address.lower())
        base, extension = local, ""
        for d in self.delimiter:
            if d in local:
                base, _, extension = local.partition(d)
                extension = d + extension
                break
        keys = [(address.lower(), "address", "")]
        if extension:
            keys.append((f"{base}@{domain}" if domain else base, "address", extension))
        if domain and userKeys and self.isLocalDomain(domain):
            keys.append((local, "address", ""))
            if extension:
                keys.append((base, "address", extension))
        if domain:
            keys.append((f"@{domain}", "domain", ""))
        for key, kind, ext in keys:
            for table in tables:
                value = table.get(key)
                if value is not None:
                    return value.strip(), kind, ext
        return None

    def qualify(self, address: str) -> str:
        return address if "@" in address else f"{address}@{self.myorigin}"

    def withExtension(self, address: str, extension: str, kind: str) -> str:
        """
        C{address} with the unmatched C{extension}, when
        C{propagate_unmatched_extensions} names C{kind}.
        """
        if not extension or kind not in self.propagate:
            return address
        local, domain = splitAddress(address)
        return f"{local}{extension}@{domain}" if domain else local + extension

    def mapOne(self, tables, address: str, kind: str) -> str:
        """
        C{address} as one-to-one mapping (canonical or generic, named by
        C{kind}) leaves it: the table's first address, or C{address}
        when no table has it.
        """
        if not address or not tables:
            return address
        found = self.find(tables, address, userKeys=True)
        if found is None:
            return address
        value, _, extension = found
        value = (splitTargets(value) or [address])[0]
        if value.startswith("@"):
            local, _ = splitAddress(address)
            return f"{local}{value}"
        return self.withExtension(self.qualify(value), extension, kind)


def mapHeaderAddresses(value: str, mapAddress: Callable[[str], str]) -> Optional[str]:
    """
    An address header's value with each address mapped, or C{None} when
    none changes (so that headers with nothing to map keep their exact
    text).
    """
    changed = False
    out = []
    for display, address in getaddresses([value]):
        if not address or "@" not in address:
            out.append((display, address))
            continue
        mapped = mapAddress(address)
        changed = changed or mapped != address
        out.append((display, mapped))
    if not changed:
        return None
    return ", ".join(formataddr(pair) for pair in out)


class GenericMapping:
    """
    C{smtp_generic_maps} (or C{lmtp_generic_maps}): what the client
    sends in place of the addresses mail carries -- a host's internal
    addresses made ones the world can answer -- in C{MAIL FROM}, each
    C{RCPT TO} and the address headers, as generic(5) says.  The mail's
    own record, and what the log says of each recipient, keep the
    addresses as they were.
    """

    def __init__(self, config, prefix: str) -> None:
        from tmta.tables import openTables
        from tmta.tables.matchlist import MatchList

        self.tables = openTables(config.get(f"{prefix}_generic_maps"))
        self.active = bool(self.tables)
        origin = config.origin().lower()
        destinations = MatchList(
            "mydestination", config.get("mydestination"),
            parent="mydestination" in config.getList("parent_domain_matches_subdomains"))

        def isLocalDomain(domain: str) -> bool:
            domain = domain.lower().rstrip(".")
            return domain == origin or destinations.matchName(domain)

        self.addresses = AddressTables(config.get("recipient_delimiter"),
                                       config.getList("propagate_unmatched_extensions"),
                                       origin, isLocalDomain)

    def address(self, address: str) -> str:
        """
        What is sent for C{address} (the null sender stays null).

        @raise tmta.tables.TableLookupError: a table could not be read.
        """
        return self.addresses.mapOne(self.tables, address, "generic")

    def message(self, content: bytes) -> bytes:
        """
        C{content} with the addresses of its sender and recipient
        headers mapped (lines end in LF).

        @raise tmta.tables.TableLookupError: a table could not be read.
        """
        from tmta.mail.contentchecks import splitMessage

        headers, body = splitMessage(content)
        out = []
        for header in headers:
            name, colon, value = header.partition(b":")
            lowered = name.strip().lower().decode("ascii", "replace")
            if colon and (lowered in SENDER_HEADERS or lowered in RECIPIENT_HEADERS):
                text = value.decode("utf-8", "surrogateescape").replace("\n", "")
                mapped = mapHeaderAddresses(text.strip(), self.address)
                if mapped is not None:
                    header = name + b": " + mapped.encode("utf-8", "surrogateescape")
            out.append(header)
        return b"".join(header + b"\n" for header in out) + b"\n" + body
