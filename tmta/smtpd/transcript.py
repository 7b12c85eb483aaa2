"""
Session transcripts for the postmaster: with C{protocol} or C{policy}
in C{notify_classes}, a session that broke the protocol or was refused
by policy is mailed, as it went, to C{error_notice_recipient} when it
ends (smtpd(8)'s "errors from" notices).

Credentials never appear: what follows AUTH is replaced by C{***}.
"""

from __future__ import annotations

import time
from collections import deque
from email.utils import formatdate
from typing import Deque, FrozenSet, Set

from tmta.logging import printable

#: The most lines a transcript keeps (the last ones).
LINE_LIMIT = 200
#: The longest line kept.
WIDTH = 300

CLASSES = frozenset({"protocol", "policy"})


class Transcript:
    """
    The lines of one session, and which of the notify classes it earned.

    @param classes: C{notify_classes}.
    """

    def __init__(self, classes: FrozenSet[str]) -> None:
        self.classes = classes & CLASSES
        self.lines: Deque[str] = deque(maxlen=LINE_LIMIT)
        self.earned: Set[str] = set()
        self._secret = False

    def incoming(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        if self._secret:
            text = "***"
        elif text[:5].upper() == "AUTH " and " " in text[5:].strip():
            mechanism = text[5:].split()[0]
            text = f"{text[:4]} {mechanism} ***"
        self.lines.append(" In:  " + _printable(text))

    def outgoing(self, text: str) -> None:
        for line in text.split("\r\n"):
            self.lines.append(" Out: " + _printable(line))
        # A 334 challenge is answered with credentials.
        self._secret = text.startswith("334")

    def earn(self, notifyClass: str) -> None:
        self.earned.add(notifyClass)

    @property
    def wanted(self) -> bool:
        return bool(self.earned & self.classes)

    def message(self, myhostname: str, client: str, recipient: str) -> bytes:
        """
        The notice, as message text with LF line ends.
        """
        what = " and ".join(sorted(self.earned & self.classes))
        lines = [
            f"From: Mail Delivery System <MAILER-DAEMON@{myhostname}>",
            f"To: Postmaster <{recipient}>",
            f"Subject: tmta SMTP server: {what} errors from {client}",
            f"Date: {formatdate(time.time(), localtime=True)}",
            "Auto-Submitted: auto-generated",
            "",
            f"Transcript of the session with {client} follows.",
            "",
        ]
        lines += list(self.lines)
        lines += ["", "For other details, see the mail log."]
        return ("\n".join(lines) + "\n").encode("utf-8")


def _printable(text: str) -> str:
    return printable(text)[:WIDTH]
