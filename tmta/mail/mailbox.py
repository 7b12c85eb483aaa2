"""
Writing a message into a Maildir or an mbox file, durably.

Both functions block (they fsync and lock): the local agent calls them
from a thread, already running with the recipient's identity.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from typing import Callable, Iterable, Optional

from tmta.common.durable import fsyncDirectory, writeFully

Fsync = Callable[[int], None]

_counter = 0


class MailboxError(Exception):
    """
    Delivery to a mailbox failed.

    @ivar temporary: whether trying again later may succeed.
    """

    def __init__(self, reason: str, temporary: bool = True, dsn: str = "") -> None:
        super().__init__(reason)
        self.temporary = temporary
        self.dsn = dsn or ("4.2.0" if temporary else "5.2.0")


def _uniqueName() -> str:
    global _counter
    _counter += 1
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now * 1e6) % 1000000}P{os.getpid()}Q{_counter}.{host}"


def writeAll(fd: int, first: bytes, chunks: Iterable[bytes], size: int = 1 << 16) -> None:
    """
    Write C{first} and then C{chunks} to C{fd}, gathered into writes of
    about C{size} bytes: a small message is one system call, with no
    file object around the descriptor.
    """
    pending = [first]
    pendingSize = len(first)
    for chunk in chunks:
        pending.append(chunk)
        pendingSize += len(chunk)
        if pendingSize >= size:
            writeFully(fd, b"".join(pending))
            pending, pendingSize = [], 0
    if pending:
        writeFully(fd, b"".join(pending))


def _makedirs(path: str) -> None:
    try:
        os.makedirs(path, 0o700, exist_ok=True)
    except OSError as e:
        raise MailboxError(f"cannot create maildir {path}: {e.strerror}")


# Maildirs this process has seen complete, so that each delivery need not
# ask the file system again.
_knownMaildirs: set = set()


class WrittenMaildirFile:
    """
    A message written for a Maildir and not yet fsynced or named in
    C{new/}: what L{deliverMaildir} leaves to a caller that finishes
    several deliveries together (L{complete}, or L{discard}).

    Where the file system allows it, the file has no name until it is
    complete: it is made in C{tmp/}'s file system with C{O_TMPFILE} and
    linked into C{new/} once fsynced, so that a process killed mid-way
    leaves nothing behind in C{tmp/}, and the fsync of the file does not
    also write C{tmp/} (ext4 without a journal syncs the directory of a
    newly named file with it).  Elsewhere it is named in C{tmp/} and
    renamed, as the Maildir convention describes.

    @ivar fd: the open file.
    @ivar tmp: its name in C{tmp/}, or C{None} while it has none.
    @ivar new: the Maildir's C{new/}, which the caller fsyncs once the
        file is in it.
    """

    def __init__(self, fd: int, tmp: Optional[str], final: str, new: str) -> None:
        self.fd = fd
        self.tmp = tmp
        self.final = final
        self.new = new

    def complete(self, fsync: Fsync = os.fsync) -> None:
        """
        fsync the file, close it and put it into C{new/} (which the
        caller then fsyncs).

        @raise MailboxError: it could not be done; nothing is left behind.
        """
        try:
            try:
                fsync(self.fd)
                if self.tmp is None:
                    self._link()
            finally:
                self.fd, fd = -1, self.fd
                os.close(fd)
            if self.tmp is not None:
                os.rename(self.tmp, self.final)
        except BaseException as e:
            self.discard()
            if not isinstance(e, OSError):
                raise
            if self.tmp is None and e.errno in _CANNOT_LINK_UNNAMED:
                # Linking through /proc is refused here (a security
                # module, another file system under the same path): this
                # delivery is tried again later, with a named file.
                _namedOnly.add(os.path.normpath(os.path.dirname(self.new)))
            raise _writeError(e)

    def _link(self) -> None:
        # linkat(2) through /proc, following the link to the open file.
        # os.link calls linkat only when given a directory descriptor,
        # and ignores it for an absolute path: any descriptor will do.
        # A name taken in new/ (rename would replace it) gets another.
        source = f"/proc/self/fd/{self.fd}"
        for attempt in range(5):
            try:
                os.link(source, self.final, src_dir_fd=self.fd)
                return
            except FileExistsError:
                if attempt == 4:
                    raise
                self.final = os.path.join(self.new, _uniqueName())

    def discard(self) -> None:
        """
        Give the file up: close and remove it.
        """
        if self.fd >= 0:
            self.fd, fd = -1, self.fd
            try:
                os.close(fd)
            except OSError:
                pass
        if self.tmp is None:
            return
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


# Maildirs (normalised paths) whose file system cannot make an unnamed
# file, or link one through /proc: their files are named in tmp/.
_namedOnly: set = set()

# What a refused link of an unnamed file fails with, as opposed to a full
# disk or a failing one.
_CANNOT_LINK_UNNAMED = frozenset(
    (errno.EXDEV, errno.EPERM, errno.EACCES, errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL))

_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_CAN_LINK_UNNAMED = bool(_O_TMPFILE) and os.path.isdir("/proc/self/fd")


def _openUnnamed(path: str) -> Optional[int]:
    """
    An unnamed file, open for writing, in the file system of the
    Maildir C{path}'s C{tmp/}; C{None} where none can be made (and then
    linked into C{new/}).

    @raise FileNotFoundError: C{tmp/} is missing.
    """
    if not _CAN_LINK_UNNAMED or (_namedOnly and os.path.normpath(path) in _namedOnly):
        return None
    try:
        return os.open(os.path.join(path, "tmp"), os.O_WRONLY | _O_TMPFILE, 0o600)
    except FileNotFoundError:
        raise
    except OSError as e:
        # No O_TMPFILE in this file system (EOPNOTSUPP) or kernel (EISDIR,
        # EINVAL): named files from now on.  Any other error the named
        # file's creation reports, with its name.
        if e.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            _namedOnly.add(os.path.normpath(path))
        return None


def _writeError(e: OSError) -> MailboxError:
    # A full disk or quota is worth another try later: nothing bounces
    # for it.
    return MailboxError(f"cannot write maildir file: {e.strerror}",
                        dsn="4.2.2" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "")


def deliverMaildir(path: str, prefix: bytes, chunks: Iterable[bytes], fsync: Fsync = os.fsync,
                   finishLater: Optional[Callable[[WrittenMaildirFile], bool]] = None) -> str:
    """
    Deliver into the Maildir at C{path} (created if missing): write into
    C{tmp/} (see L{WrittenMaildirFile}), fsync, move into C{new/}, fsync
    C{new/}.

    @param finishLater: called with the written file, before its fsync,
        by a caller that finishes several deliveries together (and counts
        none of them delivered until then): it takes the file over, to
        L{WrittenMaildirFile.complete} it and fsync C{new/} itself, and
        returns C{True}; or returns C{False} to have it finished here.

    @return: the new file's name in C{new/} (when it is finished later,
        the name chosen for it, which it keeps unless that name is taken
        by then).
    @raise MailboxError: it could not be done; nothing is left behind.
    """
    name = _uniqueName()
    tmp = os.path.join(path, "tmp", name)
    for attempt in (1, 2):
        if path not in _knownMaildirs:
            for sub in ("tmp", "new", "cur"):
                _makedirs(os.path.join(path, sub))
            _knownMaildirs.add(path)
        try:
            unnamed = _openUnnamed(path)
            if unnamed is None:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            else:
                fd = unnamed
            break
        except FileNotFoundError:
            # Removed since we last looked: make it again.
            _knownMaildirs.discard(path)
            if attempt == 2:
                raise MailboxError(f"cannot create maildir file {tmp}: no such directory")
        except OSError as e:
            raise MailboxError(f"cannot create maildir file {tmp}: {e.strerror}")
    new = os.path.join(path, "new")
    written = WrittenMaildirFile(fd, tmp if unnamed is None else None,
                                 os.path.join(new, name), new)
    try:
        writeAll(fd, prefix, chunks)
    except BaseException as e:
        written.discard()
        if not isinstance(e, OSError):
            raise
        raise _writeError(e)
    if finishLater is not None and finishLater(written):
        return name
    written.complete(fsync)
    try:
        fsyncDirectory(new, fsync)
    except OSError as e:
        # Not delivered, so not left in new/ either: the delivery is
        # tried again, and the retry's must be the only copy.
        unlinkQuietly(written.final)
        raise _writeError(e)
    return os.path.basename(written.final)


def unlinkQuietly(path: str) -> None:
    """
    Remove a file whose delivery failed after it was named, if it is
    still there.
    """
    try:
        os.unlink(path)
    except OSError:
        pass


def _dotlock(path: str, timeout: float = 30.0):
    """
    Take C{path}.lock the traditional way; return a function that
    releases it, or C{None} when the directory does not let us (Postfix
    then relies on the kernel lock alone).
    """
    lock = path + ".lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            return lambda: os.unlink(lock)
        except FileExistsError:
            try:
                if time.time() - os.stat(lock).st_mtime > 300:
                    os.unlink(lock)  # stale, as mail programs agree
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise MailboxError(f"cannot lock {path}: {lock} exists")
            time.sleep(0.1)
        except PermissionError:
            return None
        except OSError as e:
            raise MailboxError(f"cannot lock {path}: {e.strerror}")


def envelopeLine(sender: str, arrival: float) -> bytes:
    """
    The C{From sender date} line that starts a message in an mbox file
    (and what pipe's F flag and local's commands are given).
    """
    stamp = time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(arrival or None))
    return f"From {sender or 'MAILER-DAEMON'}  {stamp}\n".encode("utf-8", "surrogateescape")


def fromQuote(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """
    Quote lines that begin with C{From } (mboxo), and make sure the
    message ends with a newline.
    """
    atLineStart = True
    last = b"\n"
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        carry = b""
        # Hold back a possible partial "From " at the end of the chunk.
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        if len(tail) < 5 and b"From "[: len(tail)] == tail:
            carry, data = tail, data[:cut]
        if not data:
            continue
        if atLineStart and data.startswith(b"From "):
            data = b">" + data
        data = data.replace(b"\nFrom ", b"\n>From ")
        atLineStart = data.endswith(b"\n")
        last = data[-1:]
        yield data
    if carry:
        if atLineStart and carry.startswith(b"From "):
            carry = b">" + carry
        last = carry[-1:]
        yield carry
    if last != b"\n":
        yield b"\n"


def deliverMbox(
    path: str,
    envelopeLine: bytes,
    prefix: bytes,
    chunks: Iterable[bytes],
    fsync: Fsync = os.fsync,
    dotlock: bool = True,
    sizeLimit: int = 0,
    incoming: int = 0,
) -> None:
    """
    Append to the mbox file at C{path} under an fcntl lock (and a dotlock
    where the directory allows), fsync it, and undo a partial append on
    failure.

    @param sizeLimit: how large the file may grow (C{mailbox_size_limit};
        0: no limit); @param incoming: about how much this delivery adds.
    @raise MailboxError: it could not be done; a full mailbox is a
        permanent failure, as in Postfix.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise MailboxError(f"cannot open mailbox {path}: {e.strerror}")
    release = None
    try:
        if dotlock:
            release = _dotlock(path)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as e:
            raise MailboxError(f"cannot lock mailbox {path}: {e.strerror}")
        start = os.lseek(fd, 0, os.SEEK_END)
        if sizeLimit and start + incoming > sizeLimit:
            raise MailboxError(f"cannot update mailbox {path}: mailbox full "
                               f"(mailbox_size_limit {sizeLimit})", temporary=False,
                               dsn="5.2.2")
        try:
            with os.fdopen(os.dup(fd), "ab", buffering=1 << 16) as f:
                f.write(envelopeLine)
                f.write(prefix)
                for data in fromQuote(chunks):
                    f.write(data)
                f.write(b"\n")
                f.flush()
                fsync(f.fileno())
        except OSError as e:
            os.ftruncate(fd, start)
            raise MailboxError(f"cannot write mailbox {path}: {e.strerror}")
    finally:
        if release is not None:
            try:
                release()
            except OSError:
                pass
        os.close(fd)
