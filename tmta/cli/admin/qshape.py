"""
C{tmta qshape}: Postfix's qshape(1) table for tmta's queue -- how many
recipients (or, with C{-s}, senders) of the messages in the given queues
(by default C{incoming} and C{active}) are in each domain, by the age of
their message: a first column of totals (C{T}), then age buckets of
C{-t} minutes that double (or, with C{-l}, grow linearly) up to C{-b}
buckets, the last without a limit.  With C{-p}, parent domains with at
least C{-m} subdomains get rows of their own (C{.example.com}).

The table is laid out as qshape lays it out, so what reads qshape's
output reads this.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from typing import Dict, Iterable, List, Optional, TextIO, Tuple

from tmta.cli.admin.common import configuration

#: The narrowest the domain column gets.
DOMAIN_WIDTH = 18


class Shape:
    """
    The counts of one table: per domain, the total and each bucket's.

    @param tick: the first bucket's age limit, in minutes.
    @param buckets: how many age buckets.
    @param linear: ages grow by C{tick} each bucket, not double.
    @param parents: count parent domains too (C{-p}).
    """

    def __init__(self, now: float, tick: int = 5, buckets: int = 10, linear: bool = False,
                 parents: bool = False) -> None:
        self.now = now
        self.tick = tick
        self.buckets = buckets
        self.linear = linear
        self.parents = parents
        self.counts: Dict[str, List[int]] = {}
        #: How many distinct subdomains each parent domain was seen with.
        self.subdomains: Dict[str, int] = {}

    def bucket(self, arrival: float) -> int:
        minutes = (self.now - arrival) / (60 * self.tick)
        if minutes < 1:
            return 1
        index = int(minutes + 1) if self.linear else 2 + int(math.log2(minutes))
        return min(index, self.buckets)

    def _count(self, domain: str, index: int) -> bool:
        """
        Count one address in C{domain}; whether the domain is new.
        """
        row = self.counts.setdefault(domain, [0] * (self.buckets + 1))
        row[0] += 1
        row[index] += 1
        return row[0] == 1

    def add(self, arrival: float, addresses: Iterable[str]) -> None:
        """
        Count a message's addresses (its pending recipients, or its
        sender) at its age.
        """
        index = self.bucket(arrival)
        for address in addresses:
            self._count("TOTAL", index)
            domain = _domain(address.lower())
            new = self._count(domain, index)
            while self.parents:
                parent = _parent(domain)
                if parent is None:
                    break
                parentNew = self._count(parent, index)
                if new:
                    self.subdomains[parent] = self.subdomains.get(parent, 0) + 1
                domain, new = parent, parentNew

    def render(self, width: int = 80, minimumSubdomains: int = 5) -> str:
        """
        The table, as qshape prints it.
        """
        totals = self.counts.get("TOTAL", [0] * (self.buckets + 1))
        headings: List[str] = []
        widths: List[int] = []
        limit = 0
        for index in range(self.buckets + 1):
            # The last bucket has no limit: "N+" after the one before.
            heading = "T" if index == 0 else str(limit) if index < self.buckets \
                else f"{limit}+"
            size = max(len(str(totals[index])), len(heading))
            size = size + 1 if size > 2 else 3
            headings.append(heading)
            widths.append(size)
            if index + 1 < self.buckets:
                limit = limit * 2 if (limit and not self.linear) else limit + self.tick
        domainWidth = max(width - sum(widths), DOMAIN_WIDTH)
        lines = [_row("", headings, widths, domainWidth)]
        rows = sorted(self.counts.items(), key=lambda item: (-item[1][0], len(item[0]), item[0]))
        for domain, counts in rows:
            if domain.startswith(".") and self.subdomains.get(domain, 0) < minimumSubdomains:
                continue
            lines.append(_row(domain, [str(n) for n in counts], widths, domainWidth))
        return "".join(line + "\n" for line in lines)


def _domain(address: str) -> str:
    """
    The row an address counts in, named as qshape names it: the null
    sender's is C{MAILER-DAEMON}; a domain loses doubled dots and one
    dot at either end.
    """
    if address == "":
        return "MAILER-DAEMON"
    domain = address.rpartition("@")[2].replace("..", ".")
    match = re.match(r"^\.?(.+?)\.?$", domain)
    return match.group(1) if match else domain


def _parent(domain: str) -> Optional[str]:
    """
    The parent domain's row name (C{.b.c} for C{a.b.c} or C{.a.b.c});
    C{None} at the top two levels, which get no row of their own.
    """
    labels = domain.lstrip(".").split(".")
    if len(labels) < 3:
        return None
    return "." + ".".join(labels[1:])


def _row(domain: str, cells: List[str], widths: List[int], domainWidth: int) -> str:
    if len(domain) > domainWidth:
        if domain.startswith("."):
            shown = ".+" + domain[len(domain) - domainWidth + 2:]
        else:
            shown = "+" + domain[len(domain) - domainWidth + 1:]
    else:
        shown = domain.rjust(domainWidth)
    return shown + "".join(cell.rjust(size) for cell, size in zip(cells, widths))


def queueShape(store, queues: List[str], shape: Shape, senders: bool) -> Shape:
    """
    Count the messages of C{queues} in C{store} (a
    L{tmta.queue.store.QueueStore}); files that cannot be read (being
    written, gone) are passed over, as qshape passes them over.
    """
    from tmta.queue.qfile import CorruptQueueFile

    for queue in queues:
        for queueId in store.list(queue):
            try:
                envelope = store.readEnvelope(queue, queueId)
            except (OSError, CorruptQueueFile):
                continue
            addresses = [envelope.sender] if senders else \
                [r.address for r in envelope.pending()]
            shape.add(envelope.arrival, addresses)
    return shape


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def addParser(commands) -> None:
    parser = commands.add_parser(
        "qshape", help="the queue's domains by message age (Postfix's qshape)")
    parser.add_argument("-s", dest="senders", action="store_true",
                        help="sender domains instead of recipient domains")
    parser.add_argument("-p", dest="parents", action="store_true",
                        help="parent domains too")
    parser.add_argument("-m", dest="minimum", type=_positive, default=5,
                        help="with -p, the subdomains a parent needs for a row (5)")
    parser.add_argument("-b", dest="buckets", type=_positive, default=10,
                        help="how many age buckets (10)")
    parser.add_argument("-t", dest="tick", type=_positive, default=5,
                        help="the first bucket's age limit in minutes (5)")
    parser.add_argument("-l", dest="linear", action="store_true",
                        help="ages grow linearly, not geometrically")
    parser.add_argument("-w", dest="width", type=_positive, default=80,
                        help="terminal width (at least 80)")
    parser.add_argument("queues", nargs="*", metavar="QUEUE",
                        help="incoming, active, deferred, hold (default: incoming active)")
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    parser.set_defaults(run=run, listOf="queues")


def run(options: argparse.Namespace, parser: argparse.ArgumentParser,
        out: TextIO = sys.stdout) -> int:
    from tmta.queue.store import QueueStore

    chosen = configuration(options)
    queues = options.queues or ["incoming", "active"]
    known = ("incoming", "active", "deferred", "hold")
    unknown = [q for q in queues if q not in known]
    if unknown:
        parser.error(f"unknown queue {unknown[0]!r}: one of {', '.join(known)}")
    shape = Shape(time.time(), tick=options.tick, buckets=options.buckets,
                  linear=options.linear, parents=options.parents)
    queueShape(QueueStore.fromConfig(chosen.main), queues, shape, options.senders)
    out.write(shape.render(max(options.width, 80), options.minimum))
    return 0


__all__: Tuple[str, ...] = ("Shape", "queueShape")
