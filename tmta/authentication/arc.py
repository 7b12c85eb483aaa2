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
            sealers = [r.get("as-domain", b"") for r in results]
            message.results.append(AuthenticationResult(
                "arc", "pass", comment=f"i={newest}", details={"arc_sealers": [
                    (d.decode("ascii", "replace") if isinstance(d, bytes) else str(d)).lower()
                    for d in sealers]}))
            return
        if answers.failed:
            message.results.append(AuthenticationResult(
                "arc", "temperror", reason="key lookup failed"))
            return
        message.results.append(AuthenticationResult(
            "arc", "fail", reason=(why or "chain did not validate").replace("\n", " "),
            comment=f"i={newest}" if newest else ""))


@implementer(IMessageAuthenticator)
class ARCSealing:
    """
    C{arc_seal}: an ARC set (RFC 8617) added to mail this host passes
    on -- forwarded by local(8), or sent on by a mailing list it hands
    the mail to -- that carries this host's own C{Authentication-Results}
    from its arrival: the next host can then trust those results though
    forwarding broke SPF or a DKIM signature.

    dkimpy builds the set (its chain status from this host's C{arc=}
    result), signing with its own RSA: some milliseconds a message, paid
    by forwarded mail only.

    @param key: the PEM private key (RSA), read at start-up.
    """

    def __init__(self, domain: str, selector: str, key: bytes, authservId: str) -> None:
        self.domain = domain
        self.selector = selector
        self.key = key
        self.authservId = authservId

    def authenticate(self, message: MessageUnderTest):
        if not message.sealing:
            return None
        from tmta.authentication.message import authservIdOf, isResultsHeader

        headers = list(message.prepend) + list(message.headers)
        ours = [h for h in headers if isResultsHeader(h)
                and authservIdOf(h) == self.authservId.lower()]
        if not ours:
            return None  # not mail this host took in: nothing to vouch for
        text = (b"\n".join(headers) + b"\n\n" + message.body).replace(b"\n", b"\r\n")
        try:
            sealed = dkim.ARC(text).sign(self.selector.encode(), self.domain.encode(),
                                         self.key, self.authservId.encode())
        except dkim.DKIMException as e:
            from tmta.logging import Logger

            Logger().warn("{queueId}: cannot add an ARC set: {error}", queueId=message.queueId,
                          error=str(e))
            return None
        # dkimpy gives the seal first; the set goes on top in that order.
        message.prepend[0:0] = [h.rstrip(b"\r\n").replace(b"\r\n", b"\n") for h in sealed]
        return None
