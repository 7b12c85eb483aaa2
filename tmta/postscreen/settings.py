"""
What postscreen is configured to do, read once from main.cf (the
C{postscreen_*} parameters, with Postfix's defaults and its older names
for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from tmta.config import ConfigError
from tmta.mail.dnslists import parseFilter
from tmta.tables import openTables
from tmta.tables.networks import parseNetworks
from tmta.tables.remote import isRemote

#: What a failed test does: nothing but log (C{ignore}), refuse every
#: recipient and let the client try again later (C{enforce}), or hang
#: up at once (C{drop}).
ACTIONS = ("ignore", "enforce", "drop")

#: The tests, in the order of Postfix's cache records.
PREGREET, DNSBL, PIPELINING, NON_SMTP, BARE_NEWLINE = TESTS = (
    "pregreet", "dnsbl", "pipelining", "non_smtp_command", "bare_newline")
EARLY_TESTS = (PREGREET, DNSBL)
DEEP_TESTS = (PIPELINING, NON_SMTP, BARE_NEWLINE)


@dataclass(frozen=True)
class DNSListSite:
    """
    One C{postscreen_dnsbl_sites} entry: C{zone[=filter][*weight]}; a
    negative weight allows rather than blocks.
    """

    zone: str
    filter: Optional[list]
    weight: int


def parseSite(item: str) -> DNSListSite:
    """
    @raise ValueError: a bad filter or weight.
    """
    site, star, weight = item.partition("*")
    if star:
        try:
            value = int(weight)
        except ValueError:
            raise ValueError(f"bad DNSBL weight factor {weight!r} in {item!r}") from None
    else:
        value = 1
    zone, _, spec = site.partition("=")
    zone = zone.strip(".").lower()
    if not zone:
        raise ValueError(f"no DNS list domain in {item!r}")
    return DNSListSite(zone, parseFilter(spec) if spec else None, value)


def _action(config, name: str) -> str:
    value = config.get(name).strip().lower()
    if value not in ACTIONS:
        raise ConfigError(config.path, config.lineOf(name),
                          f"{name} = {value}: not one of {', '.join(ACTIONS)}")
    return value


@dataclass
class PostscreenSettings:
    """
    The parameters postscreen(8) obeys.

    @ivar actions: each test's action, by test name.
    @ivar ttls: for how long each test passed is not run again.
    @ivar enabled: the tests that run.
    """

    myhostname: str
    greetBanner: str
    smtpdBanner: str
    greetWait: float
    dnsblSites: List[DNSListSite]
    dnsblThreshold: int
    allowlistThreshold: int
    dnsblTimeout: float
    dnsblMinTTL: int
    dnsblMaxTTL: int
    denylistAction: str
    actions: dict
    ttls: dict
    enabled: Tuple[str, ...]
    commandTimeLimit: float
    commandCountLimit: int
    connectionCountLimit: int
    preQueueLimit: int
    cacheMap: str
    cacheRetention: int
    messageSizeLimit: int
    vrfyDisabled: bool
    softBounce: bool
    smtpdService: str
    forbiddenCommands: Tuple[str, ...]
    #: C{postscreen_access_list}: C{permit_mynetworks} and tables, in order.
    accessList: List[Tuple[str, object]] = field(default_factory=list)
    #: Whether a table of the access list is on another server, so that
    #: it is consulted in a lookup thread.
    accessListRemote: bool = False
    #: C{postscreen_dnsbl_reply_map}: the name a DNS list is given in
    #: replies (one whose name holds a key need not show it).
    replyMap: List = field(default_factory=list)

    @classmethod
    def fromConfig(cls, config) -> "PostscreenSettings":
        """
        @raise ConfigError: a value postscreen cannot use.
        @raise ValueError: a bad DNS list entry.
        """
        sites = [parseSite(item) for item in config.getList("postscreen_dnsbl_sites")]
        greetBanner = config.get("postscreen_greet_banner")
        enabled = []
        if greetBanner.strip():
            enabled.append(PREGREET)
        if sites:
            enabled.append(DNSBL)
        for test, parameter in ((PIPELINING, "postscreen_pipelining_enable"),
                                (NON_SMTP, "postscreen_non_smtp_command_enable"),
                                (BARE_NEWLINE, "postscreen_bare_newline_enable")):
            if config.getBool(parameter):
                enabled.append(test)
        actions = {
            PREGREET: _action(config, "postscreen_greet_action"),
            DNSBL: _action(config, "postscreen_dnsbl_action"),
            PIPELINING: _action(config, "postscreen_pipelining_action"),
            NON_SMTP: _action(config, "postscreen_non_smtp_command_action"),
            BARE_NEWLINE: _action(config, "postscreen_bare_newline_action"),
        }
        ttls = {
            PREGREET: int(config.getTime("postscreen_greet_ttl")),
            PIPELINING: int(config.getTime("postscreen_pipelining_ttl")),
            NON_SMTP: int(config.getTime("postscreen_non_smtp_command_ttl")),
            BARE_NEWLINE: int(config.getTime("postscreen_bare_newline_ttl")),
        }
        networks = parseNetworks(config.getList("mynetworks"))
        accessList: List[Tuple[str, object]] = []
        accessListRemote = False
        for item in config.getList("postscreen_access_list"):
            if item.lower() == "permit_mynetworks":
                accessList.append(("mynetworks", networks))
            elif ":" in item:
                tables = openTables(item)
                accessList.append(("table", tables))
                accessListRemote = accessListRemote or isRemote(tables)
            else:
                raise ConfigError(config.path, config.lineOf("postscreen_access_list"),
                                  f"postscreen_access_list: unknown element {item!r}: "
                                  "permit_mynetworks or type:table")
        return cls(
            myhostname=config.get("myhostname"),
            greetBanner=greetBanner,
            smtpdBanner=config.get("smtpd_banner"),
            greetWait=config.getTime("postscreen_greet_wait"),
            dnsblSites=sites,
            dnsblThreshold=config.getInt("postscreen_dnsbl_threshold"),
            allowlistThreshold=config.getInt("postscreen_dnsbl_allowlist_threshold"),
            dnsblTimeout=config.getTime("postscreen_dnsbl_timeout"),
            dnsblMinTTL=int(config.getTime("postscreen_dnsbl_min_ttl")),
            dnsblMaxTTL=int(config.getTime("postscreen_dnsbl_max_ttl")),
            denylistAction=_action(config, "postscreen_denylist_action"),
            actions=actions,
            ttls=ttls,
            enabled=tuple(enabled),
            commandTimeLimit=config.getTime("postscreen_command_time_limit"),
            commandCountLimit=config.getInt("postscreen_command_count_limit"),
            connectionCountLimit=config.getInt("postscreen_client_connection_count_limit"),
            preQueueLimit=config.getInt("postscreen_pre_queue_limit"),
            cacheMap=config.get("postscreen_cache_map"),
            cacheRetention=int(config.getTime("postscreen_cache_retention_time")),
            messageSizeLimit=config.getInt("message_size_limit"),
            vrfyDisabled=config.getBool("postscreen_disable_vrfy_command"),
            softBounce=config.getBool("soft_bounce"),
            smtpdService=config.get("smtpd_service_name") or "smtpd",
            forbiddenCommands=tuple(w.upper() for w in
                                    config.getList("postscreen_forbidden_commands")
                                    if w.isalpha()),
            accessList=accessList,
            accessListRemote=accessListRemote,
            replyMap=openTables(config.get("postscreen_dnsbl_reply_map")),
        )
