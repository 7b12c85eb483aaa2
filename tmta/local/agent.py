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
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from zope.interface import implementer

from tmta.address import isSafeMailboxName, splitAddress, unquoteLocal
from tmta.batching import ThreadBatcher
from tmta.common.durable import fsyncDirectory, startWriteback
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
from tmta.delivery.command import commandEnvironment, runCommand, shellCommand
from tmta.delivery.mailbox import (
    MailboxError,
    WrittenMaildirFile,
    deliverMaildir,
    deliverMbox,
    envelopeLine,
    unlinkQuietly,
)
from tmta.delivery.rights import DeliveryError, identity, openQueued
from tmta.interfaces import IAddressVerifier, IOwnedTable
from tmta.local.targets import (
    ADDRESS,
    COMMAND,
    FILE,
    Target,
    TargetFileError,
    parseTargets,
    readTargetFile,
)
from tmta.logging import Logger
from tmta.queue.qfile import CorruptQueueFile, iterContent
from tmta.tables import TableLookupError, openTables
from tmta.wire import heldWrites

log = Logger()

#: How deep aliases, forward and include files may nest.
MAX_DEPTH = 20

Account = pwd.struct_passwd


@dataclass
class Mailbox:
    """
    Where and as whom one recipient's mail is written.
    """

    path: str
    maildir: bool
    uid: int
    gid: int


@dataclass
class Expansion:
    """
    Where one step of an expansion stands (Postfix's delivery state).

    @ivar origin: what the current targets came from: C{recipient} (the
        envelope), C{alias}, C{forward} or C{include} -- the classes of
        C{allow_mail_to_commands} and C{allow_mail_to_files}.
    @ivar rights: who files and commands run as; C{None} where there is
        no one (the envelope itself).
    @ivar ownerUid: who owns the file the targets came from (0 for a
        root-owned alias database): an include file must be theirs or
        root's.
    @ivar sender: the envelope sender for forwarded mail (an C{owner-}
        alias replaces it).
    @ivar user: the account whose C{.forward} is being followed, for the
        commands' environment.
    @ivar address: the address being delivered, for C{Delivered-To:}.
    """

    origin: str
    rights: Optional[Account]
    ownerUid: int
    sender: str
    address: str
    depth: int = 0
    user: Optional[Account] = None
    seen: Set[str] = field(default_factory=set)


@dataclass
class RecipientOutcome:
    status: str
    dsn: str
    text: str


class LocalAgent:
    """
    The delivery logic, independent of AMP, built from main.cf.
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
        from tmta.rewriting import Rewriter

        self.config = config
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
        self.forwardPath = config.getList("forward_path")
        self.commandsFrom = set(config.getList("allow_mail_to_commands"))
        self.filesFrom = set(config.getList("allow_mail_to_files"))
        self.mailboxCommand = config.get("mailbox_command").strip()
        self.lusersRelay = config.get("luser_relay").strip()
        self.mailboxTransport = config.get("mailbox_transport").strip()
        self.fallbackTransport = config.get("fallback_transport").strip()
        self.passer = passer
        self.ownerRequests = config.getBool("owner_request_special")
        self.shell = config.get("local_command_shell")
        self.filter = config.get("command_expansion_filter")
        self.export = config.getList("export_environment")
        self.timeLimit = config.getTime("command_time_limit")
        self.executionDirectory = config.get("command_execution_directory")
        self.defaultPrivs = config.get("default_privs")
        self.getAccount = accounts
        self.forwarder = forwarder
        self.rewriter = Rewriter(config)
        self.fsync = fsync
        # What each message was lately delivered to, oldest first: one
        # message reaches a mailbox, file or command once, however many
        # of its recipients (or their aliases) lead there.
        self._delivered: "OrderedDict[Tuple, None]" = OrderedDict()
        self._duplicateLimit = config.getInt("duplicate_filter_limit")
        #: Maildir directories whose fsync waits for the end of the batch
        #: under way, or C{None} outside one (see L{deliverBatch}).
        self._syncs: Optional[Dict[Tuple[str, int, int], Tuple[list, list, list]]] = None
        #: Finishes and answers what the batch under way has delivered.
        self._settle: Optional[Callable[[], None]] = None
        #: The request being delivered ran alone (L{beforeAlone}).
        self._ranAlone = False
        #: Maildir files written and not yet fsynced, which the end of the
        #: batch under way finishes, or C{None} outside one.
        self._written: Optional[List[Tuple[WrittenMaildirFile, int, int, Tuple,
                                           Tuple[str, int]]]] = None
        self._delivering: Tuple[str, int] = ("", -1)
        self.owner = None
        if not self.accounts:
            from tmta.common.accounts import mailOwner

            self.owner = (mailOwner(config, embedded=True) if os.geteuid() == 0
                          else pwd.getpwuid(os.geteuid()))

    # -- accounts and rights

    def _account(self, name: str) -> Optional[Account]:
        try:
            return self.getAccount(name)
        except (KeyError, ValueError):
            return None

    def _unprivileged(self) -> Account:
        account = self._account(self.defaultPrivs)
        if account is None or account.pw_uid == 0:
            raise DeliveryError(DEFERRED, "4.3.0",
                             f"default_privs {self.defaultPrivs!r} is not an unprivileged account")
        return account

    def _rightsOf(self, uid: int) -> Account:
        """
        Who runs the files and commands of something owned by C{uid}:
        that account, or C{default_privs} for root.
        """
        if uid == 0:
            return self._unprivileged()
        try:
            return pwd.getpwuid(uid)
        except KeyError:
            raise DeliveryError(DEFERRED, "4.3.0", f"uid {uid} has no account")

    # -- one recipient

    def deliverOne(self, request: DeliveryRequest, address: str,
                   original: str = "") -> str:
        """
        Deliver to one recipient; blocking.

        @return: the success text for the log.
        @raise DeliveryError: a failure, with its status.
        """
        # The queue file is opened once, now, while this process still has
        # the identity that may read the queue (the recipient may not).
        queueFile, envelope = openQueued(request)
        with queueFile:
            try:
                headers = _headerSection(iterContent(queueFile, envelope))
            except CorruptQueueFile as e:
                raise DeliveryError(DEFERRED, "4.3.0", f"cannot read queue file: {e}")
            if self.sizeLimit and envelope.size > self.sizeLimit:
                raise DeliveryError(BOUNCED, "5.2.2", "message exceeds mailbox_size_limit")
            delivery = _Delivery(self, request, address, original or address, queueFile,
                                 envelope, _deliveredTo(headers))
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
        into C{new/} at the end of the batch (L{_finishWritten}), their
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
        self._syncs = {}
        self._written = []
        done: List[List[Tuple[RequestRecipient, RecipientStatus, float]]] = []
        results: Dict[int, List[RecipientStatus]] = {}

        def settle() -> None:
            failed = self._finishWritten()
            syncs, self._syncs = self._syncs, {}
            self._written = []
            failed.update(self._syncDirectories(syncs))
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
                    self._delivering = (request.queueId, r.offset)
                    try:
                        text = self.deliverOne(request, r.address, r.original)
                        status = RecipientStatus(r.offset, SENT, "2.0.0", text)
                    except DeliveryError as e:
                        status = RecipientStatus(r.offset, e.status, e.dsn, e.reason)
                    except _RunAlone:
                        # Sent back undelivered, to be delivered on a
                        # connection of its own (qmgr does) where no other
                        # recipient waits for it.
                        status = RecipientStatus(r.offset, DEFERRED, "4.3.0",
                                                 "to be delivered alone", RUN_ALONE)
                    outcomes.append((r, status, started))
                done.append(outcomes)
                if self._ranAlone:
                    settle()
        except BaseException:
            # What was not answered yet fails, and is tried again:
            # deliver nothing of it.
            written, self._written = self._written or [], None
            for entry in written:
                entry[0].discard()
            self._syncs = None
            raise
        finally:
            self._settle = None
        settle()
        self._syncs = self._written = None
        return [results[index] for index in range(len(requests))]

    def _statuses(self, request: DeliveryRequest,
                  outcomes: List[Tuple[RequestRecipient, RecipientStatus, float]],
                  failed: Dict[Tuple[str, int], str]) -> List[RecipientStatus]:
        statuses = []
        for r, status, started in outcomes:
            if status.action == RUN_ALONE:
                statuses.append(status)
                continue
            reason = failed.get((request.queueId, r.offset))
            if reason is not None and status.status == SENT:
                status = RecipientStatus(r.offset, DEFERRED, "4.2.0", reason)
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

    def _syncLater(self, directory: str, uid: int, gid: int, key: Tuple,
                   delivering: Tuple[str, int], path: str) -> None:
        """
        Put off the fsync of a Maildir's C{new/} to the end of the batch
        under way (L{deliverBatch}), as C{uid}:C{gid}, for the delivery
        C{delivering} (queue id, recipient offset) of the file C{path};
        C{key} names the mailbox for the duplicate filter, forgotten if
        the fsync fails.
        """
        assert self._syncs is not None, "only within a batch"
        entry = self._syncs.setdefault((directory, uid, gid), ([], [], []))
        entry[0].append(delivering)
        entry[1].append(key)
        entry[2].append(path)

    def finishLater(self, written: WrittenMaildirFile, uid: int, gid: int,
                    key: Tuple) -> bool:
        """
        Put off the fsync and rename of a written Maildir file to the end
        of the batch under way (L{deliverBatch}), as C{uid}:C{gid};
        C{key} names the mailbox for the duplicate filter.

        @return: C{False} outside a batch: the caller finishes it at once.
        """
        if self._written is None:
            return False
        self._written.append((written, uid, gid, key, self._delivering))
        return True

    def _finishWritten(self) -> Dict[Tuple[str, int], str]:
        """
        fsync and rename into C{new/} every Maildir file the batch wrote,
        and put off the fsync of each C{new/} (L{_syncLater}); C{{(queue
        id, recipient offset): reason}} for the deliveries whose file
        failed.
        """
        written, self._written = self._written or [], None
        if len(written) > 1:
            for entry in written:
                startWriteback(entry[0].fd)
        failed: Dict[Tuple[str, int], str] = {}
        for file, uid, gid, key, delivering in written:
            try:
                with identity(uid, gid):
                    file.complete(self.fsync)
            except (MailboxError, DeliveryError) as e:
                failed[delivering] = str(e)
                self.forget(key)
                continue
            self._syncLater(file.new, uid, gid, key, delivering, file.final)
        return failed

    def _syncDirectories(self, syncs) -> Dict[Tuple[str, int], str]:
        """
        fsync each directory a batch put off; C{{(queue id, recipient
        offset): reason}} for the deliveries whose directory failed.
        """
        failed: Dict[Tuple[str, int], str] = {}
        for (directory, uid, gid), (deliveries, keys, paths) in (syncs or {}).items():
            try:
                with identity(uid, gid):
                    fsyncDirectory(directory, self.fsync)
            except (OSError, DeliveryError) as e:
                reason = f"cannot sync maildir {directory}: {getattr(e, 'strerror', None) or e}"
                reason = reason.replace(self.spool + "/", self.spoolName + "/")
                for delivery in deliveries:
                    failed[delivery] = reason
                for key in keys:
                    self.forget(key)
                # Deferred, so not left in new/: the retry's copy is the
                # only one.
                with identity(uid, gid):
                    for path in paths:
                        unlinkQuietly(path)
        return failed

    def remember(self, key: Tuple) -> bool:
        """
        Record a delivery; C{False} when it was already made.
        """
        if key in self._delivered:
            return False
        self._delivered[key] = None
        if len(self._delivered) > self._duplicateLimit:
            self._delivered.popitem(last=False)
        return True

    def forget(self, key: Tuple) -> None:
        self._delivered.pop(key, None)


class _RunAlone(Exception):
    """
    The recipient's delivery reaches a command or a file first: it is
    to be made on a connection of its own.
    """


class _Delivery:
    """
    The expansion and delivery of one envelope recipient.
    """

    def __init__(self, agent: LocalAgent, request: DeliveryRequest, address: str,
                 original: str, queueFile, envelope, deliveredTo: Set[str]) -> None:
        self.agent = agent
        self.request = request
        self.address = address
        self.original = original
        self.queueFile = queueFile
        self.envelope = envelope
        self.deliveredTo = deliveredTo
        self.outcomes: List[RecipientOutcome] = []
        #: Addresses to forward to, by envelope sender.
        self.forwards: "OrderedDict[str, List[Tuple[str, str]]]" = OrderedDict()

    def run(self) -> str:
        agent = self.agent
        start = Expansion("recipient", None, 0, self.request.sender, self.address)
        if not agent.accounts:
            self._accountless(start)
        else:
            self._address(start, self.address, literal=False)
        deferred = [o for o in self.outcomes if o.status == DEFERRED]
        if not deferred:
            self._sendForwards()
            deferred = [o for o in self.outcomes if o.status == DEFERRED]
        if deferred:
            raise DeliveryError(DEFERRED, deferred[0].dsn, deferred[0].text)
        bounced = [o for o in self.outcomes if o.status == BOUNCED]
        if bounced:
            raise DeliveryError(BOUNCED, bounced[0].dsn, "; ".join(o.text for o in bounced))
        return "; ".join(dict.fromkeys(o.text for o in self.outcomes)) or "delivered"

    def _fail(self, status: str, dsn: str, text: str) -> None:
        self.outcomes.append(RecipientOutcome(status, dsn, text))

    def _ok(self, text: str) -> None:
        self.outcomes.append(RecipientOutcome(SENT, "2.0.0", text))

    # -- addresses

    def _address(self, state: Expansion, address: str, literal: bool) -> None:
        agent = self.agent
        if state.depth > MAX_DEPTH:
            self._fail(BOUNCED, "5.4.6", f"mail forwarding loop for {address}: "
                                         "too many levels of aliases")
            return
        qualified = agent.rewriter.rewrite(address)
        local, domain = splitAddress(qualified)
        if domain and not agent.rewriter.isLocalDomain(domain):
            self.forwards.setdefault(state.sender, []).append((qualified, state.address))
            return
        if qualified.lower() in self.deliveredTo:
            self._fail(BOUNCED, "5.4.6", f"mail forwarding loop for {qualified}")
            return
        state = replace(state, address=qualified)
        name = unquoteLocal(local).lower()
        base, extension = _splitExtension(name, agent.delimiter)
        if not literal and qualified.lower() not in state.seen:
            state.seen = state.seen | {qualified.lower()}
            try:
                if self._alias(state, name, base):
                    return
            except TableLookupError as e:
                self._fail(DEFERRED, "4.3.0", f"alias database unavailable: {e}")
                return
        self._user(state, base, extension, literal)

    def _alias(self, state: Expansion, name: str, base: str) -> bool:
        """
        Expand the alias of C{name} (with its extension, then without).

        @return: whether there was one.
        """
        agent = self.agent
        for key in dict.fromkeys([name, base]):
            for table in agent.aliases:
                value = table.get(key)
                if value is None:
                    continue
                if self.request.verifyOnly:
                    # A probe learns that there is an alias, and goes no
                    # further: one answer per address asked about.
                    self._ok(f"aliased to {value}")
                    return True
                ownerUid = _tableOwner(table)
                rights = agent._rightsOf(ownerUid)
                sender = state.sender
                if agent.ownerRequests and state.sender and not key.startswith("owner-"):
                    owner = None
                    for t in agent.aliases:
                        owner = t.get("owner-" + key)
                        if owner is not None:
                            break
                    if owner is not None:
                        sender = f"owner-{key}@{agent.rewriter.myorigin}"
                targets = parseTargets(value)
                if not targets:
                    self._fail(BOUNCED, "5.3.0", f"alias {key} is empty")
                    return True
                child = replace(state, origin="alias", rights=rights, ownerUid=ownerUid,
                                sender=sender, depth=state.depth + 1, user=None)
                self._targets(child, targets, selfName=key)
                return True
        return False

    def _targets(self, state: Expansion, targets: List[Target], selfName: str) -> None:
        for target in targets:
            if target.kind == ADDRESS:
                local, domain = splitAddress(target.value)
                own = unquoteLocal(local).lower() == selfName and (
                    not domain or self.agent.rewriter.isLocalDomain(domain))
                # An alias or forward file naming its own name means that
                # name's mailbox, not the alias again.
                self._address(state, target.value, literal=target.literal or own)
            elif target.kind == FILE:
                self._file(state, target.value)
            elif target.kind == COMMAND:
                self._command(state, target.value)
            else:
                self._include(state, target.value, selfName)

    # -- a system account

    def _user(self, state: Expansion, name: str, extension: str, literal: bool) -> None:
        agent = self.agent
        account = agent._account(name) if isSafeMailboxName(name) else None
        if account is None:
            if agent.fallbackTransport:
                self._passOn(state, agent.fallbackTransport)
                return
            if agent.lusersRelay and state.origin == "recipient":
                relay = _expandUserMacros(agent.lusersRelay, name, extension, state.address,
                                          agent.delimiter)
                self._address(replace(state, depth=state.depth + 1), relay, literal=False)
                return
            self._fail(BOUNCED, "5.1.1", f"unknown user: \"{name}\"")
            return
        if account.pw_uid == 0:
            self._fail(DEFERRED, "4.3.0",
                       f"mail for {name} (uid 0) needs an alias: tmta never delivers as root")
            return
        userState = replace(state, user=account)
        if not literal and self._forward(userState, account, extension):
            return
        if agent.mailboxTransport:
            self._passOn(userState, agent.mailboxTransport)
            return
        if agent.mailboxCommand:
            self._runCommand(replace(userState, rights=account), agent.mailboxCommand,
                             kind="mailbox_command")
            return
        if agent.homeMailbox:
            path = os.path.join(account.pw_dir, agent.homeMailbox)
            box = Mailbox(path.rstrip("/"), path.endswith("/"), account.pw_uid, account.pw_gid)
        else:
            box = Mailbox(os.path.join(agent.spool, name), agent.spoolMaildir,
                          account.pw_uid, account.pw_gid)
        self._mailbox(userState, box)

    def _forward(self, state: Expansion, account: Account, extension: str) -> bool:
        """
        Follow the user's C{.forward} file, the first of C{forward_path}
        that exists.

        @return: whether there was one.
        """
        agent = self.agent
        for template in agent.forwardPath:
            path = _expandForwardPath(template, account, extension, agent.delimiter)
            if path is None:
                continue
            try:
                with identity(account.pw_uid, account.pw_gid):
                    targets, _ = readTargetFile(path, (account.pw_uid, 0))
            except FileNotFoundError:
                continue
            except TargetFileError as e:
                if e.temporary:
                    self._fail(DEFERRED, "4.3.0", str(e))
                    return True
                log.warn("{address}: {error}", address=state.address, error=str(e))
                continue
            except OSError:
                continue
            if not targets:
                continue
            if self.request.verifyOnly:
                self._ok(f"forward via file: {path}")
                return True
            child = replace(state, origin="forward", rights=account, ownerUid=account.pw_uid,
                            depth=state.depth + 1)
            self._targets(child, targets, selfName=account.pw_name.lower())
            return True
        return False

    def _include(self, state: Expansion, path: str, selfName: str) -> None:
        if not path.startswith("/"):
            self._fail(BOUNCED, "5.3.5", f":include:{path}: not an absolute path")
            return
        try:
            # Opened with the rights of whoever named it (root for a
            # root-owned alias database), and it must be theirs or root's.
            if state.ownerUid == 0:
                targets, owner = readTargetFile(path, (0,))
            else:
                opener = self.agent._rightsOf(state.ownerUid)
                with identity(opener.pw_uid, opener.pw_gid):
                    targets, owner = readTargetFile(path, (state.ownerUid, 0))
        except FileNotFoundError:
            self._fail(DEFERRED, "4.3.0", f"cannot open include file {path}: no such file")
            return
        except TargetFileError as e:
            self._fail(DEFERRED if e.temporary else BOUNCED, "4.3.0" if e.temporary else "5.3.0",
                       f"include file: {e}")
            return
        rights = self.agent._rightsOf(owner)
        child = replace(state, origin="include", rights=rights, ownerUid=owner,
                        depth=state.depth + 1)
        self._targets(child, targets, selfName)

    # -- writing

    def _prefix(self, state: Expansion) -> bytes:
        return (f"Return-Path: <{self.request.sender}>\nDelivered-To: {state.address}\n"
                ).encode("utf-8", "surrogateescape")

    def _chunks(self) -> Iterable[bytes]:
        return iterContent(self.queueFile, self.envelope)

    def _once(self, key: Tuple, text: str) -> bool:
        full = (self.request.queueId,) + key
        if not self.agent.remember(full):
            self._ok(f"{text} (duplicate suppressed)")
            return False
        return True

    def _aloneFirst(self) -> None:
        """
        A command or a file is next.  On a connection shared with other
        deliveries, and with nothing of this recipient delivered yet,
        it is sent back (L{_RunAlone}) to run where nobody waits for it;
        otherwise it runs here, after what the batch delivered before it
        is answered (L{LocalAgent.beforeAlone}).
        """
        if not self.request.alone and not self.outcomes and not self.forwards:
            raise _RunAlone()
        self.agent.beforeAlone()

    def _mailbox(self, state: Expansion, box: Mailbox) -> None:
        if self.request.verifyOnly:
            self._ok("delivers to maildir" if box.maildir else "delivers to mailbox")
            return
        if not self._once(("mailbox", box.path), "delivered to mailbox"):
            return
        try:
            self._ok(self._write(box, state))
        except DeliveryError as e:
            self.agent.forget((self.request.queueId, "mailbox", box.path))
            self._fail(e.status, e.dsn, e.reason)

    def _accountless(self, state: Expansion) -> None:
        agent = self.agent
        local, _ = splitAddress(self.address)
        name, _ = _splitExtension(unquoteLocal(local).lower(), agent.delimiter)
        if self.address.lower() in self.deliveredTo:
            self._fail(BOUNCED, "5.4.6", f"mail forwarding loop for {self.address}")
            return
        if not isSafeMailboxName(name):
            self._fail(BOUNCED, "5.1.3", f"unsafe mailbox name {name!r}")
            return
        owner = agent.owner
        assert owner is not None, "set when there are no system accounts"
        self._mailbox(state, Mailbox(os.path.join(agent.spool, name), True,
                                     owner.pw_uid, owner.pw_gid))

    def _write(self, box: Mailbox, state: Expansion) -> str:
        agent = self.agent
        prefix = self._prefix(state)
        try:
            with identity(box.uid, box.gid):
                if box.maildir:
                    key = (self.request.queueId, "mailbox", box.path)
                    deliverMaildir(box.path, prefix, self._chunks(), agent.fsync,
                                   lambda written: agent.finishLater(written, box.uid,
                                                                     box.gid, key))
                    return "delivered to maildir"
                deliverMbox(box.path, self._fromLine(), prefix, self._chunks(), agent.fsync,
                            agent.dotlock, agent.sizeLimit,
                            self.envelope.size + len(prefix) + 100)
                return "delivered to mailbox"
        except MailboxError as e:
            reason = str(e).replace(agent.spool + "/", agent.spoolName + "/")
            raise DeliveryError(DEFERRED if e.temporary else BOUNCED, e.dsn, reason)

    def _fromLine(self) -> bytes:
        return envelopeLine(self.request.sender, self.request.arrival)

    def _file(self, state: Expansion, path: str) -> None:
        agent = self.agent
        if state.origin not in agent.filesFrom or state.rights is None:
            self._fail(BOUNCED, "5.7.1", f"mail to files is not allowed from {state.origin}: "
                                         f"{path}")
            return
        if "\0" in path or not path.startswith("/"):
            self._fail(BOUNCED, "5.3.0", f"bad file name {path!r}")
            return
        rights = state.rights
        if self.request.verifyOnly:
            self._ok(f"delivers to file: {path}")
            return
        if not self._once(("file", path), f"delivered to file: {path}"):
            return
        if path == "/dev/null":
            self._ok("delivered to file: /dev/null")
            return
        try:
            self._aloneFirst()
        except _RunAlone:
            agent.forget((self.request.queueId, "file", path))
            raise
        box = Mailbox(path.rstrip("/"), path.endswith("/"), rights.pw_uid, rights.pw_gid)
        try:
            self._write(box, state)
            self._ok(f"delivered to file: {path}")
        except DeliveryError as e:
            agent.forget((self.request.queueId, "file", path))
            self._fail(e.status, e.dsn, e.reason)

    def _command(self, state: Expansion, command: str) -> None:
        agent = self.agent
        if state.origin not in agent.commandsFrom or state.rights is None:
            self._fail(BOUNCED, "5.7.1", f"mail to commands is not allowed from "
                                         f"{state.origin}: {command}")
            return
        self._runCommand(state, command, kind="command")

    def _runCommand(self, state: Expansion, command: str, kind: str) -> None:
        agent = self.agent
        rights = state.rights
        assert rights is not None, "commands are allowed only with rights to run them"
        if self.request.verifyOnly:
            self._ok(f"delivers to command: {command}")
            return
        if not self._once((kind, rights.pw_uid, command), f"delivered to command: {command}"):
            return
        try:
            self._aloneFirst()
        except _RunAlone:
            agent.forget((self.request.queueId, kind, rights.pw_uid, command))
            raise
        user = state.user or rights
        local, domain = splitAddress(state.address)
        name = unquoteLocal(local)
        base, extension = _splitExtension(name, agent.delimiter)
        attributes = self.envelope.attributes
        environment = commandEnvironment({
            "HOME": user.pw_dir, "LOGNAME": user.pw_name, "USER": user.pw_name,
            "SHELL": user.pw_shell, "SENDER": self.request.sender,
            "RECIPIENT": state.address, "LOCAL": name, "DOMAIN": domain,
            "EXTENSION": extension or None, "ORIGINAL_RECIPIENT": self.original,
            "CLIENT_ADDRESS": attributes.get("client_address"),
            "CLIENT_HOSTNAME": attributes.get("client_name"),
            "CLIENT_PROTOCOL": attributes.get("protocol"),
        }, agent.filter, agent.export)
        directory = agent.executionDirectory or user.pw_dir or "/"

        def message():
            yield self._fromLine()
            yield self._prefix(state)
            yield from self._chunks()

        outcome = runCommand(shellCommand(command, agent.shell), message(), rights.pw_uid,
                             rights.pw_gid, environment, directory, agent.timeLimit)
        if outcome.status == SENT:
            self._ok(f"delivered to command: {command}")
        else:
            agent.forget((self.request.queueId, kind, rights.pw_uid, command))
            self._fail(outcome.status, outcome.dsn, outcome.reason)

    def _passOn(self, state: Expansion, spec: str) -> None:
        """
        Hand the recipient to another transport (C{transport:nexthop},
        the next hop defaulting to this request's).
        """
        agent = self.agent
        # Another transport is a bounded wait (its own timeouts), not a
        # command's: it stays in the batch, after what came before it is
        # answered.
        transport, _, nexthop = spec.partition(":")
        key = ("transport", spec, state.address.lower())
        if not self._once(key, f"delivered via {transport}"):
            return
        if agent.passer is None:
            agent.forget((self.request.queueId,) + key)
            self._fail(DEFERRED, "4.3.0", f"cannot pass mail to the {transport} transport")
            return
        agent.beforeAlone()
        offset = next((r.offset for r in self.request.recipients
                       if r.address == self.address), 0)
        status = agent.passer.passOn(transport, nexthop or self.request.nexthop, self.request,
                                     state.address, self.original, offset)
        if status.status == SENT:
            self._ok(status.reason or f"delivered via {transport}")
        else:
            agent.forget((self.request.queueId,) + key)
            self._fail(status.status, status.dsn, status.reason)

    # -- forwarding

    def _sendForwards(self) -> None:
        agent = self.agent
        if self.request.verifyOnly:
            for addresses in self.forwards.values():
                self._ok("forwards to " + ", ".join(a for a, _ in addresses))
            return
        for sender, addresses in self.forwards.items():
            fresh = []
            for address, via in addresses:
                if agent.remember((self.request.queueId, "forward", address.lower())):
                    fresh.append((address, via))
            if not fresh:
                self._ok("forwarded (duplicate suppressed)")
                continue
            if agent.forwarder is None:
                for address, _ in fresh:
                    agent.forget((self.request.queueId, "forward", address.lower()))
                self._fail(DEFERRED, "4.3.0", "cannot forward mail: no cleanup service")
                continue
            header = f"Delivered-To: {fresh[0][1]}\n".encode("utf-8", "surrogateescape")

            def content():
                yield header
                yield from self._chunks()

            attributes = {"origin": "local", "protocol": "local"}
            for key in ("dsn_ret", "dsn_envid"):
                if key in self.envelope.attributes:
                    attributes[key] = self.envelope.attributes[key]
            try:
                queueId = agent.forwarder.forward(sender, [a for a, _ in fresh], attributes,
                                                  content())
            except Exception as e:
                for address, _ in fresh:
                    agent.forget((self.request.queueId, "forward", address.lower()))
                code = getattr(e, "code", 451)
                self._fail(BOUNCED if code // 100 == 5 else DEFERRED,
                           "5.3.0" if code // 100 == 5 else "4.3.0",
                           f"cannot forward mail: {e}")
                continue
            self._ok(f"forwarded as {queueId}")


def _tableOwner(table) -> int:
    """
    Who owns an alias table (L{IOwnedTable}): its file's owner; a table
    that is not a file, or whose owner cannot be told, counts as root's.
    """
    if IOwnedTable.providedBy(table):
        owner = table.owner()
        if owner is not None:
            return owner
    return 0


def _splitExtension(name: str, delimiters: str) -> Tuple[str, str]:
    for d in delimiters:
        if d in name:
            base, _, extension = name.partition(d)
            if base:
                return base, extension
    return name, ""


def _expandForwardPath(template: str, account: Account, extension: str,
                       delimiters: str) -> Optional[str]:
    """
    One C{forward_path} entry with C{$home}, C{$user}, C{$extension},
    C{$recipient_delimiter} and C{${name?value}} expanded; C{None} when
    it names nothing (an extension-only entry without an extension).
    """
    values = {"home": account.pw_dir, "user": account.pw_name, "extension": extension,
              "recipient_delimiter": delimiters[:1] if extension else "",
              "shell": account.pw_shell}
    missing = False

    def expand(match: "re.Match") -> str:
        nonlocal missing
        name = match.group(1) or match.group(4)
        conditional, alternative = match.group(2), match.group(3)
        value = values.get(name, "")
        if conditional == "?":
            return alternative if value else ""
        if conditional == ":":
            return "" if value else alternative
        if name == "extension" and not value:
            missing = True
        return value

    path = re.sub(r"\$\{(\w+)(?:([?:])([^}]*))?\}|\$(\w+)", expand, template)
    if missing or not path.startswith("/"):
        return None
    return path


def _expandUserMacros(template: str, user: str, extension: str, recipient: str,
                      delimiters: str) -> str:
    local, domain = splitAddress(recipient)
    values = {"user": user, "extension": extension, "recipient": recipient,
              "local": unquoteLocal(local), "domain": domain,
              "recipient_delimiter": delimiters[:1]}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m.group(1), m.group(0)), template)


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


def _deliveredTo(headers: bytes) -> Set[str]:
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
