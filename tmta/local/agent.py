"""
The local delivery agent: Postfix's local(8).

For each recipient, the local part (with its extension, then without)
is looked up in C{alias_maps}; an alias expands to addresses, files,
commands and include files.  A name without an alias is a system
account: its C{.forward} file (C{forward_path}) may send the mail on;
otherwise the mail goes to C{mailbox_command}, or into the mailbox --
C{$home/$home_mailbox} when that is set, else
C{$mail_spool_directory/NAME}; a Maildir when the name ends in C{/},
else an mbox file.  Addresses that are not local are forwarded through
cleanup as a new message.

Who deliveries run as (Postfix's "delivery rights"): a user's mailbox,
and the files and commands of their C{.forward}, as that user; files and
commands of an alias as the owner of the alias database, or of an
include file as its owner -- and when that owner is root, as
C{default_privs}.  Nothing is ever written or run as root.  Commands
and files come only from aliases, C{.forward} and include files, and
only where C{allow_mail_to_commands} and C{allow_mail_to_files} allow:
never from an envelope address.

With C{local_mailbox_accounts = none} (the embedded default) no system
accounts are used: every name gets a Maildir under
C{mail_spool_directory}, written as C{mail_owner}.

The agent takes identities with C{seteuid}, which is process-wide, so
it serves one delivery at a time, in one thread.
"""

from __future__ import annotations

import os
import pwd
import re
import time
from dataclasses import replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from zope.interface import implementer

from tmta.common.batching import ThreadBatcher
from tmta.delivery import (
    BOUNCED,
    DEFERRED,
    RUN_ALONE,
    SENT,
    DeliveryRequest,
    RecipientStatus,
    RequestRecipient,
    logDelivery,
)
from tmta.interfaces import IAddressVerifier
from tmta.local.commit import DuplicateFilter, MaildirCommit
from tmta.local.expansion import RecipientDelivery
from tmta.local.rights import Account, DeliveryRights
from tmta.local.settings import LocalSettings
from tmta.local.state import LocalContext, RunAlone
from tmta.mail.rights import DeliveryError, openQueued
from tmta.queue.qfile import CorruptQueueFile, iterContent
from tmta.tables import openTables
from tmta.wire import heldWrites

#: A recipient's result in a batch: the recipient, its status, when its
#: delivery started, and what it delivered (L{LocalAgent.deliverOne}).
_Outcome = Tuple[RequestRecipient, RecipientStatus, float, List[Tuple[str, str]]]


class LocalAgent:
    """
    The delivery logic, independent of AMP, built from main.cf.

    @ivar settings: what main.cf asks (L{LocalSettings}).
    @ivar context: what every delivery shares (L{LocalContext}).
    """

    def __init__(self, config, fsync: Callable[[int], None] = os.fsync,
                 spoolDirectory: Optional[str] = None,
                 accounts: Callable[[str], Account] = pwd.getpwnam,
                 forwarder=None, passer=None) -> None:
        """
        @param spoolDirectory: another name for C{mail_spool_directory}
            to reach it by (a descriptor's C{/proc/self/fd/N/}); messages
            still name the directory itself.
        @param accounts: finds an account by name (C{pwd.getpwnam}).
        @param forwarder: posts forwarded mail (a
            L{tmta.local.forward.Forwarder}); without one, mail for
            addresses elsewhere is deferred.
        @param passer: hands recipients to C{mailbox_transport} and
            C{fallback_transport} (a L{tmta.local.passing.Passer}).
        """
        from tmta.mail.rewriting import Rewriter

        settings = self.settings = LocalSettings.fromConfig(config, spoolDirectory)
        duplicates = DuplicateFilter(settings.duplicateLimit)
        self.commit = MaildirCommit(duplicates, settings.publicPath, fsync)
        owner = None
        if not settings.accounts:
            from tmta.mail.accounts import mailOwner

            owner = (mailOwner(config, embedded=True) if os.geteuid() == 0
                     else pwd.getpwuid(os.geteuid()))
        self.context = LocalContext(
            settings=settings,
            rights=DeliveryRights(accounts, settings.defaultPrivs),
            aliases=openTables(settings.aliasMaps) if settings.accounts else [],
            rewriter=Rewriter(config), duplicates=duplicates, commit=self.commit,
            beforeAlone=self.beforeAlone, owner=owner, forwarder=forwarder, passer=passer)
        #: Finishes and answers what the batch under way has delivered.
        self._settle: Optional[Callable[[], None]] = None
        #: The request being delivered ran alone (L{beforeAlone}).
        self._ranAlone = False

    # -- one recipient

    def deliverOne(self, request: DeliveryRequest, address: str,
                   original: str = "") -> List[Tuple[str, str]]:
        """
        Deliver to one recipient; blocking.

        @return: what was delivered, C{(address, text)}: the address is
            that of an alias's or .forward's target written to (C{""}
            for the recipient's own).
        @raise DeliveryError: a failure, with its status.
        """
        # The queue file is opened once, now, while this process still has
        # the identity that may read the queue (the recipient may not).
        queueFile, envelope = openQueued(request)
        with queueFile:
            try:
                headers = headerSection(iterContent(queueFile, envelope))
            except CorruptQueueFile as e:
                raise DeliveryError(DEFERRED, "4.3.0", f"cannot read queue file: {e}")
            sizeLimit = self.settings.sizeLimit
            if sizeLimit and envelope.size > sizeLimit:
                raise DeliveryError(BOUNCED, "5.2.2", "message exceeds mailbox_size_limit")
            delivery = RecipientDelivery(self.context, request, address, original or address,
                                         queueFile, envelope, deliveredTo(headers))
            return delivery.run()

    def deliverAll(self, request: DeliveryRequest) -> List[RecipientStatus]:
        """
        Deliver to each recipient of a request, which shares nothing with
        other requests (commands and files are run here); blocking.
        """
        return self.deliverBatch([replace(request, alone=True)])[0]

    def deliverBatch(self, requests: Sequence[DeliveryRequest],
                     answer: Optional[Callable[[int, List[RecipientStatus]], None]] = None,
                     ) -> List[List[RecipientStatus]]:
        """
        Deliver several requests, one after another, with one fsync of
        each Maildir's C{new/} for all of them (group commit): a message
        renamed into C{new/} counts as delivered only once C{new/} is
        synced, so every status (and its log line) waits for that.

        The Maildir files are all written first, and fsynced and renamed
        into C{new/} at the end of the batch (L{MaildirCommit.settle}), their
        writeback started before the first fsync, as cleanup commits
        queue files: one journal commit can then carry them all.

        A delivery to a command, a file or another transport is never
        batched with other recipients' deliveries: what the batch
        delivered before it is finished and answered first (so that a
        slow command holds nobody else's mail, and a crash during it
        repeats nothing already delivered), and it is answered as soon
        as it is done.  Blocking.

        @param answer: C{answer(index, statuses)} hands out a request's
            statuses before the batch ends.
        @return: each request's statuses, in order.
        """
        commit = self.commit
        commit.begin()
        done: List[List[_Outcome]] = []
        results: Dict[int, List[RecipientStatus]] = {}

        def settle() -> None:
            failed = commit.settle()
            for index in range(len(results), len(done)):
                results[index] = self._statuses(requests[index], done[index], failed)
                if answer is not None:
                    answer(index, results[index])

        self._settle = settle
        try:
            for request in requests:
                outcomes = []
                self._ranAlone = False
                for r in request.recipients:
                    started = time.time()
                    commit.delivering = (request.queueId, r.offset)
                    deliveries: List[Tuple[str, str]] = []
                    try:
                        deliveries = self.deliverOne(request, r.address, r.original)
                        text = "; ".join(dict.fromkeys(text for _, text in deliveries))
                        status = RecipientStatus(r.offset, SENT, "2.0.0", text)
                    except DeliveryError as e:
                        status = RecipientStatus(r.offset, e.status, e.dsn, e.reason)
                    except RunAlone:
                        # Sent back undelivered, to be delivered on a
                        # connection of its own (qmgr does) where no other
                        # recipient waits for it.
                        status = RecipientStatus(r.offset, DEFERRED, "4.3.0",
                                                 "to be delivered alone", RUN_ALONE)
                    outcomes.append((r, status, started, deliveries))
                done.append(outcomes)
                if self._ranAlone:
                    settle()
        except BaseException:
            # What was not answered yet fails, and is tried again:
            # deliver nothing of it.
            commit.abandon()
            raise
        finally:
            self._settle = None
        settle()
        commit.end()
        return [results[index] for index in range(len(requests))]

    def _statuses(self, request: DeliveryRequest,
                  outcomes: List[_Outcome],
                  failed: Dict[Tuple[str, int], str]) -> List[RecipientStatus]:
        statuses = []
        for r, status, started, deliveries in outcomes:
            if status.action == RUN_ALONE:
                statuses.append(status)
                continue
            reason = failed.get((request.queueId, r.offset))
            if reason is not None and status.status == SENT:
                status = RecipientStatus(r.offset, DEFERRED, "4.2.0", reason)
            if status.status == SENT and any(address and address != r.address
                                             for address, _ in deliveries):
                # As Postfix logs them: a line for each alias or .forward
                # target written to, C{to=} that target and C{orig_to=}
                # what the recipient was first given as.
                for address, text in deliveries:
                    logDelivery(request, replace(r, address=address or r.address,
                                                 original=r.original or r.address),
                                "local", RecipientStatus(r.offset, SENT, "2.0.0", text), started)
                status.logged = True
            else:
                logDelivery(request, r, "local", status, started)
            statuses.append(status)
        return statuses

    def beforeAlone(self) -> None:
        """
        A delivery that runs alone (a command, a file, another
        transport) is about to start: finish and answer what the batch
        delivered before it, and have it answered once it is done.
        """
        self._ranAlone = True
        if self._settle is not None:
            self._settle()


def headerSection(chunks: Iterable[bytes], limit: int = 1 << 20) -> bytes:
    """
    The message's header section, up to its first empty line, read no
    further than C{limit} bytes.
    """
    data = b""
    for chunk in chunks:
        data += chunk
        end = data.find(b"\n\n")
        if end >= 0:
            return data[:end + 1]
        if len(data) > limit:
            break
    return data


def deliveredTo(headers: bytes) -> Set[str]:
    """
    The addresses of a header section's C{Delivered-To:} fields,
    lower-cased.
    """
    return {m.decode("utf-8", "surrogateescape").strip().lower()
            for m in re.findall(rb"(?im)^delivered-to:[ \t]*([^\n]*)$", headers)}


@implementer(IAddressVerifier)
class LocalDeliveryAgent:
    """
    The L{IDeliveryAgent} wrapper: requests are delivered in a thread of
    their own, one at a time and in order, so that taking a recipient's
    identity (the whole process's where it cannot be the thread's alone)
    never overlaps another delivery.
    """

    def __init__(self, reactor, agent: LocalAgent) -> None:
        self.reactor = reactor
        self.agent = agent
        self.batcher: ThreadBatcher[DeliveryRequest, List[RecipientStatus]] = ThreadBatcher(
            reactor, agent.deliverBatch, around=heldWrites, early=True)

    def deliver(self, request: DeliveryRequest):
        return self.batcher.submit(request)
