"""
Network lists: C{mynetworks} and the like, as smtpd and cleanup read
them.
"""

from __future__ import annotations

from typing import List

from tmta.logging import Logger
from tmta.tables import TableLookupError
from tmta.tables.matchlist import MatchList
from tmta.tables.matchlist import clientIP as _clientIP

log = Logger()


def parseNetworks(items: List[str], name: str = "mynetworks") -> MatchList:
    """
    Parse C{mynetworks} or another address list: addresses, networks
    (IPv6 in brackets, C{[::1]/128}), C{/file/name} and tables
    (C{cidr:/etc/postfix/network}, looked up by the client's address),
    as Postfix's match lists read them.
    """
    return MatchList(name, items, parent=True, addresses=True)


def inNetworks(address: str, networks: MatchList, failing: bool = False) -> bool:
    """
    Whether C{address} is in an address list.

    @param failing: the answer when the list cannot be consulted (a
        table or file that fails): C{False} for an exemption, so that a
        broken list exempts nobody.
    """
    try:
        return networks.matchAddress(address)
    except TableLookupError as e:
        log.warn("{name}: {error}", name=networks.name, error=str(e))
        return failing


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


def isOwnAddress(address: str, config=None, proxy: bool = False) -> bool:
    """
    Whether a client connected from an address this MTA receives mail
    on: one of C{inet_interfaces} (with C{all}, any of this host's
    addresses; C{loopback-only}, the loopback addresses) of a protocol
    C{inet_protocols} enables, as Postfix's C{permit_inet_interfaces}
    decides.  Without C{config}, any of this host's addresses.

    @param proxy: count C{proxy_interfaces} too (whether an address
        literal names this host).
    """
    try:
        ip = _clientIP(address)
    except ValueError:
        return False
    if config is not None:
        protocols = {p.lower() for p in config.getList("inet_protocols")}
        if "all" not in protocols and f"ipv{ip.version}" not in protocols:
            return False
    interfaces = config.getList("inet_interfaces") if config is not None else ["all"]
    if proxy and config is not None:
        interfaces = interfaces + config.getList("proxy_interfaces")
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
