"""
The C{trivial-rewrite} service: answers rewrite and resolve requests
over AMP for every other component.
"""

from __future__ import annotations

from typing import Optional

from twisted.application.service import Service
from twisted.internet.protocol import Factory

from tmta.mail.rewriting import Rewriter
from tmta.rewrite.commands import ResolveAddress, RewriteAddress
from tmta.wire import ServiceAMP

#: What routes address verification probes, and what it replaces.
VERIFY_ROUTING = {
    "address_verify_transport_maps": "transport_maps",
    "address_verify_relayhost": "relayhost",
    "address_verify_local_transport": "local_transport",
    "address_verify_virtual_transport": "virtual_transport",
    "address_verify_relay_transport": "relay_transport",
    "address_verify_default_transport": "default_transport",
    "address_verify_sender_dependent_relayhost_maps": "sender_dependent_relayhost_maps",
}


def verifyRewriter(config, rewriter: Rewriter) -> Rewriter:
    """
    The resolver for probes: C{rewriter} itself unless an
    C{address_verify_*} routing parameter differs from the one it
    stands for, as Postfix's verify resolver class does.
    """
    overrides = {ordinary: config.get(name) for name, ordinary in VERIFY_ROUTING.items()
                 if config.get(name) != config.get(ordinary)}
    if not overrides:
        return rewriter
    return Rewriter(config.withOverrides(overrides))


class RewriteProtocol(ServiceAMP):
    def __init__(self, rewriter: Rewriter, verifyRewriter: Optional[Rewriter] = None) -> None:
        super().__init__()
        self.rewriter = rewriter
        self.verifyRewriter = verifyRewriter or rewriter

    @RewriteAddress.responder
    def rewriteAddress(self, address: str):
        return {"address": self.rewriter.rewrite(address)}

    @ResolveAddress.responder
    def resolveAddress(self, address: str, sender=None, verify=False):
        rewriter = self.verifyRewriter if verify else self.rewriter
        r = rewriter.resolve(address, sender)
        return {
            "transport": r.transport,
            "nexthop": r.nexthop,
            "recipient": r.recipient,
            "addressClass": r.addressClass,
        }



class RewriteService(Service):
    def __init__(self, context) -> None:
        self.context = context
        self.rewriter = Rewriter(context.config)
        self.verifyRewriter = verifyRewriter(context.config, self.rewriter)

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(
            lambda: RewriteProtocol(self.rewriter, self.verifyRewriter)))
