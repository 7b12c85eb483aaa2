#!/usr/bin/env python3
"""
Flush a large deferred queue: each server first defers every message of
an SMTP load (its relayhost, on loopback, refuses connections), then
smtp-sink starts on that port and the queue is flushed (C{tmta queue
flush}, Postfix's C{postqueue -f}).  Printed for each server: the
seconds until smtp-sink holds every message, CPU-milliseconds per
message over all of the server's processes during the flush, and the
queue manager's peak resident memory during the flush, beside its
memory before it.

    python bench/flush.py                   # 20000 messages, tmta and Postfix
    python bench/flush.py -m 5000 --no-postfix

Postfix runs when it is installed and the bench runs as root.
Everything listens on 127.0.0.1 only; the servers run in a temporary
directory, which is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, Tuple

from load import runLoad
from servers import Postfix, Server, Sink, Tmta

from tests.support.processes import cpuSeconds, descendants


def queued(server: Server, queueName: str) -> int:
    """
    How many messages a queue holds (hashed into subdirectories or not).
    """
    return sum(len(files) for _, _, files in os.walk(os.path.join(server.base, "queue",
                                                                  queueName)))


def status(pid: int, field: str) -> int:
    """
    A memory figure of C{/proc/PID/status}, in kB.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def flushCommand(server: Server) -> list:
    if isinstance(server, Tmta):
        return [server.python, "-c",
                "import sys; del sys.path[0]; from tmta.cli.admin import main; sys.exit(main())",
                "-c", server.conf, "queue", "flush"]
    return ["postqueue", "-c", server.conf, "-f"]


def waitUntil(test, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(server: Server, sink: Sink, messages: int, sessions: int,
            size: int) -> Dict[str, float]:
    server.start()
    try:
        runLoad(server.port, messages, sessions, size, "bench@remote.example")
        waitUntil(lambda: queued(server, "deferred") >= messages
                  and not queued(server, "active") and not queued(server, "incoming"),
                  600, f"{server.name} to defer {messages} messages")
        time.sleep(1)
        qmgr = server.resident()["qmgr"]
        before = status(qmgr, "VmRSS")
        # Forget the peak so far (Linux: 5 into clear_refs resets VmHWM).
        with open(f"/proc/{qmgr}/clear_refs", "w") as f:
            f.write("5")
        sink.listen()
        tree = [server.root] + descendants(server.root)
        cpu0 = cpuSeconds(tree)
        start = time.monotonic()
        subprocess.run(flushCommand(server), check=True, stdout=subprocess.DEVNULL,
                       env=server.sendmailEnvironment())
        waitUntil(lambda: sink.count() >= messages, 1200, f"{server.name}'s flush")
        elapsed = time.monotonic() - start
        cpu = cpuSeconds([server.root] + descendants(server.root)) - cpu0
        return {"seconds": elapsed, "rate": messages / elapsed,
                "cpu_ms": 1000 * cpu / messages,
                "qmgr_before": before / 1024, "qmgr_peak": status(qmgr, "VmHWM") / 1024}
    finally:
        server.stop()
        sink.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=20000)
    parser.add_argument("-s", "--sessions", type=int, default=20)
    parser.add_argument("-l", "--size", type=int, default=2000)
    parser.add_argument("--no-postfix", action="store_true")
    args = parser.parse_args()
    if not shutil.which("smtp-sink"):
        parser.error("the flush is received by Postfix's smtp-sink: install Postfix")
    base = tempfile.mkdtemp(prefix="tmta-flush-")
    os.chmod(base, 0o755)
    results: Dict[str, Tuple[Dict[str, float], int]] = {}
    try:
        makers = [("tmta", lambda sink: Tmta(base, sink))]
        if not args.no_postfix and shutil.which("postfix") and os.getuid() == 0:
            makers.append(("postfix", lambda sink: Postfix(base, "virtual", sink)))
        for name, make in makers:
            sink = Sink(os.path.join(base, f"{name}-sink"), listening=False)
            results[name] = measure(make(sink), sink, args.messages, args.sessions, args.size)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"Flush of {args.messages} deferred messages of {args.size} bytes to smtp-sink")
    print(f"{'server':<10} {'seconds':>8} {'msg/s':>8} {'CPU ms/msg':>11} "
          f"{'qmgr MB before':>15} {'qmgr MB peak':>13}")
    for name, r in results.items():
        print(f"{name:<10} {r['seconds']:>8.1f} {r['rate']:>8.0f} {r['cpu_ms']:>11.2f} "
              f"{r['qmgr_before']:>15.1f} {r['qmgr_peak']:>13.1f}")
    if "postfix" in results:
        t, p = results["tmta"], results["postfix"]
        print(f"tmta/postfix: speed {t['rate'] / p['rate']:.2f}, "
              f"CPU {t['cpu_ms'] / p['cpu_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
