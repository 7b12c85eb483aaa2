"""
Making 8-bit mail fit a server that does not announce 8BITMIME: each
body part with 8-bit octets is re-encoded as quoted-printable, as
Postfix's smtp(8) does (RFC 6152 leaves the sender that choice, or a
bounce).  Headers are left as they are: there is nothing safe to turn
them into.
"""

from __future__ import annotations

import quopri
from email import message_from_bytes
from email.generator import BytesGenerator
from email.policy import compat32
from io import BytesIO


def downgrade8bit(content: bytes) -> bytes:
    """
    The message with every 8-bit leaf part re-encoded as
    quoted-printable (and its C{Content-Transfer-Encoding} saying so);
    7-bit parts, and the structure, unchanged.
    """
    message = message_from_bytes(content, policy=compat32)
    changed = False
    for part in message.walk():
        if part.is_multipart():
            continue
        encoding = (part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
        if encoding not in ("7bit", "8bit", "binary"):
            continue  # base64 or quoted-printable already: 7-bit
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes) or raw.isascii():
            continue
        encoded = quopri.encodestring(raw.replace(b"\r\n", b"\n")).decode("ascii")
        part.set_payload(encoded)
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "quoted-printable"
        changed = True
    if not changed:
        return content
    out = BytesIO()
    BytesGenerator(out, mangle_from_=False, maxheaderlen=0, policy=compat32).flatten(message)
    return out.getvalue()
