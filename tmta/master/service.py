"""
The master: binds every master.cf listener, runs worker processes on
demand under the L{ServicePool} policy, wakes services on their timers,
re-reads the configuration on SIGHUP and stops everything on SIGTERM.
"""

from __future__ import annotations

import os
import pwd
import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.application import service
from twisted.internet import defer
from twisted.logger import ILogObserver
from twisted.python.components import Componentized

from tmta.common.plugins import allBroken
from tmta.config import ConfigError, Configuration
from tmta.config.loader import saveAccepted
from tmta.config.parser import ConfigProblems
from tmta.logging import Logger
from tmta.mail.accounts import mailOwner
from tmta.master.components import availableComponents, findComponent
from tmta.master.listeners import (
    Listener,
    ListenError,
    bindInet,
    bindUnix,
    describe,
    inetKeys,
    socketMode,
)
from tmta.master.lock import acquireMasterLock
from tmta.master.runner import ServiceRunner
from tmta.master.spawner import ForkServer, workerPythonPath
from tmta.master.startup import checkServices, queueAccessProblems
from tmta.queue.layout import createDataDirectory, createLayout
from tmta.wire.connect import socketPath

log = Logger()


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
        self._configureLog()
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

    def _configureLog(self) -> None:
        """
        Tell the log observer the configuration's names for the master's
        lines (C{syslog_name}, C{syslog_facility}), when it wants them.
        """
        configure = getattr(self.logObserver, "configure", None)
        if configure is not None:
            main = self.configuration.main
            try:
                configure(main)
            except ValueError as e:
                raise ConfigError(main.path, main.lineOf("maillog_file_format"), str(e))

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
        implemented = checkServices(configuration, components)
        skipped, planned = [], []
        for entry in configuration.services:
            if not implemented[entry.key]:
                skipped.append(f"{entry.service}/{entry.type} ({entry.command})")
                continue
            serviceConfig = configuration.serviceConfig(entry)
            if entry.type == "inet":
                listeners = [
                    reuse.pop(key, None) or bindInet(key)
                    for key in inetKeys(entry, serviceConfig)
                ]
            else:
                path = socketPath(queueDirectory, entry.service, entry.private)
                key = ("unix", path)
                listeners = [reuse.pop(key, None) or bindUnix(
                    path, uid, gid, socketMode(entry, findComponent(entry.command, components)))]
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
            queue = self.configuration.main.get("queue_directory")
            createLayout(queue, *self._ownerIds())
            owner = self._owner or pwd.getpwuid(os.getuid())
            problems = queueAccessProblems(queue, owner)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise ConfigProblems([f"mail_owner {owner.pw_name} cannot use the queue: "
                                      f"{problems[0]}{more}"])
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
            f"{runner.entry.command} on {describe(listener)}"
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
        try:
            self._configureLog()
        except ConfigError as e:
            # The log keeps the form it had: the rest of the reload stands.
            log.error("reload: {error}", error=str(e))
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


