"""
The postscreen service: one process in front of smtpd on port 25
(Debian's C{smtp inet n - y - 1 postscreen}), which screens every client
(L{tmta.postscreen.session}) and hands those that pass to smtpd through
its C{pass} service (C{smtpd pass - - y - - smtpd}): the connection's
descriptor goes over the UNIX socket C{private/smtpd}, and smtpd serves
it as if it had accepted it.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from twisted.application.service import Service
from twisted.internet import task
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone

from tmta.logging import Logger
from tmta.mail.proxyprotocol import handOverRecord, upstreamProxy
from tmta.postscreen.cache import ClientCache
from tmta.postscreen.session import PostscreenSession
from tmta.postscreen.settings import PostscreenSettings
from tmta.tables.writable import openWritable
from tmta.wire.connect import socketPath

log = Logger()

#: Settings that ask for what postscreen does not do; unset, or at their
#: defaults, they change nothing.
_NOT_IMPLEMENTED = {
    "postscreen_allowlist_interfaces": (
        "static:all", "only static:all is implemented: clients would be allowlisted on "
        "interfaces where they should not be"),
}


def configurationProblems(config, entry) -> List[str]:
    """
    What stops a postscreen service from starting: a setting it cannot
    read or honour (L{tmta.interfaces.IComponent.configurationProblems}).
    """
    from tmta.config import ConfigError
    from tmta.config.safety import proxyWriteProblem
    from tmta.tables.writable import WRITABLE_TYPES

    problems = []
    try:
        PostscreenSettings.fromConfig(config)
        upstreamProxy(config, "postscreen")
    except (ConfigError, ValueError) as e:
        problems.append(getattr(e, "reason", None) or str(e))
    for name, (default, why) in _NOT_IMPLEMENTED.items():
        value = config.get(name).strip()
        if value and value != default:
            problems.append(f"{name} = {value}: {why}")
    problem = proxyWriteProblem(config, "postscreen_cache_map")
    if problem is not None:
        problems.append(problem)
    spec = config.get("postscreen_cache_map").strip()
    if spec.startswith("proxy:"):
        spec = spec[len("proxy:"):]
    kind, _, path = spec.partition(":")
    if spec and (kind.lower() not in WRITABLE_TYPES or not path.startswith("/")):
        problems.append(f"postscreen_cache_map = {spec}: the cache is kept in a "
                        f"{', '.join(WRITABLE_TYPES)} table at an absolute path, or in "
                        "memory (empty)")
    return problems


class _HandOver(Protocol):
    """
    One hand-over to smtpd: the client connection's descriptor, with a
    byte to carry it.
    """

    transport: Any

    def __init__(self, session: PostscreenSession) -> None:
        self.session = session
        self.sent = False

    def connectionMade(self) -> None:
        client = self.session.transport
        self.transport.sendFileDescriptor(client.fileno())
        # With the client's addresses when a PROXY header gave them.
        self.transport.write(handOverRecord(getattr(client, "proxied", None)))
        self.sent = True
        self.transport.loseConnection()

    def connectionLost(self, reason=connectionDone) -> None:
        # smtpd holds the connection now (or it is gone): let go of this
        # end without shutting the connection down under smtpd.
        client = self.session.transport
        client._shouldShutdown = False  # type: ignore[attr-defined]
        client.loseConnection()


class _HandOverFactory(ClientFactory):
    noisy = False

    def __init__(self, session: PostscreenSession) -> None:
        self.session = session

    def buildProtocol(self, addr):
        return _HandOver(self.session)

    def clientConnectionFailed(self, connector, reason) -> None:
        session = self.session
        log.warn("cannot hand {client} over to smtpd: {error}", client=session.where(),
                 error=reason.getErrorMessage())
        session.transport.write(b"421 4.3.2 All server ports are busy\r\n")
        session.transport.loseConnection()


class Screen:
    """
    What every client of the postscreen process shares: the settings,
    the cache, the DNS resolver, and the count of clients by address.
    """

    def __init__(self, reactor, settings: PostscreenSettings, cache: ClientCache, resolver,
                 smtpdSocket: str) -> None:
        self.reactor = reactor
        self.settings = settings
        self.cache = cache
        self.resolver = resolver
        self.smtpdSocket = smtpdSocket
        self.clients: Dict[str, int] = {}
        #: Clients being screened, not handed over at once.
        self.screening = 0

    def connected(self, address: str) -> int:
        """
        A client came from C{address}.

        @return: how many connections it has now.
        """
        self.clients[address] = self.clients.get(address, 0) + 1
        return self.clients[address]

    def disconnected(self, session: PostscreenSession) -> None:
        address = getattr(session, "address", None)
        if address is None:
            return
        count = self.clients.get(address, 0) - 1
        if count > 0:
            self.clients[address] = count
        else:
            self.clients.pop(address, None)
        if session.screening:
            session.screening = False
            self.screening -= 1

    def remember(self, address: str, expiry: Dict[str, int]) -> None:
        self.cache.put(address, expiry)

    def handOff(self, session: PostscreenSession) -> None:
        """
        Pass the client's connection to smtpd.
        """
        self.reactor.connectUNIX(self.smtpdSocket, _HandOverFactory(session), timeout=10)


class PostscreenService(Service):
    def __init__(self, context) -> None:
        from twisted.names import client

        self.context = context
        config = context.config
        reactor = context.reactor
        settings = PostscreenSettings.fromConfig(config)
        store = openWritable(config.get("postscreen_cache_map"), reactor,
                             "tmta-postscreen-cache")
        self.cache = ClientCache(store, settings.cacheRetention)
        self.screen = Screen(
            reactor, settings, self.cache, client.createResolver(),
            socketPath(config.get("queue_directory"), settings.smtpdService, private=True))
        self._cleaner = task.LoopingCall(self._clean)
        self._cleaner.clock = reactor
        self._interval = config.getTime("postscreen_cache_cleanup_interval")

    def _clean(self) -> None:
        forgotten = self.cache.clean(int(time.time()))
        if forgotten:
            log.info("cache {name}: {count} stale entries forgotten",
                     name=self.context.config.get("postscreen_cache_map"), count=forgotten)

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: PostscreenSession(self.screen)),
                            upstreamProxy=upstreamProxy(self.context.config, "postscreen"))
        if self._interval > 0:
            self._cleaner.start(self._interval, now=True)

    def stopService(self):
        super().stopService()
        if self._cleaner.running:
            self._cleaner.stop()
        return self.cache.store.close()
