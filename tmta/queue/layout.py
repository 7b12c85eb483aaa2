"""
Where things are under C{queue_directory}, as in Postfix.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Optional

# Mail queues, and the per-message logs kept beside them.
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
LOGS = ("bounce", "defer", "trace")
# public/ may be passed through by anyone, to reach the sockets that are
# theirs to use (showq); the others there admit only the mail system.
SOCKET_DIRECTORIES = {"private": 0o700, "public": 0o711}

#: The queue directory's own mode: C{mail_owner} must reach the queues.
QUEUE_DIRECTORY_MODE = 0o755

#: The mode of each directory under the queue, as Postfix gives it.
DIRECTORY_MODES = {
    **{name: 0o700 for name in QUEUES + LOGS},
    # World-writable and sticky, for tmta-sendmail running as any user;
    # set-group-id, so posted files take the mail system's group and
    # pickup can read what no other user can.
    "maildrop": 0o3733,
    **SOCKET_DIRECTORIES,
    "pid": 0o755,
}


# Linux's FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (their size field says
# long, so they differ between 32- and 64-bit systems; the kernel reads an
# int either way), and FS_TOPDIR_FL, the flag chattr +T sets.
_GETFLAGS = 0x80086601 if struct.calcsize("l") == 8 else 0x80046601
_SETFLAGS = 0x40086602 if struct.calcsize("l") == 8 else 0x40046602
_TOPDIR = 0x00020000


def _flags(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, _GETFLAGS, struct.pack("i", 0)))[0]


def markTopDirectory(path: str) -> bool:
    """
    Mark a directory as the top of unrelated hierarchies (C{chattr +T}):
    ext2, ext3 and ext4 then place each subdirectory made in it from
    now on in a block group of its own choosing, as they do top-level
    directories, rather than beside its parent.

    The queue's directories want that.  A new file's inode goes in its
    directory's block group, and ext4 without a journal looks for one
    past every inode freed there in the last minutes: the queue frees
    one for every message it delivers, so a mailbox, or one queue
    directory, sharing a group with another queue directory pays for
    that churn with every file it creates.

    A hint only: where the file system has no such flag, or refuses it,
    nothing changes and nothing fails.

    @return: whether the directory has the flag now.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = _flags(fd)
        if not flags & _TOPDIR:
            fcntl.ioctl(fd, _SETFLAGS, struct.pack("i", flags | _TOPDIR))
            flags = _flags(fd)
        return bool(flags & _TOPDIR)
    except OSError:
        return False
    finally:
        os.close(fd)


def createDataDirectory(path: str, uid: Optional[int] = None,
                        gid: Optional[int] = None) -> None:
    """
    Create C{data_directory} (where the verify cache lives), owned by
    C{uid}/C{gid} when given and readable by its owner only, as Postfix
    keeps it.  A directory that exists is left as it is.
    """
    if not path or os.path.isdir(path):
        return
    os.makedirs(path, mode=0o700, exist_ok=True)
    if uid is not None:
        os.chown(path, uid, gid if gid is not None else -1)


def createLayout(
    queueDirectory: str, uid: Optional[int] = None, gid: Optional[int] = None
) -> None:
    """
    Create the queue and socket directories, owned by C{uid}/C{gid} when
    given (the master, as root, gives them to C{mail_owner}).

    Every directory gets the mode Postfix gives it whatever the umask
    (twistd's daemon umask is 077), and one found with another is put
    right: the queue directory itself C{0755}, so that C{mail_owner} can
    reach the queues within.
    """
    os.makedirs(queueDirectory, mode=0o755, exist_ok=True)
    os.chmod(queueDirectory, QUEUE_DIRECTORY_MODE)
    markTopDirectory(queueDirectory)
    for name, mode in DIRECTORY_MODES.items():
        path = os.path.join(queueDirectory, name)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        if uid is not None:
            os.chown(path, uid, gid if gid is not None else -1)
        os.chmod(path, mode)
