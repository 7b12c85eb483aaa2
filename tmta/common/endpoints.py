"""
Client endpoints for the services tmta talks to by address (milters,
before-queue filters).
"""

from __future__ import annotations

import ipaddress

from twisted.internet import endpoints


def tcpClientEndpoint(reactor, host: str, port: int, timeout: float = 30):
    """
    An endpoint to C{host:port}: straight to an IP address when C{host}
    is one -- Twisted's C{HostnameEndpoint} would resolve it in a thread
    and race address families first, which costs a connection made per
    SMTP session more than the rest of its setting up -- else through
    name resolution.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return endpoints.HostnameEndpoint(reactor, host, port, timeout=timeout)
    if address.version == 6:
        return endpoints.TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
