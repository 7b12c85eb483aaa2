"""
The count of an SMTP session's commands that smtpd's disconnect line
gives, as Postfix's C{smtpd_format_cmd_stats} formats it for log
analysers.
"""

from __future__ import annotations

from typing import Dict, List, Optional

#: The commands Postfix counts, in its order; any other is C{unknown}.
COUNTED = ("helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt", "data",
           "bdat", "rset", "noop", "vrfy", "etrn", "quit")


class CommandCounts:
    """
    Per command, how many were sent and how many succeeded (their final
    reply was 2xx).
    """

    def __init__(self) -> None:
        self.counts: Dict[str, List[int]] = {}
        self._pending: Optional[str] = None

    def received(self, verb: str) -> None:
        """
        A command arrived; its next 2xx reply says it succeeded.
        """
        name = verb.lower() if verb.lower() in COUNTED else "unknown"
        self.counts.setdefault(name, [0, 0])[1] += 1
        self._pending = name

    def replied(self, text: str) -> None:
        """
        smtpd replied: a 2xx reply is the pending command's success
        (DATA's 354 and AUTH's 334 are not final).
        """
        if self._pending is not None and text[:1] == "2":
            self.counts[self._pending][0] += 1
            self._pending = None

    def summary(self) -> str:
        """
        C{ ehlo=1 mail=1 rcpt=0/1 ... commands=3/4}: each command's
        successes, followed by how many were sent where they differ.
        """
        parts = []
        succeeded = received = 0
        for name in COUNTED + ("unknown",):
            counts = self.counts.get(name)
            if counts is None:
                continue
            parts.append(f" {name}={counts[0]}" + (f"/{counts[1]}" if counts[0] != counts[1]
                                                    else ""))
            succeeded += counts[0]
            received += counts[1]
        total = f" commands={succeeded}"
        if succeeded != received or received == 0:
            total += f"/{received}"
        return "".join(parts) + total
