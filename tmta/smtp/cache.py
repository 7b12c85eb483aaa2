"""
Idle SMTP sessions kept for the next delivery to the same server, as
Postfix's scache keeps them for smtp(8).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall

from tmta.smtp.client import SMTPClient


class SessionCache:
    """
    Idle sessions kept open for the next delivery to the same address,
    as Postfix's scache does for smtp(8): each closes (with QUIT) after
    C{idle} seconds unused, and is not used again once C{lifetime}
    seconds old.
    """

    def __init__(self, clock, idle: float, lifetime: float) -> None:
        self.clock = clock
        self.idle = idle
        self.lifetime = lifetime
        self._idle: Dict[Tuple, List[Tuple[SMTPClient, float, IDelayedCall]]] = {}
        self._born: Dict[SMTPClient, float] = {}

    def take(self, key: Tuple) -> Optional[SMTPClient]:
        """
        An idle usable session to C{key}, or C{None}.
        """
        sessions = self._idle.get(key)
        while sessions:
            session, _, timer = sessions.pop()
            if timer.active():
                timer.cancel()
            if session.usable:
                return session
            self._born.pop(session, None)
        return None

    def release(self, key: Tuple, session: SMTPClient) -> None:
        """
        Keep C{session} for reuse, unless it is too old or unusable.
        """
        now = self.clock.seconds()
        born = self._born.setdefault(session, now)
        if not session.usable or not self.idle or now - born >= self.lifetime:
            self._born.pop(session, None)
            session.quit()
            return
        timer = self.clock.callLater(self.idle, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, now, timer))

    def _expire(self, key: Tuple, session: SMTPClient) -> None:
        sessions = self._idle.get(key, [])
        self._idle[key] = [entry for entry in sessions if entry[0] is not session]
        if not self._idle[key]:
            del self._idle[key]
        self._born.pop(session, None)
        session.quit()

    def close(self) -> None:
        for sessions in self._idle.values():
            for session, _, timer in sessions:
                if timer.active():
                    timer.cancel()
                session.quit()
        self._idle.clear()
        self._born.clear()
