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

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from tmta.logging import Logger
from zope.interface import implementer

from tmta.address import splitAddress
from tmta.config import splitList
from tmta.interfaces import ISMTPRestriction
from tmta.tables.networks import inNetworks

log = Logger()

PERMIT, REJECT, DEFER, DUNNO = "permit", "reject", "defer", "dunno"

CONFIGURATION_ERROR = "451 4.3.5 Server configuration error"

#: The lists, in the order smtpd evaluates them at RCPT (with
#: C{smtpd_delay_reject = yes}, the first three wait for RCPT).
LIST_NAMES = ("smtpd_client_restrictions", "smtpd_helo_restrictions",
              "smtpd_sender_restrictions", "smtpd_relay_restrictions",
              "smtpd_recipient_restrictions")


@dataclass
class TransactionActions:
    """
    What access tables asked for besides accepting: carried to cleanup
    with the message (the first HOLD, DISCARD, FILTER or REDIRECT wins,
    as in Postfix; every PREPEND is kept).
    """

    hold: Optional[str] = None
    discard: Optional[str] = None
    filter: Optional[str] = None
    redirect: Optional[str] = None
    prepend: List[str] = field(default_factory=list)

    def attributes(self) -> Dict[str, str]:
        """
        As cleanup's C{access_*} attributes.
        """
        out = {}
        for name in ("hold", "discard", "filter", "redirect"):
            value = getattr(self, name)
            if value is not None:
                out[f"access_{name}"] = value
        if self.prepend:
            out["access_prepend"] = "\n".join(self.prepend)
        return out


@dataclass
class RecipientContext:
    """
    What a restriction looks at: the session and transaction so far.

    @ivar stage: Postfix's protocol state: C{CONNECT}, C{EHLO}, C{MAIL},
        C{RCPT}, C{DATA} or C{END-OF-MESSAGE}.
    @ivar addressClass: the recipient's (C{local}, C{virtual}, C{relay},
        ...; from trivial-rewrite).
    @ivar resolve: returns a Deferred firing with the
        L{tmta.rewrite.Resolution} of an address.
    @ivar pipelined: whether the client sent more before this command's
        answer without having been told it may (C{reject_unauth_pipelining}).
    """

    clientAddress: str
    recipient: str = ""
    addressClass: str = ""
    saslAuthenticated: bool = False
    clientName: str = "unknown"
    reverseClientName: str = "unknown"
    helo: str = ""
    sender: Optional[str] = None
    saslUsername: str = ""
    saslMethod: str = ""
    stage: str = "RCPT"
    protocol: str = "SMTP"
    recipientCount: int = 0
    size: int = 0
    queueId: str = ""
    tlsSummary: str = ""
    serverAddress: str = ""
    serverPort: int = 0
    pipelined: bool = False
    instance: str = ""
    resolve: Optional[Callable] = None
    actions: TransactionActions = field(default_factory=TransactionActions)

    @property
    def client(self) -> str:
        return f"{self.clientName}[{self.clientAddress}]"


#: The name the restriction language gives a context today.
SMTPContext = RecipientContext


@dataclass
class RestrictionEnvironment:
    """
    What restrictions share: the settings of the smtpd process.

    @ivar classes: C{smtpd_restriction_classes}: name to list value.
    @ivar services: where C{check_policy_service} finds its clients
        (L{tmta.smtpd.policy.PolicyClients}), or C{None}.
    @ivar resolver: a twisted.names resolver for the DNS checks.
    """

    config: Any
    networks: list
    relayCode: int = 554
    rejectCode: int = 554
    deferCode: int = 450
    classes: Dict[str, str] = field(default_factory=dict)
    resolver: Any = None
    policies: Any = None
    recipientTables: Any = None
    loginMaps: List = field(default_factory=list)

    @classmethod
    def fromConfig(cls, config, networks, recipientTables=None, resolver=None,
                   policies=None) -> "RestrictionEnvironment":
        from tmta.tables import TableError, openTables

        try:
            loginMaps = openTables(config.get("smtpd_sender_login_maps"))
        except TableError as e:
            raise ValueError(f"smtpd_sender_login_maps: {e}") from None
        return cls(
            config=config,
            networks=networks,
            relayCode=config.getInt("relay_domains_reject_code"),
            rejectCode=config.getInt("reject_code"),
            deferCode=config.getInt("defer_code"),
            classes={name: config.get(name)
                     for name in config.getList("smtpd_restriction_classes")},
            resolver=resolver,
            policies=policies,
            recipientTables=recipientTables,
            loginMaps=loginMaps,
        )

    def code(self, name: str) -> int:
        return self.config.getInt(name)


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


def rejectWith(code: int, dsn: str, text: str) -> Tuple[str, str]:
    """
    A reject or defer decision, by the reply's code.
    """
    return (DEFER if code // 100 == 4 else REJECT), f"{code} {dsn} {text}"


def _dsnFor(code: int, dsn: str) -> str:
    """
    An enhanced status code whose class agrees with the reply code.
    """
    return f"{code // 100}{dsn[1:]}"


# -- the restrictions that need no table or network --------------------------

def untrustedRouting(address: str) -> bool:
    """
    Whether the local part of C{address} still routes elsewhere (C{%},
    C{!} or C{@}, quoted or not): sender-specified routing, which a
    client outside never gets relayed (Postfix's
    C{allow_untrusted_routing = no}).
    """
    from tmta.address import unquoteLocal

    local, _ = splitAddress(address)
    return any(c in unquoteLocal(local) for c in "%!@")


def _unauthDestination(c: RecipientContext) -> bool:
    return c.addressClass not in ("local", "alias", "virtual", "relay") or \
        untrustedRouting(c.recipient)


def _rejectUnauthDestination(env, c):
    if not c.recipient or not _unauthDestination(c):
        return DUNNO, None
    return REJECT, f"{env.relayCode} 5.7.1 <{c.recipient}>: Relay access denied"


def _deferUnauthDestination(env, c):
    if not c.recipient or not _unauthDestination(c):
        return DUNNO, None
    # Postfix's relay code, as a temporary one.
    return DEFER, f"4{env.relayCode % 100:02d} 4.7.1 <{c.recipient}>: Relay access denied"


def _isFqdn(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(labels) >= 2 and all(labels)


def _validHostname(name: str) -> bool:
    """
    Whether C{name} is a host name or an address literal, as
    C{reject_invalid_helo_hostname} asks.
    """
    import ipaddress
    import re

    if name.startswith("[") and name.endswith("]"):
        literal = name[1:-1]
        if literal.lower().startswith("ipv6:"):
            literal = literal[5:]
        try:
            ipaddress.ip_address(literal)
            return True
        except ValueError:
            return False
    name = name.rstrip(".")
    if not name or len(name) > 255:
        return False
    label = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
    return all(label.match(part) for part in name.split("."))


def _nonFqdnHelo(env, c):
    name = c.helo
    if not name or name.startswith("[") or _isFqdn(name):
        return DUNNO, None
    code = env.code("non_fqdn_reject_code")
    return rejectWith(code, _dsnFor(code, "5.5.2"),
                      f"<{name}>: Helo command rejected: need fully-qualified hostname")


def _invalidHelo(env, c):
    name = c.helo
    if not name or _validHostname(name):
        return DUNNO, None
    code = env.code("invalid_hostname_reject_code")
    return rejectWith(code, _dsnFor(code, "5.5.2"),
                      f"<{name}>: Helo command rejected: Invalid name")


def _nonFqdnAddress(what: str):
    def decide(env, c):
        address = c.sender if what == "Sender" else c.recipient
        if not address:
            return DUNNO, None
        _, domain = splitAddress(address)
        if domain and _isFqdn(domain):
            return DUNNO, None
        code = env.code("non_fqdn_reject_code")
        return rejectWith(code, _dsnFor(code, "5.5.2"),
                          f"<{address}>: {what} address rejected: "
                          "need fully-qualified address")
    return decide


def _rejectUnknownClientHostname(env, c):
    if c.clientName and c.clientName != "unknown":
        return DUNNO, None
    code = env.code("unknown_client_reject_code")
    return rejectWith(code, _dsnFor(code, "4.7.25"),
                      f"Client host rejected: cannot find your hostname, [{c.clientAddress}]")


def _rejectUnknownReverseClientHostname(env, c):
    if c.reverseClientName and c.reverseClientName != "unknown":
        return DUNNO, None
    code = env.code("unknown_client_reject_code")
    return rejectWith(code, _dsnFor(code, "4.7.1"),
                      "Client host rejected: cannot find your reverse hostname, "
                      f"[{c.clientAddress}]")


def _rejectUnauthPipelining(env, c):
    if not c.pipelined:
        return DUNNO, None
    return REJECT, "503 5.5.0 Error: improper use of SMTP command pipelining"


def _rejectUnlistedSender(env, c):
    """
    A sender in a domain of this machine's must be a known recipient.
    """
    if not c.sender or c.resolve is None or env.recipientTables is None:
        return DUNNO, None

    def check(resolution):
        refusal = env.recipientTables.unknown(resolution.addressClass, resolution.recipient,
                                              c.sender)
        if refusal is None:
            return DUNNO, None
        code, dsn, text = refusal.split(" ", 2)
        return rejectWith(int(code), dsn, text.replace("Recipient address rejected",
                                                       "Sender address rejected"))

    return c.resolve(c.sender).addCallback(check)


def _senderLoginMismatch(authenticated: bool, unauthenticated: bool):
    """
    C{reject_sender_login_mismatch} and its two halves: the owners of a
    sender address come from C{smtpd_sender_login_maps}.
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
            if authenticated and (owners is None or c.saslUsername.lower() not in owners):
                return REJECT, (f"553 5.7.1 <{sender}>: Sender address rejected: not owned "
                                f"by user {c.saslUsername}")
        elif unauthenticated and owners is not None:
            return REJECT, (f"553 5.7.1 <{sender}>: Sender address rejected: not logged in")
        return DUNNO, None

    return decide


_BUILTINS = {
    "permit_mynetworks": lambda env, c: (
        (PERMIT, None) if inNetworks(c.clientAddress, env.networks) else (DUNNO, None)),
    "permit_sasl_authenticated": lambda env, c: (
        (PERMIT, None) if c.saslAuthenticated else (DUNNO, None)),
    "reject_unauth_destination": _rejectUnauthDestination,
    "defer_unauth_destination": _deferUnauthDestination,
    "permit_auth_destination": lambda env, c: (
        (DUNNO, None) if not c.recipient or _unauthDestination(c) else (PERMIT, None)),
    "permit": lambda env, c: (PERMIT, None),
    "reject": lambda env, c: (REJECT, None),
    "defer": lambda env, c: (DEFER, None),
    "defer_if_permit": lambda env, c: (DUNNO, None),
    "defer_if_reject": lambda env, c: (DUNNO, None),
    "dunno": lambda env, c: (DUNNO, None),
    # Applied after the lists in any case (smtpd_reject_unlisted_recipient).
    "reject_unlisted_recipient": lambda env, c: (DUNNO, None),
    "reject_unlisted_sender": _rejectUnlistedSender,
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
}


def _argumentTakers() -> Dict[str, Callable]:
    """
    Restrictions that take the next item of the list as their argument:
    name to C{make(argument, environment)} returning an
    L{ISMTPRestriction}.
    """
    from tmta.smtpd import access, dnschecks, policy

    takers: Dict[str, Callable] = {}
    takers.update(access.RESTRICTIONS)
    takers.update(dnschecks.ARGUMENT_RESTRICTIONS)
    takers["check_policy_service"] = policy.PolicyRestriction.fromArgument
    return takers


#: Known names, for the plugin check at start-up.
BUILTIN_RESTRICTIONS = frozenset(_BUILTINS)


@implementer(ISMTPRestriction)
class _Unknown:
    """
    A name neither smtpd nor a plugin knows: defer, as Postfix does.
    """

    def __init__(self, name: str, listName: str) -> None:
        self.name = name
        self.listName = listName

    def evaluate(self, context):
        log.warn("{list}: unknown restriction {item}: deferring", list=self.listName,
                 item=self.name)
        return DEFER, CONFIGURATION_ERROR


@implementer(ISMTPRestriction)
class _WarnIfReject:
    """
    C{warn_if_reject NAME}: what would reject is logged and let pass.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = f"warn_if_reject {inner.name}"

    def evaluate(self, context):
        return _then(self.inner.evaluate(context), self._soften, context)

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


def _then(result, f, *args):
    if isinstance(result, defer.Deferred):
        return result.addCallback(f, *args)
    return f(result, *args)


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
            log.warn("{name}: unknown restriction {item}", name=self.name, item=item)
            plugin = _Unknown(item, self.name)
        return plugin

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
                return result.addCallback(self._then, index, context, restriction)
            result = self._checked(result, restriction, context)
            if result[0] != DUNNO:
                return result
        return DUNNO, None

    def _then(self, result, index: int, context: RecipientContext, restriction):
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
        if action not in (PERMIT, REJECT, DEFER, DUNNO):
            log.warn("{list}: restriction {item} answered {result!r}: deferring",
                     list=self.name, item=getattr(restriction, "name", restriction),
                     result=result)
            return DEFER, CONFIGURATION_ERROR
        if action == REJECT and not reply:
            reply = self.defaultReply(self.environment.rejectCode, "5.7.1", context)
        if action == DEFER and not reply:
            reply = self.defaultReply(self.environment.deferCode, "4.7.1", context)
        return action, reply

    def defaultReply(self, code: int, dsn: str, context: RecipientContext) -> str:
        """
        The reply of a plain C{reject} or C{defer} in this list, naming
        what the list is about, as Postfix does.
        """
        if "client" in self.name:
            what = f"<{context.client}>: Client host rejected"
        elif "helo" in self.name:
            what = f"<{context.helo}>: Helo command rejected"
        elif "sender" in self.name:
            what = f"<{context.sender or ''}>: Sender address rejected"
        elif "data" in self.name and "end_of" not in self.name:
            what = "<DATA>: Data command rejected"
        elif "end_of_data" in self.name:
            what = "<END-OF-MESSAGE>: End-of-data rejected"
        else:
            what = f"<{context.recipient}>: Recipient address rejected"
        return f"{code} {dsn} {what}: Access denied"
