"""
Handing a local recipient to another delivery agent: C{mailbox_transport}
(the user's mail goes to, say, Dovecot over LMTP instead of a mailbox
file) and C{fallback_transport} (names with no account), as Postfix's
local does.  The other agent gets a one-recipient delivery request for
the same queue file, over its master.cf socket, and its answer becomes
this recipient's.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread

from tmta.delivery import DEFERRED, Deliver, DeliveryRequest, RecipientStatus


class Passer:
    """
    Passes recipients on, for an agent working in a thread: L{passOn}
    blocks that thread until the other agent answers.

    @param connect: connects to a service's private socket, as
        L{tmta.interfaces.IWorkerContext.connect} does.
    """

    def __init__(self, reactor, connect: Callable[[str], defer.Deferred]) -> None:
        self.reactor = reactor
        self.connect = connect

    def passOn(self, transport: str, nexthop: str, request: DeliveryRequest,
               address: str, original: str, offset: int) -> RecipientStatus:
        try:
            return blockingCallFromThread(self.reactor, self._call, transport, nexthop,
                                          request, address, original, offset)
        except Exception as e:
            return RecipientStatus(offset, DEFERRED, "4.3.0",
                                   f"cannot pass to the {transport} transport: {e}")

    def _call(self, transport, nexthop, request, address, original, offset):
        return defer.Deferred.fromCoroutine(
            self._callNow(transport, nexthop, request, address, original, offset))

    async def _callNow(self, transport, nexthop, request, address, original, offset):
        protocol = await self.connect(transport)
        try:
            dsn = {f"dsn_{k}": request.attributes[f"dsn_{k}"] for k in ("ret", "envid")
                   if f"dsn_{k}" in request.attributes}
            result = await protocol.callRemote(
                Deliver, queue_id=request.queueId, sender=request.sender, nexthop=nexthop,
                arrival=request.arrival, activated=request.activated,
                recipients=[{"address": address, "original": original, "offset": offset,
                             "notify": "", "orcpt": ""}], verify=request.verifyOnly, **dsn)
        finally:
            protocol.transport.loseConnection()
        [status] = [s for s in result["statuses"] if s["offset"] == offset] or [None]
        if status is None:
            return RecipientStatus(offset, DEFERRED, "4.3.0",
                                   f"the {transport} transport gave no answer")
        return RecipientStatus(offset, status["status"], status["dsn"], status["reason"],
                               status.get("action", ""))
