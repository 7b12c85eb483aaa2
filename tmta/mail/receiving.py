"""
What a receiving daemon (smtpd, pickup) tells cleanup about each message
beyond its envelope: the after-queue content filter (C{content_filter})
and the steps C{receive_override_options} switches off.

A content filter setup (Postfix's FILTER_README) receives mail twice:
once from the outside, with C{content_filter} naming the transport to
the filter, and once from the filter, through a second smtpd whose
C{-o content_filter=} and C{-o receive_override_options=} keep the mail
from being filtered, rewritten or checked a second time.  Both settings
are read by the daemon that receives the mail, so a per-service C{-o}
applies to that service's mail alone, and travel to cleanup with it.
"""

from __future__ import annotations

from typing import Dict, FrozenSet

#: C{receive_override_options} values, as Postfix names them.
NO_UNKNOWN_RECIPIENT_CHECKS = "no_unknown_recipient_checks"
NO_ADDRESS_MAPPINGS = "no_address_mappings"
NO_HEADER_BODY_CHECKS = "no_header_body_checks"
NO_MILTERS = "no_milters"

RECEIVE_OVERRIDES = frozenset({NO_UNKNOWN_RECIPIENT_CHECKS, NO_ADDRESS_MAPPINGS,
                               NO_HEADER_BODY_CHECKS, NO_MILTERS})

#: The overrides cleanup applies (smtpd applies the unknown recipient
#: checks itself), and the attribute that carries them to it.
CLEANUP_OVERRIDES = frozenset({NO_ADDRESS_MAPPINGS, NO_HEADER_BODY_CHECKS, NO_MILTERS})
OVERRIDE_ATTRIBUTE = "receive_override"

#: The attribute that names the content filter, as C{transport:nexthop}.
FILTER_ATTRIBUTE = "filter"

#: The C{origin} attribute of mail the mail system makes itself: bounces
#: and other notices, forwarded mail, address probes.  As Postfix's
#: internal mail, it is not checked, filtered or copied again (no
#: header/body checks, milters or automatic BCC); only address
#: mappings apply.
INTERNAL_ORIGINS = frozenset({"bounce", "2bounce", "local", "notice", "verify"})


def receiveOverrides(value: str) -> FrozenSet[str]:
    """
    Parse C{receive_override_options}.

    @raise ValueError: an option Postfix does not define; a misspelt one
        would otherwise leave the mail filtered or checked twice, or not
        at all.
    """
    options = frozenset(word.lower() for word in value.replace(",", " ").split())
    unknown = sorted(options - RECEIVE_OVERRIDES)
    if unknown:
        raise ValueError(f"unknown receive_override_options value {unknown[0]!r}: "
                         f"known values are {', '.join(sorted(RECEIVE_OVERRIDES))}")
    return options


def receivingAttributes(config) -> Dict[str, str]:
    """
    The cleanup attributes a daemon that receives mail under C{config}
    adds to every message: the content filter, and the overrides cleanup
    applies.
    """
    attributes = {}
    contentFilter = config.get("content_filter").strip()
    if contentFilter:
        attributes[FILTER_ATTRIBUTE] = contentFilter
    overrides = receiveOverrides(config.get("receive_override_options")) & CLEANUP_OVERRIDES
    if overrides:
        attributes[OVERRIDE_ATTRIBUTE] = ",".join(sorted(overrides))
    return attributes
