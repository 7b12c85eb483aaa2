"""
The master's listening sockets: binding the addresses master.cf names
(C{inet_interfaces} and C{inet_protocols} for a port alone), and
watching them for a service's pool, so that a worker is started when a
client arrives and none is idle.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import List, Optional, Tuple

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tmta.config import ConfigError, MasterEntry, parseInetAddress
from tmta.logging import Logger
from tmta.master.policy import ServicePool
from tmta.master.runtime import LISTEN_BACKLOG

log = Logger()


class ListenError(Exception):
    """
    A listener named in master.cf cannot be bound.
    """


class Listener:
    """
    One listening socket the master holds for a service.

    @ivar key: what identifies the address across a reload.
    """

    def __init__(self, sock: socket.socket, key: Tuple, family: int) -> None:
        self.socket = sock
        self.key = key
        self.family = family

    def fileno(self) -> int:
        return self.socket.fileno()

    @property
    def familyName(self) -> str:
        return {int(socket.AF_INET): "inet", int(socket.AF_INET6): "inet6"}.get(
            self.family, "unix")

    def close(self) -> None:
        self.socket.close()


class ListenerWatcher:
    """
    An C{IReadDescriptor} that tells a service's pool that work arrived
    on a listening socket the master watches.
    """

    def __init__(self, listener: Listener, pool: ServicePool,
                 busyReply: Optional[bytes] = None) -> None:
        self.listener = listener
        self.pool = pool
        self.busyReply = busyReply

    def fileno(self) -> int:
        return self.listener.fileno()

    def doRead(self) -> None:
        if self.pool.answersWhenFull and self.pool.saturated():
            self._turnAway()
            return
        self.pool.workArrived()

    def _turnAway(self) -> None:
        """
        Every worker is busy and no other may start: answer the waiting
        clients the component's busy reply (smtpd's 421) now rather than
        let them hang in the backlog.
        """
        sock = self.listener.socket
        sock.setblocking(False)
        for _ in range(64):
            try:
                client, address = sock.accept()
            except OSError:
                return
            try:
                client.setblocking(False)
                client.send(self.busyReply or b"")
            except OSError:
                pass
            finally:
                client.close()
            log.warn("{service}: all processes busy; turned away a client",
                     service=self.pool.name)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass

    def logPrefix(self) -> str:
        return f"master-watch-{self.pool.name}"


def describe(listener: Listener) -> str:
    kind, host, port = listener.key
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def interfaceAddresses(config) -> List[str]:
    protocols = set(config.getList("inet_protocols"))
    ipv4 = bool(protocols & {"all", "ipv4"})
    ipv6 = bool(protocols & {"all", "ipv6"}) and socket.has_ipv6
    addresses: List[str] = []
    for item in config.getList("inet_interfaces"):
        if item == "loopback-only":
            addresses += (["127.0.0.1"] if ipv4 else []) + (["::1"] if ipv6 else [])
        elif item == "all":
            addresses += (["0.0.0.0"] if ipv4 else []) + (["::"] if ipv6 else [])
        elif item == "localhost":
            addresses.append("127.0.0.1")
        else:
            addresses.append(item.strip("[]"))
    return addresses


def inetKeys(entry: MasterEntry, config) -> List[Tuple]:
    try:
        host, port = parseInetAddress(entry.service)
    except ValueError as e:
        raise ConfigError(config.path, entry.line, str(e))
    hosts = [host] if host is not None else interfaceAddresses(config)
    return [("inet", h, port) for h in hosts]


def bindInet(key: Tuple) -> Listener:
    _, host, port = key
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRNOTAVAIL and host == "::1":
            raise ListenError("cannot bind [::1]: set inet_protocols = ipv4")
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}")
    return Listener(sock, key, family)


def socketMode(entry, component) -> int:
    """
    Who may connect to a service's UNIX socket: anyone for a component
    that says so (showq); for the other public services (cleanup, qmgr,
    pickup), only the mail system, since cleanup believes the envelope
    its clients give it.
    """
    if entry.private or (component is not None and component.worldReachable):
        return 0o666
    return 0o660


def bindUnix(path: str, uid: Optional[int], gid: Optional[int],
              mode: int = 0o666) -> Listener:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        if uid is not None:
            os.chown(path, uid, gid if gid is not None else -1)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {e.strerror or e}")
    return Listener(sock, ("unix", path), socket.AF_UNIX)
