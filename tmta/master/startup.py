"""
What the master checks before it binds anything: that every service
master.cf names has a component to run it, and that each component can
honour its configuration (L{IComponent.configurationProblems}), so that
a configuration asking for what tmta cannot do stops start-up.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

from tmta.common.plugins import PluginError
from tmta.config import ConfigError, Configuration
from tmta.config.parser import ConfigProblems
from tmta.master.components import findComponent

# A fifo service (qmgr and pickup in older stock master.cf files) is
# served on a UNIX socket at the same path: tmta's triggers are AMP.  A
# pass service (smtpd behind postscreen) is a UNIX socket that brings
# the descriptors of client connections.
IMPLEMENTED_TYPES = ("inet", "unix", "fifo", "pass")


def checkServices(configuration: Configuration, components) -> Dict[Tuple[str, str], bool]:
    """
    Which services master.cf names can be run.

    A plugin that does not provide its interface, a port nobody would
    serve (Debian's C{smtp inet ... postscreen}), a table that cannot be
    opened or a setting a component cannot honour stops start-up.

    @return: for each service's key, whether it is run (C{False}: a
        private service whose command tmta does not have is skipped).
    @raise ConfigProblems: what stops start-up.
    """
    implemented: Dict[Tuple[str, str], bool] = {}
    unusable = []
    for entry in configuration.services:
        where = f"{configuration.directory}/master.cf, line {entry.line}"
        try:
            found = findComponent(entry.command, components) is not None
        except PluginError as e:
            unusable.append(f"{where}: {entry.service}/{entry.type}: {e}")
            found = False
        implemented[entry.key] = found and entry.type in IMPLEMENTED_TYPES
        if entry.type == "inet" and not found:
            unusable.append(f"{where}: {entry.service}/inet: command {entry.command} is "
                            "not implemented; nothing would serve its port")
    unusable += configurationProblems(configuration, components)
    if unusable:
        raise ConfigProblems(list(dict.fromkeys(unusable)))
    return implemented


def configurationProblems(configuration: Configuration, components) -> List[str]:
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


def startupProblems(configuration: Configuration) -> List[str]:
    """
    Everything in C{configuration} that would stop the master at
    start-up (L{checkServices}), one line each: for C{tmta check}, and
    for C{tmta start} to say before the master becomes a daemon, whose
    start-up report carries only the first hundred bytes of a reason.
    """
    from tmta.master.components import availableComponents

    try:
        checkServices(configuration, availableComponents())
    except ConfigProblems as e:
        return e.problems
    return []


def queueAccessProblems(queueDirectory: str, account) -> List[str]:
    """
    What keeps C{account} (C{mail_owner}, a C{pwd.struct_passwd}) from
    working in the queue: a queue directory that is not a directory, or
    that it cannot read, write or search (a read-only file system, an
    ACL).  qmgr, pickup and cleanup run as that account, so a master
    started with such a queue would accept mail it can never deliver.

    The check is made by a child process that reaches the queue as a
    worker does (L{reachableDirectory}) and then becomes the account, so
    it sees what the workers will see.

    @return: one line per directory that cannot be used.
    """
    from tmta.mail.accounts import dropPrivileges, reachableDirectory
    from tmta.queue.layout import DIRECTORY_MODES

    names = list(DIRECTORY_MODES)
    if os.getuid() == account.pw_uid:
        return _unusable(queueDirectory, queueDirectory, names)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            os.close(reader)
            reachable = reachableDirectory(queueDirectory, account)
            dropPrivileges(account)
            found = _unusable(queueDirectory, reachable, names)
            os.write(writer, "\n".join(found).encode("utf-8", "replace"))
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as report:
        text = report.read().decode("utf-8", "replace")
    os.waitpid(pid, 0)
    return [line for line in text.splitlines() if line]


def _unusable(queueDirectory: str, reachable: str, names: List[str]) -> List[str]:
    problems = []
    for name in names:
        path = os.path.join(reachable, name)
        try:
            os.listdir(path)
            probe = os.path.join(path, f".access-check.{os.getpid()}")
            os.mkdir(probe)
            os.rmdir(probe)
        except OSError as e:
            problems.append(f"{os.path.join(queueDirectory, name)}: {e.strerror}")
    return problems
