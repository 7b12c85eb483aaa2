"""
The trivial transports: C{discard} (accepts and drops, as configured by
the operator) and C{error} (bounces, or C{retry}: defers).  Neither
delivers anything, so an address verification probe gets the answer a
message would.
"""

from __future__ import annotations

import time

from zope.interface import implementer

from tmta.delivery import BOUNCED, DEFERRED, SENT, RecipientStatus, logDelivery
from tmta.interfaces import IAddressVerifier


@implementer(IAddressVerifier)
class DiscardAgent:
    def deliver(self, request):
        started = time.time()
        reason = request.nexthop or "discarded"
        statuses = []
        for r in request.recipients:
            status = RecipientStatus(r.offset, SENT, "2.0.0", reason)
            logDelivery(request, r, "none", status, started)
            statuses.append(status)
        return statuses


@implementer(IAddressVerifier)
class ErrorAgent:
    """
    Fails every recipient with the next hop as the reason: bounced, or
    deferred when the service is named C{retry} (as Postfix's error(8)).
    """

    def __init__(self, serviceName: str) -> None:
        self.defer = serviceName == "retry"

    def deliver(self, request):
        started = time.time()
        statuses = []
        for r in request.recipients:
            if self.defer:
                status = RecipientStatus(r.offset, DEFERRED, "4.3.0",
                                         request.nexthop or "delivery temporarily suspended")
            else:
                status = RecipientStatus(r.offset, BOUNCED, "5.0.0",
                                         request.nexthop or "mail delivery disabled")
            logDelivery(request, r, "none", status, started)
            statuses.append(status)
        return statuses
