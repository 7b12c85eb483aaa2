"""
The Received header a message gets as it enters this mail system, in
Postfix's layout, from the attributes of its arrival (the client, its
HELO name, the protocol, TLS, the authenticated sender).
"""

from __future__ import annotations

import functools
import re
import time
from datetime import datetime
from email.utils import format_datetime
from typing import Dict, List, Optional

_UNFIT = re.compile("[\x00-\x20\x7f]")


def _clean(text: str) -> str:
    """
    An attribute fit for a header: what cleanup is told is gossip, so
    control characters and white space never reach the message.
    """
    return _UNFIT.sub("?", text[:255])


@functools.lru_cache(maxsize=8)
def _headerDate(second: int) -> str:
    # The same for every message of a second: formatted once.
    return format_datetime(datetime.fromtimestamp(second).astimezone())


#: A TLS handshake's summary as smtpd reports it
#: (L{tmta.mail.tls.connectionSummary}); nothing else is written.
_TLS_SUMMARY = re.compile(r"^TLSv[0-9.]+ with cipher [A-Za-z0-9_-]+ \(\d+/\d+ bits\)$")


def receivedHeader(
    attributes: Dict[str, str], myhostname: str, queueId: Optional[str], recipients: List[str],
    now: Optional[float] = None,
) -> bytes:
    """
    The Received header of a message, in Postfix's layout: the one
    cleanup prepends, or (C{queueId} C{None}) the one smtpd writes ahead
    of a message it passes to a before-queue filter, which has no queue
    id yet.
    """
    when = _headerDate(int(time.time() if now is None else now))
    helo = _clean(attributes.get("helo_name", ""))
    clientName = _clean(attributes.get("client_name", "unknown"))
    clientAddress = _clean(attributes.get("client_address", ""))
    protocol = _clean(attributes.get("protocol", "ESMTP"))
    lines = []
    if clientAddress:
        lines.append(f"Received: from {helo or clientName} ({clientName} [{clientAddress}])")
        tls = attributes.get("tls", "")
        if _TLS_SUMMARY.match(tls):
            lines.append(f"\t(using {tls})")
            lines.append("\t(No client certificate requested)")
        if attributes.get("sasl_header") == "yes" and attributes.get("sasl_username"):
            lines.append(f"\t(Authenticated sender: {_clean(attributes['sasl_username'])})")
        lines.append(f"\tby {myhostname} (tmta) with {protocol}"
                     + (f" id {queueId}" if queueId is not None else ""))
    elif attributes.get("uid", "").isdigit():
        # Posted with tmta-sendmail: who posted it, as the file's owner says.
        lines.append(f"Received: by {myhostname} (tmta, from userid {attributes['uid']})")
        lines.append(f"\tid {queueId}")
    else:
        lines.append(f"Received: by {myhostname} (tmta, from local) id {queueId}")
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {when}")
    else:
        lines[-1] += f"; {when}"
    return "\n".join(lines).encode("utf-8", "surrogateescape")


__all__ = ["receivedHeader"]
