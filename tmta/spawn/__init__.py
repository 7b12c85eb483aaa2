"""
spawn(8): run a program that is not part of the mail system for each
connection to a master.cf service, as Postfix's spawn does, so that
policy servers written for Postfix (postfix-policyd-spf-python, and
others that speak on standard input and output) run from master.cf::

    policyd-spf  unix  -  n  n  -  0  spawn
      user=policyd-spf argv=/usr/bin/policyd-spf

The program runs as C{user=} (never root), without a shell, with only
the C{export_environment} variables, in its own session, for at most
C{<service>_time_limit} (else C{command_time_limit}).  The connection's
bytes are relayed to its standard input and from its standard output;
what it writes on standard error is logged.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from tmta.config import ConfigError
from tmta.config.maincf import parseTime
from tmta.logging import Logger
from tmta.mail.pipecommand import CommandConfigError, commandAccount, commandEntryProblems

log = Logger()


def configurationProblems(config, entry) -> List[str]:
    """
    L{commandEntryProblems} for a spawn entry
    (L{tmta.interfaces.IComponent.configurationProblems}).
    """
    return commandEntryProblems(SpawnCommand, entry.args)


class SpawnCommand:
    """
    What a spawn entry runs: C{user=} and C{argv=} from its master.cf
    arguments.

    @raise CommandConfigError: no C{argv=}, no C{user=}, root, or an
        attribute spawn does not know.
    """

    def __init__(self, arguments: List[str]) -> None:
        user = None
        argv: List[str] = []
        for index, word in enumerate(arguments):
            name, sep, value = word.partition("=")
            if name == "argv" and sep:
                argv = [value] + list(arguments[index + 1:])
                break
            if name == "user" and sep:
                user = value
                continue
            raise CommandConfigError(f"spawn: unknown attribute {word!r}")
        if not argv or not argv[0]:
            raise CommandConfigError("spawn: no argv= command")
        if not os.path.isabs(argv[0]):
            raise CommandConfigError(f"spawn: argv={argv[0]}: not an absolute path")
        if user is None:
            raise CommandConfigError(
                "spawn: no user= attribute (spawn never runs programs as root)")
        account, self.gid = commandAccount(user, "spawn")
        self.uid = account.pw_uid
        self.home = account.pw_dir
        self.user = account.pw_name
        self.argv = argv


class _Program(protocol.ProcessProtocol):
    def __init__(self, client: "SpawnProtocol") -> None:
        self.client = client
        self._errors = b""

    def outReceived(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def errReceived(self, data: bytes) -> None:
        self._errors += data
        *lines, self._errors = self._errors.split(b"\n")
        for line in lines:
            log.info("{program}: {line}", program=self.client.command.argv[0],
                     line=line.decode("utf-8", "replace"))

    def processEnded(self, reason) -> None:
        self.client.programEnded(reason)


class SpawnProtocol(protocol.Protocol):
    """
    One connection, relayed to and from its own run of the program.
    """

    transport: Any  # a UNIX or TCP connection

    def __init__(self, command: SpawnCommand, environment, timeLimit: float, reactor) -> None:
        self.command = command
        self.environment = environment
        self.timeLimit = timeLimit
        self.reactor = reactor
        self.program: Optional[_Program] = None
        self._timer: Any = None

    def connectionMade(self) -> None:
        command = self.command
        self.program = _Program(self)
        options = {}
        if os.geteuid() == 0:
            options = {"uid": command.uid, "gid": command.gid}
        elif command.uid != os.geteuid():
            log.error("spawn: cannot run {program} as {user} without root privileges",
                      program=command.argv[0], user=command.user)
            self.transport.loseConnection()
            return
        try:
            self.reactor.spawnProcess(self.program, command.argv[0], command.argv,
                                      env=self.environment, path="/", usePTY=False,
                                      childFDs={0: "w", 1: "r", 2: "r"}, **options)
        except OSError as e:
            log.error("spawn: cannot run {program}: {error}", program=command.argv[0],
                      error=e.strerror or str(e))
            self.transport.loseConnection()
            return
        self._timer = self.reactor.callLater(self.timeLimit, self._tooLong)

    def dataReceived(self, data: bytes) -> None:
        if self.program is not None and self.program.transport is not None:
            self.program.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.program is not None and self.program.transport is not None:
            self.program.transport.closeStdin()

    def _tooLong(self) -> None:
        self._timer = None
        log.warn("spawn: {program}: time limit exceeded", program=self.command.argv[0])
        transport = self.program.transport if self.program is not None else None
        if transport is not None:
            try:
                transport.signalProcess("KILL")
            except Exception:
                pass

    def programEnded(self, reason) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        code = getattr(reason.value, "exitCode", 0)
        if code:
            log.warn("spawn: {program}: exit status {code}", program=self.command.argv[0],
                     code=code)
        if self.transport is not None:
            self.transport.loseConnection()


class SpawnService(Service):
    def __init__(self, context) -> None:
        self.context = context
        config = context.config
        try:
            command = SpawnCommand(list(context.arguments))
        except CommandConfigError as e:
            raise ConfigError(None, None, f"{context.serviceName}: {e}")
        limit = config.get(f"{context.serviceName}_time_limit") or \
            config.get("command_time_limit")
        timeLimit = parseTime(limit)
        environment = {name: os.environ[name] for name in config.getList("export_environment")
                       if name in os.environ}
        environment.setdefault("PATH", "/usr/bin:/bin")
        reactor = context.reactor
        self.factory = protocol.Factory.forProtocol(
            lambda: SpawnProtocol(command, environment, timeLimit, reactor))

    def startService(self) -> None:
        super().startService()
        self.context.listen(self.factory)


def makeSpawnService(context) -> SpawnService:
    return SpawnService(context)
