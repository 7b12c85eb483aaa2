"""
Network lists: C{mynetworks} and the like, as smtpd and cleanup read
them.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import List

from tmta.logging import Logger

from tmta.tables import openTables

log = Logger()


def parseNetworks(items: List[str]) -> list:
    """
    Parse C{mynetworks}: CIDR blocks and addresses, IPv6 optionally in
    brackets (C{[::1]/128}), and tables (C{cidr:/etc/postfix/network},
    looked up by the client's address).  A table that cannot be opened
    is warned about and trusts nobody.
    """
    networks: list = []
    for item in items:
        if ":" in item and item.split(":", 1)[0].isalnum() and not item.startswith("["):
            networks += openTables(item)
            continue
        text = item.replace("[", "").replace("]", "")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            log.warn("mynetworks: bad network {item} ignored", item=item)
    return networks


@functools.lru_cache(maxsize=1024)
def _clientIP(address: str):
    # Parsing an address costs more than the rest of a look-up, and the
    # same clients come back: the parsed (immutable) addresses are kept.
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def inNetworks(address: str, networks) -> bool:
    try:
        ip = _clientIP(address)
    except ValueError:
        return False
    for net in networks:
        if isinstance(net, ipaddress._BaseNetwork):
            if ip.version == net.version and ip in net:
                return True
        elif net.get(str(ip)) is not None:
            return True
    return False


def _boundHere(ip) -> bool:
    """
    Whether C{ip} is one of this host's addresses (a socket can be bound
    to it).
    """
    import socket

    try:
        probe = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                              socket.SOCK_DGRAM)
        try:
            probe.bind((str(ip), 0))
            return True
        finally:
            probe.close()
    except OSError:
        return False


def isOwnAddress(address: str, config=None) -> bool:
    """
    Whether a client connected from an address this MTA receives mail
    on: one of C{inet_interfaces} (with C{all}, any of this host's
    addresses; C{loopback-only}, the loopback addresses), as Postfix's
    C{permit_inet_interfaces} decides.  Without C{config}, any of this
    host's addresses.
    """
    try:
        ip = _clientIP(address)
    except ValueError:
        return False
    interfaces = config.getList("inet_interfaces") if config is not None else ["all"]
    for item in interfaces:
        item = item.lower()
        if item == "all":
            if ip.is_loopback or _boundHere(ip):
                return True
        elif item in ("loopback-only", "localhost"):
            if ip.is_loopback:
                return True
        else:
            try:
                if _clientIP(item.strip("[]")) == ip:
                    return True
            except ValueError:
                continue  # a host name: not resolved here, so it permits nobody
    return False
