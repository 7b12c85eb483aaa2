"""
The state local(8) carries through one recipient's delivery (Postfix's
C{DELIVER_STATE} and C{DELIVER_ATTR}): what the agent lends each
delivery, where an expansion stands, and what came of it so far.
"""

from __future__ import annotations

import pwd
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple

from tmta.delivery import SENT
from tmta.local.commit import DuplicateFilter, MaildirCommit
from tmta.local.rights import DeliveryRights
from tmta.local.settings import LocalSettings

Account = pwd.struct_passwd

#: How deep aliases, forward and include files may nest.
MAX_DEPTH = 20


@dataclass
class LocalContext:
    """
    What every delivery of one agent shares.

    @ivar aliases: the C{alias_maps} tables, opened.
    @ivar rewriter: qualifies addresses and tells local domains
        (L{tmta.mail.rewriting.Rewriter}).
    @ivar beforeAlone: called before a delivery that runs alone (a
        command, a file, another transport): the batch under way
        finishes and answers what it delivered before it.
    @ivar owner: whom accountless Maildirs are written as
        (C{local_mailbox_accounts = none}).
    @ivar forwarder: posts forwarded mail (L{tmta.local.forward.Forwarder});
        C{None}: mail for addresses elsewhere is deferred.
    @ivar passer: hands recipients to C{mailbox_transport} and
        C{fallback_transport} (L{tmta.local.passing.Passer}).
    """

    settings: LocalSettings
    rights: DeliveryRights
    aliases: Sequence[Any]
    rewriter: Any
    duplicates: DuplicateFilter
    commit: MaildirCommit
    beforeAlone: Callable[[], None]
    owner: Optional[Account] = None
    forwarder: Any = None
    passer: Any = None


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
    Where one step of an expansion stands.

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
    """
    One result of a recipient's expansion: a mailbox written, a command
    run, a failure.
    """

    status: str
    dsn: str
    text: str
    #: The address a mailbox, file or command was delivered for (an
    #: alias's or .forward's target), logged as Postfix logs it.
    address: str = ""


class Record:
    """
    What one recipient's delivery has done so far.

    @ivar outcomes: every result, in order.
    @ivar forwards: the addresses elsewhere to forward to, by envelope
        sender, with the address each was reached through.
    """

    def __init__(self) -> None:
        self.outcomes: List[RecipientOutcome] = []
        self.forwards: "OrderedDict[str, List[Tuple[str, str]]]" = OrderedDict()

    def ok(self, text: str, address: str = "") -> None:
        self.outcomes.append(RecipientOutcome(SENT, "2.0.0", text, address))

    def deliveries(self) -> List[Tuple[str, str]]:
        """
        What was delivered: C{(address, text)} for each mailbox, file or
        command written to, then C{("", text)} for the rest (forwarded,
        duplicates suppressed).
        """
        sent = [o for o in self.outcomes if o.status == SENT]
        return list(dict.fromkeys([(o.address, o.text) for o in sent if o.address]
                                  + [("", o.text) for o in sent if not o.address]))

    def fail(self, status: str, dsn: str, text: str) -> None:
        self.outcomes.append(RecipientOutcome(status, dsn, text))

    def empty(self) -> bool:
        """
        Whether nothing has been delivered, failed or put aside to forward.
        """
        return not self.outcomes and not self.forwards


class RunAlone(Exception):
    """
    The recipient's delivery reaches a command or a file first: it is
    to be made on a connection of its own.
    """
