"""
History files: one JSON object a line, appended by several processes at
once (each line one write with C{O_APPEND}), read back by a command that
sums them up (DMARC's aggregate reports, TLS reports).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List


def appendRecord(path: str, record: Dict) -> None:
    """
    Append C{record} as one line, in one write.

    @raise OSError: the file cannot be written.
    """
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def readRecords(lines: Iterable[str]) -> List[Dict]:
    """
    The records of a history file that name a C{policy_domain}; a line
    that does not parse (a write cut short by a full disk) is skipped.
    """
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("policy_domain"):
            records.append(record)
    return records
