"""
What an smtpd process is configured to do, read once from main.cf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from tmta.mail.receiving import NO_MILTERS, receiveOverrides, receivingAttributes
from tmta.milter.settings import MilterMaps, milterList
from tmta.smtpd.proxy import ProxySettings
from tmta.smtpd.recipients import RecipientTables
from tmta.tables.matchlist import MatchList
from tmta.tables.networks import parseNetworks


def bareNewlineMode(value: str) -> str:
    """
    C{smtpd_forbid_bare_newline} as one of Postfix 3.9's modes
    (C{no} is C{normalize}, C{yes} is C{reject}).

    @raise ValueError: none of them.
    """
    mode = {"no": "normalize", "yes": "reject"}.get(value.strip().lower(),
                                                      value.strip().lower())
    if mode not in ("normalize", "note", "reject"):
        raise ValueError(f"smtpd_forbid_bare_newline = {value}: not normalize, note or reject")
    return mode


@dataclass
class SMTPSettings:
    """
    The parameters an smtpd session obeys, read once per process.
    """

    myhostname: str
    banner: str
    timeout: float
    hardErrorLimit: int
    recipientLimit: int
    messageSizeLimit: int
    lineLengthLimit: int
    heloRequired: bool
    vrfyDisabled: bool
    strictEnvelopes: bool
    recipientDelimiter: str
    queueMinfree: int
    softErrorLimit: int = 10
    recipientOvershootLimit: int = 1000
    errorSleepTime: float = 1.0
    junkCommandLimit: int = 100
    deadline: str = "read"
    minDataRate: int = 500
    #: The restriction lists (L{tmta.smtpd.checking.Restrictions});
    #: C{None}: none apply.
    restrictions: Optional[Any] = None
    #: EHLO keywords not to announce (smtpd_discard_ehlo_keywords),
    #: lower-cased.
    discardEhloKeywords: frozenset = frozenset()
    #: Who is known (L{tmta.smtpd.recipients.RecipientTables}); C{None}:
    #: every recipient is.
    recipientTables: Optional[RecipientTables] = None
    #: The TLS on offer (L{tmta.smtpd.tls.ServerTLS}); C{None}: none.
    tls: Optional[Any] = None
    #: Whether a client that pipelines without leave is cut off
    #: (C{smtpd_forbid_unauth_pipelining}).
    forbidUnauthPipelining: bool = True
    #: C{smtpd_forbid_bare_newline}: C{normalize}, C{note} or C{reject}.
    bareNewline: str = "normalize"
    bareNewlineCode: int = 550
    #: Clients exempt from C{smtpd_forbid_bare_newline}.
    bareNewlineExclusions: Optional[MatchList] = None
    #: Whether SMTPUTF8 (RFC 6531) is offered (C{smtputf8_enable}).
    smtputf8: bool = False
    #: Whether REQUIRETLS (RFC 8689) is offered under TLS
    #: (C{requiretls_enable}).
    requireTLS: bool = False
    #: Per-client limits across processes (L{tmta.smtpd.limits.ClientLimits});
    #: C{None}: none apply.
    limits: Optional[Any] = None
    #: C{notify_classes}, lower-cased.
    notifyClasses: frozenset = frozenset()
    #: Who gets the transcripts (C{error_notice_recipient}).
    errorNoticeRecipient: str = "postmaster"
    #: How AUTH is offered (L{tmta.smtpd.auth.SMTPAuth}); C{None}: not.
    sasl: Optional[Any] = None
    #: Commands that end the session (C{smtpd_forbidden_commands}): a
    #: client talking HTTP, or anything that is not a command word.
    forbiddenCommands: MatchList = field(default_factory=lambda: MatchList(
        "smtpd_forbidden_commands", "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}"))
    #: C{smtpd_milters}, in order (L{tmta.milter.settings.MilterSettings}).
    milters: List[Any] = field(default_factory=list)
    #: The milter macros C{{daemon_name}} and C{v}.
    milterDaemonName: str = ""
    milterVersionMacro: str = ""
    #: C{smtpd_milter_maps} (L{tmta.milter.settings.MilterMaps}), which
    #: choose the milters by client; C{None}: C{smtpd_milters} for all.
    milterMaps: Optional[Any] = None
    #: What every message carries to cleanup beyond its envelope: the
    #: content filter and C{receive_override_options}
    #: (L{tmta.mail.receiving.receivingAttributes}).
    receivingAttributes: Dict[str, str] = field(default_factory=dict)
    #: The before-queue filter (L{tmta.smtpd.proxy.ProxySettings});
    #: C{None}: mail goes to cleanup.
    proxyFilter: Optional[Any] = None
    #: C{smtpd_authorized_xforward_hosts}; C{None}: nobody may XFORWARD.
    xforwardHosts: Optional[MatchList] = None

    @classmethod
    def fromConfig(cls, config, restrictions,
                   recipientTables: Optional[RecipientTables],
                   tls: Optional[Any] = None,
                   sasl: Optional[Any] = None) -> "SMTPSettings":
        overrides = receiveOverrides(config.get("receive_override_options"))
        return cls(
            myhostname=config.get("myhostname"),
            banner=config.get("smtpd_banner"),
            timeout=config.getTime("smtpd_timeout"),
            hardErrorLimit=config.getInt("smtpd_hard_error_limit"),
            recipientLimit=config.getInt("smtpd_recipient_limit"),
            messageSizeLimit=config.getInt("message_size_limit"),
            lineLengthLimit=config.getInt("line_length_limit"),
            heloRequired=config.getBool("smtpd_helo_required"),
            vrfyDisabled=config.getBool("disable_vrfy_command"),
            discardEhloKeywords=frozenset(
                k.lower() for k in config.getList("smtpd_discard_ehlo_keywords")),
            strictEnvelopes=config.getBool("strict_rfc821_envelopes"),
            recipientDelimiter=config.get("recipient_delimiter"),
            queueMinfree=config.getInt("queue_minfree"),
            softErrorLimit=config.getInt("smtpd_soft_error_limit"),
            recipientOvershootLimit=config.getInt("smtpd_recipient_overshoot_limit"),
            errorSleepTime=config.getTime("smtpd_error_sleep_time"),
            junkCommandLimit=config.getInt("smtpd_junk_command_limit"),
            deadline="request" if config.getBool("smtpd_per_request_deadline") else "read",
            minDataRate=max(1, config.getInt("smtpd_min_data_rate")),
            restrictions=restrictions,
            recipientTables=recipientTables,
            tls=tls,
            sasl=sasl,
            forbidUnauthPipelining=config.getBool("smtpd_forbid_unauth_pipelining"),
            smtputf8=config.getBool("smtputf8_enable"),
            requireTLS=config.getBool("requiretls_enable"),
            notifyClasses=frozenset(c.lower() for c in config.getList("notify_classes")),
            errorNoticeRecipient=config.get("error_notice_recipient") or "postmaster",
            bareNewline=bareNewlineMode(config.get("smtpd_forbid_bare_newline")),
            bareNewlineCode=config.getInt("smtpd_forbid_bare_newline_reject_code"),
            bareNewlineExclusions=parseNetworks(
                config.getList("smtpd_forbid_bare_newline_exclusions")),
            forbiddenCommands=MatchList("smtpd_forbidden_commands",
                                        config.get("smtpd_forbidden_commands")),
            milters=[] if NO_MILTERS in overrides else milterList(config, "smtpd_milters"),
            milterMaps=MilterMaps(config) if NO_MILTERS not in overrides
            and config.get("smtpd_milter_maps").strip() else None,
            milterDaemonName=config.get("milter_macro_daemon_name"),
            milterVersionMacro=config.get("milter_macro_v"),
            receivingAttributes=receivingAttributes(config),
            proxyFilter=ProxySettings.fromConfig(config),
            xforwardHosts=parseNetworks(config.getList("smtpd_authorized_xforward_hosts"),
                                        "smtpd_authorized_xforward_hosts")
            if config.getList("smtpd_authorized_xforward_hosts") else None,
        )
