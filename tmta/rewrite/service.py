"""
The C{trivial-rewrite} service: answers rewrite and resolve requests
over AMP for every other component.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.protocol import Factory

from tmta.master.control import Wakeup
from tmta.rewrite import Rewriter
from tmta.rewrite.commands import ResolveAddress, RewriteAddress
from tmta.wire import QuietAMP


class RewriteProtocol(QuietAMP):
    def __init__(self, rewriter: Rewriter) -> None:
        super().__init__()
        self.rewriter = rewriter

    @RewriteAddress.responder
    def rewriteAddress(self, address: str):
        return {"address": self.rewriter.rewrite(address)}

    @ResolveAddress.responder
    def resolveAddress(self, address: str):
        r = self.rewriter.resolve(address)
        return {
            "transport": r.transport,
            "nexthop": r.nexthop,
            "recipient": r.recipient,
            "addressClass": r.addressClass,
        }

    @Wakeup.responder
    def wakeup(self, reason=None, queue_id=None):
        return {}


class RewriteService(Service):
    def __init__(self, context) -> None:
        self.context = context
        self.rewriter = Rewriter(context.config)

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: RewriteProtocol(self.rewriter)))
