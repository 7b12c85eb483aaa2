"""
TLS for the smtp and lmtp clients: which security level applies to a
next hop, the OpenSSL connection for a session, and what the server's
certificate proves once the handshake is done.

Postfix's levels: C{none} (no STARTTLS), C{may} (STARTTLS when offered,
plaintext when it is not or the handshake fails, no certificate
checks), C{encrypt} (TLS required, no certificate checks), C{verify}
(TLS required, the certificate must chain to C{smtp_tls_CAfile} or
C{smtp_tls_CApath} and name the MX host) and C{secure} (likewise, but
the certificate must name the next-hop domain, which an attacker cannot
forge through DNS).  As in Postfix, the handshake always completes and
the certificate is judged afterwards, so that each session is logged as
Verified, Trusted (chain good, name not), Untrusted or Anonymous.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Dict, List, Optional, Tuple

from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.hazmat import DNS_ID, DNSPattern, verify_service_identity
from service_identity.pyopenssl import extract_patterns
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from tmta.config import splitList
from tmta.mail.tls import TLSConfigError, allowedVersions, configureContext, connectionSummary
from tmta.smtp.dane import chainsTo, matchTLSA
from tmta.tables import TableError, lookupAny, openTable
from tmta.tables.remote import isRemote

#: The levels tmta implements.  C{dane} and C{dane-only} become, for each
#: server, what its TLSA records call for (L{tmta.smtp.dane}).
LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "verify", "secure")

#: Levels Postfix has that tmta does not: asking for one stops start-up
#: rather than sending with less protection than asked.
UNSUPPORTED_LEVELS = ("fingerprint",)

#: A TLS setting or policy table entry tmta cannot honour.
TLSPolicyError = TLSConfigError


@dataclass
class TLSPolicy:
    """
    How one session protects itself.

    @ivar match: for C{verify} and C{secure}, the names the certificate
        may show: C{hostname} (the MX host), C{nexthop}, C{dot-nexthop}
        (any name below the next hop), a literal name, or C{.domain} for
        any name below it.
    @ivar servername: the SNI name: empty for none, C{hostname},
        C{nexthop}, or a literal name.
    """

    level: str = "none"
    match: List[str] = field(default_factory=list)
    protocols: str = ""
    ciphers: str = "medium"
    excludeCiphers: str = ""
    servername: str = ""
    CAfile: str = ""
    CApath: str = ""
    #: For one server under DANE: the usable TLSA records its
    #: certificate must match.
    tlsa: List = field(default_factory=list)
    #: The policy as written, before the defaults filled it in: what a
    #: DANE policy is made again from at the level a server's TLSA
    #: records call for.
    asGiven: Optional["TLSPolicy"] = field(default=None, repr=False, compare=False)

    @property
    def required(self) -> bool:
        return self.level in ("encrypt", "verify", "secure") or bool(self.tlsa)

    @property
    def verifies(self) -> bool:
        return self.level in ("verify", "secure") or bool(self.tlsa)


class TLSPolicies:
    """
    The policy for each next hop: C{smtp_tls_policy_maps} when it has an
    entry, else C{smtp_tls_security_level} with the other C{smtp_tls_*}
    settings.

    @param prefix: C{"smtp"} or C{"lmtp"}.
    @raise TLSPolicyError: a setting asks for what tmta cannot do.
    """

    def __init__(self, config, prefix: str = "smtp") -> None:
        self.config = config
        self.prefix = prefix
        #: What a worker should warn of at start.
        self.warnings: List[str] = []
        get = lambda name: config.get(f"{prefix}_{name}")  # noqa: E731
        level = get("tls_security_level").strip().lower()
        if not level:
            # The older switches, as Postfix reads them.
            if config.getBool(f"{prefix}_enforce_tls") if config.raw(
                    f"{prefix}_enforce_tls") is not None else False:
                level = "verify" if config.getBool(f"{prefix}_tls_enforce_peername") \
                    else "encrypt"
            elif config.raw(f"{prefix}_use_tls") is not None and \
                    config.getBool(f"{prefix}_use_tls"):
                level = "may"
            else:
                level = "none"
        self.default = self._checked(TLSPolicy(
            level=level,
            match=[],
            servername=get("tls_servername").strip(),
            CAfile=get("tls_CAfile").strip(),
            CApath=get("tls_CApath").strip(),
        ))
        # A policy table that cannot be opened is an error, not a table
        # left out: mail would go with less protection than it asks for.
        try:
            self.policyMaps = [openTable(spec) for spec in splitList(get("tls_policy_maps"))]
        except TableError as e:
            raise TLSPolicyError(str(e)) from None
        self.parentMatches = f"{prefix}_tls_policy_maps" in config.getList(
            "parent_domain_matches_subdomains")

    def _checked(self, policy: TLSPolicy) -> TLSPolicy:
        get = lambda name: self.config.get(f"{self.prefix}_{name}")  # noqa: E731
        if policy.level in UNSUPPORTED_LEVELS:
            raise TLSPolicyError(f"TLS security level {policy.level!r} is not implemented")
        if policy.level not in LEVELS:
            raise TLSPolicyError(f"unknown TLS security level {policy.level!r}")
        if policy.level in ("dane", "dane-only") and \
                get("dns_support_level").strip().lower() != "dnssec":
            if policy.level == "dane-only":
                raise TLSPolicyError(f"TLS security level 'dane-only' needs "
                                     f"{self.prefix}_dns_support_level = dnssec")
            # As Postfix: without validated DNS there is no DANE.
            self.warnings.append(f"TLS security level 'dane' with {self.prefix}_dns_support_"
                                 "level other than dnssec: 'may' instead")
            policy = replace(policy, level="may")
        if policy.asGiven is None:
            policy.asGiven = replace(policy)
        mandatory = policy.required
        if not policy.protocols:
            policy.protocols = get("tls_mandatory_protocols" if mandatory else "tls_protocols")
        allowedVersions(policy.protocols)
        if not policy.match:
            if policy.level == "verify":
                policy.match = _matchList(get("tls_verify_cert_match"))
            elif policy.level == "secure":
                policy.match = _matchList(get("tls_secure_cert_match"))
        if policy.ciphers == "medium" and mandatory:
            policy.ciphers = get("tls_mandatory_ciphers")
        elif policy.ciphers == "medium":
            policy.ciphers = get("tls_ciphers")
        if policy.ciphers.lower() not in ("export", "low", "medium", "high", "null"):
            raise TLSPolicyError(f"unknown cipher grade {policy.ciphers!r}")
        extra = get("tls_mandatory_exclude_ciphers") if mandatory else ""
        policy.excludeCiphers = " ".join(
            x for x in (policy.excludeCiphers, get("tls_exclude_ciphers"), extra) if x)
        if policy.level in ("verify", "secure") and not (policy.CAfile or policy.CApath):
            raise TLSPolicyError(f"TLS security level {policy.level!r} needs "
                                 f"{self.prefix}_tls_CAfile or {self.prefix}_tls_CApath")
        return policy

    def atLevel(self, policy: TLSPolicy, level: str, tlsa: List) -> TLSPolicy:
        """
        A DANE policy made C{level} for one server, with the server's
        usable TLSA records (L{tmta.smtp.dane}): the protocols and
        ciphers of that level unless the policy named its own, and the
        server's name in SNI, as RFC 7672 asks.
        """
        given = policy.asGiven or policy
        return self._checked(replace(given, level=level, tlsa=list(tlsa), asGiven=None,
                                     servername=given.servername or (
                                         "hostname" if tlsa else "")))

    @cached_property
    def remote(self) -> bool:
        """
        Whether a policy table waits on another server (L{forNexthop}
        is then asked in a lookup thread).
        """
        return isRemote(self.policyMaps)

    def forNexthop(self, nexthop: str) -> TLSPolicy:
        """
        The policy for C{nexthop} as written (C{example.com},
        C{[mx.example.com]:587}).

        @raise TLSPolicyError: its table entry is malformed or asks for
            what tmta cannot do (the mail is then deferred, not sent).
        """
        if not self.policyMaps:
            return self.default
        value = self._lookup(nexthop)
        if value is None:
            return self.default
        return self._parseEntry(value)

    def _lookup(self, nexthop: str) -> Optional[str]:
        key = nexthop.strip().lower()
        value = lookupAny(self.policyMaps, key)
        if value is not None or key.startswith("["):
            return value
        host = key.split(":", 1)[0]
        if host != key:
            value = lookupAny(self.policyMaps, host)
            if value is not None:
                return value
        labels = host.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            value = lookupAny(self.policyMaps, "." + parent)
            if value is None and self.parentMatches:
                value = lookupAny(self.policyMaps, parent)
            if value is not None:
                return value
        return None

    def _parseEntry(self, value: str) -> TLSPolicy:
        words = value.split()
        if not words:
            raise TLSPolicyError("empty TLS policy")
        policy = replace(self.default, level=words[0].lower(), match=[], protocols="",
                         ciphers="medium", excludeCiphers="")
        for word in words[1:]:
            name, equals, attribute = word.partition("=")
            if not equals:
                raise TLSPolicyError(f"malformed TLS policy attribute {word!r}")
            name = name.lower()
            if name == "match":
                policy.match = [m for m in attribute.split(":") if m]
            elif name == "protocols":
                policy.protocols = attribute.replace(":", " ")
            elif name == "ciphers":
                policy.ciphers = attribute
            elif name == "exclude":
                policy.excludeCiphers = attribute.replace(":", " ")
            elif name == "servername":
                policy.servername = attribute
            elif name == "tafile":
                policy.CAfile, policy.CApath = attribute, ""
            else:
                raise TLSPolicyError(f"TLS policy attribute {name!r} is not implemented")
        return self._checked(policy)


def _matchList(value: str) -> List[str]:
    return splitList(value.replace(":", " "))


@dataclass
class PeerTrust:
    """
    What a finished handshake showed.

    @ivar status: C{Verified}, C{Trusted}, C{Untrusted} or C{Anonymous},
        as Postfix's log line says it.
    @ivar problem: why the certificate does not pass the checks the
        level asks for, or C{None} when it does.
    @ivar summary: protocol, cipher and bits, for the log line.
    """

    status: str
    problem: Optional[str]
    summary: str


@implementer(IOpenSSLClientConnectionCreator)
class ClientTLS:
    """
    One session's OpenSSL connection under a L{TLSPolicy}: records the
    chain check without failing the handshake on it (the policy judges
    afterwards, in L{judge}).

    @param hostname: the MX host's name (or the next hop's, for
        C{[host]}).
    @param nexthop: the next-hop domain.
    """

    def __init__(self, policy: TLSPolicy, hostname: str, nexthop: str,
                 cipherLists: Dict[str, str]) -> None:
        self.policy = policy
        self.hostname = hostname.rstrip(".").lower()
        self.nexthop = nexthop.rstrip(".").lower()
        self.chainErrors: List[str] = []
        self.context = self._context(cipherLists)

    def _context(self, cipherLists: Dict[str, str]) -> SSL.Context:
        policy = self.policy
        context = SSL.Context(SSL.TLS_METHOD)
        configureContext(context, policy.protocols, policy.ciphers, policy.excludeCiphers,
                         cipherLists)
        if policy.CAfile or policy.CApath:
            try:
                context.load_verify_locations(policy.CAfile or None, policy.CApath or None)
            except SSL.Error as e:
                raise TLSPolicyError(f"cannot load the CA certificates "
                                     f"{policy.CAfile or policy.CApath}: {e}") from None
        context.set_verify(SSL.VERIFY_PEER, self._checkChain)
        return context

    def _checkChain(self, connection, certificate, errno: int, depth: int, ok: int) -> bool:
        if not ok:
            self.chainErrors.append(
                f"certificate verification failed at depth {depth}: "
                f"{_verifyErrorString(errno)}")
        # Always go on: whether the certificate matters is the policy's
        # call once the handshake is done.
        return True

    def serverName(self) -> Optional[str]:
        name = self.policy.servername
        if not name:
            return None
        if name == "hostname":
            return self.hostname
        if name == "nexthop":
            return self.nexthop
        return name

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        name = self.serverName()
        if name:
            connection.set_tlsext_host_name(name.encode("idna"))
        connection.set_connect_state()
        return connection

    def judge(self, connection: SSL.Connection) -> PeerTrust:
        """
        The trust a finished handshake earned, against the policy.
        """
        summary = connectionSummary(connection)
        certificate = connection.get_peer_certificate()
        problem: Optional[str]
        if self.policy.tlsa and certificate is not None:
            status, problem = self._daneTrust(connection.get_peer_cert_chain() or [certificate])
        elif certificate is None:
            status, problem = "Anonymous", "the server sent no certificate"
        elif self.chainErrors:
            status, problem = "Untrusted", f"untrusted issuer: {self.chainErrors[0]}"
        else:
            mismatch = self._nameMismatch(certificate)
            status = "Trusted" if mismatch else "Verified"
            problem = mismatch
        if not self.policy.verifies:
            problem = None
        elif problem is not None:
            problem = f"Server certificate not verified: {problem}"
        return PeerTrust(status, problem, summary)

    def _daneTrust(self, chain: List) -> Tuple[str, Optional[str]]:
        """
        The trust of a server whose TLSA records (RFC 7672) say what its
        certificate must be: C{Verified} when a DANE-EE(3) record matches
        its own certificate, or a DANE-TA(2) record matches a
        certificate of its chain that its own chains up to and it names
        the server (or the next-hop domain).
        """
        usage, depth = matchTLSA(self.policy.tlsa, chain)
        if usage == 3:
            return "Verified", None
        if usage == 2 and depth is not None:
            broken = chainsTo(chain, depth)
            if broken is not None:
                return "Untrusted", f"the chain to the DANE-TA trust anchor is broken: {broken}"
            mismatch = self._nameMismatch(chain[0], ["hostname", "nexthop"])
            return ("Trusted", mismatch) if mismatch else ("Verified", None)
        return "Untrusted", "no TLSA record matches the server's certificate chain"

    def _nameMismatch(self, certificate, matches: Optional[List[str]] = None) -> Optional[str]:
        """
        Why the certificate names none of the names the policy accepts
        (or C{matches}), or C{None} when it names one.
        """
        try:
            patterns = extract_patterns(certificate)
        except CertificateError as e:
            return f"the certificate's names are malformed: {e}"
        names = []
        for match in matches or self.policy.match or ["hostname"]:
            word = match.lower()
            if word == "hostname":
                names.append(self.hostname)
            elif word == "nexthop":
                names.append(self.nexthop)
            elif word == "dot-nexthop":
                names.append("." + self.nexthop)
            else:
                names.append(word)
        for name in names:
            if name.startswith("."):
                suffix = name.encode("ascii", "replace")
                if any(isinstance(p, DNSPattern) and p.pattern.lower().endswith(suffix)
                       and not p.pattern.startswith(b"*") for p in patterns):
                    return None
                continue
            try:
                verify_service_identity(patterns, [DNS_ID(name)], [])
            except (VerificationError, ValueError):
                continue
            return None
        shown = ", ".join(p.pattern.decode("ascii", "replace") for p in patterns
                          if isinstance(p, DNSPattern)) or "no DNS names"
        return f"the certificate names {shown}, none of {', '.join(names)}"


#: OpenSSL's verification errors that a misissued or misconfigured
#: certificate gives most often (X509_V_ERR_*).
_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


def _verifyErrorString(errno: int) -> str:
    return _VERIFY_ERRORS.get(errno, f"verification error {errno}")
