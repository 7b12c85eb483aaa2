"""
Where local(8)'s deliveries end: a mailbox (mbox or Maildir), a file, a
command, another transport, or a new message forwarded through cleanup
(Postfix's C{mailbox.c}, C{file.c}, C{command.c} and C{forward.c}).
"""

from __future__ import annotations

import os
from typing import Iterable, Tuple

from tmta.delivery import BOUNCED, DEFERRED, SENT, DeliveryRequest
from tmta.local.macros import splitExtension
from tmta.local.state import Expansion, LocalContext, Mailbox, Record, RunAlone
from tmta.mail.address import isSafeMailboxName, splitAddress, unquoteLocal
from tmta.mail.mailbox import MailboxError, deliverMaildir, deliverMbox, envelopeLine
from tmta.mail.pipecommand import commandEnvironment, runCommand, shellCommand
from tmta.mail.rights import DeliveryError, identity
from tmta.queue.qfile import iterContent


class Writer:
    """
    Writes one envelope recipient's mail wherever its expansion leads.

    @param original: the recipient as first given (C{ORIGINAL_RECIPIENT}).
    @param record: where results go, shared with the expansion.
    """

    def __init__(self, context: LocalContext, request: DeliveryRequest, address: str,
                 original: str, queueFile, envelope, record: Record) -> None:
        self.context = context
        self.settings = context.settings
        self.request = request
        self.address = address
        self.original = original
        self.queueFile = queueFile
        self.envelope = envelope
        self.record = record

    # -- what every target shares

    def _prefix(self, state: Expansion) -> bytes:
        return (f"Return-Path: <{self.request.sender}>\nDelivered-To: {state.address}\n"
                ).encode("utf-8", "surrogateescape")

    def _chunks(self) -> Iterable[bytes]:
        return iterContent(self.queueFile, self.envelope)

    def _fromLine(self) -> bytes:
        return envelopeLine(self.request.sender, self.request.arrival)

    def _once(self, key: Tuple, text: str) -> bool:
        if not self.context.duplicates.remember((self.request.queueId,) + key):
            self.record.ok(f"{text} (duplicate suppressed)")
            return False
        return True

    def _forget(self, key: Tuple) -> None:
        self.context.duplicates.forget((self.request.queueId,) + key)

    def _aloneFirst(self) -> None:
        """
        A command or a file is next.  On a connection shared with other
        deliveries, and with nothing of this recipient delivered yet,
        it is sent back (L{RunAlone}) to run where nobody waits for it;
        otherwise it runs here, after what the batch delivered before it
        is answered (L{LocalContext.beforeAlone}).
        """
        if not self.request.alone and self.record.empty():
            raise RunAlone()
        self.context.beforeAlone()

    # -- mailboxes and files

    def mailbox(self, state: Expansion, box: Mailbox) -> None:
        """
        Write to a user's mailbox.
        """
        if self.request.verifyOnly:
            self.record.ok("delivers to maildir" if box.maildir else "delivers to mailbox")
            return
        if not self._once(("mailbox", box.path), "delivered to mailbox"):
            return
        try:
            self.record.ok(self._write(box, state), state.address)
        except DeliveryError as e:
            self._forget(("mailbox", box.path))
            self.record.fail(e.status, e.dsn, e.reason)

    def accountless(self, state: Expansion, deliveredTo) -> None:
        """
        Write to the Maildir named by the recipient's local part, as
        C{mail_owner} (C{local_mailbox_accounts = none}).
        """
        local, _ = splitAddress(self.address)
        name, _ = splitExtension(unquoteLocal(local).lower(), self.settings.delimiter)
        if self.address.lower() in deliveredTo:
            self.record.fail(BOUNCED, "5.4.6", f"mail forwarding loop for {self.address}")
            return
        if not isSafeMailboxName(name):
            self.record.fail(BOUNCED, "5.1.3", f"unsafe mailbox name {name!r}")
            return
        owner = self.context.owner
        assert owner is not None, "set when there are no system accounts"
        self.mailbox(state, Mailbox(os.path.join(self.settings.spool, name), True,
                                    owner.pw_uid, owner.pw_gid))

    def _write(self, box: Mailbox, state: Expansion) -> str:
        settings, commit = self.settings, self.context.commit
        prefix = self._prefix(state)
        try:
            with identity(box.uid, box.gid):
                if box.maildir:
                    key = (self.request.queueId, "mailbox", box.path)
                    deliverMaildir(box.path, prefix, self._chunks(), commit.fsync,
                                   lambda written: commit.finishLater(written, box.uid,
                                                                      box.gid, key))
                    return "delivered to maildir"
                deliverMbox(box.path, self._fromLine(), prefix, self._chunks(), commit.fsync,
                            settings.dotlock, settings.sizeLimit,
                            self.envelope.size + len(prefix) + 100)
                return "delivered to mailbox"
        except MailboxError as e:
            raise DeliveryError(DEFERRED if e.temporary else BOUNCED, e.dsn,
                                settings.publicPath(str(e)))

    def file(self, state: Expansion, path: str) -> None:
        """
        Append to a file named by an alias, C{.forward} or include file.
        """
        if state.origin not in self.settings.filesFrom or state.rights is None:
            self.record.fail(BOUNCED, "5.7.1", f"mail to files is not allowed from "
                                               f"{state.origin}: {path}")
            return
        if "\0" in path or not path.startswith("/"):
            self.record.fail(BOUNCED, "5.3.0", f"bad file name {path!r}")
            return
        rights = state.rights
        if self.request.verifyOnly:
            self.record.ok(f"delivers to file: {path}")
            return
        if not self._once(("file", path), f"delivered to file: {path}"):
            return
        if path == "/dev/null":
            self.record.ok("delivered to file: /dev/null")
            return
        try:
            self._aloneFirst()
        except RunAlone:
            self._forget(("file", path))
            raise
        box = Mailbox(path.rstrip("/"), path.endswith("/"), rights.pw_uid, rights.pw_gid)
        try:
            self._write(box, state)
            self.record.ok(f"delivered to file: {path}", state.address)
        except DeliveryError as e:
            self._forget(("file", path))
            self.record.fail(e.status, e.dsn, e.reason)

    # -- commands

    def command(self, state: Expansion, command: str) -> None:
        """
        Run a command named by an alias, C{.forward} or include file.
        """
        if state.origin not in self.settings.commandsFrom or state.rights is None:
            self.record.fail(BOUNCED, "5.7.1", f"mail to commands is not allowed from "
                                               f"{state.origin}: {command}")
            return
        self.runCommand(state, command, kind="command")

    def runCommand(self, state: Expansion, command: str, kind: str) -> None:
        """
        Run C{command} with the message on its input, as C{state}'s
        rights.

        @param kind: C{command}, or C{mailbox_command}.
        """
        settings = self.settings
        rights = state.rights
        assert rights is not None, "commands are allowed only with rights to run them"
        if self.request.verifyOnly:
            self.record.ok(f"delivers to command: {command}")
            return
        key = (kind, rights.pw_uid, command)
        if not self._once(key, f"delivered to command: {command}"):
            return
        try:
            self._aloneFirst()
        except RunAlone:
            self._forget(key)
            raise
        user = state.user or rights
        local, domain = splitAddress(state.address)
        name = unquoteLocal(local)
        base, extension = splitExtension(name, settings.delimiter)
        attributes = self.envelope.attributes
        environment = commandEnvironment({
            "HOME": user.pw_dir, "LOGNAME": user.pw_name, "USER": user.pw_name,
            "SHELL": user.pw_shell, "SENDER": self.request.sender,
            "RECIPIENT": state.address, "LOCAL": name, "DOMAIN": domain,
            "EXTENSION": extension or None, "ORIGINAL_RECIPIENT": self.original,
            "CLIENT_ADDRESS": attributes.get("client_address"),
            "CLIENT_HOSTNAME": attributes.get("client_name"),
            "CLIENT_PROTOCOL": attributes.get("protocol"),
        }, settings.commandFilter, settings.export)
        directory = settings.executionDirectory or user.pw_dir or "/"

        def message():
            yield self._fromLine()
            yield self._prefix(state)
            yield from self._chunks()

        outcome = runCommand(shellCommand(command, settings.shell), message(), rights.pw_uid,
                             rights.pw_gid, environment, directory, settings.timeLimit)
        if outcome.status == SENT:
            self.record.ok(f"delivered to command: {command}", state.address)
        else:
            self._forget(key)
            self.record.fail(outcome.status, outcome.dsn, outcome.reason)

    # -- other transports

    def passOn(self, state: Expansion, spec: str) -> None:
        """
        Hand the recipient to another transport (C{transport:nexthop},
        the next hop defaulting to this request's).
        """
        context = self.context
        # Another transport is a bounded wait (its own timeouts), not a
        # command's: it stays in the batch, after what came before it is
        # answered.
        transport, _, nexthop = spec.partition(":")
        key = ("transport", spec, state.address.lower())
        if not self._once(key, f"delivered via {transport}"):
            return
        if context.passer is None:
            self._forget(key)
            self.record.fail(DEFERRED, "4.3.0", f"cannot pass mail to the {transport} transport")
            return
        context.beforeAlone()
        offset = next((r.offset for r in self.request.recipients
                       if r.address == self.address), 0)
        status = context.passer.passOn(transport, nexthop or self.request.nexthop,
                                       self.request, state.address, self.original, offset)
        if status.status == SENT:
            self.record.ok(status.reason or f"delivered via {transport}")
        else:
            self._forget(key)
            self.record.fail(status.status, status.dsn, status.reason)

    # -- forwarding

    def sendForwards(self) -> None:
        """
        Post what the expansion put aside for addresses elsewhere, one
        new message per envelope sender.
        """
        context, record = self.context, self.record
        if self.request.verifyOnly:
            for addresses in record.forwards.values():
                record.ok("forwards to " + ", ".join(a for a, _ in addresses))
            return
        for sender, addresses in record.forwards.items():
            fresh = [(address, via) for address, via in addresses
                     if context.duplicates.remember((self.request.queueId, "forward",
                                                     address.lower()))]
            if not fresh:
                record.ok("forwarded (duplicate suppressed)")
                continue
            if context.forwarder is None:
                for address, _ in fresh:
                    self._forget(("forward", address.lower()))
                record.fail(DEFERRED, "4.3.0", "cannot forward mail: no cleanup service")
                continue
            header = f"Delivered-To: {fresh[0][1]}\n".encode("utf-8", "surrogateescape")

            def content():
                yield header
                yield from self._chunks()

            attributes = {"origin": "local", "protocol": "local"}
            # A copy forwarded goes on as the original would: REQUIRETLS
            # (RFC 8689) holds for it too.
            for key in ("dsn_ret", "dsn_envid", "requiretls"):
                if key in self.envelope.attributes:
                    attributes[key] = self.envelope.attributes[key]
            try:
                queueId = context.forwarder.forward(sender, [a for a, _ in fresh], attributes,
                                                    content())
            except Exception as e:
                for address, _ in fresh:
                    self._forget(("forward", address.lower()))
                code = getattr(e, "code", 451)
                record.fail(BOUNCED if code // 100 == 5 else DEFERRED,
                            "5.3.0" if code // 100 == 5 else "4.3.0",
                            f"cannot forward mail: {e}")
                continue
            record.ok(f"forwarded as {queueId}")
