"""
The fork server: starts workers by forking a process that has already
imported what they need.

Starting a Python interpreter and importing Twisted costs about half a
CPU-second; a worker is started for every C{max_use} clients, so that
cost would dominate.  The master therefore starts this small process
once.  It imports the components' modules (it never starts a reactor or a
thread, so forking it is safe) and, on each request, forks a child that
becomes the worker; the child shares the imported code with its siblings
copy-on-write.

Protocol: the master sends requests on descriptor 3, a UNIX socket, each
one JSON line (the worker's arguments) with the worker's descriptors
attached (SCM_RIGHTS) in the order the worker is to have them
(L{tmta.common.contract.workerDescriptors}).  The fork server
answers on descriptor 4 with lines C{spawned PID} and, when a child
ends, C{exited PID STATUS}.  When the master goes away (end of file on
descriptor 3) the fork server leaves too.
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
from typing import List

REQUEST_FD = 3
EVENT_FD = 4
#: The master's lock (L{tmta.master.lock}), which every worker keeps.
LOCK_FD = 5
MAX_FDS = 64

# What workers import: loaded once here, shared by every child.
PRELOAD = (
    "twisted.internet.default",
    "twisted.internet.epollreactor",
    "twisted.internet.tcp",
    "twisted.internet.unix",
    "twisted.internet.endpoints",
    "twisted.internet.threads",
    "twisted.python.threadpool",
    "twisted.protocols.amp",
    "twisted.protocols.policies",
    "twisted.application.service",
    "twisted.plugin",
    # Finding libc for inotify runs ldconfig, which a worker (with its
    # own SIGCHLD handling, and no longer root) cannot do reliably.
    "twisted.internet.inotify",
    "tmta.master.worker",
    "tmta.smtpd.service",
    "tmta.cleanup.service",
    "tmta.qmgr.service",
    "tmta.rewrite.service",
    "tmta.local.service",
    "tmta.bounce.service",
    "tmta.delivery.agents",
    "tmta.smtp.service",
)


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from tmta.master.components import availableComponents
    from tmta.master.privileges import preloadModules

    availableComponents()
    preloadModules()
    settleInterfaceDeclarations()


def settleInterfaceDeclarations() -> None:
    """
    Work out, once, which interfaces each loaded class implements.

    zope.interface computes a class's declaration the first time an
    object of it is asked what it provides (Twisted asks that of every
    transport and protocol) and keeps it on the class.  Done here, every
    child inherits the answers instead of computing them again: several
    milliseconds of each worker's start.
    """
    from zope.interface import implementedBy

    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("twisted.", "tmta.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == name:
                try:
                    implementedBy(value)
                except TypeError:
                    pass


def _child(args: List[str], fds: List[int], requests: socket.socket) -> None:
    """
    Become the worker: descriptors in place, signals reset, run.
    """
    try:
        signal.set_wakeup_fd(-1)
        requests.close()
        # fds is already in the worker's order
        # (tmta.common.contract.workerDescriptors).  Park every descriptor
        # high first, so that no dup2 below overwrites one still to move.
        parked = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for fd in fds]
        try:
            lock = fcntl.fcntl(LOCK_FD, fcntl.F_DUPFD, 256)
        except OSError:
            lock = -1  # started without the master's lock
        for target, source in enumerate(parked):
            os.dup2(source, target)
        kept = len(parked)
        if lock >= 0:
            # Held, never used: the master's lock lives while this does.
            os.dup2(lock, kept)
            kept += 1
        os.closerange(kept, os.sysconf("SC_OPEN_MAX"))
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        from tmta.master.worker import main

        status = main(args)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
    os._exit(status or 0)


def serve() -> int:
    requests = socket.socket(fileno=REQUEST_FD)
    events = os.fdopen(EVENT_FD, "w", buffering=1)
    wakeRead, wakeWrite = os.pipe()
    os.set_blocking(wakeWrite, False)
    signal.set_wakeup_fd(wakeWrite)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    buffer = b""
    pendingFds: List[int] = []
    while True:
        try:
            readable, _, _ = select.select([requests.fileno(), wakeRead], [], [])
        except InterruptedError:
            readable = [wakeRead]
        if wakeRead in readable:
            try:
                os.read(wakeRead, 4096)
            except BlockingIOError:
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            events.write(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n")
        if requests.fileno() not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(requests, 65536, MAX_FDS)
        if not data:
            return 0
        buffer += data
        pendingFds.extend(fds)
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            count = request["fds"]
            mine, pendingFds = pendingFds[:count], pendingFds[count:]
            pid = os.fork()
            if pid == 0:
                _child(request["args"], mine, requests)
            for fd in mine:
                os.close(fd)
            events.write(f"spawned {pid} {request['tag']}\n")


def main() -> int:
    from tmta.master.worker import setProcessName

    setProcessName("forkserver", "tmta/forkserver")
    preload()
    # Children share the preloaded objects' pages: keep the collector of
    # each from walking (and so copying) them.  (PyPy's collector has no
    # such switch.)
    freeze = getattr(gc, "freeze", None)
    if freeze is not None:
        freeze()
    return serve()


if __name__ == "__main__":
    sys.exit(main())
