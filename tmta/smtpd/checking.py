"""
When smtpd applies its restriction lists, and with what it knows of the
session: the lists of one smtpd process (L{Restrictions}) and the
session's side of them (L{RestrictionChecks}).

With C{smtpd_delay_reject = yes} (the default) the client, HELO and
sender lists wait for RCPT, as in Postfix, so that a refusal names the
recipient and clients that do not expect a refusal before RCPT are
spared one; with C{no} each list runs at its own command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from twisted.internet import defer

from tmta.logging import Logger
from tmta.smtpd.builtins import rejectUnlistedSender
from tmta.smtpd.restrictions import RestrictionList
from tmta.smtpd.session import SessionState
from tmta.smtpd.verdicts import (
    DEFER,
    LIST_NAMES,
    REJECT,
    RecipientContext,
    RestrictionEnvironment,
    TransactionActions,
)

log = Logger()


@dataclass
class Restrictions:
    """
    The restriction lists of one smtpd process.
    """

    environment: RestrictionEnvironment
    client: RestrictionList
    helo: RestrictionList
    sender: RestrictionList
    relay: RestrictionList
    recipient: RestrictionList
    data: RestrictionList
    endOfData: RestrictionList
    delayReject: bool = True

    @classmethod
    def fromConfig(cls, config, environment: RestrictionEnvironment) -> "Restrictions":
        """
        @raise ValueError: a list names a restriction with an unusable
            argument.
        """
        lists = {name: RestrictionList(name, config.get(name), environment)
                 for name in LIST_NAMES + ("smtpd_data_restrictions",
                                           "smtpd_end_of_data_restrictions")}
        return cls(
            environment,
            client=lists["smtpd_client_restrictions"],
            helo=lists["smtpd_helo_restrictions"],
            sender=lists["smtpd_sender_restrictions"],
            relay=lists["smtpd_relay_restrictions"],
            recipient=lists["smtpd_recipient_restrictions"],
            data=lists["smtpd_data_restrictions"],
            endOfData=lists["smtpd_end_of_data_restrictions"],
            delayReject=config.getBool("smtpd_delay_reject"),
        )

    def forStage(self, stage: str) -> List[RestrictionList]:
        """
        The lists to evaluate at C{stage} (C{EHLO}, C{MAIL}, C{RCPT},
        C{DATA}, C{END-OF-MESSAGE}).
        """
        early = [self.client, self.helo, self.sender]
        if stage == "RCPT":
            return early + [self.relay, self.recipient] if self.delayReject else \
                [self.relay, self.recipient]
        if stage == "DATA":
            return [self.data]
        if stage == "END-OF-MESSAGE":
            return [self.endOfData]
        if self.delayReject:
            return []
        if stage == "CONNECT":
            return [self.client]
        if stage == "EHLO":
            return [self.client, self.helo]
        if stage == "MAIL":
            return [self.client, self.helo, self.sender]
        return []


class RestrictionChecks(SessionState):
    """
    The session's side, for L{tmta.smtpd.protocol.SMTPServer}: the
    context a restriction sees, and the lists of a stage evaluated in
    order until one refuses.

    @ivar transactionActions: what access tables asked of the current
        message (HOLD, DISCARD, FILTER, REDIRECT, PREPEND).
    @ivar reverseClientName: the client's unverified reverse name.
    """

    transactionActions: TransactionActions
    reverseClientName = "unknown"
    pipelinedNow = False
    #: A C{DEFER_IF_PERMIT} raised by the client, HELO or sender lists
    #: when they ran before RCPT (C{smtpd_delay_reject = no}): it turns
    #: the recipients' permits into deferrals.
    earlyDeferIfPermit: Optional[str] = None

    #: The server's address and port, once asked for (each asking makes
    #: a system call and an address object).
    _serverAddress: Optional[Tuple[str, int]] = None

    def restrictionContext(self, stage: str, recipient: str = "",
                           addressClass: str = "") -> RecipientContext:
        serverAddress = self._serverAddress
        if serverAddress is None:
            host = self.transport.getHost() if self.transport is not None else None
            serverAddress = (getattr(host, "host", "") or "", getattr(host, "port", 0) or 0)
            if self.transport is not None:
                self._serverAddress = serverAddress
        return RecipientContext(
            clientAddress=self.clientAddress,
            recipient=recipient,
            addressClass=addressClass,
            saslAuthenticated=self.saslUsername is not None,
            clientName=self.clientName,
            reverseClientName=self.reverseClientName,
            helo=self.helo or "",
            sender=self.sender,
            saslUsername=self.saslUsername or "",
            saslMethod=self.saslMethod or "",
            stage=stage,
            protocol=self.protocolName,
            recipientCount=len(self.recipients),
            size=self.declaredSize,
            queueId=self.queueId if stage == "END-OF-MESSAGE" else "",
            tlsSummary=self.tlsSummary or "",
            serverAddress=serverAddress[0],
            serverPort=serverAddress[1],
            pipelined=self.pipelinedNow,
            instance=f"{id(self):x}.{self.transactionNumber}",
            resolve=self.resolve,
            actions=self.transactionActions,
            deferIfPermit=None if stage in ("DATA", "END-OF-MESSAGE") else
            self.earlyDeferIfPermit,
            encrypted=self.tlsSummary is not None,
            clientCertificate=self.clientCertificate,
        )

    async def restrict(self, stage: str, context: Optional[RecipientContext] = None,
                       ) -> Optional[Tuple[str, str]]:
        """
        Evaluate the lists of C{stage}.

        @return: C{(action, reply)} for a refusal, or C{None}.
        """
        restrictions = self.settings.restrictions
        if restrictions is None:
            return None
        lists = restrictions.forStage(stage)
        tables = restrictions.environment.recipientTables
        unlistedSender = (restrictions.sender in lists and tables is not None
                          and tables.rejectUnlistedSender and bool(self.sender))
        if not unlistedSender and all(not lst.restrictions for lst in lists):
            return None
        if context is None:
            context = self.restrictionContext(stage)
        for restrictionList in lists:
            if restrictionList is not restrictions.recipient:
                # DEFER_IF_REJECT holds within one stage; the relay and
                # recipient lists are one stage, RCPT.
                context.deferIfReject = None
            decision = restrictionList.evaluate(context)
            if isinstance(decision, defer.Deferred):
                decision = await decision
            action, reply = decision
            if action not in (REJECT, DEFER) and unlistedSender and \
                    restrictionList is restrictions.sender:
                # smtpd_reject_unlisted_sender: after the sender list.
                unlisted = rejectUnlistedSender(restrictions.environment, context)
                if isinstance(unlisted, defer.Deferred):
                    unlisted = await unlisted
                action, reply = unlisted
            if action in (REJECT, DEFER):
                return action, reply
        if stage in ("EHLO", "MAIL", "CONNECT"):
            self.earlyDeferIfPermit = context.deferIfPermit
        elif context.deferIfPermit:
            # What would be accepted is deferred, for an earlier reason.
            return DEFER, context.deferIfPermit
        return None

    def logRejection(self, stage: str, reply: str, recipient: str = "",
                     action: str = "reject") -> None:
        """
        Postfix's C{NOQUEUE: reject:} line (C{milter-reject:} for a
        milter's); the session earns a C{policy} transcript.
        """
        if self.transcript is not None:
            self.transcript.earn("policy")
        log.info(
            "{queueId}: {action}: {stage} from {client}: {reply}; from=<{sender}> "
            "{to}proto={proto} helo=<{helo}>",
            action=action,
            queueId=self.queueId if stage == "END-OF-MESSAGE" else "NOQUEUE",
            stage=stage,
            client=self.client, reply=reply, sender=self.sender or "",
            to=f"to=<{recipient}> " if recipient else "", proto=self.protocolName,
            helo=self.helo or "",
        )


def configurationProblems(config, entry) -> List[str]:
    """
    What is wrong with an smtpd service's configuration: a SASL backend
    plugin that does not provide its interface, and restriction lists, each built as smtpd
    builds it (plugins found, tables opened, arguments checked), so
    that AUTH or a list smtpd could not enforce stops start-up
    (L{tmta.interfaces.IComponent.configurationProblems}).
    """
    from tmta.common.plugins import PluginError
    from tmta.config import ConfigError
    from tmta.mail.proxyprotocol import upstreamProxy
    from tmta.mail.receiving import receiveOverrides
    from tmta.milter.settings import milterList
    from tmta.smtpd.proxy import ProxySettings
    from tmta.smtpd.saslbackends import brokenBackend
    from tmta.tables.networks import parseNetworks

    try:
        milterList(config, "smtpd_milters")
        upstreamProxy(config, "smtpd")
    except ConfigError as e:
        return [e.reason]
    try:
        receiveOverrides(config.get("receive_override_options"))
        proxy = ProxySettings.fromConfig(config)
    except ValueError as e:
        return [str(e)]
    if proxy is not None:
        options = {o.lower() for o in config.getList("smtpd_proxy_options")}
        if options - {"speed_adjust"}:
            return [f"smtpd_proxy_options = {config.get('smtpd_proxy_options')}: "
                    "known options are speed_adjust"]
        if milterList(config, "smtpd_milters"):
            return ["smtpd_milters and smtpd_proxy_filter on one smtpd is not implemented: "
                    "the milters would not see the message; put the milters on the smtpd "
                    "the filter hands the mail to"]
    if config.getBool("smtpd_sasl_auth_enable"):
        broken = brokenBackend(config.get("smtpd_sasl_type").strip().lower())
        if broken:
            return [broken]
    try:
        environment = RestrictionEnvironment.fromConfig(
            config, parseNetworks(config.getList("mynetworks")))
        Restrictions.fromConfig(config, environment)
    except (PluginError, ValueError) as e:
        return [str(e)]
    except Exception as e:  # a table type's own error
        return [f"{type(e).__name__}: {e}"]
    return []
