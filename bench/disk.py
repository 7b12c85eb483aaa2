"""
The disk a benchmark runs on: what creating a file costs now, waiting
until that cost is its usual one, spreading each run's directories
apart, and a fresh journalled ext4 to run on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from repo import REPO


def fileCreationCost(directory: str, count: int = 200) -> float:
    """
    CPU-microseconds this process spends creating, writing and closing
    one small file in C{directory} (a new one, kept: deleting the probe
    files would disturb what is probed).
    """
    os.makedirs(directory)
    started = time.process_time()
    for i in range(count):
        fd = os.open(os.path.join(directory, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"x" * 2048)
        os.close(fd)
    return (time.process_time() - started) / count * 1e6


def spreadSubdirectories(path: str) -> None:
    """
    Mark C{path} as the top of unrelated hierarchies (C{chattr +T}, with
    tmta's own L{markTopDirectory}), so that ext2/3/4 put each directory
    made in it in a block group of its own choosing.  Each run's files
    then start in a group of their own, away from the other runs' (a
    group that a previous bench's clean-up has just emptied can still be
    chosen: its freed inodes are then searched past; see
    L{markTopDirectory}).  Nothing where the file system has no such
    flag.
    """
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from tmta.queue.layout import markTopDirectory

    markTopDirectory(path)


def waitForQuietDisk(base: str, limit: float, patience: float) -> float:
    """
    Wait until creating a file costs less than C{limit} CPU-microseconds,
    for at most C{patience} seconds; return the last cost measured.

    On ext4 without a journal, mounted with C{discard}, creating a file
    right after many were deleted costs ten to twenty times its usual
    CPU for a minute or more.  A server measured then pays for the
    previous run's clean-up, so every run waits for the disk first.
    """
    deadline = time.monotonic() + patience
    probes = os.path.join(base, "probes")
    os.makedirs(probes, exist_ok=True)
    number = len(os.listdir(probes))
    while True:
        cost = fileCreationCost(os.path.join(probes, str(number)))
        number += 1
        if cost < limit or time.monotonic() > deadline:
            return cost
        time.sleep(5)


@contextmanager
def journalledScratch(size: str = "4G") -> Iterator[str]:
    """
    Make a fresh ext4 file system with a journal (mke2fs's defaults) in a
    sparse image in the system's temporary directory, mount it through a
    loop device, and give its mount point; unmount it and remove the
    image afterwards.  Root only.

    Without a journal, ext4 looks for a free inode past every inode freed
    in the last minutes (see L{spreadSubdirectories}); a journalled ext4
    does no such search, and is what most mail hosts run on.  The loop
    device's and the journal's kernel threads are counted for neither
    server.
    """
    image = tempfile.NamedTemporaryFile(prefix="tmta-bench-", suffix=".ext4", delete=False)
    image.close()
    mountPoint = tempfile.mkdtemp(prefix="tmta-bench-fs-")
    try:
        subprocess.run(["truncate", "-s", size, image.name], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", image.name], check=True)
        subprocess.run(["mount", "-o", "loop", image.name, mountPoint], check=True)
        try:
            yield mountPoint
        finally:
            subprocess.run(["umount", mountPoint], check=False)
    finally:
        os.rmdir(mountPoint)
        os.unlink(image.name)
