"""
The expansion of one envelope recipient (Postfix's C{recipient.c},
C{alias.c}, C{dotforward.c} and C{include.c}): the local part is looked
up in C{alias_maps} (with its extension, then without); an alias expands
to addresses, files, commands and include files.  A name without an
alias is a system account, whose C{.forward} file may send the mail on;
otherwise the mail goes to C{mailbox_transport}, C{mailbox_command} or
the mailbox.  Addresses elsewhere are put aside to be forwarded.
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from typing import List, Set, Tuple

from tmta.delivery import BOUNCED, DEFERRED, DeliveryRequest
from tmta.local.macros import expandForwardPath, expandUserMacros, splitExtension
from tmta.local.rights import Account, tableOwner
from tmta.local.state import MAX_DEPTH, Expansion, LocalContext, Mailbox, Record
from tmta.local.targets import (
    ADDRESS,
    COMMAND,
    FILE,
    Target,
    TargetFileError,
    parseTargets,
    readTargetFile,
)
from tmta.local.writing import Writer
from tmta.logging import Logger
from tmta.mail.address import isSafeMailboxName, splitAddress, unquoteLocal
from tmta.mail.rights import DeliveryError, identity
from tmta.tables import TableLookupError

log = Logger()


class RecipientDelivery:
    """
    The expansion and delivery of one envelope recipient.

    @param deliveredTo: the addresses of the message's C{Delivered-To:}
        headers, lower-cased: delivering to one again is a loop.
    """

    def __init__(self, context: LocalContext, request: DeliveryRequest, address: str,
                 original: str, queueFile, envelope, deliveredTo: Set[str]) -> None:
        self.context = context
        self.settings = context.settings
        self.request = request
        self.address = address
        self.deliveredTo = deliveredTo
        self.record = Record()
        self.writer = Writer(context, request, address, original, queueFile, envelope,
                             self.record)

    def run(self) -> List[Tuple[str, str]]:
        """
        Expand and deliver; blocking.

        @return: what was delivered (L{Record.deliveries}), for the log.
        @raise DeliveryError: a failure, with its status.
        """
        record = self.record
        start = Expansion("recipient", None, 0, self.request.sender, self.address)
        if not self.settings.accounts:
            self.writer.accountless(start, self.deliveredTo)
        else:
            self._address(start, self.address, literal=False)
        deferred = [o for o in record.outcomes if o.status == DEFERRED]
        if not deferred:
            self.writer.sendForwards()
            deferred = [o for o in record.outcomes if o.status == DEFERRED]
        if deferred:
            raise DeliveryError(DEFERRED, deferred[0].dsn, deferred[0].text)
        bounced = [o for o in record.outcomes if o.status == BOUNCED]
        if bounced:
            raise DeliveryError(BOUNCED, bounced[0].dsn, "; ".join(o.text for o in bounced))
        return record.deliveries() or [("", "delivered")]

    # -- addresses

    def _address(self, state: Expansion, address: str, literal: bool) -> None:
        rewriter = self.context.rewriter
        if state.depth > MAX_DEPTH:
            self.record.fail(BOUNCED, "5.4.6", f"mail forwarding loop for {address}: "
                                               "too many levels of aliases")
            return
        qualified = rewriter.rewrite(address)
        local, domain = splitAddress(qualified)
        if domain and not rewriter.isLocalDomain(domain):
            self.record.forwards.setdefault(state.sender, []).append((qualified, state.address))
            return
        if qualified.lower() in self.deliveredTo:
            self.record.fail(BOUNCED, "5.4.6", f"mail forwarding loop for {qualified}")
            return
        state = replace(state, address=qualified)
        name = unquoteLocal(local).lower()
        base, extension = splitExtension(name, self.settings.delimiter)
        if not literal and qualified.lower() not in state.seen:
            state.seen = state.seen | {qualified.lower()}
            try:
                if self._alias(state, name, base):
                    return
            except TableLookupError as e:
                self.record.fail(DEFERRED, "4.3.0", f"alias database unavailable: {e}")
                return
        self._user(state, base, extension, literal)

    def _alias(self, state: Expansion, name: str, base: str) -> bool:
        """
        Expand the alias of C{name} (with its extension, then without).

        @return: whether there was one.
        """
        context = self.context
        for key in dict.fromkeys([name, base]):
            for table in context.aliases:
                value = table.get(key)
                if value is None:
                    continue
                if self.request.verifyOnly:
                    # A probe learns that there is an alias, and goes no
                    # further: one answer per address asked about.
                    self.record.ok(f"aliased to {value}")
                    return True
                ownerUid = tableOwner(table)
                rights = context.rights.of(ownerUid)
                sender = state.sender
                if (self.settings.ownerRequests and state.sender
                        and not key.startswith("owner-")):
                    owner = None
                    for t in context.aliases:
                        owner = t.get("owner-" + key)
                        if owner is not None:
                            break
                    if owner is not None:
                        sender = f"owner-{key}@{context.rewriter.myorigin}"
                targets = parseTargets(value)
                if not targets:
                    self.record.fail(BOUNCED, "5.3.0", f"alias {key} is empty")
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
                    not domain or self.context.rewriter.isLocalDomain(domain))
                # An alias or forward file naming its own name means that
                # name's mailbox, not the alias again.
                self._address(state, target.value, literal=target.literal or own)
            elif target.kind == FILE:
                self.writer.file(state, target.value)
            elif target.kind == COMMAND:
                self.writer.command(state, target.value)
            else:
                self._include(state, target.value, selfName)

    # -- a system account

    def _user(self, state: Expansion, name: str, extension: str, literal: bool) -> None:
        settings = self.settings
        account = self.context.rights.account(name) if isSafeMailboxName(name) else None
        if account is None:
            if settings.fallbackTransport:
                self.writer.passOn(state, settings.fallbackTransport)
                return
            if settings.luserRelay and state.origin == "recipient":
                relay = expandUserMacros(settings.luserRelay, name, extension, state.address,
                                         settings.delimiter)
                self._address(replace(state, depth=state.depth + 1), relay, literal=False)
                return
            self.record.fail(BOUNCED, "5.1.1", f"unknown user: \"{name}\"")
            return
        if account.pw_uid == 0:
            self.record.fail(DEFERRED, "4.3.0", f"mail for {name} (uid 0) needs an alias: "
                                                "tmta never delivers as root")
            return
        userState = replace(state, user=account)
        if not literal and self._forward(userState, account, extension):
            return
        if settings.mailboxTransport:
            self.writer.passOn(userState, settings.mailboxTransport)
            return
        if settings.mailboxCommand:
            self.writer.runCommand(replace(userState, rights=account), settings.mailboxCommand,
                                   kind="mailbox_command")
            return
        if settings.homeMailbox:
            path = os.path.join(account.pw_dir, settings.homeMailbox)
            box = Mailbox(path.rstrip("/"), path.endswith("/"), account.pw_uid, account.pw_gid)
        else:
            box = Mailbox(os.path.join(settings.spool, name), settings.spoolMaildir,
                          account.pw_uid, self._spoolGroup(account))
        self.writer.mailbox(userState, box)

    def _spoolGroup(self, account: Account) -> int:
        """
        The group an mbox file in the mail spool is created and written
        with, as Postfix's local chooses it: the spool's own group when
        the spool is writable by its group and not by everyone (Debian's
        C{/var/mail}, C{root:mail 2775}), else the recipient's.  A
        Maildir is always the recipient's alone.
        """
        if self.settings.spoolMaildir:
            return account.pw_gid
        try:
            st = os.stat(self.settings.spool)
        except OSError:
            return account.pw_gid
        if st.st_mode & stat.S_IWGRP and not st.st_mode & stat.S_IWOTH:
            return st.st_gid
        return account.pw_gid

    def _forward(self, state: Expansion, account: Account, extension: str) -> bool:
        """
        Follow the user's C{.forward} file, the first of C{forward_path}
        that exists.

        @return: whether there was one.
        """
        for template in self.settings.forwardPath:
            path = expandForwardPath(template, account, extension, self.settings.delimiter)
            if path is None:
                continue
            try:
                with identity(account.pw_uid, account.pw_gid):
                    targets, _ = readTargetFile(path, (account.pw_uid, 0))
            except FileNotFoundError:
                continue
            except TargetFileError as e:
                if e.temporary:
                    self.record.fail(DEFERRED, "4.3.0", str(e))
                    return True
                log.warn("{address}: {error}", address=state.address, error=str(e))
                continue
            except OSError:
                continue
            if not targets:
                continue
            if self.request.verifyOnly:
                self.record.ok(f"forward via file: {path}")
                return True
            child = replace(state, origin="forward", rights=account, ownerUid=account.pw_uid,
                            depth=state.depth + 1)
            self._targets(child, targets, selfName=account.pw_name.lower())
            return True
        return False

    def _include(self, state: Expansion, path: str, selfName: str) -> None:
        if not path.startswith("/"):
            self.record.fail(BOUNCED, "5.3.5", f":include:{path}: not an absolute path")
            return
        rights = self.context.rights
        try:
            # Opened with the rights of whoever named it (root for a
            # root-owned alias database), and it must be theirs or root's.
            if state.ownerUid == 0:
                targets, owner = readTargetFile(path, (0,))
            else:
                opener = rights.of(state.ownerUid)
                with identity(opener.pw_uid, opener.pw_gid):
                    targets, owner = readTargetFile(path, (state.ownerUid, 0))
        except FileNotFoundError:
            self.record.fail(DEFERRED, "4.3.0", f"cannot open include file {path}: no such file")
            return
        except TargetFileError as e:
            self.record.fail(DEFERRED if e.temporary else BOUNCED,
                             "4.3.0" if e.temporary else "5.3.0", f"include file: {e}")
            return
        child = replace(state, origin="include", rights=rights.of(owner), ownerUid=owner,
                        depth=state.depth + 1)
        self._targets(child, targets, selfName)
