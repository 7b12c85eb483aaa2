"""
DMARC (RFC 7489) for incoming mail: the From: domain's policy, found in
the DNS (C{_dmarc.DOMAIN}, else its organizational domain's, by the
Public Suffix List), and whether an SPF or DKIM result that passed is
aligned with the From: domain.  A message that fails gets its domain's
disposition -- C{p=} (C{sp=} for a subdomain), sampled by C{pct=} --
as the operator chooses to carry it out: refused, held (quarantine) or
only written in C{Authentication-Results}.

The organizational domain comes from C{publicsuffixlist}, which carries
the list with it (no download at run time).  The policy record is
asked for through twisted.names.
"""

from __future__ import annotations

import random
import time
from typing import Dict, Optional, Tuple

from twisted.internet import defer
from twisted.names import dns
from twisted.names import error as dnserror
from zope.interface import implementer

from tmta.authentication.domainkeys import fromDomain
from tmta.authentication.message import AuthenticationResult, MessageUnderTest
from tmta.common.history import appendRecord
from tmta.interfaces import IMessageAuthenticator
from tmta.logging import Logger

log = Logger()

#: What the operator may have each policy do.
REJECT_ACTIONS = ("reject", "hold", "tag")
QUARANTINE_ACTIONS = ("hold", "tag")

_suffixes = None


def organizationalDomain(domain: str) -> str:
    """
    C{domain}'s organizational domain (RFC 7489 section 3.2): the
    public suffix and one label more; C{domain} itself when it is a
    public suffix or unknown.
    """
    global _suffixes
    if _suffixes is None:
        from publicsuffixlist import PublicSuffixList

        _suffixes = PublicSuffixList()
    return _suffixes.privatesuffix(domain.lower().rstrip(".")) or domain.lower()


def aligned(identifier: str, fromDomain: str, strict: bool) -> bool:
    identifier, fromDomain = identifier.lower().rstrip("."), fromDomain.lower().rstrip(".")
    if strict:
        return identifier == fromDomain
    return organizationalDomain(identifier) == organizationalDomain(fromDomain)


def parseRecord(text: bytes) -> Optional[Dict[str, str]]:
    """
    A DMARC record's tags, or C{None} when it is not one (no
    C{v=DMARC1} first, or no valid C{p=}).
    """
    tags: Dict[str, str] = {}
    for part in text.decode("utf-8", "replace").split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith(b"v"):
        return None
    if tags.get("p", "").lower() not in ("none", "quarantine", "reject"):
        # RFC 7489 section 6.6.3: a record with no valid p= but a rua=
        # counts as p=none.
        if "rua" not in tags:
            return None
        tags["p"] = "none"
    return tags


@implementer(IMessageAuthenticator)
class DMARCVerification:
    """
    C{dmarc}: the DMARC result of incoming mail (after DKIM verification
    and smtpd's SPF), and its disposition.

    @param rejectAction: what C{p=reject} does here: C{reject} (550),
        C{hold} or C{tag}.
    @param quarantineAction: what C{p=quarantine} does: C{hold} or C{tag}.
    @param sample: a number in [0, 100) for C{pct=} sampling.
    """

    def __init__(self, resolver, rejectAction: str = "reject", quarantineAction: str = "hold",
                 timeout: float = 5, sample=lambda: random.uniform(0, 100),
                 history: str = "", clock=time.time, trustedSealers=()) -> None:
        if rejectAction not in REJECT_ACTIONS:
            raise ValueError(f"dmarc_reject_action must be one of {', '.join(REJECT_ACTIONS)}, "
                             f"not {rejectAction!r}")
        if quarantineAction not in QUARANTINE_ACTIONS:
            raise ValueError(f"dmarc_quarantine_action must be one of "
                             f"{', '.join(QUARANTINE_ACTIONS)}, not {quarantineAction!r}")
        # The Public Suffix List is read now, while cleanup may still be
        # root (L{tmta.master.privileges}).
        organizationalDomain("example.com")
        self.resolver = resolver
        self.rejectAction = rejectAction
        self.quarantineAction = quarantineAction
        self.timeout = timeout
        self.sample = sample
        #: Where each evaluation for a domain that asks for aggregate
        #: reports is recorded (C{dmarc_history_file}); empty: nowhere.
        self.history = history
        self.clock = clock
        #: Forwarders whose intact ARC seal overrides a DMARC failure
        #: (C{dmarc_trusted_arc_sealers}).
        self.trustedSealers = frozenset(d.lower().rstrip(".") for d in trustedSealers)

    @defer.inlineCallbacks
    def _record(self, domain: str):
        """
        C{_dmarc.DOMAIN}'s DMARC record: its tags, C{None} when there is
        none (or more than one).

        @raise dnserror.DomainError: the DNS could not answer.
        """
        try:
            answers, _, _ = yield self.resolver.lookupText(f"_dmarc.{domain}",
                                                           timeout=(self.timeout,))
        except dnserror.DNSNameError:
            return None
        records = [parseRecord(b"".join(r.payload.data)) for r in answers if r.type == dns.TXT]
        records = [r for r in records if r is not None]
        return records[0] if len(records) == 1 else None

    @defer.inlineCallbacks
    def policy(self, domain: str):
        """
        The policy that governs C{domain}: C{(tags, policy domain)}, or
        C{(None, "")}.
        """
        tags = yield self._record(domain)
        if tags is not None:
            return tags, domain
        organizational = organizationalDomain(domain)
        if organizational != domain:
            tags = yield self._record(organizational)
            if tags is not None:
                return tags, organizational
        return None, ""

    @defer.inlineCallbacks
    def authenticate(self, message: MessageUnderTest):
        if not message.verifying:
            return
        domain = fromDomain(message)
        if not domain:
            message.results.append(AuthenticationResult(
                "dmarc", "permerror", reason="no single From: address"))
            return
        try:
            tags, policyDomain = yield self.policy(domain)
        except Exception as e:
            message.results.append(AuthenticationResult(
                "dmarc", "temperror", [("header.from", domain)],
                reason=f"policy lookup failed: {getattr(e, 'message', '') or e}"))
            return
        if tags is None:
            message.results.append(AuthenticationResult("dmarc", "none",
                                                        [("header.from", domain)]))
            return
        dkimAligned, spfAligned = self._aligned(message, domain, tags)
        passed = dkimAligned or spfAligned
        policy = tags["p"].lower()
        if policyDomain != domain and tags.get("sp", "").lower() in (
                "none", "quarantine", "reject"):
            policy = tags["sp"].lower()
        disposition = "none"
        override = ""
        if not passed and policy != "none":
            try:
                percent = int(tags.get("pct", "100"))
            except ValueError:
                percent = 100
            disposition = policy if self.sample() < percent else "none"
            if disposition != "none" and self._trustedForwarder(message):
                # RFC 7489 section 7.2's trusted_forwarder override: an
                # intact ARC chain sealed by a forwarder this site
                # trusts (a mailing list) stands for what it broke.
                disposition, override = "none", "trusted_forwarder"
        message.results.append(AuthenticationResult(
            "dmarc", "pass" if passed else "fail", [("header.from", domain)],
            comment=f"p={tags['p'].lower()} dis={disposition}"
                    + (f" override={override}" if override else "")))
        self._dispose(message, disposition, domain)
        if self.history and tags.get("rua"):
            self._remember(message, domain, policyDomain, tags, disposition, dkimAligned,
                           spfAligned, override)

    def _trustedForwarder(self, message: MessageUnderTest) -> bool:
        """
        Whether the message's ARC chain is intact and one of its sealers
        is in C{dmarc_trusted_arc_sealers}.
        """
        if not self.trustedSealers:
            return False
        for result in message.results:
            if result.method == "arc" and result.result == "pass":
                sealers = result.details.get("arc_sealers", [])
                if any(s in self.trustedSealers for s in sealers):
                    return True
        return False

    def _remember(self, message: MessageUnderTest, domain: str, policyDomain: str,
                tags: Dict[str, str], disposition: str, dkimAligned: bool,
                spfAligned: bool, override: str = "") -> None:
        """
        Append this evaluation to the history the aggregate reports are
        made from (L{tmta.authentication.dmarcreports}).
        """
        spf = [(r.property("smtp.mailfrom") or r.property("smtp.helo") or "").rpartition("@")[2]
               for r in message.results if r.method == "spf"]
        spfResult = [r.result for r in message.results if r.method == "spf"]
        record = {
            "time": int(self.clock()), "source_ip": message.attributes.get("client_address", ""),
            "header_from": domain, "policy_domain": policyDomain,
            "p": tags["p"].lower(), "sp": tags.get("sp", "").lower(),
            "pct": tags.get("pct", "100"), "adkim": tags.get("adkim", "r").lower(),
            "aspf": tags.get("aspf", "r").lower(), "rua": tags["rua"],
            "disposition": disposition, "dkim_aligned": dkimAligned, "spf_aligned": spfAligned,
            "override": override,
            "dkim": [[r.property("header.d") or "", r.result] for r in message.results
                     if r.method == "dkim" and r.result != "none"],
            "spf": [spf[0], spfResult[0],
                    "helo" if message.attributes.get("spf_scope") == "helo" else "mfrom"]
            if spf else [],
        }
        try:
            appendRecord(self.history, record)
        except OSError as e:
            log.warn("{queueId}: cannot record DMARC history in {path}: {error}",
                     queueId=message.queueId, path=self.history, error=e.strerror)

    @staticmethod
    def _aligned(message: MessageUnderTest, domain: str, tags: Dict[str, str]
                 ) -> Tuple[bool, bool]:
        """
        Whether a DKIM signature, and whether SPF, passed for a domain
        aligned with the From: domain.
        """
        strictDKIM = tags.get("adkim", "r").lower() == "s"
        strictSPF = tags.get("aspf", "r").lower() == "s"
        dkimAligned = spfAligned = False
        for result in message.results:
            if result.result != "pass":
                continue
            if result.method == "dkim" and aligned(result.property("header.d") or "", domain,
                                                   strictDKIM):
                dkimAligned = True
            if result.method == "spf":
                identity = result.property("smtp.mailfrom") or result.property("smtp.helo") \
                    or ""
                if aligned(identity.rpartition("@")[2], domain, strictSPF):
                    spfAligned = True
        return dkimAligned, spfAligned

    def _dispose(self, message: MessageUnderTest, disposition: str, domain: str) -> None:
        action = {"reject": self.rejectAction, "quarantine": self.quarantineAction}.get(
            disposition, "tag")
        if action == "reject":
            message.disposition = ("reject", 550, f"5.7.1 rejected by DMARC policy for {domain}")
        elif action == "hold":
            message.disposition = ("hold", f"DMARC policy of {domain} ({disposition})")


def spfResult(attributes: Dict[str, str]) -> Optional[AuthenticationResult]:
    """
    The SPF result smtpd's C{check_spf} found (its C{spf_*} attributes),
    as an C{Authentication-Results} entry.
    """
    result = attributes.get("spf_result")
    if not result:
        return None
    identity = attributes.get("spf_identity", "")
    if attributes.get("spf_scope") == "helo":
        prop: Tuple[str, str] = ("smtp.helo", identity.rpartition("@")[2])
    else:
        prop = ("smtp.mailfrom", identity)
    return AuthenticationResult("spf", result, [prop])
