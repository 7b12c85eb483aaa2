"""
Posting into C{maildrop/}: what C{tmta-sendmail} and the report
commands (C{tmta dmarc report}, C{tmta tlsrpt report}) share -- a queue
file written under a temporary name, fsynced, renamed, then pickup
woken.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional


class Posting:
    """
    What the command line asks for.
    """

    def __init__(self) -> None:
        self.mode = "m"  # -bm: deliver mail
        self.sender: Optional[str] = None
        self.fullName: Optional[str] = None
        self.extract = False  # -t
        self.dotEnds = True  # cleared by -i / -oi
        self.configDirectory: Optional[str] = None
        self.notify: str = ""
        self.ret: str = ""
        self.envid: str = ""
        self.recipients: List[str] = []
        self.queueRun = False  # -q
        self.verbose = False  # -v


def post(posting: Posting, content: bytes, queueDirectory: str) -> str:
    """
    Write the message into C{maildrop/}.

    @return: the file's queue id.
    @raise OSError: it could not be written.
    """
    from tmta.common.durable import fsyncName
    from tmta.queue.qfile import PROBE_ATTRIBUTE, VERIFY_REPORT
    from tmta.queue.qid import QueueIdGenerator
    from tmta.queue.writer import QueueFileWriter

    maildrop = os.path.join(queueDirectory, "maildrop")
    queueId = QueueIdGenerator().next()
    temporary = os.path.join(maildrop, f".{queueId}.{os.getpid()}")
    writer = QueueFileWriter(temporary, os.fsync)
    try:
        attributes = {}
        if posting.sender is not None:
            # pickup decides whether to believe it.
            attributes["sender_given"] = "yes"
        if posting.fullName:
            attributes["full_name"] = posting.fullName.replace("\n", " ")[:200]
        if posting.ret:
            attributes["dsn_ret"] = posting.ret
        if posting.envid:
            attributes["dsn_envid"] = posting.envid[:100]
        if posting.mode == "v":
            attributes[PROBE_ATTRIBUTE] = VERIFY_REPORT
        writer.envelope(time.time(), posting.sender or "", attributes)
        for recipient in posting.recipients:
            writer.recipient(recipient, recipient, posting.notify, "")
        writer.content(content)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    try:
        # Readable by the mail system through the group the file took
        # from the directory, by no other user.
        os.chmod(temporary, 0o740)
        final = os.path.join(maildrop, queueId)
        os.rename(temporary, final)
    except BaseException:
        writer.abort()
        raise
    fsyncName(final)
    return queueId


def _ampBox(pairs) -> bytes:
    """
    One AMP box, as twisted.protocols.amp writes it (each key and value
    after its 16-bit length, then an empty key).  Written here because
    importing Twisted's AMP (and the TLS modules it brings) costs more
    than the rest of a posting.
    """
    out = b""
    for key, value in pairs:
        out += len(key).to_bytes(2, "big") + key + len(value).to_bytes(2, "big") + value
    return out + b"\x00\x00"


def wakePickup(queueDirectory: str) -> None:
    """
    Tell pickup there is mail (if it is not running, it finds the file
    when it starts).
    """
    import socket

    from tmta.wire.connect import socketPath

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(socketPath(queueDirectory, "pickup", private=False))
            sock.sendall(_ampBox([(b"_command", b"Wakeup"), (b"reason", b"incoming")]))
    except OSError:
        pass
