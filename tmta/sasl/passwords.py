"""
tmta's own SASL password table (C{smtpd_sasl_type = tmta}): one
C{name:hash} line per user, each hash a salted scrypt (RFC 7914) from
C{hashlib.scrypt}, in the modular crypt form
C{$scrypt$ln=15,r=8,p=1$SALT$HASH}.

smtpd reads the file again whenever it changes, so that C{tmta user}
takes effect at once; hashes are checked in a thread, as each costs
tens of milliseconds of CPU by design.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import hmac
import os
import secrets
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple

from twisted.internet import defer, threads
from zope.interface import implementer

from tmta.interfaces import ISASLBackend
from tmta.logging import Logger
from tmta.sasl import (
    PASSWORD_MECHANISMS,
    AuthenticationUnavailable,
    PasswordExchange,
    SASLClient,
)

log = Logger()

#: scrypt's cost: N = 2**15 takes about 32 MB and 50-100 ms.
DEFAULT_LOG_N, DEFAULT_R, DEFAULT_P = 15, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32


class PasswordTableError(ValueError):
    """
    The password file or a name or password given for it is not usable.
    """


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hashPassword(password: str, logN: int = DEFAULT_LOG_N, r: int = DEFAULT_R,
                 p: int = DEFAULT_P) -> str:
    """
    A new salted hash of C{password}.
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, logN, r, p)
    return f"$scrypt$ln={logN},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def _scrypt(password: str, salt: bytes, logN: int, r: int, p: int) -> bytes:
    n = 1 << logN
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=2 * 128 * r * n + 1024 * 1024, dklen=_HASH_BYTES)


def _parseHash(stored: str) -> Tuple[int, int, int, bytes, bytes]:
    try:
        empty, scheme, parameters, salt, digest = stored.split("$")
        if empty or scheme != "scrypt":
            raise ValueError
        values = dict(item.split("=", 1) for item in parameters.split(","))
        logN, r, p = int(values["ln"]), int(values["r"]), int(values["p"])
        if not (1 <= logN <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError
        return logN, r, p, _unb64(salt), _unb64(digest)
    except (ValueError, KeyError):
        raise PasswordTableError("not an scrypt hash") from None


@functools.lru_cache(maxsize=1)
def _decoy() -> str:
    """
    A hash checked against when the name is unknown, so that a wrong
    name costs the same time as a wrong password.
    """
    return hashPassword(secrets.token_hex(16))


def verifyPassword(stored: Optional[str], password: str) -> bool:
    """
    Whether C{password} matches the hash C{stored} (C{None}: no such
    user; the work is done all the same).
    """
    try:
        logN, r, p, salt, digest = _parseHash(stored or _decoy())
    except PasswordTableError:
        return False
    computed = _scrypt(password, salt, logN, r, p)
    return hmac.compare_digest(computed, digest) and stored is not None


def validName(name: str) -> bool:
    """
    Whether C{name} can be a login name in the table: printable, no
    colon or white space, at most 255 characters.
    """
    return (0 < len(name) <= 255 and ":" not in name
            and all(c.isprintable() and not c.isspace() for c in name))


def parseTable(text: str) -> Dict[str, str]:
    """
    The C{name: hash} entries of a password file (comments and blank
    lines skipped; a malformed line is left out with a warning).
    """
    entries: Dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, stored = line.partition(":")
        if not colon or not validName(name):
            log.warn("password file line {number}: malformed entry", number=number)
            continue
        entries[name] = stored.strip()
    return entries


@implementer(ISASLBackend)
class PasswordTableBackend:
    """
    PLAIN and LOGIN checked against a password file.

    @param path: the file (C{smtpd_sasl_path}).
    """

    def __init__(self, path: str, reactor) -> None:
        self.path = path
        self.reactor = reactor
        self._stamp: Optional[Tuple[int, int, int]] = None
        self._entries: Dict[str, str] = {}

    def mechanisms(self):
        return list(PASSWORD_MECHANISMS)

    def begin(self, mechanism: str, client: SASLClient) -> PasswordExchange:
        return PasswordExchange(mechanism, self.check)

    def _table(self) -> Dict[str, str]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8") as f:
                    self._entries = parseTable(f.read())
                self._stamp = stamp
        except (OSError, UnicodeDecodeError) as e:
            log.warn("cannot read the password file {path}: {error}", path=self.path,
                     error=getattr(e, "strerror", None) or str(e))
            raise AuthenticationUnavailable(str(e)) from None
        return self._entries

    def check(self, username: str, password: str) -> defer.Deferred:
        """
        Whether C{password} is C{username}'s (in a thread).
        """
        try:
            stored = self._table().get(username)
        except AuthenticationUnavailable:
            return defer.fail()
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(),
                                         verifyPassword, stored, password)


@contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def changeTable(path: str, name: str, password: Optional[str], group: Optional[int] = None,
                mustExist: Optional[bool] = None) -> None:
    """
    Set C{name}'s password (C{None}: remove the user), rewriting the file
    whole: a new file is written, fsynced and renamed into place, under
    a lock, so that smtpd never reads half a table.

    @param group: the file's group (the one smtpd runs as), when root
        writes it; the file is readable by that group and its owner only.
    @param mustExist: C{True}: the user must be in the table already;
        C{False}: must not be.
    @raise PasswordTableError: an unusable name, or C{mustExist} unmet.
    """
    if not validName(name):
        raise PasswordTableError(f"not a usable login name: {name!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with _locked(path):
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            lines = ["# tmta SASL passwords (smtpd_sasl_type = tmta); edit with 'tmta user'."]
        present = any(line.partition(":")[0].strip() == name for line in lines
                      if not line.lstrip().startswith("#"))
        if mustExist is True and not present:
            raise PasswordTableError(f"no user {name!r} in {path}")
        if mustExist is False and present:
            raise PasswordTableError(f"user {name!r} is in {path} already")
        kept = [line for line in lines if line.lstrip().startswith("#")
                or line.partition(":")[0].strip() != name]
        if password is not None:
            kept.append(f"{name}:{hashPassword(password)}")
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, ("\n".join(kept) + "\n").encode("utf-8"))
            if group is not None:
                os.fchown(fd, -1, group)
            os.fchmod(fd, 0o640)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        # The rename itself must survive a crash (tmta.common.durable's
        # helper is not imported here: tmta.config, which tmta.common
        # needs, reads this package's names).
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def listUsers(path: str) -> list:
    """
    The names in the table, in file order.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return list(parseTable(f.read()))
    except FileNotFoundError:
        return []
