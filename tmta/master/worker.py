"""
The program every worker process runs: C{python -m tmta.master.worker}.

The master starts it with the service to run, the configuration
directory, its control channel on descriptor 3 and the service's
listening sockets on the descriptors after it.  The worker builds the
component while it may still be root, gives up root unless master.cf's
unpriv column says otherwise, reports to the master over AMP, and serves
until C{max_use}, C{max_idle}, a shutdown request or the loss of its
master ends it.
"""

from __future__ import annotations

import cProfile
import importlib
import os
import signal
import socket
import sys
from typing import Any, List, Optional

from twisted.internet.protocol import Factory
from twisted.logger import globalLogBeginner
from zope.interface import implementer

from tmta.common import reactor as directreactor
from tmta.common.contract import CONTROL_FD, parseArguments
from tmta.common.plugins import PluginError
from tmta.config import ConfigError, loadConfiguration
from tmta.interfaces import IWorkerContext
from tmta.logging import Logger, lineObserver
from tmta.mail.accounts import dropPrivileges, mailOwner, reachableDirectory
from tmta.master.components import availableComponents, findComponent
from tmta.master.control import Shutdown, WorkerStatus
from tmta.master.privileges import preloadModules
from tmta.master.runtime import WorkerRuntime
from tmta.wire import QuietAMP, connectService

log = Logger()



def setProcessName(name: str, title: Optional[str] = None) -> None:
    """
    Name this process for C{ps} and C{top}: the kernel's short name
    (C{ps -e}) is C{name}, and the command line (C{ps -f}) becomes
    C{title} where setproctitle is installed.
    """
    if title is not None:
        try:
            import setproctitle

            setproctitle.setproctitle(title)
        except ImportError:
            pass
    try:
        # Linux's PR_SET_NAME, without finding libc for ctypes: that runs
        # ldconfig, a process per worker.
        with open("/proc/self/comm", "w") as comm:
            comm.write(name[:15])
    except OSError:
        pass


@implementer(IWorkerContext)
class WorkerContext:
    """
    The L{IWorkerContext} of a worker under the master.
    """

    def __init__(self, reactor, config, serviceName, runtime, listeners, services=(),
                 arguments=(), passed=False):
        #: The service is master.cf's type C{pass}: its clients come as
        #: connections another process accepted (postscreen's).
        self.passed = passed
        self.services = list(services)
        self.arguments = list(arguments)
        self.reactor = reactor
        self.config = config
        self.serviceName = serviceName
        self.runtime = runtime
        self._listeners = listeners

    def listen(self, factory, upstreamProxy: Optional[float] = None) -> None:
        for fd, family in self._listeners:
            self.runtime.adopt(self.reactor, fd, family, factory, passed=self.passed,
                               upstreamProxy=upstreamProxy)
            os.close(fd)
        self._listeners = []

    def connect(self, service: str, private: bool = True):
        return connectService(
            self.reactor, self.config.get("queue_directory"), service, private
        )


class ControlProtocol(QuietAMP):
    """
    The worker's end of the control channel.
    """

    def __init__(self, onShutdown, onLost) -> None:
        super().__init__()
        self._onShutdown = onShutdown
        self._onLost = onLost

    @Shutdown.responder
    def shutdown(self):
        self._onShutdown()
        return {}

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self._onLost()


#: What C{TMTA_WORKER_REACTOR} may name: the reactors a worker can run on.
REACTORS = ("", "direct", "epoll", "asyncio", "uvloop")


def installReactor(name: str) -> None:
    """
    Install the reactor C{TMTA_WORKER_REACTOR} names, before anything
    imports the default one: C{direct} (or nothing) for tmta's own
    epoll reactor (L{tmta.common.reactor}), C{epoll} for Twisted's,
    C{asyncio} for Twisted's asyncio reactor on asyncio's own event
    loop, C{uvloop} for it on uvloop's.  The others are there for
    comparing them (C{bench/run.py --reactor}).

    @raise ValueError: an unknown name.
    @raise ImportError: uvloop is asked for and not installed.
    """
    if name not in REACTORS:
        raise ValueError(f"TMTA_WORKER_REACTOR={name!r}: not one of direct, epoll, asyncio, "
                         "uvloop")
    if name in ("", "direct"):
        directreactor.install()
        return
    if name == "epoll":
        return
    import asyncio

    if name == "uvloop":
        # Not a dependency: imported by name, for the type checker too.
        loop = importlib.import_module("uvloop").new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)


def main(argv: Optional[List[str]] = None) -> int:
    options = parseArguments(sys.argv[1:] if argv is None else argv)
    name, _, kind = options.service.rpartition("/")
    observer = lineObserver(sys.stderr)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    try:
        installReactor(os.environ.get("TMTA_WORKER_REACTOR", ""))
    except (ImportError, ValueError) as e:
        log.critical("fatal: cannot install the reactor: {error}", error=str(e))
        return 1
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor

    overrides = dict(o.split("=", 1) for o in options.overrides)
    try:
        configuration = loadConfiguration(options.config, overrides, options.embedded,
                                          check=False, accepted=options.accepted or None)
    except ConfigError as e:
        log.critical("fatal: {error}", error=str(e))
        return 1
    entry = next(
        (e for e in configuration.services if e.service == name and e.type == kind), None
    )
    if entry is None:
        log.critical("fatal: no service {service} in master.cf", service=options.service)
        return 1
    try:
        component = findComponent(entry.command, availableComponents())
    except PluginError as e:
        log.critical("fatal: {error}", error=str(e))
        return 1
    if component is None:
        log.critical("fatal: no component named {command}", command=entry.command)
        return 1
    setProcessName(entry.command, f"tmta/{entry.command} {options.service} -c {options.config}")
    config = configuration.serviceConfig(entry)

    listeners = options.listeners()

    control: List[ControlProtocol] = []
    exitStatus = [0]

    def report(available: bool, served: int) -> None:
        if control and control[0].transport is not None:
            control[0].callRemote(WorkerStatus, available=available, served=served)

    stopping: List[bool] = []

    def exit() -> None:
        # Once: the master's going (the control channel closes) and a
        # SIGTERM sent to the whole process group (systemd's stop) come
        # together.
        if reactor.running and not stopping:
            stopping.append(True)
            reactor.stop()

    def stopOnSignal(number, frame) -> None:
        reactor.callFromThread(exit)

    dropTo = None
    try:
        keepRoot = component.needsRoot(config, entry.unpriv)
        if os.getuid() == 0 and not keepRoot:
            dropTo = mailOwner(config, configuration.embedded)
            queueDirectory = config.get("queue_directory")
            reachable = reachableDirectory(queueDirectory, dropTo)
            if reachable != queueDirectory:
                config = config.withOverrides({"queue_directory": reachable})
    except (ConfigError, OSError) as e:
        log.critical("fatal: {service}: {error}", service=entry.service, error=str(e))
        return 1

    runtime = WorkerRuntime(
        reactor,
        capacity=component.clientLimit(config),
        maxUse=config.getInt("max_use"),
        maxIdle=config.getTime("max_idle"),
        resident=component.resident,
        report=report,
        exit=exit,
        abandons=entry.type in ("inet", "pass"),
    )
    context = WorkerContext(
        reactor, config, entry.service, runtime, listeners, configuration.services, entry.args,
        passed=entry.type == "pass",
    )
    installProxymapClient(configuration, entry, config, context)
    try:
        worker = component.makeService(context)
        preloadModules()
        if dropTo is not None:
            dropPrivileges(dropTo)
    except (ConfigError, KeyError, OSError, ValueError) as e:
        log.critical("fatal: {service}: {error}", service=entry.service, error=str(e))
        return 1

    protocol = ControlProtocol(onShutdown=runtime.shutdown, onLost=runtime.masterLost)
    control.append(protocol)
    factory = Factory.forProtocol(lambda: protocol)
    reactor.adoptStreamConnection(CONTROL_FD, socket.AF_UNIX, factory)
    os.close(CONTROL_FD)

    def start() -> None:
        try:
            worker.startService()
        except Exception:
            log.failure("fatal: {service}: cannot start", service=entry.service)
            exitStatus[0] = 1
            reactor.stop()
            return
        runtime.start()

    reactor.callWhenRunning(start)
    # In place of Twisted's handlers, which would stop a reactor that is
    # stopping already.
    reactor.callWhenRunning(signal.signal, signal.SIGTERM, stopOnSignal)
    reactor.callWhenRunning(signal.signal, signal.SIGINT, stopOnSignal)
    reactor.addSystemEventTrigger("before", "shutdown", worker.stopService)
    observer.batchWith(reactor)
    try:
        runReactor(reactor, os.environ.get("TMTA_WORKER_PROFILE", ""), entry.service)
    finally:
        observer.flush()
    return exitStatus[0]


def installProxymapClient(configuration, entry, config, context) -> None:
    """
    Send this process's C{proxy:} lookups in tables on other servers to
    the proxymap service, when master.cf runs one (and this is not it).
    """
    from tmta.tables.proxy import ProxymapClient, install

    name = config.get("proxymap_service_name")
    if entry.command == "proxymap" or not any(
            e.service == name and e.type == "unix" and e.command == "proxymap"
            for e in configuration.services):
        return
    install(ProxymapClient(lambda: context.connect(name), context.reactor,
                           idle=config.getTime("ipc_idle")))


def runReactor(reactor, directory: str, service: str) -> None:
    """
    Run the reactor; with C{directory} (C{TMTA_WORKER_PROFILE}), under
    cProfile, leaving C{SERVICE-PID.prof} there when the worker exits:
    where a worker's CPU goes, call by call, for C{bench/profiles.py}.
    """
    if not directory:
        reactor.run(installSignalHandlers=True)
        return
    profiler = cProfile.Profile()
    try:
        profiler.runcall(reactor.run, installSignalHandlers=True)
    finally:
        name = service.replace("/", "_").replace(":", "_")
        profiler.dump_stats(os.path.join(directory, f"{name}-{os.getpid()}.prof"))


if __name__ == "__main__":
    sys.exit(main())
