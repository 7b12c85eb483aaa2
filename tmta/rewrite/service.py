"""
The C{trivial-rewrite} service: answers rewrite and resolve requests
over AMP for every other component.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.protocol import Factory

from tmta.rewrite import Rewriter
from tmta.rewrite.commands import ResolveAddress, RewriteAddress
from tmta.wire import ServiceAMP


class RewriteProtocol(ServiceAMP):
    def __init__(self, rewriter: Rewriter) -> None:
        super().__init__()
        self.rewriter = rewriter

    @RewriteAddress.responder
    def rewriteAddress(self, address: str):
        return {"address": self.rewriter.rewrite(address)}

    @ResolveAddress.responder
    def resolveAddress(self, address: str, sender=None):
        r = self.rewriter.resolve(address, sender)
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

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: RewriteProtocol(self.rewriter)))
