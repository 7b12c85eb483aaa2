"""
tmta inside a Twisted application: a service to add to the
application's own service tree::

    from tmta.embedded import EmbeddedMTA

    mta = EmbeddedMTA("/srv/app/mail", {
        "myhostname": "app.example",
        "virtual_mailbox_domains": "",
        "transport_maps": "inline:{ app.example=app }",
        "mydestination": "app.example",
    }, smtpd="tcp:2526:interface=127.0.0.1", agents={"app": MyAgent()})
    mta.setServiceParent(application)

Everything tmta writes -- C{main.cf}, C{master.cf}, the queue -- stays
under the directory the application names, and is written when the
service starts, not when it is made.  The parameters are
Postfix's, as in C{main.cf}; given a dict they are written to
C{DIRECTORY/main.cf} (and C{master.cf} is made from the services asked
for); without one, the directory's own C{main.cf} and C{master.cf} are
read.

Two ways to run:

  - C{processes=False} (the default): every component runs in the
    application's own process, on its reactor, with its sockets in the
    queue directory as under the master -- for tests and small
    applications.  An application receives mail in-process by giving
    its own L{tmta.interfaces.IDeliveryAgent} for a transport
    (C{agents}); mail is routed to it as to any transport
    (C{transport_maps}, C{local_transport}, ...).
  - C{processes=True}: the master, with its worker processes, as
    C{twistd tmta} runs them (C{agents} cannot be given: each agent runs
    in a worker process of its own).
"""

from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Optional, Tuple, Union

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

from tmta.config import ConfigError, MainConfig, parseInetAddress
from tmta.config.defaults import LOOPBACK_NETWORKS
from tmta.config.loader import Configuration, loadConfiguration
from tmta.interfaces import IWorkerContext
from tmta.logging import Logger
from tmta.queue.layout import createDataDirectory, createLayout
from tmta.wire import connectService
from tmta.wire.connect import socketPath
from tmta.wire.triggers import Wakeup

__all__ = ["EmbeddedMTA"]

log = Logger()

#: The services an embedded tmta runs besides smtpd and the agents.
_CORE = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       -       n       -       -       virtual
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
verify    unix  -       -       n       -       1       verify
"""


@implementer(IWorkerContext)
class InProcessContext:
    """
    The L{IWorkerContext} of a component that runs in the application's
    process: its sockets are bound here, in the queue directory (or on
    the inet address of its master.cf entry).
    """

    def __init__(self, reactor, config, entry, services,
                 endpoint: Optional[IStreamServerEndpoint] = None) -> None:
        """
        @param endpoint: where an C{inet} service listens instead of the
            address its master.cf entry names.
        """
        self.reactor = reactor
        self.config = config
        self.entry = entry
        self.endpoint = endpoint
        self.serviceName = entry.service
        self.services = list(services)
        self.arguments = list(entry.args)
        self.ports: List = []
        #: The endpoint's listening, under way or done.
        self.listening: List[defer.Deferred] = []

    def listen(self, factory, upstreamProxy: Optional[float] = None) -> None:
        entry = self.entry
        if upstreamProxy is not None:
            # Read only by a master's workers, which take each
            # connection's header off its socket before serving it.
            raise ConfigError(None, None, f"{entry.service}: the PROXY protocol is not "
                              "served by an embedded mail system")
        factory.noisy = False  # the maillog is for mail
        if entry.type == "inet" and self.endpoint is not None:
            d = self.endpoint.listen(factory)
            d.addCallback(self.ports.append)
            d.addErrback(lambda f: log.failure("{service}: cannot listen", f,
                                               service=entry.service))
            self.listening.append(d)
            return
        if entry.type == "inet":
            host, port = parseInetAddress(entry.service)
            self.ports.append(self.reactor.listenTCP(int(port), factory,
                                                     interface=host or "127.0.0.1"))
            return
        path = socketPath(self.config.get("queue_directory"), entry.service, entry.private)
        if os.path.exists(path):
            os.unlink(path)  # left by a run that ended without closing it
        self.ports.append(self.reactor.listenUNIX(path, factory,
                                                  mode=0o600 if entry.private else 0o660))

    def connect(self, service: str, private: bool = True):
        return connectService(self.reactor, self.config.get("queue_directory"), service,
                              private)


class EmbeddedMTA(MultiService):
    """
    tmta as a service of a Twisted application.

    Nothing is written or bound until the service starts: then
    C{main.cf} and C{master.cf} are written (when C{parameters} are
    given), the queue is made and the components start.  Stopping it
    fires once every port it listens on is closed (and, with
    C{processes=True}, once every worker has left).

    @param directory: where everything goes (created if need be).
    @param parameters: main.cf parameters; C{None} to read
        C{directory/main.cf} and C{directory/master.cf} as they are.
    @param smtpd: where smtpd listens, used only with C{parameters}: a
        Twisted server endpoint (C{processes=False} only), or its string
        description (C{"tcp:2526:interface=127.0.0.1"}, as
        C{serverFromString} reads it; with C{processes=True}, C{tcp:}
        and C{tcp6:} only, since the master binds it); C{None} for no
        smtpd.  C{"host:port"} is read as C{tcp:port:interface=host}.
    @param agents: transport name to the application's
        L{tmta.interfaces.IDeliveryAgent} (in-process only).
    @param processes: run the master and its worker processes instead.

    @ivar configuration: the configuration read at start-up; C{None}
        before.
    """

    def __init__(self, directory: str, parameters: Optional[Mapping[str, str]] = None,
                 smtpd: Union[str, IStreamServerEndpoint, None] = None,
                 agents: Optional[Dict[str, object]] = None,
                 processes: bool = False, reactor=None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.reactor = reactor
        self.directory = os.path.abspath(directory)
        self.agents = dict(agents or {})
        if processes and self.agents:
            raise ValueError("agents run in-process only: with processes=True, give a "
                             "transport plugin instead")
        self.parameters = dict(parameters) if parameters is not None else None
        self.smtpdService, self.smtpdEndpoint = _smtpdListener(reactor, smtpd, processes)
        self.processes = processes
        self.configuration: Optional[Configuration] = None
        self._contexts: List[InProcessContext] = []
        self._timers: List[task.LoopingCall] = []

    def _prepare(self) -> None:
        """
        Write the configuration, read it, and make the components, once.
        """
        if self.configuration is not None:
            return
        os.makedirs(self.directory, exist_ok=True)
        if self.parameters is not None:
            self._write(self.parameters, self.smtpdService)
        self.configuration = loadConfiguration(self.directory)
        if self.processes:
            from tmta.master.service import MasterService

            directory = self.directory
            MasterService(self.reactor,
                          lambda: loadConfiguration(directory)).setServiceParent(self)
        else:
            self._buildInProcess()

    def _write(self, parameters: Mapping[str, str], smtpd: Optional[str]) -> None:
        settings = {
            "queue_directory": os.path.join(self.directory, "queue"),
            "data_directory": os.path.join(self.directory, "data"),
            "mail_owner": _currentUser(),
            "alias_maps": "",
            "alias_database": "",
            "inet_protocols": "ipv4",
            # Trust only this machine, as the embedded default does.
            "mynetworks": LOOPBACK_NETWORKS,
        }
        settings.update(parameters)
        main = "".join(f"{name} = {value}\n" for name, value in settings.items())
        master = ""
        if smtpd:
            master += f"{smtpd} inet n - n - - smtpd\n"
        master += _CORE
        for name in self.agents:
            master += f"{name} unix - n n - - {name}\n"
        for filename, text in (("main.cf", main), ("master.cf", master)):
            path = os.path.join(self.directory, filename)
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)

    def _buildInProcess(self) -> None:
        from tmta.delivery import AgentService
        from tmta.master.components import availableComponents, findComponent

        configuration = self.configuration
        assert configuration is not None
        createLayout(configuration.main.get("queue_directory"))
        createDataDirectory(configuration.main.get("data_directory"))
        components = availableComponents()
        for entry in configuration.services:
            config = configuration.serviceConfig(entry)
            endpoint = self.smtpdEndpoint if entry.service == self.smtpdService else None
            context = InProcessContext(self.reactor, config, entry, configuration.services,
                                       endpoint)
            if entry.service in self.agents and entry.type == "unix":
                service = AgentService(context, self.agents[entry.service])
            else:
                component = findComponent(entry.command, components)
                if component is None:
                    log.warn("{service}: {command} is not implemented: skipped",
                             service=entry.service, command=entry.command)
                    continue
                service = component.makeService(context)
            service.setServiceParent(self)
            self._contexts.append(context)
            if entry.wakeup and entry.type == "unix":
                timer = task.LoopingCall(self._wakeup, context)
                timer.clock = self.reactor
                self._timers.append(timer)

    def _wakeup(self, context: InProcessContext) -> None:
        def send(protocol):
            protocol.callRemote(Wakeup, reason="timer")
            protocol.transport.loseConnection()

        context.connect(context.entry.service, context.entry.private).addCallback(
            send).addErrback(lambda f: log.warn("{service}: wakeup failed: {error}",
                                               service=context.entry.service,
                                               error=f.value))

    def privilegedStartService(self) -> None:
        # The master needs root to start (it binds, then gives its workers
        # mail_owner); in-process, everything is written and bound in
        # startService, after twistd's --uid/--gid have taken effect, so
        # that the files are the running user's.
        if self.processes:
            self._prepare()
        super().privilegedStartService()

    def startService(self) -> None:
        self._prepare()
        super().startService()
        for timer, context in zip(self._timers, [c for c in self._contexts
                                                 if c.entry.wakeup and c.entry.type == "unix"]):
            timer.start(context.entry.wakeup, now=True)

    def stopService(self) -> defer.Deferred:
        for timer in self._timers:
            if timer.running:
                timer.stop()
        stops = [defer.maybeDeferred(super().stopService)]
        for context in self._contexts:
            for d in context.listening:
                if not d.called:
                    d.cancel()
            for port in context.ports:
                stops.append(defer.maybeDeferred(port.stopListening))
        return defer.gatherResults(stops, consumeErrors=True).addCallback(lambda _: None)

    @property
    def config(self) -> MainConfig:
        """
        The main.cf parameters in effect, once the service has started.
        """
        if self.configuration is None:
            raise RuntimeError("the configuration is read when the service starts")
        return self.configuration.main

    def submissionClient(self):
        """
        A L{tmta.submission.SubmissionClient} for this tmta.
        """
        from tmta.submission import SubmissionClient

        return SubmissionClient(self.reactor, self.config.get("queue_directory"))


def _currentUser() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


#: The types of endpoint description the master can bind itself.
_TCP_TYPES = ("tcp", "tcp6")


def _smtpdListener(reactor, smtpd: Union[str, IStreamServerEndpoint, None],
                   processes: bool) -> Tuple[Optional[str], Optional[IStreamServerEndpoint]]:
    """
    The master.cf service name for smtpd and, in-process, the endpoint
    it listens on instead.

    @raise ValueError: C{smtpd} cannot be served that way.
    """
    if smtpd is None:
        return None, None
    if not isinstance(smtpd, str):
        if processes:
            raise ValueError("with processes=True the master binds smtpd's address itself: "
                             "give it as a tcp: or tcp6: endpoint description")
        # The entry's own address is never bound: the endpoint is.
        return "127.0.0.1:0", smtpd
    legacy = re.fullmatch(r"(\[[^]]*\]|[^:\[\]]*):(\d+)", smtpd)
    if legacy and legacy.group(1).lower() not in _TCP_TYPES:
        host = legacy.group(1).strip("[]") or "127.0.0.1"
        smtpd = (f"tcp6:{legacy.group(2)}:interface={host.replace(':', chr(92) + ':')}"
                 if ":" in host else f"tcp:{legacy.group(2)}:interface={host}")
    kind, port, interface = _tcpDescription(smtpd)
    if kind not in _TCP_TYPES:
        if processes:
            raise ValueError(f"smtpd={smtpd!r}: with processes=True only tcp: and tcp6: "
                             "endpoints can be served")
        return "127.0.0.1:0", serverFromString(reactor, smtpd)
    if not port.isdigit():
        raise ValueError(f"smtpd={smtpd!r}: no port")
    host = interface or ("::" if kind == "tcp6" else "0.0.0.0")
    service = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return service, None if processes else serverFromString(reactor, smtpd)


def _tcpDescription(description: str) -> Tuple[str, str, str]:
    """
    The type, port and C{interface} of an endpoint description (C{"",
    ""} for what is not there), with C{\\:} unescaped.
    """
    parts = [p.replace("\\:", ":") for p in re.split(r"(?<!\\):", description)]
    kind, positional, keywords = parts[0].lower(), [], {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if equals:
            keywords[name] = value
        else:
            positional.append(part)
    port = keywords.get("port", positional[0] if positional else "")
    interface = keywords.get("interface", positional[2] if len(positional) > 2 else "")
    return kind, port, interface
