"""
What /proc says of processes: their children, names, owners, command
lines, CPU time and memory -- for the tests that watch tmta's processes
and for the benchmarks in C{bench/}, which measure them.
"""

import os
from typing import Dict, List, Optional


def childPids(pid: int) -> List[int]:
    """
    The pids of a process's children, from /proc.
    """
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def descendants(pid: int) -> List[int]:
    """
    The pids of a process's children, grandchildren and so on, from one
    reading of /proc.
    """
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def commandLine(pid: int) -> str:
    """
    A process's command line, its arguments joined by spaces.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processName(pid: int) -> str:
    """
    A process's name (its C{comm}), or C{""} once it is gone.
    """
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def processUid(pid: int) -> Optional[int]:
    """
    A process's effective uid, or C{None} once it is gone.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except OSError:
        return None
    return None


def _cpuFields(pid: int) -> List[int]:
    """
    A process's utime, stime, cutime and cstime, in clock ticks; zeros if
    it is gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]
    except OSError:
        return [0, 0, 0, 0]


def cpuTimes(pid: int) -> tuple:
    """
    (own, reaped children's) CPU seconds of a process; zeros if it is gone.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    fields = _cpuFields(pid)
    return (fields[0] + fields[1]) / ticks, (fields[2] + fields[3]) / ticks


def cpuSeconds(pids: List[int]) -> float:
    """
    CPU time of these processes and of their children already reaped:
    summed over a whole process tree, nothing is counted twice.
    """
    return sum(sum(cpuTimes(pid)) for pid in pids)


def userSystem(pid: int) -> tuple:
    """
    (user, system) CPU seconds of a process itself; zeros if it is gone.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    fields = _cpuFields(pid)
    return fields[0] / ticks, fields[1] / ticks


def cpuByName(pids: List[int]) -> Dict[str, tuple]:
    """
    (user, system) CPU seconds of each live process (its own, not its
    children's), summed by process name.
    """
    out: Dict[str, tuple] = {}
    for pid in pids:
        name = processName(pid)
        user, system = userSystem(pid)
        before = out.get(name, (0.0, 0.0))
        out[name] = (before[0] + user, before[1] + system)
    return out


def memory(pid: int) -> tuple:
    """
    (RSS, PSS) in MB.
    """
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss / 1024, pss / 1024
