"""
Postfix's restriction language: the lists C{smtpd_client_restrictions},
C{smtpd_helo_restrictions}, C{smtpd_sender_restrictions},
C{smtpd_relay_restrictions}, C{smtpd_recipient_restrictions},
C{smtpd_data_restrictions} and C{smtpd_end_of_data_restrictions}, each
evaluated left to right until a restriction decides.

A name in a list is one of smtpd's own restrictions (here and in
L{tmta.smtpd.access}, L{tmta.smtpd.dnschecks}, L{tmta.smtpd.policy}),
a class of C{smtpd_restriction_classes}, or a plugin's
(L{tmta.interfaces.ISMTPRestriction}).  A name nobody knows defers
mail, as in Postfix: a typing error never lets mail through.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from zope.interface import implementer

from tmta.config import splitList
from tmta.interfaces import ISMTPRestriction
from tmta.logging import Logger
from tmta.mail.address import isIPAddress, splitAddress
from tmta.smtpd.unverified import rejectUnverified
from tmta.smtpd.verdicts import (
    CONFIGURATION_ERROR,
    DEFER,
    DEFER_IF_PERMIT,
    DEFER_IF_REJECT,
    DUNNO,
    PERMIT,
    REJECT,
    RecipientContext,
    RestrictionEnvironment,
    chain,
    dsnFor,
    heloLiteralCheck,
    isFqdn,
    postfixHostname,
    rejectWith,
    unauthorizedDestination,
    validHostname,
)

__all__ = [
    "RecipientContext",
    "PERMIT",
    "REJECT",
    "DEFER",
    "DUNNO",
]

log = Logger()


@implementer(ISMTPRestriction)
class Builtin:
    """
    One of smtpd's own restrictions: C{decide(environment, context)}
    returns C{(action, reply)} or a Deferred firing with it.
    """

    def __init__(self, name: str, decide, environment: RestrictionEnvironment) -> None:
        self.name = name
        self._decide = decide
        self.environment = environment

    def evaluate(self, context: RecipientContext):
        return self._decide(self.environment, context)


def _subject(c: RecipientContext) -> str:
    """
    What a reply of the restriction being evaluated names, as Postfix's
    C{reply_name} and C{reply_class}: the recipient at RCPT, the
    sender at MAIL, and so on.
    """
    if c.stage == "RCPT":
        return f"<{c.recipient}>: Recipient address"
    if c.stage == "MAIL":
        return f"<{c.sender or ''}>: Sender address"
    if c.stage == "DATA":
        return "<DATA>: Data command"
    if c.stage == "END-OF-MESSAGE":
        return "<END-OF-MESSAGE>: End-of-data"
    if c.stage == "EHLO":
        return f"<{c.helo}>: Helo command"
    return f"<{c.client}>: Client host"


def _rejectUnauthDestination(env, c):
    if not c.recipient or not unauthorizedDestination(c):
        return DUNNO, None
    return REJECT, f"{env.relayCode} 5.7.1 <{c.recipient}>: Relay access denied"


def _deferUnauthDestination(env, c):
    if not c.recipient or not unauthorizedDestination(c):
        return DUNNO, None
    # Postfix's relay code, as a temporary one.
    return DEFER, f"4{env.relayCode % 100:02d} 4.7.1 <{c.recipient}>: Relay access denied"


def _nonFqdnHelo(env, c):
    name = c.helo
    if not name:
        return DUNNO, None
    if name.startswith("["):
        return heloLiteralCheck(env, name)
    test = name[:-1] if name.endswith(".") and not name.endswith("..") else name
    if postfixHostname(test) and "." in test:
        return DUNNO, None
    code = env.code("non_fqdn_reject_code")
    return rejectWith(code, dsnFor(code, "5.5.2"),
                      f"<{name}>: Helo command rejected: need fully-qualified hostname")


def _invalidHelo(env, c):
    name = c.helo
    if not name or validHostname(name):
        return DUNNO, None
    code = env.code("invalid_hostname_reject_code")
    return rejectWith(code, dsnFor(code, "5.5.2"),
                      f"<{name}>: Helo command rejected: Invalid name")


def _nonFqdnAddress(what: str):
    def decide(env, c):
        address = c.sender if what == "Sender" else c.recipient
        if not address:
            return DUNNO, None
        _, domain = splitAddress(address)
        if domain and isFqdn(domain):
            return DUNNO, None
        code = env.code("non_fqdn_reject_code")
        return rejectWith(code, dsnFor(code, "5.5.2"),
                          f"<{address}>: {what} address rejected: "
                          "need fully-qualified address")
    return decide


def _rejectUnknownClientHostname(env, c):
    if c.clientName and c.clientName != "unknown":
        return DUNNO, None
    code = env.code("unknown_client_reject_code")
    return rejectWith(code, dsnFor(code, "4.7.25"),
                      f"Client host rejected: cannot find your hostname, [{c.clientAddress}]")


def _rejectUnknownReverseClientHostname(env, c):
    if c.reverseClientName and c.reverseClientName != "unknown":
        return DUNNO, None
    code = env.code("unknown_client_reject_code")
    return rejectWith(code, dsnFor(code, "4.7.1"),
                      "Client host rejected: cannot find your reverse hostname, "
                      f"[{c.clientAddress}]")


def _rejectUnauthPipelining(env, c):
    if not c.pipelined:
        return DUNNO, None
    return REJECT, "503 5.5.0 Error: improper use of SMTP command pipelining"


def _permitMynetworks(env, c):
    from tmta.tables import TableLookupError

    try:
        return (PERMIT, None) if env.networks.matchAddress(c.clientAddress) else (DUNNO, None)
    except TableLookupError as e:
        log.warn("permit_mynetworks: {error}", error=str(e))
        return DEFER, f"451 4.3.0 {_subject(c).split(': ')[0]}: Temporary lookup failure"


def _checkRelayDomains(env, c):
    """
    C{check_relay_domains}, Postfix's old relay control: permit a client
    whose (verified) name is in C{relay_domains}, or mail to a domain of
    this machine's or one it relays to; refuse anything else.  It
    always decides.
    """
    from tmta.tables import TableLookupError
    from tmta.tables.matchlist import MatchList

    if env.relayDomainList is None:
        env.relayDomainList = MatchList(
            "relay_domains", env.config.get("relay_domains"),
            parent="relay_domains" in env.config.getList("parent_domain_matches_subdomains"))
    try:
        if c.clientName != "unknown" and env.relayDomainList.matchName(c.clientName):
            return PERMIT, None
    except TableLookupError as e:
        log.warn("check_relay_domains: {error}", error=str(e))
        return DEFER, f"451 4.3.0 <{c.recipient}>: Temporary lookup failure"
    if c.recipient and not unauthorizedDestination(c):
        return PERMIT, None
    return REJECT, f"{env.relayCode} 5.7.1 <{c.recipient}>: Relay access denied"


def _rejectMultiRecipientBounce(env, c):
    """
    Mail from the null sender to more than one recipient: refused at
    the second RCPT, or at DATA when there are two or more.
    """
    if c.sender != "" or c.recipientCount <= (0 if c.stage == "RCPT" else 1):
        return DUNNO, None
    code = env.code("multi_recipient_bounce_reject_code")
    return rejectWith(code, dsnFor(code, "5.5.3"),
                      f"{_subject(c)} rejected: Multi-recipient bounce")


def _rejectPlaintextSession(env, c):
    if c.encrypted:
        return DUNNO, None
    code = env.code("plaintext_reject_code")
    return rejectWith(code, dsnFor(code, "5.7.1"), "Session encryption is required")


def _permitInetInterfaces(env, c):
    from tmta.tables.networks import isOwnAddress

    return (PERMIT, None) if isOwnAddress(c.clientAddress, env.config) else (DUNNO, None)


def _permitNakedIPAddress(env, c):
    return (PERMIT, None) if isIPAddress(c.helo) else (DUNNO, None)


def _unlisted(what: str):
    """
    C{reject_unlisted_sender} or C{reject_unlisted_recipient}: an
    address in a domain of this machine's must be a known recipient
    (checked where the list names it, whatever
    C{smtpd_reject_unlisted_*} says).
    """

    def decide(env, c):
        address = c.sender if what == "Sender" else c.recipient
        if not address or c.resolve is None or env.recipientTables is None:
            return DUNNO, None
        return c.resolve(address).addCallback(_unlistedDecision, env, address, what)

    return decide


def _unlistedDecision(resolution, env, address: str, what: str):
    from tmta.tables import TableLookupError

    try:
        refusal = env.recipientTables.unknown(resolution.addressClass, resolution.recipient,
                                              address, what=what, always=True)
    except TableLookupError as e:
        log.warn("reject_unlisted_{what}: {error}", what=what.lower(), error=str(e))
        return DEFER, f"451 4.3.0 <{address}>: Temporary lookup failure"
    if refusal is None:
        return DUNNO, None
    return rejectWith(int(refusal[:3]), refusal[4:9], refusal[10:])


#: Also applied after the sender list with C{smtpd_reject_unlisted_sender}.
rejectUnlistedSender = _unlisted("Sender")


def _senderLoginMismatch(authenticated: bool, unauthenticated: bool,
                         knownOnly: bool = False):
    """
    C{reject_sender_login_mismatch} and its two halves: the owners of a
    sender address come from C{smtpd_sender_login_maps}.  With
    C{knownOnly} (C{reject_known_sender_login_mismatch}), a sender the
    maps do not list is let pass even from a logged-in client.
    """

    def decide(env, c):
        from tmta.tables import lookupAny

        sender = c.sender
        if sender is None or sender == "":
            return DUNNO, None
        owners = None
        local, domain = splitAddress(sender.lower())
        for key in (sender.lower(), f"@{domain}" if domain else None, local if domain else None):
            if key:
                value = lookupAny(env.loginMaps, key)
                if value is not None:
                    owners = {o.lower() for o in splitList(value)}
                    break
        if c.saslUsername:
            if knownOnly and owners is None:
                return DUNNO, None
            if authenticated and (owners is None or c.saslUsername.lower() not in owners):
                return REJECT, (f"553 5.7.1 <{sender}>: Sender address rejected: not owned "
                                f"by user {c.saslUsername}")
        elif unauthenticated and owners is not None:
            return REJECT, (f"553 5.7.1 <{sender}>: Sender address rejected: not logged in")
        return DUNNO, None

    return decide



_BUILTINS = {
    "permit_mynetworks": _permitMynetworks,
    "permit_sasl_authenticated": lambda env, c: (
        (PERMIT, None) if c.saslAuthenticated else (DUNNO, None)),
    "reject_unauth_destination": _rejectUnauthDestination,
    "defer_unauth_destination": _deferUnauthDestination,
    "permit_auth_destination": lambda env, c: (
        (DUNNO, None) if not c.recipient or unauthorizedDestination(c) else (PERMIT, None)),
    "permit": lambda env, c: (PERMIT, None),
    "reject": lambda env, c: (REJECT, None),
    "defer": lambda env, c: (DEFER, None),
    "defer_if_permit": lambda env, c: (DEFER_IF_PERMIT, None),
    "defer_if_reject": lambda env, c: (DEFER_IF_REJECT, None),
    "reject_multi_recipient_bounce": _rejectMultiRecipientBounce,
    "check_relay_domains": _checkRelayDomains,
    "reject_plaintext_session": _rejectPlaintextSession,
    "permit_inet_interfaces": _permitInetInterfaces,
    "permit_naked_ip_address": _permitNakedIPAddress,
    # tmta asks no client for a certificate, so none is ever verified
    # and these never permit, as in Postfix without smtpd_tls_ask_ccert.
    "permit_tls_clientcerts": lambda env, c: (DUNNO, None),
    "permit_tls_all_clientcerts": lambda env, c: (DUNNO, None),
    "dunno": lambda env, c: (DUNNO, None),
    "reject_unlisted_recipient": _unlisted("Recipient"),
    "check_recipient_maps": _unlisted("Recipient"),
    "reject_unlisted_sender": rejectUnlistedSender,
    "reject_non_fqdn_sender": _nonFqdnAddress("Sender"),
    "reject_non_fqdn_recipient": _nonFqdnAddress("Recipient"),
    "reject_non_fqdn_helo_hostname": _nonFqdnHelo,
    "reject_non_fqdn_hostname": _nonFqdnHelo,
    "reject_invalid_helo_hostname": _invalidHelo,
    "reject_invalid_hostname": _invalidHelo,
    "reject_unknown_client_hostname": _rejectUnknownClientHostname,
    "reject_unknown_client": _rejectUnknownClientHostname,
    "reject_unknown_reverse_client_hostname": _rejectUnknownReverseClientHostname,
    "reject_unauth_pipelining": _rejectUnauthPipelining,
    "reject_sender_login_mismatch": _senderLoginMismatch(True, True),
    "reject_authenticated_sender_login_mismatch": _senderLoginMismatch(True, False),
    "reject_unauthenticated_sender_login_mismatch": _senderLoginMismatch(False, True),
    "reject_known_sender_login_mismatch": _senderLoginMismatch(True, True, knownOnly=True),
    "reject_unverified_sender": rejectUnverified("sender"),
    "reject_unverified_recipient": rejectUnverified("recipient"),
}


def _argumentTakers() -> Dict[str, Callable]:
    """
    Restrictions that take the next item of the list as their argument:
    name to C{make(argument, environment)} returning an
    L{ISMTPRestriction}.
    """
    from tmta.smtpd import access, dnschecks, policy, serveraccess

    takers: Dict[str, Callable] = {}
    takers.update(access.RESTRICTIONS)
    takers.update(serveraccess.RESTRICTIONS)
    takers.update(dnschecks.ARGUMENT_RESTRICTIONS)
    takers["check_policy_service"] = policy.PolicyRestriction.fromArgument
    takers["sleep"] = _Sleep.fromArgument
    return takers


@implementer(ISMTPRestriction)
class _Sleep:
    """
    C{sleep SECONDS}: pause the session (so that a client that talks
    before its turn is caught by C{reject_unauth_pipelining}), then go
    on; nothing is decided.
    """

    def __init__(self, seconds: int, clock=None) -> None:
        self.seconds = seconds
        self.name = f"sleep {seconds}"
        self.clock = clock

    @classmethod
    def fromArgument(cls, argument: str, environment: "RestrictionEnvironment") -> "_Sleep":
        if not argument.isdigit():
            raise ValueError(f"restriction sleep must be followed by a number, not "
                             f"{argument!r}")
        return cls(int(argument), environment.clock)

    def evaluate(self, context: RecipientContext):
        from twisted.internet.task import deferLater

        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        return deferLater(clock, self.seconds, lambda: (DUNNO, None))


#: Known names, for the plugin check at start-up.
BUILTIN_RESTRICTIONS = frozenset(_BUILTINS)


@implementer(ISMTPRestriction)
class _WarnIfReject:
    """
    C{warn_if_reject NAME}: what would reject is logged and let pass.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = f"warn_if_reject {inner.name}"

    def evaluate(self, context):
        return chain(self.inner.evaluate(context), self._soften, context)

    def _soften(self, result, context):
        action, reply = result
        if action in (REJECT, DEFER):
            log.info("warning: reject_warning: {stage} from {client}: {reply}",
                     stage=context.stage, client=context.client, reply=reply)
            return DUNNO, None
        return result


@implementer(ISMTPRestriction)
class _ClassRestriction:
    """
    A name from C{smtpd_restriction_classes}: its own list, evaluated in
    place (a PERMIT ends the class, and the list that named it with it).
    """

    def __init__(self, name: str, restrictions: "RestrictionList") -> None:
        self.name = name
        self.restrictions = restrictions

    def evaluate(self, context):
        return self.restrictions.evaluate(context)


class RestrictionList:
    """
    One restriction list, evaluated left to right until a restriction
    decides.

    @param environment: a L{RestrictionEnvironment}; for compatibility,
        the mynetworks list may be given instead, with the reject codes.
    @raise PluginError: a plugin of a listed name does not provide the
        interface.
    @raise ValueError: a restriction's argument is missing or unusable
        (a table that cannot be opened, a policy server address that is
        not one).
    """

    def __init__(self, name: str, value: str, environment, relayCode: int = 554,
                 rejectCode: int = 554, _depth: int = 0) -> None:
        if not isinstance(environment, RestrictionEnvironment):
            from tmta.config import MainConfig

            environment = RestrictionEnvironment(MainConfig({}), environment, relayCode,
                                                 rejectCode)
        if environment.restrictionList is None:
            environment.restrictionList = RestrictionList
        self.name = name
        self.environment = environment
        self.items = splitList(value)
        self.restrictions: List = []
        items = list(self.items)
        while items:
            self.restrictions.append(self._build(items, _depth))

    @property
    def networks(self):
        return self.environment.networks

    def _build(self, items: List[str], depth: int):
        from tmta.common.plugins import findPlugin
        from tmta.smtpd import dnschecks

        env = self.environment
        item = items.pop(0)
        lowered = item.lower()
        if lowered == "warn_if_reject":
            if not items:
                raise ValueError(f"{self.name}: warn_if_reject names no restriction")
            return _WarnIfReject(self._build(items, depth))
        decide = _BUILTINS.get(lowered)
        if decide is not None:
            return Builtin(lowered, decide, env)
        if lowered in dnschecks.RESTRICTIONS:
            return Builtin(lowered, dnschecks.RESTRICTIONS[lowered], env)
        takers = _argumentTakers()
        if lowered in takers:
            if not items:
                raise ValueError(f"{self.name}: {item} needs an argument")
            return takers[lowered](items.pop(0), env)
        if item in env.classes:
            if depth > 10:
                raise ValueError(f"{self.name}: restriction classes nest too deeply at {item}")
            return _ClassRestriction(item, RestrictionList(
                item, env.classes[item], env, _depth=depth + 1))
        plugin = findPlugin(ISMTPRestriction, item)
        if plugin is None:
            raise ValueError(f"{self._where()}{self.name}: unknown restriction {item!r}: "
                             "it is not one of smtpd's, a restriction class or a "
                             "plugin's, and a list tmta cannot enforce is not served")
        return plugin

    def _where(self) -> str:
        config = self.environment.config
        line = config.lineOf(self.name) if hasattr(config, "lineOf") else None
        return f"{config.path or 'main.cf'}, line {line}: " if line else ""

    def evaluate(self, context: RecipientContext):
        """
        @return: C{(action, reply)}, reply the SMTP reply for reject and
            defer; or a Deferred firing with that pair, when a
            restriction answers later (a plugin that asks elsewhere).
        """
        return self._from(0, context)

    def _from(self, index: int, context: RecipientContext):
        restrictions = self.restrictions
        while index < len(restrictions):
            restriction = restrictions[index]
            index += 1
            result = restriction.evaluate(context)
            if isinstance(result, defer.Deferred):
                return result.addCallback(self._continue, index, context, restriction)
            result = self._checked(result, restriction, context)
            if result[0] != DUNNO:
                return result
        return DUNNO, None

    def _continue(self, result, index: int, context: RecipientContext, restriction):
        result = self._checked(result, restriction, context)
        if result[0] != DUNNO:
            return result
        return defer.maybeDeferred(self._from, index, context)

    def _checked(self, result, restriction,
                 context: RecipientContext) -> Tuple[str, Optional[str]]:
        """
        A restriction's answer, or a configuration error's C{defer} when
        it is not one: an answer nobody understands never lets mail
        through.  A reject or defer without a reply gets the list's
        default reply.
        """
        try:
            action, reply = result
        except (TypeError, ValueError):
            action, reply = None, None
        if action in (DEFER_IF_PERMIT, DEFER_IF_REJECT):
            if not reply:
                reply = (f"450 4.7.0 {self.subject(context)} rejected: "
                         f"{action} requested")
            if action == DEFER_IF_PERMIT:
                context.deferIfPermit = context.deferIfPermit or reply
            else:
                context.deferIfReject = context.deferIfReject or reply
            return DUNNO, None
        if action not in (PERMIT, REJECT, DEFER, DUNNO):
            log.warn("{list}: restriction {item} answered {result!r}: deferring",
                     list=self.name, item=getattr(restriction, "name", restriction),
                     result=result)
            return DEFER, CONFIGURATION_ERROR
        if action == REJECT and not reply:
            reply = self.defaultReply(self.environment.rejectCode, "5.7.1", context)
        if action == DEFER and not reply:
            # Postfix's "defer": try again later.
            reply = (f"{self.environment.deferCode} 4.3.2 {self.subject(context)} rejected: "
                     "Try again later")
        if action == REJECT and context.deferIfReject and reply.startswith("5"):
            # An earlier temporary error may have been what kept this
            # client from passing: report that instead.
            action, reply, context.deferIfReject = DEFER, context.deferIfReject, None
        return action, reply

    def subject(self, context: RecipientContext) -> str:
        """
        What a reply of this list names, as Postfix does:
        C{<name[address]>: Client host}, C{<address>: Sender address}...
        """
        if "client" in self.name:
            return f"<{context.client}>: Client host"
        if "helo" in self.name:
            return f"<{context.helo}>: Helo command"
        if "sender" in self.name:
            return f"<{context.sender or ''}>: Sender address"
        if "data" in self.name and "end_of" not in self.name:
            return "<DATA>: Data command"
        if "end_of_data" in self.name:
            return "<END-OF-MESSAGE>: End-of-data"
        return f"<{context.recipient}>: Recipient address"

    def defaultReply(self, code: int, dsn: str, context: RecipientContext) -> str:
        """
        The reply of a plain C{reject} or C{defer} in this list, naming
        what the list is about, as Postfix does.
        """
        return f"{code} {dsn} {self.subject(context)} rejected: Access denied"
