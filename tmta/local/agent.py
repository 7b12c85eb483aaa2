"""
The local delivery agent.

For each recipient: aliases are expanded (C{alias_maps}), the name is
found in the passwd database (C{local_mailbox_accounts = system}), and
the message is written to the account's mailbox -- C{$home/$home_mailbox}
when that is set, else C{$mail_spool_directory/NAME}; a Maildir when the
name ends in C{/}, else an mbox file -- with that account's identity.
With C{local_mailbox_accounts = none} (the embedded default) no system
accounts are used: every name gets a Maildir under
C{mail_spool_directory}, written as C{mail_owner}.

The agent never writes as root: when it runs as root it takes the
recipient's identity for each delivery, one delivery at a time (the
process serves one client at a time, since C{seteuid} is process-wide).
Mail for an account with uid 0 that no alias redirects is deferred, so
the operator can add an alias without mail being lost.
"""

from __future__ import annotations

import os
import pwd
import re
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

from twisted.logger import Logger
from zope.interface import implementer

from tmta.address import isSafeMailboxName, localName, splitAddress
from tmta.batching import SerialThread
from tmta.delivery import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    RecipientStatus,
    logDelivery,
)
from tmta.interfaces import IDeliveryAgent
from tmta.local.mailbox import MailboxError, deliverMaildir, deliverMbox
from tmta.queue.qfile import CorruptQueueFile, iterContent, readEnvelope
from tmta.tables import lookupAny, openTables

log = Logger()

MAX_ALIAS_DEPTH = 10


@dataclass
class Mailbox:
    """
    Where and as whom one recipient's mail is written.
    """

    path: str
    maildir: bool
    uid: int
    gid: int


class LocalError(Exception):
    def __init__(self, status: str, dsn: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.dsn, self.reason = status, dsn, reason


@contextmanager
def identity(uid: int, gid: int):
    """
    Run the block with the effective identity of an account (when root),
    and return to root afterwards.

    As Postfix's local does, the account's primary group is its only
    group for the delivery: supplementary groups are not looked up.
    """
    if os.geteuid() != 0:
        yield
        return
    if uid == 0:
        raise LocalError(DEFERRED, "4.3.0", "tmta does not deliver as root")
    os.setgroups([gid])
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups([])


class LocalAgent:
    """
    The delivery logic, independent of AMP, built from main.cf.
    """

    def __init__(self, config, fsync: Callable[[int], None] = os.fsync,
                 spoolDirectory: Optional[str] = None) -> None:
        """
        @param spoolDirectory: another name for C{mail_spool_directory}
            to reach it by (a descriptor's C{/proc/self/fd/N/}); messages
            still name the directory itself.
        """
        self.myhostname = config.get("myhostname")
        self.accounts = config.get("local_mailbox_accounts").strip().lower() != "none"
        spoolName = config.get("mail_spool_directory")
        spool = spoolDirectory or spoolName
        self.spoolMaildir = spool.endswith("/")
        self.spool = spool.rstrip("/") or "/"
        self.spoolName = spoolName.rstrip("/") or "/"
        self.homeMailbox = config.get("home_mailbox")
        self.aliases = openTables(config.get("alias_maps")) if self.accounts else []
        self.delimiter = config.get("recipient_delimiter")
        self.dotlock = "dotlock" in config.getList("mailbox_delivery_lock")
        self.sizeLimit = config.getInt("mailbox_size_limit")
        self.fsync = fsync
        # (queue id, mailbox) delivered lately, oldest first: one message
        # reaches a mailbox once, however many of its recipients (or
        # their aliases) lead there.
        self._delivered: "OrderedDict[Tuple[str, str], None]" = OrderedDict()
        self._duplicateLimit = config.getInt("duplicate_filter_limit")
        self.owner = None
        if not self.accounts:
            from tmta.common.accounts import mailOwner

            self.owner = mailOwner(config, embedded=True) if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())

    def _baseName(self, address: str) -> str:
        return localName(address, self.delimiter)

    def expand(self, address: str, depth: int = 0) -> List[str]:
        """
        Expand aliases to the names to deliver to.

        @raise LocalError: an alias loop, or a target tmta cannot deliver
            to yet (commands, files, includes, remote forwarding).
        """
        name = self._baseName(address)
        if depth > MAX_ALIAS_DEPTH:
            raise LocalError(BOUNCED, "5.4.6", f"alias expansion too deep at {name}")
        value = lookupAny(self.aliases, name) if self.aliases else None
        if value is None:
            return [name]
        names: List[str] = []
        for target in (t.strip() for t in value.split(",")):
            if not target:
                continue
            if target.startswith(("|", "/", ":include:")) or target.startswith('"|'):
                raise LocalError(
                    DEFERRED, "4.3.0",
                    f"alias {name}: delivery to {target.split()[0]} is not supported yet",
                )
            local, domain = splitAddress(target)
            if domain and domain.lower() not in ("localhost", self.myhostname.lower()):
                raise LocalError(DEFERRED, "4.3.0",
                                 f"alias {name}: forwarding to {target} is not supported yet")
            targetName = self._baseName(target)
            names.extend([targetName] if targetName == name else self.expand(target, depth + 1))
        return names

    def mailbox(self, name: str) -> Mailbox:
        """
        Find the mailbox of a local name.

        @raise LocalError: unknown user, or an unsafe name.
        """
        if not self.accounts:
            if not isSafeMailboxName(name):
                raise LocalError(BOUNCED, "5.1.3", f"unsafe mailbox name {name!r}")
            return Mailbox(os.path.join(self.spool, name), True,
                           self.owner.pw_uid, self.owner.pw_gid)
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            raise LocalError(BOUNCED, "5.1.1", f"unknown user: \"{name}\"")
        if account.pw_uid == 0:
            raise LocalError(DEFERRED, "4.3.0",
                             f"mail for {name} (uid 0) needs an alias: tmta never delivers as root")
        if self.homeMailbox:
            path = os.path.join(account.pw_dir, self.homeMailbox)
            return Mailbox(path.rstrip("/"), path.endswith("/"), account.pw_uid, account.pw_gid)
        return Mailbox(os.path.join(self.spool, name), self.spoolMaildir,
                       account.pw_uid, account.pw_gid)

    def deliverOne(self, request: DeliveryRequest, address: str) -> str:
        """
        Deliver to one recipient; blocking.

        @return: the success text for the log.
        @raise LocalError: a failure, with its status.
        """
        # The queue file is opened once, now, while this process still has
        # the identity that may read the queue (the recipient may not).
        try:
            queueFile = open(request.queuePath, "rb")
        except OSError as e:
            raise LocalError(DEFERRED, "4.3.0", f"cannot read queue file: {e}")
        with queueFile:
            try:
                envelope = readEnvelope(queueFile)
                headers = _headerSection(iterContent(queueFile, envelope))
            except CorruptQueueFile as e:
                raise LocalError(DEFERRED, "4.3.0", f"cannot read queue file: {e}")
            return self._deliverNames(request, address, queueFile, envelope, headers)

    def _deliverNames(self, request, address, queueFile, envelope, headers) -> str:
        if self.sizeLimit and envelope.size > self.sizeLimit:
            raise LocalError(BOUNCED, "5.2.2", "message exceeds mailbox_size_limit")
        results = []
        for name in dict.fromkeys(self.expand(address)):
            delivered = f"{name}@{self.myhostname}" if self.accounts else address
            if re.search(rb"(?im)^delivered-to:[ \t]*" + re.escape(delivered.encode()) + rb"[ \t]*$",
                         headers):
                raise LocalError(BOUNCED, "5.4.6", f"mail forwarding loop for {delivered}")
            box = self.mailbox(name)
            key = (request.queueId, box.path)
            if key in self._delivered:
                results.append("duplicate delivery suppressed")
                continue
            prefix = (
                f"Return-Path: <{request.sender}>\nDelivered-To: {delivered}\n"
            ).encode("utf-8", "surrogateescape")
            results.append(self._write(request, box, prefix, queueFile, envelope))
            self._delivered[key] = None
            if len(self._delivered) > self._duplicateLimit:
                self._delivered.popitem(last=False)
        return "; ".join(results)

    def _write(self, request: DeliveryRequest, box: Mailbox, prefix: bytes,
               queueFile, envelope) -> str:
        def chunks() -> Iterable[bytes]:
            return iterContent(queueFile, envelope)

        try:
            with identity(box.uid, box.gid):
                if box.maildir:
                    deliverMaildir(box.path, prefix, chunks(), self.fsync)
                    return "delivered to maildir"
                stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(request.arrival or None))
                line = f"From {request.sender or 'MAILER-DAEMON'}  {stamp}\n".encode(
                    "utf-8", "surrogateescape")
                deliverMbox(box.path, line, prefix, chunks(), self.fsync, self.dotlock)
                return "delivered to mailbox"
        except MailboxError as e:
            reason = str(e).replace(self.spool + "/", self.spoolName + "/")
            raise LocalError(DEFERRED if e.temporary else BOUNCED, e.dsn, reason)

    def deliverAll(self, request: DeliveryRequest) -> List[RecipientStatus]:
        results = []
        for r in request.recipients:
            started = time.time()
            try:
                text = self.deliverOne(request, r.address)
                status = RecipientStatus(r.offset, SENT, "2.0.0", text)
            except LocalError as e:
                status = RecipientStatus(r.offset, e.status, e.dsn, e.reason)
            logDelivery(request, r, "local", status, started)
            results.append(status)
        return results


def _headerSection(chunks: Iterable[bytes], limit: int = 1 << 20) -> bytes:
    data = b""
    for chunk in chunks:
        data += chunk
        end = data.find(b"\n\n")
        if end >= 0:
            return data[:end + 1]
        if len(data) > limit:
            break
    return data


@implementer(IDeliveryAgent)
class LocalDeliveryAgent:
    """
    The L{IDeliveryAgent} wrapper: requests are delivered in a thread of
    their own, one at a time and in order, so that taking a recipient's
    identity (process-wide) never overlaps another delivery.
    """

    def __init__(self, reactor, agent: LocalAgent) -> None:
        self.reactor = reactor
        self.agent = agent
        self.thread = SerialThread(reactor, "tmta-local")

    def deliver(self, request: DeliveryRequest):
        return self.thread.call(self.agent.deliverAll, request)

