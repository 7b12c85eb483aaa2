"""
Postfix's restriction lists as far as smtpd implements them:
C{smtpd_relay_restrictions} and C{smtpd_recipient_restrictions}.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import List, Optional, Tuple

from twisted.logger import Logger

from tmta.config import splitList

log = Logger()

PERMIT, REJECT, DEFER, DUNNO = "permit", "reject", "defer", "dunno"


def parseNetworks(items: List[str]) -> List[ipaddress._BaseNetwork]:
    """
    Parse C{mynetworks}: CIDR blocks and addresses, IPv6 optionally in
    brackets (C{[::1]/128}).  Table entries are not supported and are
    warned about.
    """
    networks = []
    for item in items:
        if ":" in item and item.split(":", 1)[0].isalpha() and not item.startswith("["):
            log.warn("mynetworks: table {item} not supported, ignored", item=item)
            continue
        text = item.replace("[", "").replace("]", "")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            log.warn("mynetworks: bad network {item} ignored", item=item)
    return networks


def inNetworks(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


@dataclass
class RecipientContext:
    """
    What the restrictions at RCPT look at.
    """

    clientAddress: str
    recipient: str
    addressClass: str  # local, relay or default (from trivial-rewrite)
    saslAuthenticated: bool = False


class RestrictionList:
    """
    One restriction list, evaluated left to right until a restriction
    decides.
    """

    def __init__(self, name: str, value: str, networks, relayCode: int, rejectCode: int) -> None:
        self.name = name
        self.items = splitList(value)
        self.networks = networks
        self.relayCode = relayCode
        self.rejectCode = rejectCode
        for item in self.items:
            if item not in _KNOWN:
                log.warn("{name}: unknown restriction {item}", name=name, item=item)

    def evaluate(self, context: RecipientContext) -> Tuple[str, Optional[str]]:
        """
        @return: C{(action, reply)}; reply is the SMTP reply for reject
            and defer.
        """
        for item in self.items:
            result = self._one(item, context)
            if result[0] != DUNNO:
                return result
        return DUNNO, None

    def _one(self, item: str, c: RecipientContext) -> Tuple[str, Optional[str]]:
        unauthDestination = c.addressClass not in ("local", "relay")
        if item == "permit_mynetworks":
            return (PERMIT, None) if inNetworks(c.clientAddress, self.networks) else (DUNNO, None)
        if item == "permit_sasl_authenticated":
            return (PERMIT, None) if c.saslAuthenticated else (DUNNO, None)
        if item in ("reject_unauth_destination", "defer_unauth_destination"):
            if not unauthDestination:
                return DUNNO, None
            if item.startswith("defer"):
                return DEFER, f"454 4.7.1 <{c.recipient}>: Relay access denied"
            return REJECT, f"{self.relayCode} 5.7.1 <{c.recipient}>: Relay access denied"
        if item == "permit_auth_destination":
            return (DUNNO, None) if unauthDestination else (PERMIT, None)
        if item == "permit":
            return PERMIT, None
        if item == "reject":
            return REJECT, f"{self.rejectCode} 5.7.1 <{c.recipient}>: Recipient address rejected: Access denied"
        if item == "defer":
            return DEFER, f"450 4.7.1 <{c.recipient}>: Recipient address rejected: Access denied"
        if item in ("dunno", "reject_unlisted_recipient"):
            # reject_unlisted_recipient is applied after the lists in any
            # case (smtpd_reject_unlisted_recipient = yes).
            return DUNNO, None
        log.warn("{name}: unknown restriction {item}: deferring", name=self.name, item=item)
        return DEFER, "451 4.3.5 Server configuration error"


_KNOWN = {
    "permit_mynetworks",
    "permit_sasl_authenticated",
    "reject_unauth_destination",
    "defer_unauth_destination",
    "permit_auth_destination",
    "permit",
    "reject",
    "defer",
    "dunno",
    "reject_unlisted_recipient",
}
