"""
C{cidr:} tables (Postfix's cidr_table(5)): networks, IPv4 and IPv6,
first match wins; and reading a network as Postfix does.
"""

from __future__ import annotations

import ipaddress
from typing import Any, List, Optional, Tuple

from zope.interface import implementer

from tmta.interfaces import ILookupTable, IOwnedTable
from tmta.tables.source import Condition, Skipped, TableSyntaxError, logicalLines, ruleSource


def _address(text: str):
    """
    An address as C{inet_pton} reads it: IPv6 when it has a colon, IPv4
    (dotted quad) otherwise; C{None} when it is not one.
    """
    if "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address if (address.version == 6) == (":" in text) else None


def parseNetwork(pattern: str):
    """
    A network as Postfix's C{cidr_match_parse} reads it: C{addr/len},
    C{[addr]/len}, C{[addr/len]} or a bare address.

    @raise TableSyntaxError: with Postfix's reason.
    """
    text = pattern
    if text.startswith("["):
        inner, found, after = text[1:].partition("]")
        if not found:
            raise TableSyntaxError("missing ']' character after \"[" + inner + '"')
        if after and not after.startswith("/"):
            raise TableSyntaxError(f'garbage after "[{inner}]"')
        text = inner + after
    address, slash, mask = text.partition("/")
    if not slash:
        parsed = _address(address)
        if parsed is None:
            raise TableSyntaxError(f'bad address pattern: "{address}"')
        return ipaddress.ip_network(parsed)
    bits = 128 if ":" in address else 32
    if not (mask.isascii() and mask.isdigit()):
        raise TableSyntaxError(f'bad mask value in "{address}/{mask}"')
    if int(mask) > bits:
        raise TableSyntaxError(f'bad mask length in "{address}/{mask}"')
    parsed = _address(address)
    if parsed is None:
        raise TableSyntaxError(f'bad network value in "{address}/{mask}"')
    network = ipaddress.ip_network(f"{parsed}/{int(mask)}", strict=False)
    if network.network_address != parsed:
        raise TableSyntaxError(f'non-null host address bits in "{address}/{mask}", perhaps '
                               f'you should use "{network}" instead')
    return network


def _cidrPattern(text: str) -> Tuple[bool, str]:
    negated, index = False, 0
    while index < len(text) and (text[index] == "!" or text[index].isspace()):
        negated ^= text[index] == "!"
        index += 1
    return negated, text[index:]


class _NetworkCondition(Condition):
    __slots__ = ()

    def holds(self, key: Any) -> bool:
        return _within(key, self.pattern) != self.negated


@implementer(ILookupTable, IOwnedTable)
class CIDRTable:
    """
    C{cidr:/path}: C{network/prefix result} (or a bare address) lines,
    IPv4 and IPv6, C{!network} for addresses outside it, and
    C{if}/C{endif} blocks.  Keys that are not addresses match nothing.
    """

    def __init__(self, path: str) -> None:
        self.source = ruleSource("cidr", path, self._parse)

    def _parse(self, text: str, skipped: Skipped) -> list:
        rules = []
        stack: List[Tuple[int, _NetworkCondition]] = []
        for number, line in logicalLines(text):
            try:
                word = line[:5].lower()
                if word.startswith("if") and not line[2:3].isalnum():
                    negated, pattern = _cidrPattern(line[2:])
                    if not pattern:
                        raise TableSyntaxError("no address pattern")
                    stack.append((number, _NetworkCondition(
                        negated, parseNetwork(pattern.strip()))))
                    continue
                if word == "endif" and not line[5:6].isalnum():
                    if line[5:].strip():
                        raise TableSyntaxError("garbage after ENDIF")
                    if not stack:
                        raise TableSyntaxError("ENDIF without IF")
                    stack.pop()
                    continue
                negated, rest = _cidrPattern(line)
                words = rest.split(None, 1)
                pattern, value = words[0] if words else "", words[1].strip() if len(words) > 1 \
                    else ""
                if not pattern:
                    raise TableSyntaxError("no address pattern")
                network = parseNetwork(pattern)
                if not value:
                    raise TableSyntaxError("no lookup result")
                rules.append((tuple(c for _, c in stack), _NetworkCondition(negated, network),
                              value))
            except TableSyntaxError as e:
                skipped(number, f"{e}: skipping this line")
        for number, _ in stack:
            skipped(number, "IF has no matching ENDIF")
        return rules

    def owner(self) -> Optional[int]:
        return self.source.owner()

    def get(self, key: str) -> Optional[str]:
        address = _address(key)
        if address is None:
            return None
        for conditions, rule, result in self.source.rules():
            if all(c.holds(address) for c in conditions) and rule.holds(address):
                return result
        return None


def _within(address, network) -> bool:
    return address.version == network.version and address in network
