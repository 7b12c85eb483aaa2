"""
Where things are under C{queue_directory}, as in Postfix.
"""

from __future__ import annotations

import os
from typing import Optional

# Mail queues, and the per-message logs kept beside them.
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
LOGS = ("bounce", "defer", "trace")
# public/ may be passed through by anyone, to reach the sockets that are
# theirs to use (showq); the others there admit only the mail system.
SOCKET_DIRECTORIES = {"private": 0o700, "public": 0o711}


def socketPath(queueDirectory: str, service: str, private: bool = True) -> str:
    """
    The UNIX socket of a service: C{private/NAME} or C{public/NAME}.
    """
    return os.path.join(queueDirectory, "private" if private else "public", service)


def createLayout(
    queueDirectory: str, uid: Optional[int] = None, gid: Optional[int] = None
) -> None:
    """
    Create the queue and socket directories, owned by C{uid}/C{gid} when
    given (the master, as root, gives them to C{mail_owner}).
    """
    os.makedirs(queueDirectory, mode=0o755, exist_ok=True)
    modes = {name: 0o700 for name in QUEUES + LOGS}
    # World-writable and sticky, for tmta-sendmail running as any user;
    # set-group-id, so posted files take the mail system's group and pickup
    # can read what no other user can.
    modes["maildrop"] = 0o3733
    modes.update(SOCKET_DIRECTORIES)
    modes["pid"] = 0o755
    for name, mode in modes.items():
        path = os.path.join(queueDirectory, name)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            pass
        if uid is not None:
            os.chown(path, uid, gid if gid is not None else -1)
        os.chmod(path, mode)
