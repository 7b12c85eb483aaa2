"""
Per-client limits across all smtpd processes (Postfix's
C{smtpd_client_*_limit}), counted by the anvil service
(L{tmta.anvil}).

They apply only when master.cf runs anvil, as in Postfix; a limit set
explicitly without anvil stops start-up (L{tmta.config.safety}).  When
anvil cannot be reached, clients are let in and a warning is logged:
a counting service that is down must not stop mail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from twisted.internet import defer

from tmta.anvil.commands import AnvilConnect, AnvilDisconnect, AnvilEvent
from tmta.logging import Logger
from tmta.tables.matchlist import MatchList
from tmta.tables.networks import inNetworks, parseNetworks
from tmta.wire import SharedConnection

log = Logger()

#: Event, its parameter, the reply past the limit and the log's name for it.
_EVENTS = {
    "message": ("smtpd_client_message_rate_limit", "450 4.7.1 Error: too much mail from {a}",
                "Message delivery request rate"),
    "recipient": ("smtpd_client_recipient_rate_limit",
                  "450 4.7.1 Error: too many recipients from {a}", "Recipient address rate"),
    "newtls": ("smtpd_client_new_tls_session_rate_limit",
               "454 4.7.0 Error: too many new TLS sessions from {a}", "New TLS session rate"),
    "auth": ("smtpd_client_auth_rate_limit",
             "450 4.7.1 Error: too many AUTH commands from {a}", "AUTH command rate"),
}


@dataclass
class ClientLimits:
    """
    The limits of one smtpd service, and its connection to anvil.
    """

    service: str
    countLimit: int
    connectionRateLimit: int
    eventLimits: Dict[str, int]
    exceptions: MatchList
    anvil: Any = None
    _unreachable: bool = field(default=False, repr=False)

    @classmethod
    def fromConfig(cls, config, connect, clock, services) -> Optional["ClientLimits"]:
        """
        @param connect: makes a connection to the anvil service.
        @param services: master.cf's entries: without anvil, no limits.
        @return: C{None} when no limit applies.
        """
        if not any(e.command == "anvil" for e in services):
            return None
        events = {event: config.getInt(parameter)
                  for event, (parameter, _, _) in _EVENTS.items()}
        limits = cls(
            service=config.get("service_name") or "smtp",
            countLimit=config.getInt("smtpd_client_connection_count_limit"),
            connectionRateLimit=config.getInt("smtpd_client_connection_rate_limit"),
            eventLimits={e: n for e, n in events.items() if n > 0},
            exceptions=parseNetworks(config.getList("smtpd_client_event_limit_exceptions")),
        )
        if not (limits.countLimit or limits.connectionRateLimit or limits.eventLimits):
            return None
        limits.anvil = SharedConnection(connect, clock, idle=config.getTime("ipc_idle"))
        return limits

    def exempt(self, address: str) -> bool:
        return inNetworks(address, self.exceptions)

    async def _call(self, command, **arguments) -> Optional[dict]:
        try:
            protocol = await self.anvil.acquire()
        except Exception as e:
            self._warn(e)
            return None
        try:
            result = await protocol.callRemote(command, **arguments)
        except Exception as e:
            self._warn(e)
            return None
        finally:
            self.anvil.release(protocol)
        self._unreachable = False
        return result

    def _warn(self, error) -> None:
        if not self._unreachable:
            log.warn("cannot reach the anvil service, client limits not enforced: {error}",
                     error=error)
        self._unreachable = True

    async def connect(self, address: str, client: str, myhostname: str) -> Optional[str]:
        """
        Count a new connection.

        @return: the 421 reply refusing it, or C{None}.
        """
        result = await self._call(AnvilConnect, ident=f"{self.service}:{address}",
                                  address=address)
        if result is None:
            return None
        refusal = f"421 4.7.0 {myhostname} Error: too many connections from {address}"
        if self.countLimit and result["count"] > self.countLimit:
            log.warn("Connection concurrency limit exceeded: {count} from {client} for "
                     "service {service}", count=result["count"], client=client,
                     service=self.service)
            return refusal
        if self.connectionRateLimit and result["rate"] > self.connectionRateLimit:
            log.warn("Connection rate limit exceeded: {rate} from {client} for service "
                     "{service}", rate=result["rate"], client=client, service=self.service)
            return refusal
        return None

    def disconnect(self, address: str) -> None:
        # Nothing waits for the answer; a lost one is undone when the
        # connection to anvil goes.
        defer.Deferred.fromCoroutine(
            self._call(AnvilDisconnect, ident=f"{self.service}:{address}"))

    async def event(self, event: str, address: str, client: str) -> Optional[str]:
        """
        Count a message, recipient, new TLS session or AUTH command.

        @return: the reply refusing it past its limit, or C{None}.
        """
        limit = self.eventLimits.get(event)
        if not limit:
            return None
        result = await self._call(AnvilEvent, ident=f"{self.service}:{address}", event=event,
                                  address=address)
        if result is None or result["rate"] <= limit:
            return None
        _, reply, name = _EVENTS[event]
        log.warn("{name} limit exceeded: {rate} from {client} for service {service}",
                 name=name, rate=result["rate"], client=client, service=self.service)
        return reply.format(a=address)
