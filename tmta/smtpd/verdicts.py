"""
What smtpd's restrictions share: the decisions they answer, what they
look at (L{RecipientContext}) and what they are built with
(L{RestrictionEnvironment}), and the checks more than one of them
makes.  The restriction language itself is L{tmta.smtpd.restrictions},
which also offers the public names here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer

from tmta.mail.address import splitAddress

PERMIT, REJECT, DEFER, DUNNO = "permit", "reject", "defer", "dunno"

#: Answers that decide nothing now but change a later decision: a
#: later permit (explicit, or the end of the lists) becomes the reply
#: given with C{DEFER_IF_PERMIT}; a later 5xx reject in the same stage
#: becomes the one given with C{DEFER_IF_REJECT}.
DEFER_IF_PERMIT, DEFER_IF_REJECT = "defer_if_permit", "defer_if_reject"

CONFIGURATION_ERROR = "451 4.3.5 Server configuration error"

#: The address class of a recipient whose resolution failed on a table
#: (a database that is down): whatever asks whether the recipient is
#: this machine's to take gets L{lookupFailure}, never a "Relay access
#: denied" that would bounce good mail.
LOOKUP_FAILED = "lookup-failed"


def lookupFailure(c: "RecipientContext") -> Tuple[str, str]:
    """
    The temporary refusal of a recipient whose resolution failed.
    """
    return DEFER, f"451 4.3.0 <{c.recipient}>: Temporary lookup failure"

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
    as in Postfix; every PREPEND and BCC is kept).
    """

    hold: Optional[str] = None
    discard: Optional[str] = None
    filter: Optional[str] = None
    redirect: Optional[str] = None
    prepend: List[str] = field(default_factory=list)
    #: Recipients to send a copy to (BCC), each once.
    bcc: List[str] = field(default_factory=list)
    #: The SPF results of the HELO name and the sender
    #: (L{tmta.mail.spf.SPFOutcome}s), once C{check_spf} has them.
    spf: Optional[tuple] = None

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
        if self.bcc:
            out["access_bcc"] = "\n".join(dict.fromkeys(self.bcc))
        if self.spf is not None:
            helo, mail = self.spf
            chosen = mail or helo
            if chosen is not None:
                out["spf_result"] = chosen.result
                out["spf_scope"] = chosen.scope
                out["spf_identity"] = chosen.identity
            if helo is not None:
                out["spf_helo_result"] = helo.result
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
    #: The reply a later permit turns into (C{DEFER_IF_PERMIT}), once
    #: raised: it holds for the rest of the transaction's checks.
    deferIfPermit: Optional[str] = None
    #: The reply a later 5xx reject of this stage turns into.
    deferIfReject: Optional[str] = None
    #: Whether the session is encrypted (C{reject_plaintext_session}).
    encrypted: bool = False
    #: The client's TLS certificate (L{tmta.smtpd.tls.ClientCertificate}),
    #: when one was asked for and shown.
    clientCertificate: Any = None

    @property
    def client(self) -> str:
        return f"{self.clientName}[{self.clientAddress}]"




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
    networks: Any  # a MatchList (a list of items is parsed into one)
    relayCode: int = 554
    rejectCode: int = 554
    deferCode: int = 450
    classes: Dict[str, str] = field(default_factory=dict)
    resolver: Any = None
    policies: Any = None
    recipientTables: Any = None
    loginMaps: List = field(default_factory=list)
    #: The clock C{sleep} waits on (the reactor when C{None}).
    clock: Any = None
    #: C{relay_domains} as a list of client names, made when first
    #: needed (C{check_relay_domains}).
    relayDomainList: Any = None
    #: C{relay_clientcerts}, opened when C{permit_tls_clientcerts} first
    #: asks.
    relayClientCerts: Any = None
    #: The verify service's client (L{tmta.verify.client.VerifyClient}),
    #: or C{None} when master.cf runs none.
    verify: Any = None
    #: Builds a restriction list, C{restrictionList(name, value,
    #: environment)}, from a value found in a table (an access result
    #: that names restrictions): the restriction language
    #: (L{tmta.smtpd.restrictions.RestrictionList}) sets it on the
    #: environment it evaluates with.
    restrictionList: Optional[Callable[..., Any]] = None
    #: The threads lookups in tables on other servers wait in
    #: (L{tmta.tables.remote.LookupThreads}); the reactor's when C{None}.
    lookups: Any = None

    def lookUp(self, remote: bool, f: Callable[..., Any], *args):
        """
        C{f(*args)}: now, or, when C{remote} (a table it consults waits
        on another server), in a lookup thread, as a Deferred.
        """
        if not remote:
            return f(*args)
        return self.lookupThreads().run(f, *args)

    def lookupThreads(self):
        """
        The L{tmta.tables.remote.LookupThreads} lookups in tables on
        other servers wait in.
        """
        if self.lookups is None:
            from twisted.internet import reactor

            from tmta.tables.remote import LookupThreads

            self.lookups = LookupThreads.forReactor(reactor)
        return self.lookups

    def __post_init__(self) -> None:
        if isinstance(self.networks, list):
            from tmta.tables.networks import parseNetworks

            self.networks = parseNetworks(self.networks)

    @classmethod
    def fromConfig(cls, config, networks, recipientTables=None, resolver=None,
                   policies=None, verify=None) -> "RestrictionEnvironment":
        from tmta.tables import TableError, openTables

        for name in TEMPFAIL_PARAMETERS:
            tempfailDecision(config, name)

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
            verify=verify,
        )

    def code(self, name: str) -> int:
        return self.config.getInt(name)


#: The parameters that say what a restriction does when it cannot tell
#: (the DNS or the verify service failed for now).
TEMPFAIL_PARAMETERS = ("unknown_helo_hostname_tempfail_action",
                       "unknown_address_tempfail_action",
                       "unverified_sender_tempfail_action",
                       "unverified_recipient_tempfail_action")


def tempfailDecision(config, name: str) -> str:
    """
    What a C{*_tempfail_action} parameter makes of a temporary failure:
    C{DEFER} (C{defer}) or C{DEFER_IF_PERMIT} (C{defer_if_permit}: a
    later reject still wins).

    @raise ValueError: a value Postfix does not know.
    """
    value = config.get(name).strip().lower()
    if value == "defer":
        return DEFER
    if value == "defer_if_permit":
        return DEFER_IF_PERMIT
    raise ValueError(f"{name} = {value}: must be defer or defer_if_permit")


def rejectWith(code: int, dsn: str, text: str) -> Tuple[str, str]:
    """
    A reject or defer decision, by the reply's code.
    """
    return (DEFER if code // 100 == 4 else REJECT), f"{code} {dsn} {text}"


def dsnFor(code: int, dsn: str) -> str:
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
    from tmta.mail.address import unquoteLocal

    local, _ = splitAddress(address)
    return any(c in unquoteLocal(local) for c in "%!@")


def unauthorizedDestination(c: RecipientContext) -> bool:
    """
    Whether the recipient is one this machine would not take from just
    anybody: not in a domain it receives or relays for, or with
    sender-specified routing (what C{permit_auth_destination} does not
    permit).
    """
    return c.addressClass not in ("local", "alias", "virtual", "relay") or \
        untrustedRouting(c.recipient)


def isFqdn(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(labels) >= 2 and all(labels)


def validHostname(name: str) -> bool:
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


def postfixHostname(name: str) -> bool:
    """
    Postfix's C{valid_hostname}: letters, digits, C{_} and inner
    hyphens in labels of at most 63, not all of it digits.
    """
    return validHostname(name) and not name.replace(".", "").isdigit()


def heloLiteralCheck(env, name: str):
    """
    A HELO address literal must hold a real address (Postfix's
    C{reject_invalid_hostaddr}).
    """
    if validHostname(name):
        return DUNNO, None
    code = env.code("invalid_hostname_reject_code")
    return rejectWith(code, dsnFor(code, "5.5.2"),
                      f"<{name}>: Helo command rejected: invalid ip address")


def chain(result, f, *args):
    """
    Apply C{f} to a decision, now or, when it comes later (a Deferred),
    then.
    """
    if isinstance(result, defer.Deferred):
        return result.addCallback(f, *args)
    return f(result, *args)
