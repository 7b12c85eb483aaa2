"""
The master: binds every master.cf listener, runs worker processes on
demand under the L{ServicePool} policy, wakes services on their timers,
re-reads the configuration on SIGHUP and stops everything on SIGTERM.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import signal
import socket
import stat
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import ILogObserver
from twisted.protocols import amp
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from tmta.common.accounts import mailOwner
from tmta.common.contract import WorkerArguments, workerDescriptors
from tmta.common.plugins import PluginError, allBroken
from tmta.common.triggers import Wakeup
from tmta.config import ConfigError, Configuration, MasterEntry, parseInetAddress
from tmta.config.loader import saveAccepted
from tmta.config.parser import ConfigProblems
from tmta.logging import Logger
from tmta.master.components import availableComponents, findComponent
from tmta.master.control import Shutdown, WorkerStatus
from tmta.master.lock import acquireMasterLock
from tmta.master.policy import ServicePool
from tmta.master.runtime import LISTEN_BACKLOG
from tmta.master.spawner import ForkServer, LineLog, Worker, workerPythonPath
from tmta.queue.layout import createDataDirectory, createLayout, socketPath
from tmta.wire import QuietAMP, connectService

log = Logger()

# A fifo service (qmgr and pickup in older stock master.cf files) is
# served on a UNIX socket at the same path: tmta's triggers are AMP.
_IMPLEMENTED_TYPES = ("inet", "unix", "fifo")
_STOP_GRACE = 10.0
_ORPHAN_GRACE = 5.0


class ListenError(Exception):
    """
    A listener named in master.cf cannot be bound.
    """


class Listener:
    """
    One listening socket the master holds for a service.

    @ivar key: what identifies the address across a reload.
    """

    def __init__(self, sock: socket.socket, key: Tuple, family: int) -> None:
        self.socket = sock
        self.key = key
        self.family = family

    def fileno(self) -> int:
        return self.socket.fileno()

    @property
    def familyName(self) -> str:
        return {int(socket.AF_INET): "inet", int(socket.AF_INET6): "inet6"}.get(
            self.family, "unix")

    def close(self) -> None:
        self.socket.close()


class _Watcher:
    """
    An C{IReadDescriptor} that tells a service's pool that work arrived
    on a listening socket the master watches.
    """

    def __init__(self, listener: Listener, pool: ServicePool,
                 busyReply: Optional[bytes] = None) -> None:
        self.listener = listener
        self.pool = pool
        self.busyReply = busyReply

    def fileno(self) -> int:
        return self.listener.fileno()

    def doRead(self) -> None:
        if self.pool.answersWhenFull and self.pool.saturated():
            self._turnAway()
            return
        self.pool.workArrived()

    def _turnAway(self) -> None:
        """
        Every worker is busy and no other may start: answer the waiting
        clients the component's busy reply (smtpd's 421) now rather than
        let them hang in the backlog.
        """
        sock = self.listener.socket
        sock.setblocking(False)
        for _ in range(64):
            try:
                client, address = sock.accept()
            except OSError:
                return
            try:
                client.setblocking(False)
                client.send(self.busyReply or b"")
            except OSError:
                pass
            finally:
                client.close()
            log.warn("{service}: all processes busy; turned away a client",
                     service=self.pool.name)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        pass

    def logPrefix(self) -> str:
        return f"master-watch-{self.pool.name}"


def _factoryOf(protocol) -> Factory:
    """
    A factory whose one connection is C{protocol}.
    """
    return Factory.forProtocol(lambda: protocol)


class _WorkerControl(QuietAMP):
    """
    The master's end of one worker's control channel.

    The worker's exit is reported by the fork server; should the fork
    server itself have gone, the closing of this channel stands in for
    it.
    """

    def __init__(self, pool: ServicePool, worker: Worker) -> None:
        super().__init__()
        self.pool = pool
        self.worker = worker

    @WorkerStatus.responder
    def workerStatus(self, available: bool, served: int):
        self.pool.status(self.worker, available, served)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.pool.clock.callLater(_ORPHAN_GRACE, self._orphaned)

    def _orphaned(self) -> None:
        if not self.worker.ended:
            self.worker.exited(-1)


class ServiceRunner:
    """
    One master.cf service under the master: its listeners, its pool of
    workers and its wakeup timer.
    """

    def __init__(
        self,
        master: "MasterService",
        entry: MasterEntry,
        listeners: List[Listener],
        maxproc: int,
        busyReply: Optional[bytes] = None,
    ) -> None:
        self.master = master
        self.entry = entry
        self.listeners = listeners
        self.reactor = master.reactor
        config = master.configuration.serviceConfig(entry)
        self.tag = f"{config.get('syslog_name')}/{entry.command}"
        self.processes: Dict[Worker, Worker] = {}
        self.pool = ServicePool(
            f"{entry.service}/{entry.type}",
            maxproc,
            config.getTime("service_throttle_time"),
            master.reactor,
            self.spawn,
            self._listenChanged,
        )
        # A network service's clients hear its busy reply (smtpd's 421)
        # when every process is busy.
        self.pool.answersWhenFull = busyReply is not None and entry.type == "inet"
        self._watchers = [_Watcher(listener, self.pool, busyReply) for listener in listeners]
        self._wakeup: Optional[task.LoopingCall] = None
        self.used = False
        #: Workers of this service from before reloads, still finishing.
        self.predecessors: List[Worker] = []

    def start(self) -> None:
        self.pool.update()
        if self.entry.wakeup and self.entry.type in ("unix", "fifo"):
            self._wakeup = task.LoopingCall(self.wakeup)
            self._wakeup.clock = self.reactor
            self._wakeup.start(self.entry.wakeup, now=not self.entry.wakeupIfUsed)

    def follow(self, previous: "ServiceRunner") -> None:
        """
        Take over from the same service before a reload: its workers
        still running -- and those it had itself taken over from reloads
        before, still finishing -- count against this one's process
        limit until they have finished, so that reloads in quick
        succession never run two of a single-process service (qmgr).
        """
        workers = [w for w in list(previous.processes.values()) + previous.predecessors
                   if not w.ended]
        self.predecessors = workers
        self.pool.inherit(len(workers))
        for worker in workers:
            worker.done.addBoth(self._predecessorExited, worker)

    def _predecessorExited(self, result, worker: Worker):
        if worker in self.predecessors:
            self.predecessors.remove(worker)
        self.pool.predecessorExited()
        if self.entry.wakeup and not self.predecessors and not self.processes \
                and not self.pool.stopped:
            # The wake-up sent when this service started may have gone to
            # the worker that has just left: a service the master wakes
            # (qmgr, pickup) is started now, not at its next timer.
            self.wakeup()
        return result

    def _listenChanged(self, listening: bool) -> None:
        for watcher in self._watchers:
            if listening:
                self.reactor.addReader(watcher)
            else:
                self.reactor.removeReader(watcher)

    def spawn(self) -> Worker:
        """
        Start one worker process with the service's sockets, through the
        fork server; return its handle.
        """
        master = self.master
        controlEnd, childControl = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        logEnd, childLog = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Room for bursts of log lines, so a busy master slows no worker.
        for sock, option in ((childLog, socket.SO_SNDBUF), (logEnd, socket.SO_RCVBUF)):
            sock.setsockopt(socket.SOL_SOCKET, option, 1 << 20)
        arguments = WorkerArguments(f"{self.entry.service}/{self.entry.type}",
                                    master.configuration.directory,
                                    master.configuration.embedded)
        arguments.overrides = [f"{name}={value}" for name, value in master.overrides.items()]
        arguments.accepted = master.accepted
        for listener in self.listeners:
            arguments.addListener(listener.familyName)
        args = arguments.toArgv()
        fds = workerDescriptors(master.devnull, childLog.fileno(), childControl.fileno(),
                                [listener.fileno() for listener in self.listeners])
        worker = Worker(self.tag, self.workerEnded)
        try:
            master.forkserver.spawn(args, fds, worker)
        except OSError:
            for sock in (controlEnd, logEnd):
                sock.close()
            raise
        finally:
            childControl.close()
            childLog.close()
        control = _WorkerControl(self.pool, worker)
        worker.control = control
        logs = LineLog(worker.tag, master.batchLogs)
        for sock, protocol in ((controlEnd, control), (logEnd, logs)):
            sock.setblocking(False)
            self.reactor.adoptStreamConnection(
                sock.fileno(), socket.AF_UNIX, _factoryOf(protocol))
            sock.close()
        worker.done = defer.Deferred()
        self.processes[worker] = worker
        self.used = True
        return worker

    def workerEnded(self, worker: Worker, status: int) -> None:
        self.processes.pop(worker, None)
        self.master.forkserver.forget(worker)
        transport = worker.control.transport if worker.control is not None else None
        if transport is not None:
            transport.loseConnection()
        if status != 0:
            how = f"killed by signal {-status}" if status < 0 else f"status {status}"
            log.warn("{tag}: process ended with {how}", tag=worker.tag(), how=how)
        self.pool.exited(worker, status == 0)
        worker.done.callback(None)
        if status != 0 and self.entry.wakeup and not self.processes and not self.pool.stopped:
            # A service the master wakes (qmgr, pickup) that died is
            # started again now (once the service is not throttled), not
            # at its next timer: mail may be waiting in active/ for it.
            self.wakeup()

    def wakeup(self) -> None:
        """
        Trigger the service on its timer, as Postfix's master does.
        """
        if self.entry.wakeupIfUsed and not self.used:
            return
        def send(protocol: amp.AMP):
            protocol.callRemote(Wakeup, reason="timer")
            if protocol.transport is not None:
                protocol.transport.loseConnection()

        d = connectService(
            self.reactor,
            self.master.configuration.main.get("queue_directory"),
            self.entry.service,
            self.entry.private,
        ).addCallback(send)
        d.addErrback(
            lambda f: log.warn(
                "{service}: wakeup failed: {error}", service=self.entry.service, error=f.value
            )
        )

    def stop(self, closeListeners: bool = True, kill: bool = True) -> defer.Deferred:
        """
        Spawn nothing more, ask every worker to leave, and fire when they
        have.

        @param kill: kill the workers that have not left within a grace
            period (the master is stopping).  At a reload they are not:
            as in Postfix, each finishes what it holds -- an SMTP session
            to its end, the deliveries under way -- however long that
            takes, and the service's new workers wait for the room it
            leaves.
        """
        if self._wakeup is not None and self._wakeup.running:
            self._wakeup.stop()
        self.pool.stop()
        self._listenChanged(False)
        waits = []
        # Predecessors were asked to leave at the reload that made them
        # so; they are waited for (and killed) with the rest.
        for worker in list(self.processes.values()) + list(self.predecessors):
            control = worker.control
            if control is not None and control.transport is not None:
                control.callRemote(Shutdown).addErrback(lambda f: None)
            if kill:
                timer = self.reactor.callLater(_STOP_GRACE, self._kill, worker)
                worker.done.addBoth(lambda r, t=timer: t.cancel() if t.active() else None)
            waits.append(worker.done)
        if closeListeners:
            for listener in self.listeners:
                listener.close()
        return defer.DeferredList(waits)

    def _kill(self, worker: Worker) -> None:
        if not worker.ended and worker.pid is not None:
            log.warn("{tag}: did not stop: killing it", tag=worker.tag())
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except OSError:
                pass


class MasterService(service.Service):
    """
    The resident master process.

    @ivar configuration: the configuration in force.
    @ivar runners: the running services by (name, type).
    """

    def __init__(
        self,
        reactor,
        load: Callable[[], Configuration],
        overrides: Optional[Dict[str, str]] = None,
        logObserver: Optional[ILogObserver] = None,
    ) -> None:
        """
        @param load: reads the configuration (again, on SIGHUP).
        @param overrides: the command line's C{-o} settings, passed on to
            every worker.
        @param logObserver: a L{MaillogFileObserver} to log to, given to
            twistd (as its application's C{ILogObserver}) when this
            service joins the application; workers' lines are then
            passed on in batches.
        """
        self.reactor = reactor
        self.logObserver = logObserver
        self._load = load
        self.overrides = dict(overrides or {})
        self.configuration = load()
        self.runners: Dict[Tuple[str, str], ServiceRunner] = {}
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.workerEnvironment = dict(os.environ)
        self.workerEnvironment["PYTHONPATH"] = workerPythonPath()
        self._owner = self._checkOwner(self.configuration)
        self.forkserver = ForkServer(reactor, self.workerEnvironment)
        self._listeners: List[Listener] = []
        #: Where the configuration accepted last is kept for workers.
        self.accepted = ""
        #: The queue's master lock (L{tmta.master.lock}), once taken.
        self._lock: Optional[int] = None
        self._generation = 0

    def _checkOwner(self, configuration: Configuration) -> Optional[pwd.struct_passwd]:
        if os.getuid() != 0:
            return None
        account = mailOwner(configuration.main, configuration.embedded)
        wanted = configuration.main.get("mail_owner")
        if account.pw_name != wanted:
            log.warn(
                "mail_owner {wanted} does not exist: unprivileged services run as {name}",
                wanted=wanted,
                name=account.pw_name,
            )
        return account

    def _ownerIds(self) -> Tuple[Optional[int], Optional[int]]:
        if self._owner is None:
            return None, None
        return self._owner.pw_uid, self._owner.pw_gid

    def _bindAll(self, configuration: Configuration, reuse: Dict[Tuple, Any]):
        """
        Bind every listener master.cf names; return the services to run
        with their sockets.
        """
        main = configuration.main
        queueDirectory = main.get("queue_directory")
        uid, gid = self._ownerIds()
        createLayout(queueDirectory, uid, gid)
        try:
            createDataDirectory(main.get("data_directory"), uid, gid)
        except OSError as e:
            # Only the verify cache lives there: verify says so if used.
            log.warn("cannot create data_directory {path}: {error}",
                     path=main.get("data_directory"), error=e.strerror or e)
        components = availableComponents()
        implemented: Dict[Tuple[str, str], bool] = {}
        # A plugin that does not provide its interface, or a port nobody
        # would serve (Debian's "smtp inet ... postscreen"), stops
        # start-up before anything is bound.
        unusable = []
        for entry in configuration.services:
            where = f"{configuration.directory}/master.cf, line {entry.line}"
            try:
                found = findComponent(entry.command, components) is not None
            except PluginError as e:
                unusable.append(f"{where}: {entry.service}/{entry.type}: {e}")
                found = False
            implemented[entry.key] = found and entry.type in _IMPLEMENTED_TYPES
            if entry.type == "inet" and not found:
                unusable.append(f"{where}: {entry.service}/inet: command {entry.command} is "
                                "not implemented; nothing would serve its port")
        unusable += _pluginProblems(configuration, components)
        if unusable:
            raise ConfigProblems(list(dict.fromkeys(unusable)))
        skipped, planned = [], []
        for entry in configuration.services:
            if not implemented[entry.key]:
                skipped.append(f"{entry.service}/{entry.type} ({entry.command})")
                continue
            serviceConfig = configuration.serviceConfig(entry)
            if entry.type == "inet":
                listeners = [
                    reuse.pop(key, None) or _bindInet(key)
                    for key in _inetKeys(entry, serviceConfig)
                ]
            else:
                path = socketPath(queueDirectory, entry.service, entry.private)
                key = ("unix", path)
                listeners = [reuse.pop(key, None) or _bindUnix(
                    path, uid, gid, _socketMode(entry, findComponent(entry.command, components)))]
            maxproc = entry.maxproc
            if maxproc is None:
                maxproc = serviceConfig.getInt("default_process_limit")
            planned.append((entry, listeners, maxproc,
                            findComponent(entry.command, components)))
        if skipped:
            log.warn(
                "services not implemented, skipped: {services}", services=", ".join(skipped)
            )
        return planned

    def privilegedStartService(self) -> None:
        """
        Create the queue directories and bind every listener while still
        root (for port 25).

        @raise ConfigError: master.cf asks for what cannot be served.
        @raise ListenError: a listener cannot be bound.
        @raise OSError: the queue directories cannot be made.
        """
        from tmta.interfaces import (
            IComponent,
            IDeliveryAgentFactory,
            ILookupTableType,
            ISASLBackendType,
            ISMTPRestriction,
        )

        if self._lock is None:
            createLayout(self.configuration.main.get("queue_directory"),
                         *self._ownerIds())
            self._lock = acquireMasterLock(self.configuration.main.get("queue_directory"))
        for warning in self.configuration.warnings:
            log.warn("{warning}", warning=warning)
        for reason in allBroken([IComponent, IDeliveryAgentFactory, ILookupTableType,
                                 ISMTPRestriction, ISASLBackendType]):
            log.warn("{reason}: not used", reason=reason)
        self._planned = self._bindAll(self.configuration, {})
        self._accept(self.configuration)
        super().privilegedStartService()

    def setServiceParent(self, parent) -> None:
        # twistd builds its Application around this service, then asks
        # the application for its log observer.
        if self.logObserver is not None:
            if isinstance(parent, Componentized) and parent.getComponent(ILogObserver) is None:
                parent.setComponent(ILogObserver, self.logObserver)
            else:
                self.logObserver = None
        super().setServiceParent(parent)

    @property
    def batchLogs(self) -> bool:
        """
        Whether workers' log lines go to L{logObserver} a read at a time.
        """
        return self.logObserver is not None

    def startService(self) -> None:
        if not hasattr(self, "_planned"):
            # Run by something that does not call privilegedStartService
            # first (twist, an application's own service tree).
            self.privilegedStartService()
        super().startService()
        self.forkserver.start(batchLogs=self.batchLogs, lock=self._lock)
        self._startRunners(self._planned)
        del self._planned
        configuration = self.configuration
        addresses = [
            f"{runner.entry.command} on {_describe(listener)}"
            for runner in self.runners.values()
            if runner.entry.type == "inet"
            for listener in runner.listeners
        ]
        log.info(
            "daemon started: configuration {directory}, queue {queue}; {listening}",
            directory=configuration.directory,
            queue=configuration.main.get("queue_directory"),
            listening=", ".join(addresses) or "no network listeners",
        )

    def _accept(self, configuration: Configuration) -> None:
        """
        Keep the configuration accepted for the workers started from now
        on (L{saveAccepted}), in a directory of its own under the queue's
        C{pid/}; the one before stays for workers still starting, older
        ones go.

        @raise OSError: it cannot be written.
        """
        base = os.path.join(configuration.main.get("queue_directory"), "pid")
        self._generation += 1
        name = f"accepted.{os.getpid()}.{self._generation}"
        saveAccepted(configuration, os.path.join(base, name))
        keep = {name, os.path.basename(self.accepted)}
        for old in os.listdir(base):
            if old.startswith("accepted.") and old not in keep:
                shutil.rmtree(os.path.join(base, old), ignore_errors=True)
        self.accepted = os.path.join(base, name)

    def _startRunners(self, planned) -> None:
        for entry, listeners, maxproc, component in planned:
            runner = ServiceRunner(self, entry, listeners, maxproc, component.busyReply)
            self.runners[entry.key] = runner
        for runner in self.runners.values():
            runner.start()

    def _checkSameQueue(self, configuration: Configuration) -> None:
        """
        A reload keeps the queue: the master's lock and pid files are in
        it, and workers moved to another would leave the mail in this
        one behind.  (An emptied main.cf names the default queue.)

        @raise ConfigError: C{queue_directory} differs from the running
            one.
        """
        running = os.path.normpath(self.configuration.main.get("queue_directory"))
        wanted = os.path.normpath(configuration.main.get("queue_directory"))
        if wanted != running:
            raise ConfigError(os.path.join(configuration.directory, "main.cf"), None,
                              f"queue_directory changed from {running} to {wanted}: "
                              "moving the queue takes a restart")

    def reload(self) -> Optional[defer.Deferred]:
        """
        Re-read the configuration: services keep their sockets where the
        address is unchanged; every worker finishes what it has and
        leaves, and new workers run with the new configuration.
        """
        try:
            configuration = self._load()
            owner = self._checkOwner(configuration)
            self._checkSameQueue(configuration)
        except ConfigError as e:
            log.error("reload failed, keeping the old configuration: {error}", error=str(e))
            return None
        log.info("reload: configuration {directory}", directory=configuration.directory)
        old = self.runners
        reuse = {listener.key: listener for r in old.values() for listener in r.listeners}
        accepted = self.configuration, self._owner
        self.configuration, self._owner = configuration, owner
        try:
            planned = self._bindAll(configuration, reuse)
            self._accept(configuration)
        except (OSError, ConfigError, ListenError) as e:
            # The services run on as they were, and so does what new
            # workers are started with.
            self.configuration, self._owner = accepted
            log.error("reload failed, keeping the old configuration: {error}", error=str(e))
            return None
        self.runners = {}
        stops = [runner.stop(closeListeners=False, kill=False) for runner in old.values()]
        for listener in reuse.values():
            listener.close()
        self._startRunners(planned)
        for key, runner in self.runners.items():
            previous = old.get(key)
            if previous is not None:
                runner.follow(previous)
        return defer.DeferredList(stops)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        stops = [runner.stop() for runner in self.runners.values()]
        self.runners = {}
        log.info("daemon stopping")
        return defer.DeferredList(stops).addBoth(self._stopped)

    def _stopped(self, result=None):
        self.forkserver.stop()
        if self._lock is not None:
            # Held on by the fork server until it has gone too.
            os.close(self._lock)
            self._lock = None
        return result


def _pluginProblems(configuration: Configuration, components) -> List[str]:
    """
    Tables the configuration names that tmta cannot open (an unknown
    type, a plugin that does not provide its interface), and what each
    service's component says it could not honour in its configuration
    (L{IComponent.configurationProblems}).
    """
    from tmta.tables import tableProblems

    main = configuration.main
    problems = []
    for name, problem in tableProblems(main, list(main.explicit)):
        line = main.lineOf(name)
        where = f"{main.path}, line {line}" if line else main.path
        problems.append(f"{where}: {name}: {problem}")
    try:
        main.origin()
    except ConfigError as e:
        problems.append(str(e))
    for entry in configuration.services:
        config = configuration.serviceConfig(entry)
        where = f"{configuration.directory}/master.cf, line {entry.line}: " \
            f"{entry.service}/{entry.type}"
        problems += [f"{where}: -o {name}: {problem}"
                     for name, problem in tableProblems(config, list(entry.overrides))]
        try:
            component = findComponent(entry.command, components)
        except PluginError:
            continue  # said already
        if component is not None:
            problems += [f"{where}: {problem}"
                         for problem in component.configurationProblems(config, entry)]
    return problems


def _describe(listener: Listener) -> str:
    kind, host, port = listener.key
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _interfaceAddresses(config) -> List[str]:
    protocols = set(config.getList("inet_protocols"))
    ipv4 = bool(protocols & {"all", "ipv4"})
    ipv6 = bool(protocols & {"all", "ipv6"}) and socket.has_ipv6
    addresses: List[str] = []
    for item in config.getList("inet_interfaces"):
        if item == "loopback-only":
            addresses += (["127.0.0.1"] if ipv4 else []) + (["::1"] if ipv6 else [])
        elif item == "all":
            addresses += (["0.0.0.0"] if ipv4 else []) + (["::"] if ipv6 else [])
        elif item == "localhost":
            addresses.append("127.0.0.1")
        else:
            addresses.append(item.strip("[]"))
    return addresses


def _inetKeys(entry: MasterEntry, config) -> List[Tuple]:
    try:
        host, port = parseInetAddress(entry.service)
    except ValueError as e:
        raise ConfigError(config.path, entry.line, str(e))
    hosts = [host] if host is not None else _interfaceAddresses(config)
    return [("inet", h, port) for h in hosts]


def _bindInet(key: Tuple) -> Listener:
    _, host, port = key
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRNOTAVAIL and host == "::1":
            raise ListenError("cannot bind [::1]: set inet_protocols = ipv4")
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}")
    return Listener(sock, key, family)


def _socketMode(entry, component) -> int:
    """
    Who may connect to a service's UNIX socket: anyone for a component
    that says so (showq); for the other public services (cleanup, qmgr,
    pickup), only the mail system, since cleanup believes the envelope
    its clients give it.
    """
    if entry.private or (component is not None and component.worldReachable):
        return 0o666
    return 0o660


def _bindUnix(path: str, uid: Optional[int], gid: Optional[int],
              mode: int = 0o666) -> Listener:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        if uid is not None:
            os.chown(path, uid, gid if gid is not None else -1)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {e.strerror or e}")
    return Listener(sock, ("unix", path), socket.AF_UNIX)
