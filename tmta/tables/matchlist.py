"""
Postfix's match lists: the list parameters (C{mydestination},
C{relay_domains}, C{virtual_mailbox_domains}, C{mynetworks} and their
kin) whose items are names, networks, C{/file/name} (the file's words,
read as if written in place) and C{type:table} (looked up), each
negated by a leading C{!}, the first matching item deciding.

A file that cannot be read or a table that fails makes the match a
temporary failure (L{TableLookupError}) when the list reaches it, as in
Postfix: a list never quietly shrinks.
"""

from __future__ import annotations

import functools
import ipaddress
from functools import cached_property
from typing import Any, List, Optional, Tuple, Union

from tmta.tables import TableError, TableLookupError, openTable, readLogicalLines

#: What one item is: C{name} (a casefolded string), C{table}; for
#: address lists C{text} (an address compared as text), C{network} or
#: C{never}; or C{failing} (why it fails every match that reaches it).
_Item = Tuple[bool, str, Any]


@functools.lru_cache(maxsize=1024)
def clientIP(address: str):
    """
    A client's address, parsed (an IPv4-mapped IPv6 address as IPv4).
    Parsing costs more than the rest of a look-up, and the same clients
    come back: the parsed (immutable) addresses are kept.

    @raise ValueError: not an address.
    """
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def isTableSpec(item: str) -> bool:
    """
    Whether a list item names a table, as Postfix tells: it has a colon
    and does not start with C{[} (so an IPv6 network must be bracketed).
    """
    return ":" in item and not item.startswith("[")


def _items(name: str, value: str) -> List[str]:
    from tmta.config import splitList

    return splitList(value)


class MatchList:
    """
    One list parameter, parsed once.

    @param name: the parameter, for messages.
    @param parent: whether C{name} is in
        C{parent_domain_matches_subdomains} (C{example.com} then matches
        its subdomains; otherwise only C{.example.com} does).
    @param addresses: an address list (C{mynetworks}): items are
        addresses and networks, C{[...]} for IPv6.
    """

    def __init__(self, name: str, value: Union[str, List[str]], parent: bool = False,
                 addresses: bool = False) -> None:
        self.name = name
        self.parent = parent
        self.addresses = addresses
        self.items: List[_Item] = []
        self._parse(_items(name, value) if isinstance(value, str) else list(value), False,
                    depth=0)

    def _parse(self, items: List[str], negated: bool, depth: int) -> None:
        for item in items:
            negate = negated
            while item.startswith("!"):
                negate, item = not negate, item[1:]
            if not item:
                self.items.append((negate, "failing", f"{self.name}: no pattern after '!'"))
            elif item.startswith("/"):
                self._file(item, negate, depth)
            elif isTableSpec(item):
                try:
                    self.items.append((negate, "table", openTable(item)))
                except TableError as e:
                    self.items.append((negate, "failing", f"{self.name}: {e}"))
            elif self.addresses:
                self.items.append(self._network(item, negate))
            else:
                self.items.append((negate, "name", item.lower().rstrip(".")))

    def _file(self, path: str, negated: bool, depth: int) -> None:
        try:
            if depth > 10:
                raise OSError(f"{path}: files include each other too deeply")
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                lines = f.read().splitlines()
        except OSError as e:
            self.items.append((negated, "failing",
                               f"{self.name}: open file {path}: {e.strerror or e}"))
            return
        for _, text in readLogicalLines(lines, path):
            self._parse(_items(self.name, text), negated, depth + 1)

    def _network(self, item: str, negated: bool) -> _Item:
        """
        An address-list item as Postfix's C{match_hostaddr} reads it: an
        IPv4 address is compared as text, C{[IPv6]} and C{net/mask} as
        networks, and what is neither (a host name) matches nothing; a
        network Postfix cannot parse (bad mask, host bits set) fails the
        match that reaches it.
        """
        if "/" not in item and ":" not in item:
            return negated, "text", item.lower()
        if item.strip("0123456789abcdefABCDEF:.[]/") or item.count("/") > 1:
            return negated, "never", None
        from tmta.tables.cidr import parseNetwork
        from tmta.tables.source import TableSyntaxError

        try:
            return negated, "network", parseNetwork(item)
        except TableSyntaxError as e:
            return negated, "failing", f"{self.name}: {e}"

    def __bool__(self) -> bool:
        return bool(self.items)

    @cached_property
    def remote(self) -> bool:
        """
        Whether a table in the list waits on another server
        (L{tmta.interfaces.IRemoteTable}): the list is then matched in a
        lookup thread.
        """
        from tmta.tables.remote import isRemote

        return isRemote(payload for _, kind, payload in self.items if kind == "table")

    def problems(self) -> List[str]:
        """
        Why items of this list would fail every match: files that
        cannot be read, tables that cannot be opened, networks that are
        not networks.
        """
        return [payload for _, kind, payload in self.items if kind == "failing"]

    def matchName(self, name: str) -> bool:
        """
        Whether a domain name is in the list: equal to an item, below a
        C{.parent} item (any parent item with C{parent}), or found in a
        table by itself or by its parent domains.

        @raise TableLookupError: a failing item was reached first.
        """
        name = name.lower().rstrip(".")
        for negated, kind, payload in self.items:
            if kind == "failing":
                raise TableLookupError(payload)
            if kind == "table":
                found = self._lookupName(payload, name)
            elif kind == "name":
                found = _nameMatches(name, payload, self.parent)
            else:
                found = False
            if found:
                return not negated
        return False

    def matchString(self, text: str) -> bool:
        """
        Whether C{text} is in a string list (C{smtpd_forbidden_commands},
        C{smtpd_noop_commands}): equal to an item, case aside, or found
        in a table.

        @raise TableLookupError: a failing item was reached first.
        """
        folded = text.lower()
        for negated, kind, payload in self.items:
            if kind == "failing":
                raise TableLookupError(payload)
            if kind == "table":
                found = payload.get(text) is not None
            else:
                found = kind == "name" and folded == payload
            if found:
                return not negated
        return False

    def _lookupName(self, table, name: str) -> bool:
        if table.get(name) is not None:
            return True
        if not _fixed(table):
            return False  # pattern tables see the whole name only
        labels = name.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            if table.get(parent if self.parent else "." + parent) is not None:
                return True
        return False

    def matchAddress(self, address: str) -> bool:
        """
        Whether a client address is in an address list.

        @raise TableLookupError: a failing item was reached first.
        """
        try:
            ip: Optional[Any] = clientIP(address)
        except ValueError:
            ip = None
        key = str(ip) if ip is not None else address
        for negated, kind, payload in self.items:
            if kind == "failing":
                raise TableLookupError(payload)
            if kind == "table":
                found = payload.get(key) is not None
            elif kind == "text":
                found = key == payload
            elif kind == "network":
                found = ip is not None and ip.version == payload.version and ip in payload
            else:
                found = False
            if found:
                return not negated
        return False


def _nameMatches(name: str, pattern: str, parent: bool) -> bool:
    """
    Postfix's C{match_hostname} for a name pattern: equal; with
    C{parent}, a subdomain of the pattern; without, a subdomain of a
    C{.pattern}.
    """
    if name == pattern:
        return True
    if parent:
        return name.endswith("." + pattern)
    return pattern.startswith(".") and len(name) > len(pattern) and name.endswith(pattern)


def _fixed(table) -> bool:
    """
    Whether a table is looked up by key (Postfix's C{DICT_FLAG_FIXED}),
    rather than by pattern.
    """
    from tmta.tables.cidr import CIDRTable
    from tmta.tables.regexp import RegexpTable

    return not isinstance(table, (RegexpTable, CIDRTable))
