"""
access(5) tables in restriction lists: C{check_client_access},
C{check_helo_access}, C{check_sender_access} and
C{check_recipient_access}, with the lookup keys and the actions Postfix
defines (OK, REJECT, DEFER, 4xx/5xx text, DUNNO, HOLD, DISCARD, FILTER,
REDIRECT, PREPEND, WARN, a restriction or a restriction class).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, List, Optional, Tuple

from twisted.internet.defer import Deferred
from zope.interface import implementer

from tmta.interfaces import IRemoteTable, ISMTPRestriction
from tmta.logging import Logger
from tmta.mail.address import localName, splitAddress
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
)
from tmta.tables import TableError, TableLookupError, lookupAny, openTable

log = Logger()

_CODE = re.compile(r"^([45])(\d\d)(?:\s+(.*))?$", re.S)
_DSN = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+(.*))?$", re.S)


def _parentDomains(name: str, parentMatches: bool) -> List[str]:
    """
    The keys a domain name is looked up by: itself, then each parent,
    as C{.parent} (and bare, with C{parent_domain_matches_subdomains}).
    """
    name = name.lower().rstrip(".")
    keys = [name]
    labels = name.split(".")
    for i in range(1, len(labels)):
        parent = ".".join(labels[i:])
        if parentMatches:
            keys.append(parent)
        keys.append("." + parent)
    return keys


def clientKeys(address: str, name: str, parentMatches: bool) -> List[str]:
    """
    C{check_client_access}'s keys: the host name and its parents, then
    the address and its shorter network prefixes (C{1.2.3.4}, C{1.2.3},
    C{1.2}, C{1}; IPv6 by colon-separated groups).
    """
    keys = []
    if name:
        # "unknown" too: Postfix looks the name up as it is, so a table
        # can list clients whose name is not known.
        keys += _parentDomains(name, parentMatches)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return keys + [address]
    if ip.version == 4:
        parts = str(ip).split(".")
        keys += [".".join(parts[:n]) for n in range(4, 0, -1)]
    else:
        full = ip.exploded.split(":")
        keys.append(str(ip))
        keys += [":".join(p.lstrip("0") or "0" for p in full[:n]) for n in range(7, 0, -1)]
    return keys


def addressKeys(address: str, delimiters: str, parentMatches: bool,
                nullKey: str = "<>") -> List[str]:
    """
    An envelope address's keys: the whole address (and without its
    extension), the domain and its parents, then C{localpart@}.
    """
    if address == "":
        return [nullKey]
    local, domain = splitAddress(address.lower())
    keys = [address.lower()]
    base = localName(address, delimiters).lower()
    if domain and base != local:
        keys.append(f"{base}@{domain}")
    if domain:
        keys += _parentDomains(domain, parentMatches)
    keys.append(f"{local}@")
    if base != local:
        keys.append(f"{base}@")
    return keys


class AccessCheck:
    """
    One C{check_*_access type:table}: the table, what is looked up in it
    and how the reply names it.

    @ivar what: C{client}, C{helo}, C{sender} or C{recipient}.
    """

    _REPLY_CLASS = {"client": "Client host rejected", "helo": "Helo command rejected",
                    "sender": "Sender address rejected",
                    "recipient": "Recipient address rejected",
                    "reverse_client_hostname": "Unverified Client host rejected",
                    "sasl": "SASL login name rejected",
                    "ccert": "Client certificate rejected"}

    def __init__(self, what: str, spec: str, environment: RestrictionEnvironment) -> None:
        self.what = what
        self.spec = spec
        self.name = f"check_{what}_access {spec}"
        self.environment = environment
        try:
            self.table = openTable(spec)
        except TableError as e:
            raise ValueError(f"check_{what}_access: {e}") from None
        config = environment.config
        self.parentMatches = "smtpd_access_maps" in config.getList(
            "parent_domain_matches_subdomains")
        self.delimiters = config.get("recipient_delimiter")
        self.nullKey = config.get("smtpd_null_access_lookup_key") or "<>"
        #: Whether the table waits on another server (looked up in a
        #: lookup thread).
        self.remote = IRemoteTable.providedBy(self.table)

    @classmethod
    def maker(cls, what: str) -> Callable:
        return lambda spec, environment: _AccessRestriction(cls(what, spec, environment))

    def subject(self, c: RecipientContext) -> Optional[str]:
        """
        What the reply names (C{<...>}), or C{None}: nothing to look up.
        """
        if self.what == "client":
            return c.client
        if self.what == "reverse_client_hostname":
            return c.reverseClientName
        if self.what == "sasl":
            return c.saslUsername or None
        if self.what == "ccert":
            return c.client if c.clientCertificate is not None else None
        if self.what == "helo":
            return c.helo or None
        if self.what == "sender":
            return c.sender if c.sender is not None else None
        return c.recipient or None

    def keys(self, c: RecipientContext) -> List[str]:
        if self.what == "client":
            return clientKeys(c.clientAddress, c.clientName, self.parentMatches)
        if self.what == "reverse_client_hostname":
            return clientKeys(c.clientAddress, c.reverseClientName, self.parentMatches)
        if self.what == "sasl":
            return [c.saslUsername]
        if self.what == "ccert":
            # Trusted by a CA or not: the fingerprint is the identity.
            certificate = c.clientCertificate
            return [certificate.fingerprint, certificate.pubkeyFingerprint]
        if self.what == "helo":
            name = c.helo
            if name.startswith("[") and name.endswith("]"):
                return [name, name[1:-1]]
            return _parentDomains(name, self.parentMatches)
        address = c.sender if self.what == "sender" else c.recipient
        return addressKeys(address or "", self.delimiters, self.parentMatches, self.nullKey)

    def lookup(self, c: RecipientContext) -> Optional[str]:
        for key in self.keys(c):
            value = lookupAny([self.table], key)
            if value is not None:
                return value
        return None


@implementer(ISMTPRestriction)
class _AccessRestriction:
    """
    An access table consulted for one part of the session.  Where Postfix
    forbids an OK (the unverified client name, which its owner
    controls), an OK is a configuration error, never a permit.
    """

    def __init__(self, check: AccessCheck) -> None:
        self.check = check
        self.name = check.name
        self.permitForbidden = check.what == "reverse_client_hostname"

    def evaluate(self, context: RecipientContext):
        check = self.check
        subject = check.subject(context)
        if subject is None:
            return DUNNO, None

        def failed(error: Exception):
            log.warn("{name}: {error}", name=self.name, error=str(error))
            return DEFER, f"451 4.3.0 <{subject}>: Temporary lookup failure"

        def found(value: Optional[str]):
            if value is None:
                return DUNNO, None
            result = applyAction(value, check.environment, context,
                                 f"<{subject}>: {check._REPLY_CLASS[check.what]}", self.name)
            if self.permitForbidden:
                return chain(result, forbidPermit, self.name, subject)
            return result

        try:
            value = check.environment.lookUp(check.remote, check.lookup, context)
        except TableLookupError as e:
            return failed(e)
        if isinstance(value, Deferred):
            return value.addCallbacks(found, lambda f: failed(f.trap(TableLookupError)
                                                              and f.value))
        return found(value)


def forbidPermit(result: Tuple[str, Optional[str]], name: str, target: str):
    """
    An OK where the table's keys come from the client (its unverified
    name, its sender's MX or name servers) would let anyone in who
    controls them: Postfix refuses it as a configuration error.
    """
    if result[0] == PERMIT:
        log.warn("restriction {name} returns OK for {target}: this is not allowed for "
                 "security reasons; use DUNNO instead of OK to make an exception",
                 name=name, target=target)
        return DEFER, CONFIGURATION_ERROR
    return result


#: Postfix's C{smtpd_dsn_fix}: an address status (x.1.y) re-aimed at
#: what is refused, by its detail: (for a sender, for a recipient).
_ADDRESS_DSN = {"1": ("1.7", "1.1"), "2": ("1.8", "1.2"), "3": ("1.7", "1.3"),
                "4": ("1.7", "1.4"), "5": ("1.0", "1.5"), "6": ("1.7", "1.6"),
                "7": ("1.7", "1.3"), "8": ("1.8", "1.2")}


def fixStatus(status: str, prefix: str) -> str:
    """
    An enhanced status code given in an access table, as Postfix sends
    it: an address status (C{x.1.y}) made to speak of the sender or the
    recipient being refused (C{x.0.0} for anything else).
    """
    if status[1:4] != ".1.":
        return status
    forSender, forRecipient = _ADDRESS_DSN.get(status[4:], ("1.0", "1.0"))
    if "Sender address" in prefix:
        return f"{status[0]}.{forSender}"
    if "Recipient address" in prefix:
        return f"{status[0]}.{forRecipient}"
    return f"{status[0]}.0.0"


def _reply(code: int, defaultDsn: str, prefix: str, text: str) -> str:
    """
    A refusal from an access table: the code, the table's status code
    (or C{defaultDsn}) in the code's class, and its text.
    """
    match = _DSN.match(text or "")
    dsn, text = (match.group(1), match.group(2) or "") if match else (defaultDsn, text)
    dsn = f"{str(code)[0]}{fixStatus(dsn, prefix)[1:]}"
    return f"{code} {dsn} {prefix}: {text or 'Access denied'}"


def _ignored(source: str, value: str, why: str) -> Tuple[str, None]:
    """
    An action Postfix warns about and lets pass.
    """
    log.warn("access table {source} entry {value!r} {why}", source=source, value=value,
             why=why)
    return DUNNO, None


def applyAction(value: str, env: RestrictionEnvironment, context: RecipientContext,
                prefix: str, source: str):
    """
    What an access(5) result means: C{(action, reply)}, or a Deferred
    firing with it when the result names restrictions to evaluate.

    @param prefix: how the reply names the subject
        (C{<name>: Client host rejected}).
    @param source: the table, for the log.
    """
    value = value.strip()
    word, _, text = value.partition(" ")
    text = text.strip()
    upper = word.upper()
    if upper in ("OK", "RELAY") or (value.isascii() and value.isdigit()):
        return PERMIT, None
    if upper == "DUNNO":
        return DUNNO, None
    if upper == "REJECT":
        return REJECT, _reply(env.code("access_map_reject_code"), "5.7.1", prefix, text)
    if upper == "DEFER":
        return DEFER, _reply(env.code("access_map_defer_code"), "4.7.1", prefix, text)
    if upper in ("DEFER_IF_REJECT", "DEFER_IF_PERMIT"):
        # Decides nothing now: the restriction list keeps the reply for
        # a later reject (or permit) to turn into.
        return (DEFER_IF_REJECT if upper == "DEFER_IF_REJECT" else DEFER_IF_PERMIT,
                _reply(env.code("access_map_defer_code"), "4.7.1", prefix,
                       text or "Service unavailable"))
    match = _CODE.match(value) if len(word) == 3 else None
    if match and match.group(3):
        code = int(match.group(1) + match.group(2))
        return (DEFER if code < 500 else REJECT,
                _reply(code, f"{match.group(1)}.7.1", prefix, match.group(3) or ""))
    actions = context.actions
    if upper in ("WARN", "INFO"):
        log.info("{kind}: {client}: {prefix}: {text}", kind=upper.lower(),
                 client=context.client, prefix=prefix, text=text)
        return DUNNO, None
    if upper == "HOLD":
        actions.hold = actions.hold or (text or "held by access table")
        return DUNNO, None
    if upper == "DISCARD":
        actions.discard = actions.discard or (text or "discarded by access table")
        return DUNNO, None
    if upper == "FILTER":
        if ":" not in text:
            return _ignored(source, value, "requires transport:destination")
        actions.filter = actions.filter or text
        return DUNNO, None
    if upper in ("REDIRECT", "BCC"):
        if "@" not in text:
            return _ignored(source, value, "requires user@domain target")
        if upper == "REDIRECT":
            actions.redirect = actions.redirect or text
        else:
            actions.bcc.append(text)
        return DUNNO, None
    if upper == "PREPEND":
        if not re.match(r"^[!-9;-~]+:", text) or "\n" in text:
            return _ignored(source, value, "requires header: text")
        actions.prepend.append(text)
        return DUNNO, None
    # Anything else names restrictions (or a restriction class).
    build = env.restrictionList  # set by the restriction language, which called this
    if build is None:
        return _misconfigured(source, value)
    try:
        nested = build(source, value, env)
    except ValueError:
        return _misconfigured(source, value)
    return nested.evaluate(context)


def _misconfigured(source: str, value: str) -> Tuple[str, str]:
    log.warn("{source}: unusable access table result {value!r}: deferring", source=source,
             value=value)
    return DEFER, CONFIGURATION_ERROR


RESTRICTIONS = {
    "check_client_access": AccessCheck.maker("client"),
    "check_helo_access": AccessCheck.maker("helo"),
    "check_sender_access": AccessCheck.maker("sender"),
    "check_recipient_access": AccessCheck.maker("recipient"),
    "check_reverse_client_hostname_access": AccessCheck.maker("reverse_client_hostname"),
    "check_sasl_access": AccessCheck.maker("sasl"),
    "check_ccert_access": AccessCheck.maker("ccert"),
}
