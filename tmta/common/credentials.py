"""
Taking an account's identity in one thread of a process.

local delivers in a thread of its own while its reactor thread waits for
qmgr, and it writes each mailbox with the recipient's identity.  The C
library's C{seteuid}, C{setegid} and C{setgroups} change the identity of
every thread: POSIX wants credentials shared by the whole process, so
glibc signals each other thread and waits until it has changed too.  For
the six changes of a delivery that is six wake-ups of the reactor thread
and six waits, which cost more CPU than the delivery's own writes.

Linux keeps credentials per thread, and its system calls change only the
calling thread's: it is the C library that makes them process-wide.  On
Linux on the machines whose call numbers are known here (x86-64, arm64)
tmta makes the system calls itself, through C{ctypes}, since Python's
C{os} module reaches them only through the C library.  The reactor
thread then stays root throughout.  Elsewhere the C{os} functions are
used, process-wide, as before.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable, Optional, Sequence, Tuple

#: (setgroups, setresuid, setresgid) by machine: Linux's own numbers.
_CALLS = {
    "x86_64": (116, 117, 119),
    "aarch64": (159, 147, 149),
}

#: "Leave this one as it is", for setresuid and setresgid.
_UNCHANGED = ctypes.c_long(-1)


def _threadCalls() -> Optional[Tuple[Callable[..., int], Tuple[int, int, int]]]:
    """
    The C library's C{syscall} and this machine's call numbers, or
    C{None} where tmta cannot change one thread's identity alone.
    """
    numbers = _CALLS.get(os.uname().machine)
    if not sys.platform.startswith("linux") or numbers is None:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syscall, numbers
    except (OSError, AttributeError):
        return None


#: Worked out once: each delivery changes identity twice.
_threadCallsHere = _threadCalls()


def _call(number: int, *arguments) -> None:
    assert _threadCallsHere is not None
    if _threadCallsHere[0](ctypes.c_long(number), *arguments) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def perThread() -> bool:
    """
    Whether L{setEffectiveIdentity} changes the calling thread's identity
    only (rather than the whole process's).
    """
    return _threadCallsHere is not None


def setEffectiveIdentity(uid: int, gid: int, groups: Sequence[int]) -> None:
    """
    Make C{groups} the supplementary groups, then C{gid} the effective
    group, then C{uid} the effective user: of the calling thread alone
    where L{perThread}, else of the process.  The real and saved ids stay
    as they are, so that a thread that was root can become root again.

    @raise OSError: a change was refused.
    """
    if _threadCallsHere is None:
        os.setgroups(list(groups))
        os.setegid(gid)
        os.seteuid(uid)
        return
    setgroups, setresuid, setresgid = _threadCallsHere[1]
    members = (ctypes.c_uint32 * max(1, len(groups)))(*groups)
    _call(setgroups, ctypes.c_long(len(groups)), members)
    _call(setresgid, _UNCHANGED, ctypes.c_long(gid), _UNCHANGED)
    _call(setresuid, _UNCHANGED, ctypes.c_long(uid), _UNCHANGED)


def restoreRoot() -> None:
    """
    Undo L{setEffectiveIdentity}: the effective user and group root
    again, and no supplementary groups.

    @raise OSError: a change was refused.
    """
    if _threadCallsHere is None:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups([])
        return
    setgroups, setresuid, setresgid = _threadCallsHere[1]
    _call(setresuid, _UNCHANGED, ctypes.c_long(0), _UNCHANGED)
    _call(setresgid, _UNCHANGED, ctypes.c_long(0), _UNCHANGED)
    _call(setgroups, ctypes.c_long(0), None)
