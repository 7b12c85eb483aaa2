"""
Who local's deliveries run as (Postfix's delivery rights): a user's
mailbox and the files and commands of their C{.forward} as that user;
the files and commands of an alias as the owner of the alias table, of
an include file as its owner -- and, where that owner is root, as
C{default_privs}.  Nothing is written or run as root.
"""

from __future__ import annotations

import pwd
from typing import Callable, Optional

from tmta.delivery import DEFERRED
from tmta.interfaces import IOwnedTable
from tmta.mail.rights import DeliveryError

Account = pwd.struct_passwd


class DeliveryRights:
    """
    Finds the accounts deliveries run as.

    @param accounts: finds an account by name (C{pwd.getpwnam}).
    @param defaultPrivs: C{default_privs}, who stands in for root.
    """

    def __init__(self, accounts: Callable[[str], Account], defaultPrivs: str) -> None:
        self.getAccount = accounts
        self.defaultPrivs = defaultPrivs

    def account(self, name: str) -> Optional[Account]:
        """
        The account called C{name}, or C{None}.
        """
        try:
            return self.getAccount(name)
        except (KeyError, ValueError):
            return None

    def unprivileged(self) -> Account:
        """
        C{default_privs}'s account.

        @raise DeliveryError: it is missing or is root's.
        """
        account = self.account(self.defaultPrivs)
        if account is None or account.pw_uid == 0:
            raise DeliveryError(DEFERRED, "4.3.0",
                                f"default_privs {self.defaultPrivs!r} is not an "
                                "unprivileged account")
        return account

    def of(self, uid: int) -> Account:
        """
        Who runs the files and commands of something owned by C{uid}:
        that account, or C{default_privs} for root.
        """
        if uid == 0:
            return self.unprivileged()
        try:
            return pwd.getpwuid(uid)
        except KeyError:
            raise DeliveryError(DEFERRED, "4.3.0", f"uid {uid} has no account")


def tableOwner(table) -> int:
    """
    Who owns an alias table (L{IOwnedTable}): its file's owner; a table
    that is not a file, or whose owner cannot be told, counts as root's.
    """
    if IOwnedTable.providedBy(table):
        owner = table.owner()
        if owner is not None:
            return owner
    return 0
