"""
Loading a whole configuration directory, or making the embedded default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional

from .defaults import LOOPBACK_NETWORKS
from .maincf import MainConfig
from .mastercf import MasterEntry, parseMasterCf
from .parser import ConfigError, ConfigProblems, linesOf
from .safety import (
    parameterType,
    proxyWriteProblem,
    smtpdProblems,
    typeProblem,
    unsafeIgnored,
    verifyMapProblem,
)

# The services of the embedded default, in master.cf form.  Only services
# that tmta implements are listed, so that nothing is skipped.
EMBEDDED_MASTER_CF = """\
# tmta services (master.cf, Postfix syntax).
# service type  private unpriv  chroot  wakeup  maxproc command + args
2525      inet  n       -       n       -       -       smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
pickup    unix  n       -       n       60      1       pickup
showq     unix  n       -       n       -       -       showq
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
local     unix  -       n       n       -       -       local
virtual   unix  -       -       n       -       -       virtual
discard   unix  -       -       n       -       -       discard
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
verify    unix  -       -       n       -       1       verify
"""

EMBEDDED_MAIN_CF = """\
# tmta main.cf (Postfix syntax): edit, then restart or send SIGHUP.
# Generated for a self-contained installation under {data}.
#
# Mail for any name at these domains is delivered by virtual(8) into a
# Maildir per name under virtual_mailbox_base (the names are those
# {data}/mailboxes.regexp accepts), written as uid {uid}; nothing is ever
# relayed elsewhere.
mydestination =
virtual_mailbox_domains = localhost, $myhostname
virtual_mailbox_base = {data}/mail
virtual_mailbox_maps = regexp:{data}/mailboxes.regexp
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
smtpd_relay_restrictions = reject_unauth_destination
# STARTTLS is offered with a self-signed certificate made on first start:
# put one a CA signed for $myhostname in its place (smtpd_tls_cert_file).
smtpd_tls_security_level = may
smtpd_tls_cert_file = {data}/tls/smtpd.pem
smtpd_tls_key_file = {data}/tls/smtpd.pem
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
alias_maps =
alias_database =
queue_directory = {data}/queue
data_directory = {data}/data
"""

# Every name that is safe as a directory name (letters, digits, "._=-",
# not starting with a dot, no "..") gets a Maildir of its own; an
# extension after "+" goes to the name's Maildir.  Keys arrive
# lower-cased.
EMBEDDED_MAILBOXES = """\
# tmta: which addresses at virtual_mailbox_domains have a Maildir, and
# where (regexp_table(5) syntax; $1 is the name).
if !/\\.\\./
/^([a-z0-9_=-][a-z0-9._=-]{0,63})(\\+[^@]*)?@[^@]+$/    ${1}/
endif
"""


@dataclass
class Configuration:
    """
    Everything read from one configuration directory.

    @ivar directory: where main.cf and master.cf live.
    @ivar main: the effective main.cf parameters.
    @ivar services: master.cf's entries, in order.
    @ivar warnings: things an operator should hear about at start-up.
    @ivar embedded: whether this is the generated embedded default.
    """

    directory: str
    main: MainConfig
    services: List[MasterEntry]
    warnings: List[str] = field(default_factory=list)
    embedded: bool = False
    #: The bytes of main.cf and master.cf as they were read (C{None}:
    #: the file did not exist), for L{saveAccepted}.
    sources: Dict[str, Optional[bytes]] = field(default_factory=dict)

    def serviceConfig(self, entry: MasterEntry) -> MainConfig:
        """
        The parameters as one service sees them: main.cf with the
        service's C{-o} overrides and C{service_name} set.
        """
        overrides = {"service_name": entry.service, "process_name": entry.command}
        overrides.update(entry.overrides)
        return self.main.withOverrides(overrides)


def configDirectoryFromEnvironment(
    environ: Mapping[str, str] = os.environ,
) -> Optional[str]:
    """
    The configuration directory named by C{MAIL_CONFIG}, as every Postfix
    command honours it.
    """
    return environ.get("MAIL_CONFIG") or None


#: Where a system installation keeps its configuration, as Postfix keeps
#: its in C{/etc/postfix}: every command finds it there, run by root, by
#: the mail system or by any user, without C{MAIL_CONFIG}.
SYSTEM_CONFIG_DIRECTORY = "/etc/tmta"


def systemConfigDirectory(directory: str = SYSTEM_CONFIG_DIRECTORY) -> Optional[str]:
    """
    C{directory} when a system installation is there (it has a
    C{main.cf}), else C{None}.
    """
    return directory if os.path.isfile(os.path.join(directory, "main.cf")) else None


def findConfigDirectory(given: Optional[str] = None,
                        environ: Mapping[str, str] = os.environ,
                        system: str = SYSTEM_CONFIG_DIRECTORY) -> Optional[str]:
    """
    The configuration directory a command acts on: the one given (C{-c}),
    else C{MAIL_CONFIG}'s, else the system installation's; C{None} when
    there is none of them (the embedded default of whoever runs it).
    """
    return given or configDirectoryFromEnvironment(environ) or systemConfigDirectory(system)


def commandConfiguration(given: Optional[str] = None, create: bool = False,
                         environ: Mapping[str, str] = os.environ,
                         system: str = SYSTEM_CONFIG_DIRECTORY) -> Configuration:
    """
    The configuration a command acts on (L{findConfigDirectory}), read as
    C{postconf} reads it: what is written, even where C{twistd tmta}
    would refuse to start with it.  Without one, the caller's embedded
    default (C{~/.tmta}) -- made now only when C{create} says so (a
    message posted for the user's own tmta to pick up): a command that
    only reads or acts on a queue makes nothing.

    @raise ConfigError: there is no configuration to act on.
    """
    directory = findConfigDirectory(given, environ, system)
    if directory:
        return loadConfiguration(directory, check=False)
    data = defaultDataDirectory()
    if not create and not os.path.isfile(os.path.join(data, "main.cf")):
        raise ConfigError(data, None, f"no configuration here (made when tmta first runs "
                                      f"for this user), none given (-c or MAIL_CONFIG) and "
                                      f"none installed in {system}")
    return loadConfiguration(prepareEmbedded(data), embedded=True, check=False)


def defaultDataDirectory() -> str:
    """
    Where the embedded default keeps everything: C{~/.tmta}, with C{~}
    read as the shell does (C{$HOME}, else the account's home).
    """
    return os.path.expanduser(os.path.join("~", ".tmta"))


def _writeIfMissing(path: str, text: str) -> None:
    if os.path.exists(path):
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def prepareEmbedded(dataDirectory: str) -> str:
    """
    Create the embedded default's data directory with a main.cf and a
    master.cf to edit, unless they exist already.

    @return: the configuration directory (the data directory itself).
    """
    data = os.path.abspath(dataDirectory)
    os.makedirs(data, mode=0o755, exist_ok=True)
    owner = _embeddedOwner()
    _writeIfMissing(os.path.join(data, "main.cf"), EMBEDDED_MAIN_CF.format(
        data=data, uid=owner.pw_uid, gid=owner.pw_gid))
    _writeIfMissing(os.path.join(data, "master.cf"), EMBEDDED_MASTER_CF)
    _writeIfMissing(os.path.join(data, "mailboxes.regexp"), EMBEDDED_MAILBOXES)
    certificate = os.path.join(data, "tls", "smtpd.pem")
    if not os.path.exists(certificate):
        from tmta.config.selfsigned import writeSelfSignedCertificate

        writeSelfSignedCertificate(certificate, MainConfig({}).get("myhostname"))
    mail = os.path.join(data, "mail")
    if not os.path.isdir(mail):
        os.makedirs(mail, mode=0o755, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(mail, owner.pw_uid, owner.pw_gid)
    return data


def _embeddedOwner():
    """
    Who the embedded default's mail belongs to: the user who runs it,
    or, for root, the account the mail system runs as.
    """
    import pwd

    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    # As tmta.mail.accounts.mailOwner chooses for the embedded default.
    try:
        return pwd.getpwnam(MainConfig({}).get("mail_owner"))
    except KeyError:
        return pwd.getpwnam("nobody")


def _readSource(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(path, None, f"cannot read: {e.strerror}")


def saveAccepted(configuration: Configuration, path: str) -> None:
    """
    Keep the main.cf and master.cf a master accepted in the directory
    C{path} (made, readable by its owner only), for the workers it
    starts: they run on what the master checked, whatever has been
    written to the configuration directory since.
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    for name, data in configuration.sources.items():
        target = os.path.join(path, name)
        if data is None:
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
            continue
        temporary = f"{target}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, target)


def loadConfiguration(
    directory: str,
    overrides: Optional[Mapping[str, str]] = None,
    embedded: bool = False,
    check: bool = True,
    accepted: Optional[str] = None,
) -> Configuration:
    """
    Read C{directory}/main.cf and C{directory}/master.cf.

    @param accepted: read main.cf and master.cf from this directory (a
        master's L{saveAccepted}) instead; they still name C{directory}
        as theirs.
    @param overrides: command-line C{-o name=value} settings.
    @param check: check every value's type, and that nothing asks for
        what tmta cannot honour (L{tmta.config.safety}); the master does,
        so its workers need not again.
    @raise ConfigError: a syntax error (naming file and line), a missing
        master.cf, or a value that cannot be expanded.
    @raise ConfigProblems: with C{check}, values of the wrong type and
        settings that cannot be honoured, each with its file and line.
    """
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise ConfigError(directory, None, "configuration directory does not exist")
    source = accepted or directory
    sources = {name: _readSource(os.path.join(source, name))
               for name in ("main.cf", "master.cf")}
    mainData = sources["main.cf"]
    main = MainConfig.fromLines(linesOf(mainData) if mainData is not None else [],
                                os.path.join(directory, "main.cf"), overrides)
    main.setDefault("config_directory", directory)
    if embedded:
        # The embedded default trusts only this machine's loopback.
        main.setDefault("mynetworks", LOOPBACK_NETWORKS)
    masterPath = os.path.join(directory, "master.cf")
    masterData = sources["master.cf"]
    if masterData is not None:
        services = parseMasterCf(linesOf(masterData), masterPath)
    else:
        services = parseMasterCf(EMBEDDED_MASTER_CF.splitlines(), masterPath)
    main.validate()
    warnings = list(main.parseWarnings)
    warnings += _check(main, services, masterPath) if check else []
    # What the checks already spoke of is not warned about again.
    reported = {w.split(": ", 2)[1] for w in warnings if w.count(": ") >= 2}
    warnings += [
        f"{main.path}, line {line}: unknown parameter {name} ignored"
        if line
        else f"unknown parameter {name} ignored"
        for name, line in main.unknownParameters(
            value for entry in services for value in entry.overrides.values())
    ]
    warnings += [
        f"{main.path}, line {line}: {name} is not implemented yet and is ignored"
        for name, line in main.unimplementedParameters()
        if name not in reported
    ]
    for entry in services:
        for name in entry.overrides:
            if not main.isKnown(name):
                warnings.append(
                    f"{masterPath}, line {entry.line}: "
                    f"unknown parameter {name} in -o ignored"
                )
    chrooted = [entry.service for entry in services if entry.chroot]
    if chrooted:
        warnings.append(
            "chroot is not applied; these services run unchrooted: "
            + ", ".join(chrooted)
        )
    return Configuration(directory, main, services, warnings, embedded, sources)


def _check(main: MainConfig, services: List[MasterEntry], masterPath: str) -> List[str]:
    """
    Check the values' types and what smtpd services are asked to do.

    @return: warnings about settings ignored harmlessly.
    @raise ConfigProblems: what must stop start-up.
    """
    def masterWhere(entry: MasterEntry) -> str:
        return f"{masterPath}, line {entry.line}"

    problems = _typeProblems(main, main.explicit, lambda name: _mainWhere(main, name))
    problems += [f"{_mainWhere(main, name)}: {name}: {why}"
                 for name, why in unsafeIgnored(main, main.explicit)]
    for entry in services:
        problems += _typeProblems(main, entry.overrides, _constant(masterWhere(entry)))
        problems += [f"{masterWhere(entry)}: {name}: {why}" for name, why in
                     unsafeIgnored(main.withOverrides(entry.overrides), entry.overrides)]
        serviceConfig = main.withOverrides(entry.overrides)
        for name in entry.overrides:
            try:
                serviceConfig.get(name)
            except ConfigError as e:
                problems.append(f"{masterWhere(entry)}: {e.reason}")
    harmless: List[str] = []
    for entry in services:
        if entry.command != "smtpd":
            continue
        fatal, notes = smtpdProblems(main.withOverrides(entry.overrides), main,
                                     entry.overrides, masterWhere(entry),
                                     anvil=any(e.command == "anvil" for e in services),
                                     verify=hasVerifyService(main, services))
        problems += [str(p) for p in fatal]
        harmless += [f"{p} (ignored)" for p in notes]
    if hasVerifyService(main, services):
        problem = verifyMapProblem(main.get("address_verify_map")) or \
            proxyWriteProblem(main, "address_verify_map")
        if problem is not None:
            line = main.lineOf("address_verify_map")
            where = f"{main.path or 'main.cf'}, line {line}" if line else "main.cf"
            problems.append(f"{where}: {problem}")
    if problems:
        raise ConfigProblems(list(dict.fromkeys(problems)))
    return list(dict.fromkeys(harmless))


def hasVerifyService(main: MainConfig, services: Iterable[MasterEntry]) -> bool:
    """
    Whether master.cf runs the verify service under the name smtpd asks
    for it by (C{address_verify_service_name}).
    """
    name = main.get("address_verify_service_name") or "verify"
    return any(e.command == "verify" and e.service == name and e.type == "unix"
               for e in services)


def _constant(where: str) -> Callable[[str], str]:
    """
    A where-function that names the same place for every parameter.
    """
    return lambda name: where


def _mainWhere(main: MainConfig, name: str) -> str:
    line = main.lineOf(name)
    path = main.path or "main.cf"
    return f"{path}, line {line}" if line else f"{path} or the command line"


def _typeProblems(main: MainConfig, values: Mapping[str, str],
                  where: Callable[[str], str]) -> List[str]:
    """
    The values among C{values} (expanded as C{main} expands them) that
    are not of their parameter's type, with where each was set.
    """
    defaults = MainConfig({})
    config = main.withOverrides(dict(values)) if values is not main.explicit else main
    problems = []
    for name in values:
        default = main.defaultOf(name)
        if default is None:
            continue
        try:
            kind = parameterType(name, defaults.get(name))
            value = config.get(name)
        except ConfigError:
            continue
        if kind is None:
            continue
        problem = typeProblem(kind, value)
        if problem:
            problems.append(f"{where(name)}: {name}: {problem}")
    return problems
