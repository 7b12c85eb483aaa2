"""
Giving up root.

A worker is started as root when the master is root, builds what it
needs, and then becomes C{mail_owner}.  Everything it will import must be
imported before that: on machines where Python lives in a private home
directory, an unprivileged process cannot read the standard library, so a
lazy import after the switch fails.
"""

from __future__ import annotations

import importlib
import os
import pwd

from twisted.logger import Logger

from tmta.config import ConfigError, MainConfig

log = Logger()

# Modules the standard library and Twisted import lazily on first use.
_LAZY_MODULES = (
    "encodings.idna",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_8",
    "stringprep",
    "unicodedata",
    "email.parser",
    "email.feedparser",
    "email.message",
    "email.policy",
    "email.utils",
    "email.header",
    "email._header_value_parser",
    "email.headerregistry",
    "email.charset",
    "email.base64mime",
    "email.quoprimime",
    "email.encoders",
    "email.iterators",
    "email.generator",
    "calendar",
    "mailbox",
    "fcntl",
    "errno",
    "uuid",
    "hashlib",
    "twisted.internet.threads",
    "twisted.python.threadpool",
    "twisted._threads",
    "twisted.internet._resolver",
    "twisted.internet.endpoints",
    "twisted.internet.unix",
    "twisted.internet.tcp",
    "twisted.internet.address",
    "twisted.python.failure",
    "twisted.logger._flatten",
    "twisted.protocols.amp",
)


def preloadModules() -> None:
    """
    Import what the standard library and Twisted would import lazily
    later, while this process can still read them.
    """
    for name in _LAZY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


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
