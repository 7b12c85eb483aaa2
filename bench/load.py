"""
The loads a benchmark sends: SMTP sessions from a small asyncio client
or Postfix's smtp-source, and posting with a sendmail command; and
waiting for a server to answer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from typing import Dict, List, Optional


async def _session(port: int, sender: str, recipient: str, body: bytes,
                   tls: Optional[ssl.SSLContext] = None) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while True:
            line = await reader.readline()
            if not line or line[3:4] != b"-":
                return line

    try:
        await reply()
        writer.write(b"EHLO load.example\r\n")
        await reply()
        if tls is not None:
            writer.write(b"STARTTLS\r\n")
            if not (await reply()).startswith(b"220"):
                return False
            await writer.start_tls(tls, server_hostname="localhost")
            writer.write(b"EHLO load.example\r\n")
            await reply()
        writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
        for _ in range(3):
            await reply()
        writer.write(body + b".\r\n")
        ok = (await reply()).startswith(b"250")
        writer.write(b"QUIT\r\n")
        await reply()
        return ok
    finally:
        writer.close()


async def _load(port: int, messages: int, sessions: int, size: int, recipient: str,
                tls: Optional[ssl.SSLContext] = None) -> int:
    line = b"X" * 78 + b"\r\n"
    body = b"Subject: load\r\n\r\n" + line * max(1, size // len(line))
    remaining = iter(range(messages))
    accepted = 0

    async def worker():
        nonlocal accepted
        for _ in remaining:
            if await _session(port, "load@example.com", recipient, body, tls):
                accepted += 1

    await asyncio.gather(*(worker() for _ in range(sessions)))
    return accepted


def runLoad(port: int, messages: int, sessions: int, size: int, recipient: str,
            starttls: bool = False) -> str:
    """
    Send the load: with smtp-source when it is installed, else (and
    always with C{starttls}, which smtp-source cannot do) with the
    bundled asyncio client.
    """
    if starttls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        asyncio.run(_load(port, messages, sessions, size, recipient, context))
        return "bundled asyncio client with STARTTLS"
    source = shutil.which("smtp-source")
    if source:
        subprocess.run(
            [source, "-s", str(sessions), "-l", str(size), "-m", str(messages),
             "-f", "load@example.com", "-t", recipient, f"127.0.0.1:{port}"],
            check=True,
        )
        return "smtp-source"
    asyncio.run(_load(port, messages, sessions, size, recipient))
    return "bundled asyncio client"


def runSendmail(command: List[str], messages: int, sessions: int, size: int,
                recipient: str, env: Optional[Dict[str, str]] = None) -> str:
    """
    Post C{messages} by running C{command recipient} once for each, from
    C{sessions} loops at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    line = b"X" * 78 + b"\n"
    body = b"Subject: load\n\n" + line * max(1, size // len(line))

    def loop(count: int) -> None:
        for _ in range(count):
            subprocess.run(command + [recipient], input=body, check=True, env=env,
                           stdout=subprocess.DEVNULL)

    shares = [messages // sessions + (1 if i < messages % sessions else 0)
              for i in range(sessions)]
    with ThreadPoolExecutor(sessions) as pool:
        for future in [pool.submit(loop, n) for n in shares if n]:
            future.result()
    return os.path.basename(command[0])


def waitPort(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1) as s:
                s.recv(100)
                s.sendall(b"QUIT\r\n")
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def countMaildir(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return 0
