"""
What an smtp or lmtp delivery agent is configured to do, read once from
main.cf (the C{smtp_*} parameters, or their C{lmtp_*} twins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Tuple

from tmta.smtp.transaction import Timeouts


@dataclass(frozen=True)
class SMTPClientSettings:
    """
    The parameters smtp(8) obeys.

    @ivar skip5xxGreeting: whether a server greeting with 5xx is skipped
        for the next (C{smtp_skip_5xx_greeting = yes}) or refuses the
        mail for good.
    @ivar cacheOnDemand: whether sessions are kept for reuse whenever a
        destination has more mail (C{smtp_connection_cache_on_demand});
        else only for C{cacheDestinations}.
    @ivar reportProtocol: whether a session in which the server broke
        the protocol is reported to C{errorRecipient} (C{protocol} in
        C{notify_classes}).
    """

    lmtp: bool
    heloName: str
    myhostname: str
    timeouts: Timeouts
    connectTimeout: float
    mxSessionLimit: int
    fallbackRelays: Tuple[str, ...]
    reportProtocol: bool
    errorRecipient: str
    skip5xxGreeting: bool
    cacheOnDemand: bool
    cacheDestinations: FrozenSet[str]
    cacheIdle: float
    cacheLifetime: float
    bindAddress: str
    bindAddress6: str
    #: C{smtp_send_xforward_command}: tell a server that offers XFORWARD
    #: (a content filter's) of the message's original client.
    sendXforward: bool = False

    @property
    def prefix(self) -> str:
        """
        C{lmtp} or C{smtp}: how this agent's parameters begin.
        """
        return "lmtp" if self.lmtp else "smtp"

    @classmethod
    def fromConfig(cls, config, lmtp: bool = False) -> "SMTPClientSettings":
        """
        Read the settings from main.cf.
        """
        prefix = "lmtp" if lmtp else "smtp"
        hello = "lmtp_lhlo_timeout" if lmtp else "smtp_helo_timeout"
        return cls(
            lmtp=lmtp,
            heloName=config.get("lmtp_lhlo_name" if lmtp else "smtp_helo_name"),
            myhostname=config.get("myhostname").lower(),
            timeouts=Timeouts(
                # The greeting shares the HELO/LHLO limit, as in Postfix.
                greeting=config.getTime(hello),
                helo=config.getTime(hello),
                mail=config.getTime(f"{prefix}_mail_timeout"),
                rcpt=config.getTime(f"{prefix}_rcpt_timeout"),
                dataInit=config.getTime(f"{prefix}_data_init_timeout"),
                dataDone=config.getTime(f"{prefix}_data_done_timeout"),
                quit=config.getTime(f"{prefix}_quit_timeout"),
                starttls=config.getTime(f"{prefix}_starttls_timeout"),
            ),
            connectTimeout=config.getTime(f"{prefix}_connect_timeout") or 30,
            mxSessionLimit=config.getInt(f"{prefix}_mx_session_limit"),
            fallbackRelays=() if lmtp else tuple(config.getList("smtp_fallback_relay")),
            reportProtocol="protocol" in {c.lower() for c in config.getList("notify_classes")},
            errorRecipient=config.get("error_notice_recipient") or "postmaster",
            skip5xxGreeting=lmtp or config.getBool("smtp_skip_5xx_greeting"),
            cacheOnDemand=config.getBool(f"{prefix}_connection_cache_on_demand"),
            cacheDestinations=frozenset(
                d.lower() for d in config.getList(f"{prefix}_connection_cache_destinations")),
            cacheIdle=config.getTime(f"{prefix}_connection_cache_time_limit"),
            cacheLifetime=config.getTime(f"{prefix}_connection_reuse_time_limit"),
            bindAddress=config.get(f"{prefix}_bind_address").strip(),
            bindAddress6=config.get(f"{prefix}_bind_address6").strip(),
            sendXforward=config.getBool(f"{prefix}_send_xforward_command"),
        )
