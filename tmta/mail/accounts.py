"""
Accounts: the unprivileged account services run as, giving up root for
it, and reaching directories after that.
"""

from __future__ import annotations

import os
import pwd

from tmta.config import ConfigError, MainConfig


def mailOwner(config: MainConfig, embedded: bool = False) -> pwd.struct_passwd:
    """
    The account that unprivileged services run as.

    @param embedded: whether to fall back to C{nobody} when C{mail_owner}
        does not exist, as the embedded default does.
    @raise ConfigError: the account does not exist (or is root).
    """
    name = config.get("mail_owner")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        if not embedded:
            raise ConfigError(
                config.path,
                None,
                f"mail_owner: no account named {name!r}: create it, or set "
                "mail_owner to an existing unprivileged account",
            )
        account = pwd.getpwnam("nobody")
    if account.pw_uid == 0:
        raise ConfigError(config.path, None, f"mail_owner {name!r} must not be root")
    return account


def dropPrivileges(account: pwd.struct_passwd) -> None:
    """
    Become C{account} for good: its uid, its gid, no other groups.
    """
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)


def traversableBy(path: str, account: pwd.struct_passwd) -> bool:
    """
    Whether C{account} may search every directory from C{/} down to
    C{path} (and C{path} itself), by the mode bits.
    """
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    for i in range(1, len(parts) + 1):
        directory = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(directory)
        except OSError:
            return False
        if st.st_uid == account.pw_uid:
            bit = 0o100
        elif st.st_gid == account.pw_gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return False
    return True


def reachableDirectory(path: str, account: pwd.struct_passwd) -> str:
    """
    A name for directory C{path} that still works after this process
    becomes C{account}: the path itself when the account can traverse to
    it, else the process's own descriptor for it (opened now, as root),
    as C{/proc/self/fd/N}.
    """
    if traversableBy(path, account):
        return path
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    return f"/proc/self/fd/{fd}"
