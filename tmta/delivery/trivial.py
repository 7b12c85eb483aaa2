"""
The trivial transports: C{discard} (accepts and drops, as configured by
the operator) and C{error} (bounces, or C{retry}: defers).  Neither
delivers anything, so an address verification probe gets the answer a
message would.
"""

from __future__ import annotations

import re
import time
from typing import Tuple

from zope.interface import implementer

from tmta.delivery import BOUNCED, DEFERRED, SENT, RecipientStatus, logDelivery
from tmta.interfaces import IAddressVerifier

_LEADING_STATUS = re.compile(r"\s*([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")


def splitStatus(text: str, default: str) -> Tuple[str, str]:
    """
    Split an optional leading RFC 3463 status code off a reason, as
    Postfix reads the next hop of C{error:5.1.1 no such user}.

    @return: the status (C{default} when the text has none) and the
        rest of the text.
    """
    match = _LEADING_STATUS.match(text)
    if match is None:
        return default, text.strip()
    return match.group(1), text[match.end():].strip()


@implementer(IAddressVerifier)
class DiscardAgent:
    def deliver(self, request):
        started = time.time()
        dsn, reason = splitStatus(request.nexthop or "discarded", "2.0.0")
        statuses = []
        for r in request.recipients:
            status = RecipientStatus(r.offset, SENT, dsn, reason)
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
                status = RecipientStatus(r.offset, DEFERRED, *splitStatus(
                    request.nexthop or "delivery temporarily suspended", "4.3.0"))
            else:
                status = RecipientStatus(r.offset, BOUNCED, *splitStatus(
                    request.nexthop or "mail delivery disabled", "5.0.0"))
            logDelivery(request, r, "none", status, started)
            statuses.append(status)
        return statuses
