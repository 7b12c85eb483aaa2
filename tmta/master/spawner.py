"""
The master's side of the fork server (L{tmta.master.forkserver}).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from twisted.internet.protocol import ProcessProtocol, Protocol

import tmta
from tmta.logging import Logger, emitWorkerLine, emitWorkerLines, unstampLines

log = Logger()

#: How the fork server starts: as C{python -m} would run it, but without
#: the directory the master was started from at the head of its
#: C{sys.path} (C{-c} and C{-m} both put it there).  Whatever lies there
#: (a checkout of another version, or a C{tmta} package someone left in
#: a directory root started from) would otherwise shadow the code the
#: master runs, in every worker.
FORKSERVER_COMMAND = (
    "import sys\n"
    "if sys.path and sys.path[0] in ('', '.'):\n"
    "    del sys.path[0]\n"
    "from tmta.master.forkserver import main\n"
    "sys.exit(main())\n"
)


def workerPythonPath() -> str:
    """
    The C{PYTHONPATH} of the workers: first the directory the master's
    own C{tmta} package came from, then the master's C{sys.path} (made
    absolute; entries that are not directories left out), so that the
    workers import the very modules the master did, whatever directory
    they are started in.
    """
    entries = [os.path.dirname(os.path.dirname(os.path.abspath(tmta.__file__)))]
    for entry in sys.path:
        entry = os.path.abspath(entry or os.curdir)
        if os.path.isdir(entry) and entry not in entries:
            entries.append(entry)
    return os.pathsep.join(entries)


class LineLog(Protocol):
    """
    Re-emits what a process writes as tagged log lines: each line an
    event, or, with C{batch}, the lines of each read as one event (for a
    L{tmta.logging.MaillogFileObserver}).
    """

    def __init__(self, tag: Callable[[], str], batch: bool = False) -> None:
        self.tag = tag
        self.batch = batch
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > 65536:
            lines.append(self._buffer)
            self._buffer = b""
        self.emit(lines)

    def emit(self, lines: List[bytes]) -> None:
        texts = [text for text in (line.decode("utf-8", "replace").rstrip() for line in lines)
                 if text]
        if not texts:
            return
        stamped = unstampLines(texts, time.time())
        if self.batch:
            emitWorkerLines(log, self.tag(), stamped)
            return
        tag = self.tag()
        for _, text in stamped:
            emitWorkerLine(log, tag, text)

    def connectionLost(self, reason=None) -> None:
        if self._buffer:
            self.emit([self._buffer])
            self._buffer = b""


class Worker:
    """
    A worker process started through the fork server.

    @ivar pid: known once the fork server has answered.
    @ivar onExit: called with the exit status (negative: killed by that
        signal) when the process ends.
    """

    def __init__(self, tag: str, onExit: Callable[["Worker", int], None]) -> None:
        self.tagPrefix = tag
        self.pid: Optional[int] = None
        self.onExit = onExit
        self.ended = False
        #: The master's end of the control channel, once connected.
        self.control: Any = None
        #: Fires when the process has ended.
        self.done: Any = None

    def tag(self) -> str:
        return f"{self.tagPrefix}[{self.pid or '?'}]"

    def exited(self, status: int) -> None:
        if not self.ended:
            self.ended = True
            self.onExit(self, status)


class _ForkServerProcess(ProcessProtocol):
    def __init__(self, server: "ForkServer", batchLogs: bool) -> None:
        self.server = server
        self.logs = LineLog(
            lambda: f"tmta/forkserver[{getattr(self.transport, 'pid', '?')}]", batchLogs)
        self._events = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 4:
            lines = (self._events + data).split(b"\n")
            self._events = lines.pop()
            for line in lines:
                self.server.event(line.decode("ascii", "replace").split())
        else:
            self.logs.dataReceived(data)

    def processEnded(self, reason) -> None:
        self.logs.connectionLost()
        self.server.ended(self)


class ForkServer:
    """
    Starts the fork server and asks it for workers.
    """

    def __init__(self, reactor, environment: Dict[str, str]) -> None:
        self.reactor = reactor
        self.environment = environment
        self.requests: Optional[socket.socket] = None
        self.process: Optional[_ForkServerProcess] = None
        self._waiting: List[Worker] = []
        self._byPid: Dict[int, Worker] = {}
        self.stopping = False

    def start(self, batchLogs: bool = False, lock: Optional[int] = None) -> None:
        """
        Start the fork server; with C{batchLogs} its log lines are passed
        on a read at a time (see L{LineLog}).

        @param lock: the master's lock, for the fork server and every
            worker to hold (L{tmta.master.lock}).
        """
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        devnull = os.open(os.devnull, os.O_RDWR)
        childFDs: Dict[int, Any] = {0: devnull, 1: "r", 2: "r", 3: theirs.fileno(), 4: "r"}
        if lock is not None:
            childFDs[5] = lock
        process = _ForkServerProcess(self, batchLogs)
        try:
            self.reactor.spawnProcess(
                process,
                sys.executable,
                [sys.executable, "-c", FORKSERVER_COMMAND],
                env=self.environment,
                childFDs=childFDs,
            )
        finally:
            theirs.close()
            os.close(devnull)
        self.requests, self.process = mine, process

    def spawn(self, args: List[str], fds: List[int], worker: Worker) -> None:
        """
        Ask for a worker running C{tmta.master.worker.main(args)} with
        C{fds}, in the worker's order
        (L{tmta.common.contract.workerDescriptors}).

        @raise OSError: the fork server cannot be reached.
        """
        if self.process is None:
            self.start()
        request = json.dumps({"args": args, "fds": len(fds), "tag": worker.tagPrefix})
        # A short message on a local socket with room to spare: it does not
        # block, and the order of requests is the order of answers.
        assert self.requests is not None, "started above"
        socket.send_fds(self.requests, [request.encode() + b"\n"], fds)
        self._waiting.append(worker)

    def event(self, words: List[str]) -> None:
        if len(words) >= 2 and words[0] == "spawned" and self._waiting:
            worker = self._waiting.pop(0)
            worker.pid = int(words[1])
            self._byPid[worker.pid] = worker
        elif len(words) == 3 and words[0] == "exited":
            ended = self._byPid.pop(int(words[1]), None)
            if ended is not None:
                ended.exited(int(words[2]))

    def ended(self, process: _ForkServerProcess) -> None:
        if process is not self.process:
            return
        self.process = None
        if self.requests is not None:
            self.requests.close()
            self.requests = None
        if not self.stopping:
            log.error("the fork server ended; it is started again for the next worker")
        # Workers it started are no longer its children: their ends are
        # noticed when their control channels close.
        for worker in self._waiting:
            worker.exited(-1)
        self._waiting = []

    def forget(self, worker: Worker) -> None:
        """
        Stop tracking a worker whose end was noticed otherwise.
        """
        if worker.pid is not None:
            self._byPid.pop(worker.pid, None)

    def stop(self) -> None:
        """
        Let the fork server go: it leaves when its request socket closes.
        """
        self.stopping = True
        if self.requests is not None:
            self.requests.close()
            self.requests = None
