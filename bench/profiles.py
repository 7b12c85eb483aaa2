#!/usr/bin/env python3
"""
Summarise the cProfile files that tmta's workers leave with
C{TMTA_WORKER_PROFILE} set (C{python bench/run.py --profile DIR}): for
each service, where its reactor thread's time went, by the function
that spent it and by tmta's own functions including what they call.

    python bench/run.py --no-postfix --rounds 1 --profile /tmp/prof
    python bench/profiles.py /tmp/prof              # every service
    python bench/profiles.py /tmp/prof cleanup -n 40

The times are wall-clock times of the reactor thread (time blocked in a
system call counts; a worker's other threads -- local's deliveries,
cleanup's commits -- are not seen).  For CPU alone, sample the running
processes with py-spy instead (C{py-spy record --gil -p PID}).
"""

from __future__ import annotations

import argparse
import glob
import os
import pstats
import re
import sys
from typing import Dict, List


def byService(directory: str) -> Dict[str, List[str]]:
    """
    The profile files in C{directory}, by the service that wrote them
    (an smtpd's service is its listening address).
    """
    found: Dict[str, List[str]] = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.prof"))):
        match = re.match(r"(.*)-\d+\.prof$", os.path.basename(path))
        if match:
            found.setdefault(match.group(1), []).append(path)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("services", nargs="*", help="only these (default: all)")
    parser.add_argument("-n", "--lines", type=int, default=20)
    args = parser.parse_args()
    services = byService(args.directory)
    if not services:
        print(f"no profiles in {args.directory}", file=sys.stderr)
        return 1
    for service, paths in services.items():
        if args.services and service not in args.services:
            continue
        stats = pstats.Stats(*paths, stream=sys.stdout)
        print(f"===== {service} ({len(paths)} process{'es' if len(paths) > 1 else ''})")
        stats.sort_stats("tottime").print_stats(args.lines)
        stats.sort_stats("cumulative").print_stats(r"tmta[/\\]", args.lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
