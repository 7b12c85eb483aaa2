"""
DNS lists (DNSBL, DNSWL) as Postfix names them: the name a client
address is looked up by under a list's zone, and the result filter a
list entry may carry (C{zone=127.0.0.2}, C{zone=127.0.0.[2..11]},
C{zone=127.0.0.[2;4;8]}).  smtpd's C{reject_rbl_client} and its kin,
and postscreen's C{postscreen_dnsbl_sites}, read them alike.
"""

from __future__ import annotations

import ipaddress
import re
from typing import List, Optional, Tuple

_OCTET = re.compile(r"^(\d{1,3})$|^\[(\d{1,3})\.\.(\d{1,3})\]$|^\[([\d;]+)\]$")


def parseFilter(spec: str) -> List[List[Tuple[int, int]]]:
    """
    A result filter (C{127.0.0.[2..11]}) as allowed ranges per octet.

    @raise ValueError: not one.
    """
    octets = re.findall(r"\[[^\]]*\]|[^.]+", spec)
    if len(octets) != 4 or ".".join(octets) != spec:
        raise ValueError(f"bad DNS list result filter {spec!r}")
    ranges = []
    for octet in octets:
        match = _OCTET.match(octet)
        if not match:
            raise ValueError(f"bad DNS list result filter {spec!r}")
        if match.group(1):
            ranges.append([(int(match.group(1)),) * 2])
        elif match.group(2):
            ranges.append([(int(match.group(2)), int(match.group(3)))])
        else:
            ranges.append([(int(n),) * 2 for n in match.group(4).split(";") if n])
    return ranges


def filterMatches(address: str, ranges) -> bool:
    octets = [int(o) for o in address.split(".")]
    return all(any(low <= o <= high for low, high in allowed)
               for o, allowed in zip(octets, ranges))


def reversedAddress(address: str) -> Optional[str]:
    """
    An IP address as a DNS list looks it up (C{1.2.0.192} for
    C{192.0.2.1}; nibbles for IPv6), or C{None} for what is not one.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 4:
        return ".".join(reversed(str(ip).split(".")))
    return ".".join(reversed(ip.exploded.replace(":", "")))


__all__ = ["filterMatches", "parseFilter", "reversedAddress"]
