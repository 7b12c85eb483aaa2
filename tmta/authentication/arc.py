"""
ARC (RFC 8617) verification of incoming mail: whether the chain of
ARC sets forwarders added (mailing lists, forwarding hosts) is intact,
as C{arc=pass}, C{fail} or C{none} in C{Authentication-Results}, with
the newest instance number.

dkimpy verifies the chain; the keys of every ARC-Seal and
ARC-Message-Signature are asked of the DNS first, through twisted.names
(L{tmta.authentication.domainkeys.KeyAnswers}), as for DKIM.
"""

from __future__ import annotations

import dkim
from twisted.internet import defer
from zope.interface import implementer

from tmta.authentication.domainkeys import KeyAnswers, signatureTags
from tmta.authentication.message import AuthenticationResult, MessageUnderTest
from tmta.interfaces import IMessageAuthenticator

_ARC_SIGNATURES = (b"arc-seal", b"arc-message-signature")


@implementer(IMessageAuthenticator)
class ARCVerification:
    """
    C{arc_verify}: the ARC chain of incoming mail, when
    C{arc_verification = yes}.
    """

    def __init__(self, resolver, timeout: float = 5, minimumKeyBits: int = 1024,
                 instanceLimit: int = 50) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.minimumKeyBits = minimumKeyBits
        self.instanceLimit = instanceLimit

    @defer.inlineCallbacks
    def authenticate(self, message: MessageUnderTest):
        if not message.verifying:
            return
        signed = [h for h in message.headers
                  if h.split(b":", 1)[0].strip().lower() in _ARC_SIGNATURES]
        if not signed:
            message.results.append(AuthenticationResult("arc", "none"))
            return
        if len(signed) > 2 * self.instanceLimit:
            message.results.append(AuthenticationResult("arc", "fail",
                                                        reason="too many ARC sets"))
            return
        names = []
        for header in signed:
            tags = signatureTags(header)
            if tags.get(b"s") and tags.get(b"d"):
                names.append(tags[b"s"] + b"._domainkey." + tags[b"d"].rstrip(b"."))
        answers = KeyAnswers()
        yield answers.fetch(self.resolver, names, self.timeout)
        try:
            verifier = dkim.ARC(message.wireText(), minkey=self.minimumKeyBits,
                                timeout=self.timeout)
            chain, results, why = verifier.verify(dnsfunc=answers.lookUp)
        except dkim.DKIMException as e:
            chain, results, why = dkim.CV_Fail, [], str(e)
        newest = max((r.get("instance", 0) for r in results), default=0)
        if chain == dkim.CV_Pass:
            message.results.append(AuthenticationResult("arc", "pass", comment=f"i={newest}"))
            return
        if answers.failed:
            message.results.append(AuthenticationResult(
                "arc", "temperror", reason="key lookup failed"))
            return
        message.results.append(AuthenticationResult(
            "arc", "fail", reason=(why or "chain did not validate").replace("\n", " "),
            comment=f"i={newest}" if newest else ""))
