"""
postscreen's memory of the clients that passed its tests
(C{postscreen_cache_map}): for each client address, until when each
test counts as passed, as Postfix keeps it (C{pregreet;dnsbl;pipelining;
non_smtp_command;bare_newline}, seconds since the epoch; 0: not passed).
A client whose every enabled test is still passed goes to smtpd at once.
"""

from __future__ import annotations

from typing import Dict, Optional

from tmta.postscreen.settings import TESTS

#: The expiry of a test never passed.
NEVER = 0


def parseRecord(raw: str) -> Optional[Dict[str, int]]:
    """
    A cache record as each test's expiry, or C{None} for one that is
    malformed (the client is then new).
    """
    parts = raw.split(";")
    if len(parts) < len(TESTS) or not all(p.isdigit() for p in parts[:len(TESTS)]):
        return None
    return {test: int(part) for test, part in zip(TESTS, parts)}


def formatRecord(expiry: Dict[str, int]) -> str:
    return ";".join(str(expiry.get(test, NEVER)) for test in TESTS)


class ClientCache:
    """
    The expiry of each client's tests, over a store
    (L{tmta.tables.writable}).

    @param retention: how long a record is kept after its last test
        expired (C{postscreen_cache_retention_time}).
    """

    def __init__(self, store, retention: int) -> None:
        self.store = store
        self.retention = retention

    def get(self, address: str) -> Optional[Dict[str, int]]:
        raw = self.store.get(address)
        return None if raw is None else parseRecord(raw)

    def put(self, address: str, expiry: Dict[str, int]) -> None:
        self.store.put(address, formatRecord(expiry))

    def clean(self, now: int) -> int:
        """
        Forget the clients whose every test expired more than
        C{retention} seconds ago.

        @return: how many were forgotten.
        """
        stale = []
        for address, raw in self.store.items():
            record = parseRecord(raw)
            if record is None or max(record.values()) + self.retention < now:
                stale.append(address)
        for address in stale:
            self.store.delete(address)
        return len(stale)
