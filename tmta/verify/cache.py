"""
What verify knows of each address, and when an address is probed.

A record holds the address's status, when a probe was last sent (0:
none outstanding), when the last result came (0: never) and the
reason, kept in C{address_verify_map} as Postfix keeps it:
C{status:probed:updated:text}.

The times follow Postfix's parameters: a deliverable address is probed
again after C{address_verify_positive_refresh_time} and forgotten after
C{address_verify_positive_expire_time}; an undeliverable one after
C{address_verify_negative_refresh_time} and
C{address_verify_negative_expire_time}.  A probe is taken for lost after
L{PROBE_TTL} seconds without an answer, and only then sent again, so
that a flood of queries for one address sends one probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from tmta.config.safety import verifyMapProblem
from tmta.logging import Logger
from tmta.tables.writable import openWritable
from tmta.verify.commands import BOUNCE, DEFER, OK, PROBING, STATUSES

log = Logger()

#: Seconds after which an unanswered probe is taken for lost.
PROBE_TTL = 1000

IN_PROGRESS = "Address verification in progress"


@dataclass
class VerifyRecord:
    status: int
    probed: int
    updated: int
    text: str

    def format(self) -> str:
        return f"{self.status}:{self.probed}:{self.updated}:{self.text}"

    @classmethod
    def parse(cls, raw: str) -> Optional["VerifyRecord"]:
        """
        @return: the record, or C{None} for one that is malformed (it is
            then treated as unknown, and probed again).
        """
        parts = raw.split(":", 3)
        if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
            return None
        status, probed, updated = int(parts[0]), int(parts[1]), int(parts[2])
        if status not in STATUSES or not (probed or updated):
            return None
        return cls(status, probed, updated, parts[3])


def cacheKey(address: str) -> str:
    return address.lower()


def openStore(spec: str, reactor):
    """
    The store for C{address_verify_map}.

    @raise ValueError: a table type tmta cannot write.
    """
    problem = verifyMapProblem(spec)
    if problem is not None:
        raise ValueError(problem)
    return openWritable(spec, reactor, "tmta-verify-cache")


@dataclass
class CacheTimes:
    positiveExpire: int
    positiveRefresh: int
    negativeExpire: int
    negativeRefresh: int
    negativeCache: bool = True

    @classmethod
    def fromConfig(cls, config) -> "CacheTimes":
        return cls(
            positiveExpire=int(config.getTime("address_verify_positive_expire_time")),
            positiveRefresh=int(config.getTime("address_verify_positive_refresh_time")),
            negativeExpire=int(config.getTime("address_verify_negative_expire_time")),
            negativeRefresh=int(config.getTime("address_verify_negative_refresh_time")),
            negativeCache=config.getBool("address_verify_negative_cache"),
        )


class AddressCache:
    """
    The address records and the rules of when to probe.

    @param store: where the records are kept (L{openStore}).
    @param clock: gives the time (C{seconds()}).
    """

    def __init__(self, store, times: CacheTimes, clock) -> None:
        self.store = store
        self.times = times
        self.clock = clock

    def _expired(self, record: VerifyRecord, now: int) -> bool:
        lifetime = (self.times.positiveExpire if record.status == OK
                    else self.times.negativeExpire)
        return record.updated + lifetime < now

    def _stale(self, record: VerifyRecord, now: int) -> bool:
        refresh = (self.times.positiveRefresh if record.status == OK
                   else self.times.negativeRefresh)
        return record.updated + refresh < now

    def _read(self, key: str) -> Optional[VerifyRecord]:
        raw = self.store.get(key)
        if raw is None:
            return None
        record = VerifyRecord.parse(raw)
        if record is None:
            log.warn("bad address verify table entry: {entry}", entry=raw[:100])
        return record

    def query(self, address: str) -> Tuple[int, str, bool]:
        """
        What is known of C{address}.

        @return: C{(status, text, probe)}: C{probe} says a probe must be
            sent now (and the record already says it was).
        """
        now = int(self.clock.seconds())
        key = cacheKey(address)
        record = self._read(key)
        if record is None or (now - record.probed > PROBE_TTL
                              and self._expired(record, now)):
            if record is not None and not self.times.negativeCache:
                self.store.delete(key)
            record = VerifyRecord(PROBING, 0, 0, IN_PROGRESS)
        probe = now - record.probed > PROBE_TTL and self._stale(record, now)
        if probe and (record.updated or self.times.negativeCache):
            self.store.put(key, VerifyRecord(record.status, now, record.updated,
                                             record.text).format())
        return record.status, record.text, probe

    def update(self, address: str, status: int, text: str) -> None:
        """
        Record a probe's result.  A failure never replaces a
        deliverable record before it expires: the address is probed
        again at the next query instead, and stays deliverable while
        some probes succeed.  Without C{address_verify_negative_cache}
        failures are not recorded at all.
        """
        if status not in (OK, DEFER, BOUNCE):
            raise ValueError(f"bad address status {status}")
        key = cacheKey(address)
        if status != OK:
            if not self.times.negativeCache:
                return
            current = self._read(key)
            if current is not None and current.status == OK:
                return
        text = "".join(c if c.isprintable() else "?" for c in text)
        self.store.put(key, VerifyRecord(status, 0, int(self.clock.seconds()), text).format())

    def clean(self) -> int:
        """
        Forget records that have expired and have no probe under way
        (every C{address_verify_cache_cleanup_interval}).

        @return: how many were forgotten.
        """
        now = int(self.clock.seconds())
        removed = 0
        for key, raw in self.store.items():
            record = VerifyRecord.parse(raw)
            if record is None or (now - record.probed >= PROBE_TTL
                                  and self._expired(record, now)):
                self.store.delete(key)
                removed += 1
        return removed
