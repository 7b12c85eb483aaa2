"""
What tables on other servers share: the threads their lookups wait in
(L{LookupThreads}), and the connections to a list of servers, tried in
Postfix's order and given up for a while when they fail
(L{ConnectionPool}).

A daemon serves many sessions on one thread, so a lookup that waits for
a database must not run there.  Rather than turn every caller of a
table asynchronous, a caller whose tables include a remote one either
runs its whole decision (an address resolution, an access check) in a
lookup thread, where the remote table may block, or writes the decision
once as a generator of L{Lookup}s, which L{decideNow} answers at once
and L{decideLater} without blocking (a recipient check, a mailbox).
Either way the same code runs unchanged, and directly, when every table
is local.
"""

from __future__ import annotations

import random
import socket
import threading
import time
import weakref
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    List,
    NamedTuple,
    Optional,
    Tuple,
    TypeVar,
)

from twisted.internet import defer, threads
from twisted.python import threadable
from twisted.python.threadpool import ThreadPool

from tmta.interfaces import IRemoteTable
from tmta.logging import Logger
from tmta.tables import TableLookupError

__all__ = ["LookupThreads", "ConnectionPool", "Host", "isRemote", "refuseReactorThread",
           "Lookup", "decideNow", "decideLater", "lookupAnyLater",
           "LOOKUP_THREADS", "LOOKUP_TIMEOUT", "socketHost", "connectSocket", "LineReader",
           "SocketConnection", "requireDriver"]

log = Logger()

T = TypeVar("T")

#: Lookups one process waits for at once; also the most connections it
#: keeps to one table's servers.
LOOKUP_THREADS = 8

#: Seconds a decision waits for its remote lookups before they count as
#: failed (the mail is deferred).  Postfix has no such limit: its
#: process simply waits; here one process serves many clients.
LOOKUP_TIMEOUT = 20.0

#: Seconds a connection attempt may take.
CONNECT_TIMEOUT = 5


def isRemote(tables: Iterable[object]) -> bool:
    """
    Whether any of C{tables} (tables, or objects with a C{remote}
    attribute such as match lists) waits on another server.
    """
    for table in tables:
        if IRemoteTable.providedBy(table) or getattr(table, "remote", False):
            return True
    return False


def refuseReactorThread(label: str) -> None:
    """
    Fail a remote lookup asked for on the reactor's thread, where it
    would stall every session of the process: a caller that was not
    made to use a lookup thread gets a temporary failure, never a
    quiet miss.

    @raise TableLookupError: on the reactor's thread.
    """
    if threadable.isInIOThread():
        raise TableLookupError(f"{label}: a remote table looked up on the reactor's thread "
                               "(this use of the table is not supported)")


class LookupThreads:
    """
    The threads a process's remote lookups wait in, with a time limit
    on each decision.

    @ivar timeout: seconds before a decision counts as failed.
    """

    _byReactor: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __init__(self, reactor, size: int = LOOKUP_THREADS,
                 timeout: float = LOOKUP_TIMEOUT) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.size = size
        self._pool: Optional[ThreadPool] = None
        self._trigger = None

    @classmethod
    def forReactor(cls, reactor) -> "LookupThreads":
        """
        The lookup threads of C{reactor}'s process, started when first
        asked for and stopped when the reactor stops.
        """
        try:
            return cls._byReactor[reactor]
        except (KeyError, TypeError):
            pass
        threads_ = cls(reactor)
        try:
            cls._byReactor[reactor] = threads_
        except TypeError:
            pass
        return threads_

    def _start(self) -> ThreadPool:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=self.size, name="tmta-lookups")
            self._pool.start()
            if self._trigger is None:
                self._trigger = self.reactor.addSystemEventTrigger("during", "shutdown",
                                                                   self.stop)
        return self._pool

    def run(self, f: Callable[..., T], *args, **kwargs) -> "defer.Deferred[T]":
        """
        Call C{f} in a lookup thread.

        @return: a Deferred that fires with its result, or fails with
            its exception, or with L{TableLookupError} when it takes
            longer than L{timeout} (its thread goes on until the server
            answers; the answer is dropped).
        """
        d = threads.deferToThreadPool(self.reactor, self._start(), f, *args, **kwargs)

        def timedOut(result, timeout):
            raise TableLookupError(f"remote table lookup took longer than {timeout:g}s")

        d.addTimeout(self.timeout, self.reactor, onTimeoutCancel=timedOut)
        return d

    def stop(self) -> None:
        """
        Stop the threads (for tests; a daemon's stop with its reactor).
        """
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()


def maybeInThread(reactor, remote: bool, f: Callable[..., T], *args) -> "T | defer.Deferred[T]":
    """
    C{f(*args)} now, or, when C{remote}, in a lookup thread (a Deferred).
    """
    if not remote:
        return f(*args)
    return LookupThreads.forReactor(reactor).run(f, *args)


class Host:
    """
    One server of a table's C{hosts}, with the time until which it is
    left alone after a failure.

    @ivar text: as the configuration gives it, for messages.
    @ivar local: whether it is reached by a UNIX-domain socket, which
        Postfix tries before the network.
    """

    def __init__(self, text: str, local: bool, **details) -> None:
        self.text = text
        self.local = local
        self.details = details
        self.downUntil = 0.0

    def __repr__(self) -> str:
        return f"<Host {self.text}>"


class ConnectionPool:
    """
    Connections to a table's servers, at most L{LOOKUP_THREADS} of
    them, each used by one lookup at a time.

    A lookup takes an idle connection (closing one idle longer than
    C{idleInterval}) or opens one: to a server reached by a UNIX-domain
    socket first, then to the others, in random order among equals, as
    Postfix chooses.  A server that refuses a connection, or whose
    connection breaks and cannot be made again at once, is left alone
    for C{retryInterval} seconds.  When no server can be reached, the
    lookup fails with L{TableLookupError}: the mail waits.

    @param connect: opens a connection to a L{Host}; raises what
        C{isConnectionError} recognises when it cannot.
    @param isConnectionError: whether an exception means the connection
        (or the server) failed, rather than the query.
    @param close: closes a connection, whatever state it is in.
    """

    def __init__(self, label: str, hosts: List[Host], connect: Callable[[Host], Any],
                 isConnectionError: Callable[[BaseException], bool],
                 close: Callable[[Any], None], retryInterval: float = 60,
                 idleInterval: float = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.hosts = hosts
        self._connect = connect
        self._isConnectionError = isConnectionError
        self._close = close
        self.retryInterval = retryInterval
        self.idleInterval = idleInterval
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: List[Tuple[object, Host, float]] = []

    def _candidates(self) -> List[Host]:
        now = self._clock()
        ready = [h for h in self.hosts if h.downUntil <= now]
        random.shuffle(ready)
        ready.sort(key=lambda h: not h.local)
        return ready

    def _take(self) -> Optional[Tuple[object, Host]]:
        now = self._clock()
        stale = []
        with self._lock:
            taken = None
            while self._idle:
                connection, host, since = self._idle.pop()
                if now - since > self.idleInterval:
                    stale.append(connection)
                    continue
                taken = (connection, host)
                break
        for connection in stale:
            self._quietly(connection)
        return taken

    def _give(self, connection: object, host: Host) -> None:
        with self._lock:
            if len(self._idle) < LOOKUP_THREADS:
                self._idle.append((connection, host, self._clock()))
                return
        self._quietly(connection)

    def _quietly(self, connection: object) -> None:
        try:
            self._close(connection)
        except Exception:
            pass

    def _down(self, host: Host, reason: BaseException) -> None:
        host.downUntil = self._clock() + self.retryInterval
        log.warn("{label}: server {host} failed: {reason}; not tried again for "
                 "{interval:g}s", label=self.label, host=host.text, reason=_oneLine(reason),
                 interval=self.retryInterval)

    def run(self, work: Callable[[Any], T]) -> T:
        """
        C{work(connection)} on a connection to one of the servers.

        @raise TableLookupError: no server could be reached, or the
            query failed.
        """
        taken = self._take()
        if taken is not None:
            connection, host = taken
            try:
                result = work(connection)
            except Exception as e:
                self._quietly(connection)
                if not self._isConnectionError(e):
                    raise TableLookupError(f"{self.label}: query failed: {_oneLine(e)}") \
                        from None
                # A connection that broke while idle (a server restarted):
                # try afresh before calling any server down.
            else:
                self._give(connection, host)
                return result
        failures: Dict[str, str] = {}
        for host in self._candidates():
            try:
                connection = self._connect(host)
            except Exception as e:
                failures[host.text] = _oneLine(e)
                self._down(host, e)
                continue
            try:
                result = work(connection)
            except Exception as e:
                self._quietly(connection)
                if not self._isConnectionError(e):
                    raise TableLookupError(f"{self.label}: query failed: {_oneLine(e)}") \
                        from None
                failures[host.text] = _oneLine(e)
                self._down(host, e)
                continue
            self._give(connection, host)
            return result
        if not failures:
            raise TableLookupError(f"{self.label}: no server to ask: every one failed within "
                                   f"the last {self.retryInterval:g}s")
        raise TableLookupError(f"{self.label}: no server answered: " + "; ".join(
            f"{host}: {reason}" for host, reason in failures.items()))

    def closeAll(self) -> None:
        """
        Close every idle connection.
        """
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _, _ in idle:
            self._quietly(connection)


class Lookup(NamedTuple):
    """
    What a decision written as a generator yields to have C{key} looked
    up in C{tables} (as L{tmta.tables.lookupAny} looks up); it is sent
    the value found, or C{None}.  L{decideNow} answers at once;
    L{decideLater} without blocking, so that one decision serves a
    process whose tables are all local and one whose tables wait on
    other servers.
    """

    tables: List
    key: str


def decideNow(steps: Generator[Lookup, Optional[str], T]) -> T:
    """
    Run a decision, its lookups made as they are asked for.
    """
    from tmta.tables import lookupAny

    value: Optional[str] = None
    try:
        while True:
            request = steps.send(value)
            value = lookupAny(request.tables, request.key)
    except StopIteration as done:
        return done.value


async def decideLater(steps: Generator[Lookup, Optional[str], T], threads: "LookupThreads") -> T:
    """
    Run a decision on the reactor's thread: a remote table's lookups are
    awaited, asked of the proxymap service directly where the table
    can (C{getLater}), else in a lookup thread.
    """
    value: Optional[str] = None
    try:
        while True:
            request = steps.send(value)
            value = await lookupAnyLater(request.tables, request.key, threads)
    except StopIteration as done:
        return done.value


async def lookupAnyLater(tables: List, key: str, threads: "LookupThreads") -> Optional[str]:
    """
    L{tmta.tables.lookupAny}, without blocking the reactor's thread.
    """
    for table in tables:
        if IRemoteTable.providedBy(table):
            later = getattr(table, "getLater", None)
            value = await (later(key) if later is not None else threads.run(table.get, key))
        else:
            value = table.get(key)
        if value is not None:
            return value
    return None


def socketHost(text: str, where: str = "") -> Host:
    """
    A server named as Postfix names a socket: C{inet:host:port} (or
    C{host:port}) or C{unix:/path}.

    @raise ValueError: neither.
    """
    if text.startswith("unix:"):
        if not text[5:]:
            raise ValueError(f"{where}{text}: no socket path")
        return Host(text, local=True, path=text[5:])
    name = text[5:] if text.startswith("inet:") else text
    host, colon, port = name.rpartition(":")
    if not colon or not host or not port:
        raise ValueError(f"{where}{text}: expected inet:host:port or unix:/path")
    return Host(text, local=False, host=host.strip("[]"), port=port)


def connectSocket(host: Host, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """
    A blocking socket connected to a L{socketHost}, its reads and writes
    bounded by L{LOOKUP_TIMEOUT}.
    """
    if "path" in host.details:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(host.details["path"])
        except OSError:
            sock.close()
            raise
    else:
        sock = socket.create_connection((host.details["host"], host.details["port"]), timeout)
    sock.settimeout(LOOKUP_TIMEOUT)
    return sock


def requireDriver(module: str, kind: str, extra: str):
    """
    The driver a table type needs, imported.

    @raise ValueError: it is not installed (the table cannot be opened:
        start-up stops), with what installs it.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{kind}: tables need {module}, which is not installed "
                         f"(pip install 'tmta[{extra}]')") from None


class SocketConnection:
    """
    A connected socket and the buffered reader of its replies.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = LineReader(sock)

    def close(self) -> None:
        self.sock.close()


class LineReader:
    """
    Buffered reads from a blocking socket: lines and counted bytes.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buffer += data

    def until(self, delimiter: bytes, limit: int) -> bytes:
        """
        The bytes up to C{delimiter} (which is consumed, not returned).

        @raise ValueError: more than C{limit} bytes before it.
        """
        while True:
            index = self.buffer.find(delimiter)
            if index >= 0:
                found, self.buffer = self.buffer[:index], self.buffer[index + len(delimiter):]
                return found
            if len(self.buffer) > limit:
                raise ValueError(f"reply longer than {limit} bytes")
            self._fill()

    def exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        found, self.buffer = self.buffer[:count], self.buffer[count:]
        return found


def _oneLine(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
