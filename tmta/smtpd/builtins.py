"""
smtpd's own restrictions that take no argument (C{permit_mynetworks},
C{reject_unauth_destination}, C{reject_non_fqdn_*}, the
C{reject_unlisted_*} and C{*_login_mismatch} ones, ...) and C{sleep}:
what each decides from a L{RecipientContext}.  The table lookups, the
DNS checks and the policy service are in L{tmta.smtpd.access},
L{tmta.smtpd.dnschecks} and L{tmta.smtpd.policy}.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from tmta.config import splitList
from tmta.interfaces import ISMTPRestriction
from tmta.logging import Logger
from tmta.mail.address import isIPAddress, splitAddress
from tmta.smtpd.unverified import rejectUnverified
from tmta.smtpd.verdicts import (
    DEFER,
    DEFER_IF_PERMIT,
    DEFER_IF_REJECT,
    DUNNO,
    LOOKUP_FAILED,
    PERMIT,
    REJECT,
    RecipientContext,
    RestrictionEnvironment,
    dsnFor,
    heloLiteralCheck,
    isFqdn,
    lookupFailure,
    postfixHostname,
    rejectWith,
    unauthorizedDestination,
    validHostname,
)

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
    if c.addressClass == LOOKUP_FAILED:
        return lookupFailure(c)
    if not c.recipient or not unauthorizedDestination(c):
        return DUNNO, None
    return REJECT, f"{env.relayCode} 5.7.1 <{c.recipient}>: Relay access denied"


def _permitAuthDestination(env, c):
    if c.addressClass == LOOKUP_FAILED:
        return lookupFailure(c)
    if not c.recipient or unauthorizedDestination(c):
        return DUNNO, None
    return PERMIT, None


def _deferUnauthDestination(env, c):
    if c.addressClass == LOOKUP_FAILED:
        return lookupFailure(c)
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
    if c.addressClass == LOOKUP_FAILED:
        return lookupFailure(c)
    if c.recipient and not unauthorizedDestination(c):
        return PERMIT, None
    return REJECT, f"{env.relayCode} 5.7.1 <{c.recipient}>: Relay access denied"


def _permitTLSClientCerts(env, c):
    """
    C{permit_tls_clientcerts}: a client whose certificate's fingerprint,
    or its public key's, is in C{relay_clientcerts} -- trusted by a CA or
    not, as in Postfix: the fingerprint is the trust.
    """
    from tmta.tables import TableLookupError, lookupAny, openTables

    certificate = c.clientCertificate
    if certificate is None:
        return DUNNO, None
    if env.relayClientCerts is None:
        env.relayClientCerts = openTables(env.config.get("relay_clientcerts"))
    try:
        for fingerprint in (certificate.fingerprint, certificate.pubkeyFingerprint):
            if lookupAny(env.relayClientCerts, fingerprint) is not None:
                return PERMIT, None
    except TableLookupError as e:
        log.warn("relay_clientcerts: lookup error for fingerprint: {error}", error=str(e))
        return DEFER, f"451 4.3.0 {c.client}: Temporary lookup failure"
    return DUNNO, None


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

    def failed(error: Exception):
        log.warn("reject_unlisted_{what}: {error}", what=what.lower(), error=str(error))
        return DEFER, f"451 4.3.0 <{address}>: Temporary lookup failure"

    def decided(refusal):
        if refusal is None:
            return DUNNO, None
        return rejectWith(int(refusal[:3]), refusal[4:9], refusal[10:])

    tables = env.recipientTables
    try:
        if tables.remote:
            refusal = Deferred.fromCoroutine(tables.unknownLater(
                env.lookupThreads(), resolution, address, what, True))
        else:
            refusal = tables.unknown(resolution, address, what, True)
    except TableLookupError as e:
        return failed(e)
    if isinstance(refusal, Deferred):
        return refusal.addCallbacks(
            decided, lambda f: failed(f.trap(TableLookupError) and f.value))
    return decided(refusal)


#: Also applied after the sender list with C{smtpd_reject_unlisted_sender}.
rejectUnlistedSender = _unlisted("Sender")


def _senderOwners(tables, sender: str):
    """
    The logins C{smtpd_sender_login_maps} says own C{sender} (by the
    address, its C{@domain}, its local part), or C{None} when it lists
    none.
    """
    from tmta.tables import lookupAny

    local, domain = splitAddress(sender.lower())
    for key in (sender.lower(), f"@{domain}" if domain else None, local if domain else None):
        if key:
            value = lookupAny(tables, key)
            if value is not None:
                return {o.lower() for o in splitList(value)}
    return None


def _senderLoginMismatch(authenticated: bool, unauthenticated: bool,
                         knownOnly: bool = False):
    """
    C{reject_sender_login_mismatch} and its two halves: the owners of a
    sender address come from C{smtpd_sender_login_maps}.  With
    C{knownOnly} (C{reject_known_sender_login_mismatch}), a sender the
    maps do not list is let pass even from a logged-in client.
    """

    def decide(env, c):
        from tmta.tables import TableLookupError
        from tmta.tables.remote import isRemote

        sender = c.sender
        if sender is None or sender == "":
            return DUNNO, None

        def failed(error: Exception):
            log.warn("smtpd_sender_login_maps: {error}", error=str(error))
            return DEFER, f"451 4.3.0 <{sender}>: Temporary lookup failure"

        try:
            owners = env.lookUp(isRemote(env.loginMaps), _senderOwners, env.loginMaps, sender)
        except TableLookupError as e:
            return failed(e)
        if isinstance(owners, Deferred):
            return owners.addCallbacks(judge, lambda f: failed(f.trap(TableLookupError)
                                                               and f.value), (c, sender))
        return judge(owners, c, sender)

    def judge(owners, c, sender: str):
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



BUILTINS = {
    "permit_mynetworks": _permitMynetworks,
    "permit_sasl_authenticated": lambda env, c: (
        (PERMIT, None) if c.saslAuthenticated else (DUNNO, None)),
    "reject_unauth_destination": _rejectUnauthDestination,
    "defer_unauth_destination": _deferUnauthDestination,
    "permit_auth_destination": _permitAuthDestination,
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
    # Without smtpd_tls_ask_ccert no client shows a certificate, and
    # these never permit, as in Postfix.
    "permit_tls_clientcerts": _permitTLSClientCerts,
    "permit_tls_all_clientcerts": lambda env, c: (
        (PERMIT, None) if c.clientCertificate is not None and c.clientCertificate.trusted
        else (DUNNO, None)),
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


@implementer(ISMTPRestriction)
class Sleep:
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
    def fromArgument(cls, argument: str, environment: "RestrictionEnvironment") -> "Sleep":
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
BUILTIN_RESTRICTIONS = frozenset(BUILTINS)
