#!/usr/bin/env python3
"""
How many idle SMTP sessions tmta holds at once: open N sessions from
loopback, each past EHLO (and STARTTLS with --starttls, then EHLO
again), keep them all open, and report how many made it, the memory of
all of tmta's processes together (PSS, shared pages counted once, and
the RSS sum), and how long a new session then waits for its 220
greeting.

    python bench/sessions.py                # 10,000 sessions, default settings
    python bench/sessions.py -n 5000 --starttls

Everything listens on 127.0.0.1 only; the server runs from a temporary
directory and is stopped by its own pid afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from repo import REPO  # noqa: E402
from servers import Tmta  # noqa: E402

from tests.support.processes import descendants, memory, processName  # noqa: E402


async def _readReply(reader) -> bytes:
    while True:
        line = await reader.readline()
        if not line or line[3:4] != b"-":
            return line


async def _open(port: int, tls: Optional[ssl.SSLContext], timeout: float):
    """
    One session past EHLO (and STARTTLS); returns its writer, or None.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout)
        greeting = await asyncio.wait_for(_readReply(reader), timeout)
        if not greeting.startswith(b"220"):
            writer.close()
            return None
        writer.write(b"EHLO idle.example\r\n")
        if not (await asyncio.wait_for(_readReply(reader), timeout)).startswith(b"250"):
            writer.close()
            return None
        if tls is not None:
            writer.write(b"STARTTLS\r\n")
            if not (await asyncio.wait_for(_readReply(reader), timeout)).startswith(b"220"):
                writer.close()
                return None
            await asyncio.wait_for(writer.start_tls(tls, server_hostname="localhost"), timeout)
            writer.write(b"EHLO idle.example\r\n")
            if not (await asyncio.wait_for(_readReply(reader), timeout)).startswith(b"250"):
                writer.close()
                return None
        return writer
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        return None


async def _greetingDelay(port: int) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _readReply(reader)
    delay = time.monotonic() - started
    writer.write(b"QUIT\r\n")
    writer.close()
    return delay


async def _run(port: int, count: int, tls: Optional[ssl.SSLContext], batch: int,
               timeout: float, root: int):
    writers: List = []
    failed = 0
    started = time.monotonic()
    for first in range(0, count, batch):
        opened = await asyncio.gather(*(_open(port, tls, timeout)
                                        for _ in range(min(batch, count - first))))
        writers += [w for w in opened if w is not None]
        failed += sum(1 for w in opened if w is None)
    openTime = time.monotonic() - started
    await asyncio.sleep(2)
    tree = [root] + descendants(root)
    mem = [memory(pid) for pid in tree]
    names = {}
    for pid in tree:
        names[processName(pid)] = names.get(processName(pid), 0) + 1
    delays = [await _greetingDelay(port) for _ in range(5)]
    for writer in writers:
        writer.close()
    return {
        "held": len(writers), "failed": failed, "open_s": openTime,
        "pss": sum(p for r, p in mem), "rss": sum(r for r, p in mem),
        "processes": names, "greeting_median": statistics.median(delays),
        "greeting_max": max(delays),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--sessions", type=int, default=10000)
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--batch", type=int, default=500,
                        help="sessions opened at once")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds a session may take to get past EHLO")
    args = parser.parse_args()
    wanted = args.sessions + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    base = tempfile.mkdtemp(prefix="tmta-sessions-")
    os.chmod(base, 0o755)
    certificate = None
    context = None
    if args.starttls:
        sys.path.insert(0, REPO)
        from tmta.config.selfsigned import writeSelfSignedCertificate

        certificate = os.path.join(base, "tls", "smtpd.pem")
        writeSelfSignedCertificate(certificate, "localhost")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    server = Tmta(base, None, certificate)
    server.start()
    try:
        time.sleep(2)
        result = asyncio.run(_run(server.port, args.sessions, context, args.batch,
                                  args.timeout, server.root))
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    what = "past STARTTLS and EHLO" if args.starttls else "past EHLO"
    print(f"{args.sessions} idle sessions {what}, opened {args.batch} at a time:")
    print(f"  held at once: {result['held']}  (failed or timed out: {result['failed']}; "
          f"opening took {result['open_s']:.1f} s)")
    print(f"  all tmta processes: PSS {result['pss']:.0f} MB, RSS sum {result['rss']:.0f} MB")
    print(f"  processes: {', '.join(f'{n} x{c}' for n, c in sorted(result['processes'].items()))}")
    print(f"  a new session's greeting: median {1000 * result['greeting_median']:.0f} ms, "
          f"max {1000 * result['greeting_max']:.0f} ms (of 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
