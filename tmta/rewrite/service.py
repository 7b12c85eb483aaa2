"""
The C{trivial-rewrite} service: answers rewrite and resolve requests
over AMP for every other component.
"""

from __future__ import annotations

from typing import Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory

from tmta.mail.rewriting import Resolution, Rewriter
from tmta.rewrite.commands import ResolveAddress, RewriteAddress
from tmta.tables import TableLookupError
from tmta.tables.remote import LookupThreads
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
    "address_verify_sender_dependent_default_transport_maps":
        "sender_dependent_default_transport_maps",
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
    """
    Answers rewrite and resolve requests; in a lookup thread when the
    rewriter consults a table on another server.

    @param lookups: the process's L{LookupThreads}, needed only when a
        rewriter is L{remote<Rewriter.remote>}.
    """

    def __init__(self, rewriter: Rewriter, verifyRewriter: Optional[Rewriter] = None,
                 lookups: Optional[LookupThreads] = None) -> None:
        super().__init__()
        self.rewriter = rewriter
        self.verifyRewriter = verifyRewriter or rewriter
        self.lookups = lookups

    def _run(self, rewriter: Rewriter, f, *args):
        if rewriter.remote and self.lookups is not None:
            return self.lookups.run(f, *args)
        return f(*args)

    @RewriteAddress.responder
    def rewriteAddress(self, address: str):
        return self._run(self.rewriter, lambda: {"address": self.rewriter.rewrite(address)})

    @ResolveAddress.responder
    def resolveAddress(self, address: str, sender=None, verify=False):
        rewriter = self.verifyRewriter if verify else self.rewriter

        result = self._run(rewriter, lambda: _answer(rewriter.resolve(address, sender)))
        if isinstance(result, Deferred):
            # Resolution's own lookup failures are a "retry" answer; this
            # one is the lookup thread's time limit.
            result.addErrback(lambda f: f.trap(TableLookupError) and _answer(
                Resolution.lookupFailure(address, f.value)))
        return result


def _answer(resolution: Resolution) -> dict:
    return {
        "transport": resolution.transport,
        "nexthop": resolution.nexthop,
        "recipient": resolution.recipient,
        "addressClass": resolution.addressClass,
    }


class RewriteService(Service):
    def __init__(self, context) -> None:
        self.context = context
        self.rewriter = Rewriter(context.config)
        self.verifyRewriter = verifyRewriter(context.config, self.rewriter)

    def startService(self) -> None:
        super().startService()
        lookups = LookupThreads.forReactor(self.context.reactor)
        self.context.listen(Factory.forProtocol(
            lambda: RewriteProtocol(self.rewriter, self.verifyRewriter, lookups)))
