"""
SMTP replies that more than one component gives, each written once.

Each is a C{(code, text)} pair: the text starts with the enhanced status
code, as the L{tmta.cleanup} answers carry it; L{line} makes the reply
line smtpd sends.
"""

from __future__ import annotations

import errno
from typing import Optional, Tuple

Reply = Tuple[int, str]

QUEUE_WRITE_ERROR: Reply = (451, "4.3.0 Error: queue file write error")
INTERNAL_ERROR: Reply = (451, "4.3.0 Error: internal error")
INSUFFICIENT_STORAGE: Reply = (452, "4.3.1 Insufficient system storage")
TOO_BIG: Reply = (552, "5.3.4 Message size exceeds fixed limit")

#: The errors that mean the disk (or the account's quota) is full.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def line(reply: Reply) -> str:
    """
    The reply as one SMTP line (without its line end).
    """
    return f"{reply[0]} {reply[1]}"


def isNoSpace(error: Optional[BaseException]) -> bool:
    """
    Whether C{error} says the disk or quota is full.
    """
    return getattr(error, "errno", None) in _NO_SPACE


def storageFailure(error: Optional[BaseException]) -> Reply:
    """
    The reply for a queue file that could not be written: Postfix's
    C{452 4.3.1} when the disk is full, else a queue file write error.
    """
    return INSUFFICIENT_STORAGE if isNoSpace(error) else QUEUE_WRITE_ERROR
