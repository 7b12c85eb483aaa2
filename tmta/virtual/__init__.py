"""
The virtual delivery agent: Postfix's virtual(8), mailboxes for
domains that have no system accounts.

A recipient in C{virtual_mailbox_domains} is looked up in
C{virtual_mailbox_maps} (C{user+ext@domain}, C{user@domain}, then the
catch-all C{@domain}); the value is a path under C{virtual_mailbox_base},
a Maildir when it ends in C{/}, else an mbox file.  The mailbox is
written as the uid and gid that C{virtual_uid_maps} and
C{virtual_gid_maps} give for the same key (a number, or
C{static:NUMBER}), never below C{virtual_minimum_uid} and never as
root.  C{virtual_mailbox_limit} caps a mailbox's size.
"""

from __future__ import annotations

import os
import time
from functools import cached_property
from typing import Callable, Dict, Generator, List, Optional, Tuple

from twisted.internet import defer
from zope.interface import implementer

from tmta.common.batching import SerialThread
from tmta.delivery import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    RecipientStatus,
    logDelivery,
)
from tmta.interfaces import IAddressVerifier
from tmta.mail.address import splitAddress, unquoteLocal
from tmta.mail.mailbox import MailboxError, deliverMaildir, deliverMbox, envelopeLine
from tmta.mail.rights import DeliveryError, identity, openQueued
from tmta.queue.qfile import iterContent
from tmta.tables import TableLookupError, openTables
from tmta.tables.remote import Lookup, LookupThreads, decideLater, decideNow, isRemote
from tmta.virtual.settings import VirtualSettings


def _keys(address: str, delimiters: str) -> List[str]:
    local, domain = splitAddress(address)
    local = unquoteLocal(local).lower()
    domain = domain.lower()
    keys = [f"{local}@{domain}"]
    for d in delimiters:
        if d in local:
            keys.append(f"{local.split(d, 1)[0]}@{domain}")
            break
    keys.append(f"@{domain}")
    return keys


class VirtualAgent:
    """
    The delivery logic, independent of AMP, built from main.cf.
    """

    def __init__(self, config, fsync: Callable[[int], None] = os.fsync,
                 baseDirectory: Optional[str] = None) -> None:
        """
        @param baseDirectory: another name for C{virtual_mailbox_base} to
            reach it by (a descriptor's C{/proc/self/fd/N}), when the
            process will not be able to traverse to it by its name.
        """
        self.settings = VirtualSettings.fromConfig(config)
        #: How this process reaches C{virtual_mailbox_base}.
        self.base = baseDirectory or self.settings.base
        self.mailboxes = openTables(config.get("virtual_mailbox_maps"))
        self.uids = openTables(config.get("virtual_uid_maps"))
        self.gids = openTables(config.get("virtual_gid_maps"))
        self.fsync = fsync

    @cached_property
    def remote(self) -> bool:
        """
        Whether a table waits on another server: the mailboxes are then
        looked up on the reactor's thread before the delivery thread
        writes (L{VirtualDeliveryAgent.deliver}).
        """
        return isRemote(self.mailboxes + self.uids + self.gids)

    def _find(self, tables, address: str) -> Generator[Lookup, Optional[str], Optional[str]]:
        for key in _keys(address, self.settings.delimiter):
            value = yield Lookup(tables, key)
            if value is not None:
                return value.strip()
        return None

    def _number(self, tables, address: str,
                what: str) -> Generator[Lookup, Optional[str], int]:
        value = yield from self._find(tables, address)
        if value is None:
            raise DeliveryError(DEFERRED, "4.3.5", f"no {what} for {address}")
        if value.startswith("static:"):
            value = value[len("static:"):]
        try:
            return int(value)
        except ValueError:
            raise DeliveryError(DEFERRED, "4.3.5", f"bad {what} {value!r} for {address}")

    def mailbox(self, address: str) -> Tuple[str, bool, int, int]:
        """
        Where and as whom mail for C{address} is written.

        @raise DeliveryError: an unknown recipient, a path that leaves the
            base directory, or a uid that is root or below the minimum.
        @raise TableLookupError: a table could not be read.
        """
        return decideNow(self._mailbox(address))

    async def mailboxLater(self, address: str, threads: LookupThreads):
        """
        L{mailbox}, on the reactor's thread; its exception returned,
        not raised, for the delivery thread to raise.
        """
        try:
            return await decideLater(self._mailbox(address), threads)
        except (DeliveryError, TableLookupError) as e:
            return e

    def _mailbox(self, address: str) -> Generator[Lookup, Optional[str],
                                                  Tuple[str, bool, int, int]]:
        relative = yield from self._find(self.mailboxes, address)
        if relative is None:
            raise DeliveryError(BOUNCED, "5.1.1",
                             f"unknown user: \"{address}\" in virtual mailbox table")
        parts = [p for p in relative.split("/") if p]
        if not parts or ".." in parts or relative.startswith("/") or "\0" in relative:
            raise DeliveryError(DEFERRED, "4.3.5",
                             f"virtual mailbox path {relative!r} must stay under "
                             "virtual_mailbox_base")
        uid = yield from self._number(self.uids, address, "uid")
        gid = yield from self._number(self.gids, address, "gid")
        if uid == 0 or uid < self.settings.minimumUid:
            raise DeliveryError(DEFERRED, "4.3.5",
                             f"uid {uid} for {address} is below virtual_minimum_uid "
                             f"{self.settings.minimumUid}: mail is never written as root")
        if os.geteuid() != 0 and uid != os.geteuid():
            raise DeliveryError(DEFERRED, "4.3.5",
                             f"cannot write mail for {address} as uid {uid}: this process "
                             f"runs as uid {os.geteuid()}, without root")
        path = os.path.join(self.base, *parts)
        return path, relative.endswith("/"), uid, gid

    def deliverOne(self, request: DeliveryRequest, address: str,
                   found: object = None) -> str:
        """
        @param found: what L{mailboxLater} found for C{address}, when
            it was looked up before.
        """
        if not self.base:
            raise DeliveryError(DEFERRED, "4.3.5", "virtual_mailbox_base is not set")
        try:
            if isinstance(found, Exception):
                raise found
            mailbox: Tuple[str, bool, int, int] = \
                found if isinstance(found, tuple) else self.mailbox(address)
            path, maildir, uid, gid = mailbox
        except TableLookupError as e:
            raise DeliveryError(DEFERRED, "4.3.0", f"table lookup failure: {e}")
        if request.verifyOnly:
            return "delivers to maildir" if maildir else "delivers to mailbox"
        queueFile, envelope = openQueued(request)
        with queueFile:
            if self.settings.sizeLimit and envelope.size > self.settings.sizeLimit:
                raise DeliveryError(BOUNCED, "5.2.2", "message exceeds virtual_mailbox_limit")
            prefix = f"Return-Path: <{request.sender}>\nDelivered-To: {address}\n".encode(
                "utf-8", "surrogateescape")
            chunks = iterContent(queueFile, envelope)
            try:
                with identity(uid, gid):
                    if maildir:
                        deliverMaildir(path, prefix, chunks, self.fsync)
                        return "delivered to maildir"
                    try:
                        current = os.stat(path).st_size
                    except FileNotFoundError:
                        current = 0
                    limit = self.settings.sizeLimit
                    if limit and current + envelope.size > limit:
                        raise DeliveryError(BOUNCED, "5.2.2", "mailbox full")
                    deliverMbox(path, envelopeLine(request.sender, request.arrival), prefix,
                                chunks, self.fsync, self.settings.dotlock)
                    return "delivered to mailbox"
            except MailboxError as e:
                reason = str(e)
                if self.base != self.settings.base:
                    reason = reason.replace(self.base, self.settings.base)
                raise DeliveryError(DEFERRED if e.temporary else BOUNCED, e.dsn, reason)

    def deliverAll(self, request: DeliveryRequest,
                   found: Optional[Dict[str, object]] = None) -> List[RecipientStatus]:
        """
        @param found: the mailboxes looked up before, by address.
        """
        results = []
        for r in request.recipients:
            started = time.time()
            try:
                status = RecipientStatus(r.offset, SENT, "2.0.0", self.deliverOne(
                    request, r.address, (found or {}).get(r.address)))
            except DeliveryError as e:
                status = RecipientStatus(r.offset, e.status, e.dsn, e.reason)
            logDelivery(request, r, "virtual", status, started)
            results.append(status)
        return results


@implementer(IAddressVerifier)
class VirtualDeliveryAgent:
    """
    Serves requests one at a time in one thread: each takes the
    mailbox's identity, which is process-wide.
    """

    def __init__(self, reactor, agent: VirtualAgent) -> None:
        self.agent = agent
        self.reactor = reactor
        self.thread = SerialThread(reactor, "tmta-virtual")

    def deliver(self, request: DeliveryRequest):
        if not self.agent.remote:
            return self.thread.call(self.agent.deliverAll, request)
        return defer.Deferred.fromCoroutine(self._deliverRemote(request))

    async def _deliverRemote(self, request: DeliveryRequest):
        """
        Look the mailboxes up first, without holding the delivery
        thread, then write.
        """
        threads = LookupThreads.forReactor(self.reactor)
        found = {r.address: await self.agent.mailboxLater(r.address, threads)
                 for r in request.recipients}
        return await self.thread.call(self.agent.deliverAll, request, found)


def makeVirtualService(context):
    """
    The virtual service.  Made while the worker may still be root: when
    it is, and C{mail_owner} could not traverse to
    C{virtual_mailbox_base} (the embedded default under root's home),
    the directory is opened now and reached through its descriptor.
    """
    from tmta.delivery import AgentService
    from tmta.mail.accounts import mailOwner, reachableDirectory

    config = context.config
    base = config.get("virtual_mailbox_base")
    reachable = None
    if base and os.geteuid() == 0 and os.path.isdir(base):
        reachable = reachableDirectory(base, mailOwner(config, embedded=True))
        if reachable == base:
            reachable = None
    agent = VirtualAgent(config, baseDirectory=reachable)
    return AgentService(context, VirtualDeliveryAgent(context.reactor, agent))
