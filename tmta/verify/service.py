"""
The verify daemon: answers queries from the cache, sends probes
through cleanup, and records what the queue manager reports of them.
"""

from __future__ import annotations

import string
from typing import Optional

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.protocol import Factory

from tmta.cleanup.client import CleanupClient, connectCleanup
from tmta.logging import Logger
from tmta.queue.qfile import PROBE_ATTRIBUTE
from tmta.verify.cache import AddressCache, CacheTimes, openStore
from tmta.verify.commands import VerifyQuery, VerifyUpdate
from tmta.wire import ServiceAMP

log = Logger()

_DIGITS = string.digits + string.ascii_lowercase


def probeSender(config, now: float) -> str:
    """
    The envelope sender of probes: C{address_verify_sender} (the null
    sender for C{<>} or nothing), with a part that changes every
    C{address_verify_sender_ttl} added to its local part when that is
    set, for sites that must not see the same probe sender for long.
    Unqualified, cleanup qualifies it with C{$myorigin}.

    @raise ValueError: a sender that cannot be an address.
    """
    sender = config.get("address_verify_sender").strip()
    if sender in ("", "<>"):
        return ""
    if sender.startswith("@") or sender.endswith("@"):
        raise ValueError(f"address_verify_sender = {sender}: must not start or end with '@'")
    ttl = config.getTime("address_verify_sender_ttl")
    if ttl > 0:
        epoch, stamp = int(now // ttl), ""
        while True:
            epoch, digit = divmod(epoch, 31)
            stamp = _DIGITS[digit] + stamp
            if not epoch:
                break
        local, at, domain = sender.partition("@")
        sender = f"{local}{stamp}{at}{domain}"
    return sender


class VerifyProtocol(ServiceAMP):
    def __init__(self, verifier: "Verifier") -> None:
        super().__init__()
        self.verifier = verifier

    @VerifyQuery.responder
    def query(self, address: str):
        status, text = self.verifier.query(address)
        return {"status": status, "text": text}

    @VerifyUpdate.responder
    def update(self, address: str, status: int, text: str):
        self.verifier.update(address, status, text)
        return {}


class Verifier:
    """
    The cache and the probes it asks for.

    @param post: C{post(sender, attributes, recipients, data)} queues a
        message and returns a Deferred firing with cleanup's answer (as
        L{CleanupClient.post}).
    """

    def __init__(self, cache: AddressCache, post, config, clock) -> None:
        self.cache = cache
        self.post = post
        self.config = config
        self.clock = clock

    def query(self, address: str):
        status, text, probe = self.cache.query(address)
        if probe:
            defer.Deferred.fromCoroutine(self.probe(address))
        return status, text

    def update(self, address: str, status: int, text: str) -> None:
        self.cache.update(address, status, text)

    async def probe(self, address: str) -> Optional[str]:
        """
        Queue a probe for C{address}.  Probes carry no text: they are
        never delivered, deferred or returned.

        @return: the probe's queue id, or C{None} when cleanup did not
            take it (logged; the next query after L{PROBE_TTL} tries
            again).
        """
        try:
            sender = probeSender(self.config, self.clock.seconds())
            answer = await self.post(sender, {"origin": "verify", "protocol": "local",
                                              PROBE_ATTRIBUTE: "yes"},
                                     [(address, address)], b"")
        except Exception as e:
            log.warn("cannot send an address verification probe for <{address}>: {error}",
                     address=address, error=e)
            return None
        if answer["code"] != 250:
            log.warn("address verification probe for <{address}> refused: {code} {reason}",
                     address=address, code=answer["code"], reason=answer["reason"])
            return None
        return answer["queue_id"]


class VerifyService(Service):
    def __init__(self, context) -> None:
        self.context = context
        config = context.config
        self.reactor = context.reactor
        try:
            store = openStore(config.get("address_verify_map"), self.reactor)
        except ValueError as e:
            from tmta.config import ConfigError

            raise ConfigError(None, None, str(e))
        self.store = store
        cleanup = CleanupClient(connectCleanup(context),
                                self.reactor, idle=config.getTime("ipc_idle"))
        self.verifier = Verifier(AddressCache(store, CacheTimes.fromConfig(config), self.reactor),
                                 cleanup.post, config, self.reactor)
        self.interval = config.getTime("address_verify_cache_cleanup_interval")
        self._cleaning: Optional[task.LoopingCall] = None

    def startService(self) -> None:
        super().startService()
        if self.interval > 0:
            self._cleaning = task.LoopingCall(self._clean)
            self._cleaning.clock = self.reactor
            self._cleaning.start(self.interval, now=False)
        self.context.listen(Factory.forProtocol(lambda: VerifyProtocol(self.verifier)))

    def _clean(self) -> None:
        removed = self.verifier.cache.clean()
        if removed:
            log.info("address verification cache: {removed} expired entries removed",
                     removed=removed)

    def stopService(self):
        if self._cleaning is not None and self._cleaning.running:
            self._cleaning.stop()
        super().stopService()
        return self.store.close()


def makeVerifyService(context) -> VerifyService:
    return VerifyService(context)
