"""
What the queue manager is configured to do, read once from main.cf.
The per-transport limits (C{<transport>_destination_concurrency_limit}
and the rest) are looked up per transport, by L{tmta.qmgr.transports}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet


@dataclass(frozen=True)
class QmgrSettings:
    """
    The parameters qmgr(8) obeys.

    @ivar senderDependent: whether the next hop depends on the sender
        too (C{sender_dependent_relayhost_maps} is set), so that the
        resolver is asked with it.
    """

    activeLimit: int
    recipientLimit: int
    senderDependent: bool
    runDelay: float
    deferTransports: FrozenSet[str]
    verifyPendingLimit: int
    minimalBackoff: float
    maximalBackoff: float
    queueLifetime: float
    bounceLifetime: float
    softBounce: bool
    delayWarning: float
    verifyService: str
    ipcIdle: float
    defaultProcessLimit: int
    #: C{default_filter_nexthop}: where a content filter without a next
    #: hop sends mail (empty: the recipient's domain).
    defaultFilterNexthop: str = ""
    myhostname: str = "localhost"

    @classmethod
    def fromConfig(cls, config) -> "QmgrSettings":
        """
        Read the settings from main.cf.
        """
        return cls(
            activeLimit=config.getInt("qmgr_message_active_limit"),
            recipientLimit=config.getInt("qmgr_message_recipient_limit"),
            senderDependent=bool(config.get("sender_dependent_relayhost_maps").strip()
                                 or config.get("sender_dependent_default_transport_maps").strip()),
            runDelay=config.getTime("queue_run_delay"),
            deferTransports=frozenset(config.getList("defer_transports")),
            verifyPendingLimit=config.getInt("address_verify_pending_request_limit"),
            minimalBackoff=config.getTime("minimal_backoff_time"),
            maximalBackoff=config.getTime("maximal_backoff_time"),
            queueLifetime=config.getTime("maximal_queue_lifetime"),
            bounceLifetime=config.getTime("bounce_queue_lifetime"),
            softBounce=config.getBool("soft_bounce"),
            delayWarning=config.getTime("delay_warning_time"),
            verifyService=config.get("address_verify_service_name") or "verify",
            ipcIdle=config.getTime("ipc_idle"),
            defaultProcessLimit=config.getInt("default_process_limit"),
            defaultFilterNexthop=config.get("default_filter_nexthop").strip(),
            myhostname=config.get("myhostname"),
        )
