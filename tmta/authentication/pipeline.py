"""
The authenticators cleanup runs on each whole message, in order: the
checks of incoming mail (DKIM verification, then any plugins named in
C{message_authentication_plugins}), the one C{Authentication-Results}
header with what they found, then signing for mail from this site's own
clients.

Each built-in authenticator is off until its parameter turns it on:
C{dkim_verification = yes}, a C{dkim_signing_table}.  A plugin
providing L{tmta.interfaces.IMessageAuthenticatorType} under a built-in
one's name (C{dkim_verify}, C{dkim_sign}) takes its place.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from zope.interface import implementer

from tmta.authentication.message import (
    MessageUnderTest,
    forgedResults,
    resultsHeader,
)
from tmta.interfaces import IMessageAuthenticator, IMessageAuthenticatorType
from tmta.logging import Logger
from tmta.mail.receiving import INTERNAL_ORIGINS

log = Logger()

#: The built-in authenticators that examine incoming mail, in order.
VERIFYING = ("dkim_verify", "arc_verify", "dmarc")
#: The built-in authenticators that sign this site's own mail, in order.
SIGNING = ("dkim_sign",)
#: The built-in authenticators that seal mail passed on, in order.
SEALING = ("arc_seal",)


@implementer(IMessageAuthenticatorType)
class DKIMVerifyType:
    """
    C{dkim_verify}: DKIM verification of incoming mail, when
    C{dkim_verification = yes} (L{tmta.authentication.domainkeys.DKIMVerification}).
    """

    name = "dkim_verify"

    def open(self, config, reactor, resolver):
        from tmta.authentication.domainkeys import DKIMVerification
        from tmta.config import parseBool

        if not parseBool(config.get("dkim_verification")):
            return None
        return DKIMVerification(resolver,
                                minimumKeyBits=config.getInt("dkim_minimum_key_bits"))


@implementer(IMessageAuthenticatorType)
class DKIMSignType:
    """
    C{dkim_sign}: DKIM signing of this site's own mail, when
    C{dkim_signing_table} names a table
    (L{tmta.authentication.domainkeys.DKIMSigning}).  Its lookups run in
    a lookup thread when a table is on another server.
    """

    name = "dkim_sign"

    def open(self, config, reactor, resolver):
        from tmta.authentication.domainkeys import DKIMSigning, Signer
        from tmta.interfaces import IRemoteTable
        from tmta.tables import openTables
        from tmta.tables.remote import maybeInThread

        signingTables = openTables(config.get("dkim_signing_table"))
        if not signingTables:
            return None
        signer = Signer(config.get("dkim_canonicalization").strip(),
                        config.getList("dkim_signed_headers"),
                        config.getList("dkim_oversigned_headers"))
        keyTables = openTables(config.get("dkim_key_table"))
        remote = any(IRemoteTable.providedBy(t) for t in signingTables + keyTables)
        signing = DKIMSigning(signingTables, keyTables, signer,
                              lambda f, *args: maybeInThread(reactor, remote, f, *args))
        # The keys local tables name are read now, while cleanup may
        # still be root: a key file is commonly readable by root alone.
        for spec in localKeySpecs(config):
            signing.preload(spec)
        return signing


@implementer(IMessageAuthenticatorType)
class ARCVerifyType:
    """
    C{arc_verify}: the ARC chain of incoming mail, when
    C{arc_verification = yes} (L{tmta.authentication.arc.ARCVerification}).
    """

    name = "arc_verify"

    def open(self, config, reactor, resolver):
        from tmta.authentication.arc import ARCVerification
        from tmta.config import parseBool

        if not parseBool(config.get("arc_verification")):
            return None
        return ARCVerification(resolver, minimumKeyBits=config.getInt("dkim_minimum_key_bits"))


@implementer(IMessageAuthenticatorType)
class DMARCType:
    """
    C{dmarc}: DMARC of incoming mail, when C{dmarc_verification = yes}
    (L{tmta.authentication.dmarc.DMARCVerification}), with what
    C{dmarc_reject_action} and C{dmarc_quarantine_action} make of its
    policies.
    """

    name = "dmarc"

    def open(self, config, reactor, resolver):
        from tmta.authentication.dmarc import DMARCVerification
        from tmta.config import parseBool

        if not parseBool(config.get("dmarc_verification")):
            return None
        return DMARCVerification(resolver, config.get("dmarc_reject_action").strip().lower(),
                                 config.get("dmarc_quarantine_action").strip().lower(),
                                 history=config.get("dmarc_history_file").strip(),
                                 trustedSealers=config.getList("dmarc_trusted_arc_sealers"))


@implementer(IMessageAuthenticatorType)
class ARCSealType:
    """
    C{arc_seal}: an ARC set on mail this host passes on, when
    C{arc_signing_key} names C{domain:selector:keyfile}
    (L{tmta.authentication.arc.ARCSealing}); the key is read now, while
    cleanup may still be root.
    """

    name = "arc_seal"

    def open(self, config, reactor, resolver):
        from tmta.authentication.arc import ARCSealing
        from tmta.authentication.domainkeys import readKeySpec

        spec = config.get("arc_signing_key").strip()
        if not spec:
            return None
        key = readKeySpec(spec)
        if key.algorithm != "rsa-sha256":
            raise ValueError("arc_signing_key: ARC signs with RSA keys only (RFC 8617)")
        from cryptography.hazmat.primitives import serialization

        pem = key.key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())
        # dkimpy parses Authentication-Results with authres, whose
        # modules are loaded now, before cleanup gives up root.
        import authres

        authres.AuthenticationResultsHeader.parse("Authentication-Results: example.com; none")
        return ARCSealing(key.domain, key.selector, pem, config.get("authserv_id").strip())


#: The built-in authenticators, by name.
BUILTIN = {kind.name: kind for kind in (DKIMVerifyType(), ARCVerifyType(), DMARCType(),
                                         DKIMSignType(), ARCSealType())}


def _authenticatorType(name: str):
    """
    The authenticator type of C{name}: an installed plugin's, which
    takes a built-in one's place, else the built-in one; C{None} when
    there is neither.

    @raise ValueError: a plugin of that name is broken.
    """
    from tmta.common.plugins import PluginError, findPlugin

    try:
        kind = findPlugin(IMessageAuthenticatorType, name)
    except PluginError as e:
        raise ValueError(str(e))
    return kind if kind is not None else BUILTIN.get(name)


class MessageAuthentication:
    """
    What cleanup runs on every whole message it takes in (when any
    authenticator is on): L{examine}.

    @ivar verifiers: the authenticators of incoming mail, in order.
    @ivar signers: the authenticators of this site's own mail.
    @ivar sealers: what adds an ARC set to mail passed on.
    """

    def __init__(self, verifiers: List, signers: List, authservId: str,
                 internalHosts=None, sealers: Optional[List] = None) -> None:
        self.verifiers = verifiers
        self.signers = signers
        self.sealers = sealers or []
        self.authservId = authservId
        self.internalHosts = internalHosts

    @classmethod
    def fromConfig(cls, config, reactor, resolver: Optional[Callable] = None
                   ) -> "MessageAuthentication":
        """
        The authenticators C{config} turns on.

        @param resolver: makes the DNS resolver, when one is needed
            (by default the system's, from /etc/resolv.conf).
        @raise ValueError: a setting is unusable, or a plugin named is
            missing or broken.
        """
        made: List = []

        def sharedResolver():
            if not made:
                if resolver is not None:
                    made.append(resolver())
                else:
                    from twisted.names import client

                    made.append(client.createResolver())
            return made[0]

        class _Lazy:
            # The resolver is made only for an authenticator that asks.
            def __getattr__(self, name):
                return getattr(sharedResolver(), name)

        def build(name: str, required: bool = False):
            kind = _authenticatorType(name)
            if kind is None:
                if required:
                    raise ValueError(f"message_authentication_plugins names {name}, but no "
                                     "installed plugin provides IMessageAuthenticatorType by "
                                     "that name")
                return None
            authenticator = kind.open(config, reactor, _Lazy())
            if authenticator is not None and not IMessageAuthenticator.providedBy(
                    authenticator):
                raise ValueError(f"message authenticator {name} made something that is not "
                                 "an IMessageAuthenticator")
            return authenticator

        verifiers = [a for a in (build(n) for n in VERIFYING) if a is not None]
        verifiers += [a for a in (build(n, required=True) for n in config.getList(
            "message_authentication_plugins")) if a is not None]
        signers = [a for a in (build(n) for n in SIGNING) if a is not None]
        sealers = [a for a in (build(n) for n in SEALING) if a is not None]
        from tmta.tables.networks import parseNetworks

        return cls(verifiers, signers, config.get("authserv_id").strip(),
                   parseNetworks(config.getList("dkim_internal_hosts"), "dkim_internal_hosts"),
                   sealers)

    def roles(self, attributes: Dict[str, str], probe: bool = False
              ) -> Tuple[bool, bool, bool]:
        """
        Whether a message with these attributes is verified, signed,
        and sealed (given an ARC set): address probes and the mail
        system's own notices get none of it; mail local(8) forwards is
        sealed; mail submitted on this host, by an authenticated client,
        or from C{dkim_internal_hosts} is signed and sealed (a mailing
        list handing mail on); all other mail from the network is
        verified.
        """
        origin = attributes.get("origin")
        if probe:
            return False, False, False
        if origin == "local":
            return False, False, bool(self.sealers)
        if origin in INTERNAL_ORIGINS:
            return False, False, False
        if not (self.verifiers or self.signers or self.sealers
                or "spf_result" in attributes):
            return False, False, False
        client = attributes.get("client_address", "")
        internal = not client or bool(attributes.get("sasl_username"))
        if not internal and self.internalHosts is not None:
            from tmta.tables.networks import inNetworks

            internal = inNetworks(client, self.internalHosts)
        if internal:
            return False, bool(self.signers), bool(self.sealers)
        return bool(self.verifiers) or "spf_result" in attributes, False, False

    def forged(self, headers: List[bytes]) -> List[int]:
        """
        Which of an incoming message's headers are C{Authentication-Results}
        in this host's name (L{forgedResults}): removed before they can
        be believed.
        """
        return forgedResults(headers, self.authservId)

    @defer.inlineCallbacks
    def examine(self, message: MessageUnderTest):
        """
        Run the authenticators on C{message}: its C{prepend} then holds
        the headers to add on top (the signatures first, then
        C{Authentication-Results}), its C{disposition} what to do with it.
        """
        if message.verifying:
            from tmta.authentication.dmarc import spfResult

            spf = spfResult(message.attributes)
            if spf is not None:
                message.results.append(spf)
            for authenticator in self.verifiers:
                yield authenticator.authenticate(message)
                if message.disposition is not None and message.disposition[0] != "hold":
                    break
            message.prepend.append(resultsHeader(self.authservId, message.results))
        if message.signing:
            for authenticator in self.signers:
                yield authenticator.authenticate(message)
        if message.sealing:
            for authenticator in self.sealers:
                yield authenticator.authenticate(message)
        return message


def authenticationProblems(config) -> List[str]:
    """
    What in the message authentication settings stops cleanup from
    starting: a signing key that cannot be read, an unusable setting, a
    plugin named that is missing or broken.
    """
    from tmta.authentication.domainkeys import Signer, keyFileProblems
    from tmta.config import ConfigError, parseBool

    problems: List[str] = []
    try:
        parseBool(config.get("dkim_verification"))
    except (ConfigError, ValueError) as e:
        problems.append(f"dkim_verification: {e}")
    from tmta.authentication.dmarc import QUARANTINE_ACTIONS, REJECT_ACTIONS

    try:
        if parseBool(config.get("dmarc_verification")):
            for name, allowed in (("dmarc_reject_action", REJECT_ACTIONS),
                                  ("dmarc_quarantine_action", QUARANTINE_ACTIONS)):
                if config.get(name).strip().lower() not in allowed:
                    problems.append(f"{name} must be one of {', '.join(allowed)}, not "
                                    f"{config.get(name)!r}")
    except (ConfigError, ValueError) as e:
        problems.append(f"dmarc_verification: {e}")
    try:
        Signer(config.get("dkim_canonicalization").strip(),
               config.getList("dkim_signed_headers"),
               config.getList("dkim_oversigned_headers"))
    except ValueError as e:
        problems.append(str(e))
    for name in config.getList("message_authentication_plugins"):
        try:
            if _authenticatorType(name) is None:
                problems.append(f"message_authentication_plugins: no installed plugin "
                                f"provides {name}")
        except ValueError as e:
            problems.append(str(e))
    problems += [f"dkim_signing_table: {p}" for p in _keyProblems(config, keyFileProblems)]
    sealing = config.get("arc_signing_key").strip()
    if sealing:
        problem = keyFileProblems(sealing)
        if problem:
            problems.append(f"arc_signing_key: {problem}")
        try:
            if not parseBool(config.get("arc_verification")):
                problems.append("arc_signing_key needs arc_verification = yes: a seal "
                                "states whether the chain it extends is intact")
        except (ConfigError, ValueError):
            pass
    return problems


#: The table types whose entries are a postmap source file's lines.
_FILE_TABLES = ("texthash", "hash", "btree", "lmdb", "cdb", "dbm", "sdbm")


def _keySpecs(spec: str) -> List[str]:
    """
    The values of a local table (a postmap source file, C{inline:},
    C{static:}); none for a table on another server, which is consulted
    only as mail comes.
    """
    from tmta.tables import DictTable, openTable, parseTextTable

    kind, _, name = spec.partition(":")
    if kind in _FILE_TABLES:
        try:
            with open(name, encoding="utf-8", errors="surrogateescape") as f:
                return list(parseTextTable(f.read().splitlines(), path=name).values())
        except OSError:
            return []  # the table's own check says it cannot be read
    if kind in ("inline", "static"):
        table = openTable(spec)
        if isinstance(table, DictTable):
            return list(table.entries.values()) + ([table.default] if table.default else [])
    return []


def localKeySpecs(config) -> List[str]:
    """
    The C{domain:selector:keyfile} of every key the DKIM tables name,
    when they are local tables.
    """
    from tmta.tables import splitList

    signing = splitList(config.get("dkim_signing_table"))
    keys = splitList(config.get("dkim_key_table"))
    if not signing:
        return []
    specs: List[str] = []
    for table in keys or signing:
        specs += [value.strip() for value in _keySpecs(table)]
    return list(dict.fromkeys(specs))


def _keyProblems(config, keyFileProblems) -> List[str]:
    """
    Every key the signing tables name, when they are local tables:
    each must load, so that a missing key stops start-up rather than
    leaving mail unsigned.
    """
    problems: List[str] = []
    for spec in localKeySpecs(config):
        problem = keyFileProblems(spec)
        if problem:
            problems.append(problem)
    return problems
