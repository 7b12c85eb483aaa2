"""
C{tmta install-system} and C{tmta uninstall-system}: set a machine up
to run tmta as its MTA, where every command finds it (L{tmta.config.loader.
SYSTEM_CONFIG_DIRECTORY}), and put it back as it was.

The installation is a configuration directory (C{/etc/tmta}), a queue
(C{/var/spool/tmta}) and data directory (C{/var/lib/tmta}) of its own,
the C{sendmail}, C{mailq} and C{newaliases} links (another MTA's files
kept beside as C{NAME.pre-tmta}), and a systemd unit.  With
C{--take-over}, C{/etc/postfix}'s C{main.cf} and C{master.cf} are copied
in, with the queue and data directories made tmta's, and every
C{hash:} or C{btree:} table they name read as C{lmdb:} instead, built
beside its source: Postfix's own C{.db} files, and its queue, are never
touched, so that giving the machine back to Postfix needs nothing
rebuilt.  What was made is listed in C{/etc/tmta/installed}, which the
uninstall reads; the configuration and the queue stay, since they may
hold mail.

Everything is written under C{--root} (C{/} by default), so that an
installation can be made, and tested, in a directory of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from typing import Dict, List, TextIO

from tmta.cli.admin.compat import COMPAT_LINKS, installCompat

#: The manifest of what an installation made, in its configuration
#: directory.
MANIFEST = "installed"

UNIT = """\
[Unit]
Description=tmta mail transfer agent
After=network-online.target
Wants=network-online.target
Conflicts=postfix.service

[Service]
Type=simple
ExecStart={twistd} -n --pidfile= --syslog tmta -c {config}
ExecReload=/bin/kill -HUP $MAINPID
KillMode=mixed
TimeoutStopSec=90

[Install]
WantedBy=multi-user.target
"""

_COMPILED = re.compile(r"\b(hash|btree):(/[^\s,]+)")


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def installSystem(root: str = "/", takeOver: bool = False, force: bool = False,
                  scripts: str = "", err: TextIO = sys.stderr) -> int:
    """
    Install tmta as the machine's MTA under C{root}.

    @param takeOver: copy C{/etc/postfix}'s configuration in.
    @param force: replace another MTA's C{sendmail} and friends.
    @param scripts: where tmta's commands are (by default beside
        C{tmta-sendmail} on C{PATH}).
    @return: the exit status.
    """
    from tmta.cli.admin.maps import buildMaps
    from tmta.config.loader import EMBEDDED_MASTER_CF, SYSTEM_CONFIG_DIRECTORY

    config = _under(root, SYSTEM_CONFIG_DIRECTORY)
    if os.path.exists(os.path.join(config, MANIFEST)):
        err.write(f"tmta: fatal: {config} is installed already (uninstall-system first)\n")
        return 1
    scripts = scripts or os.path.dirname(shutil.which("tmta-sendmail") or sys.argv[0])
    made: Dict[str, List[str]] = {"files": [], "links": [], "databases": []}
    os.makedirs(config, exist_ok=True)
    queue, data = "/var/spool/tmta", "/var/lib/tmta"
    settings = {"queue_directory": queue, "data_directory": data}
    postfix = _under(root, "/etc/postfix")
    if takeOver:
        if not os.path.isfile(os.path.join(postfix, "main.cf")):
            err.write(f"tmta: fatal: nothing to take over: no {postfix}/main.cf\n")
            return 1
        with open(os.path.join(postfix, "main.cf")) as f:
            main = f.read()
        tables = sorted(set(_COMPILED.findall(main)))
        aliasTables = {source for name, value in re.findall(r"^(\w+)\s*=(.*)$", main, re.M)
                       if name in ("alias_maps", "alias_database")
                       for _, source in _COMPILED.findall(value)}
        main = _COMPILED.sub(lambda m: f"lmdb:{m.group(2)}", main)
        main = _setParameters(main, settings)
        master = open(os.path.join(postfix, "master.cf")).read() \
            if os.path.isfile(os.path.join(postfix, "master.cf")) else EMBEDDED_MASTER_CF
    else:
        tables, aliasTables = [], set()
        main = _setParameters("# tmta main.cf (Postfix syntax)\n", settings)
        master = EMBEDDED_MASTER_CF
    for name, text in (("main.cf", main), ("master.cf", master)):
        path = os.path.join(config, name)
        if os.path.exists(path) and not force:
            err.write(f"tmta: fatal: {path} exists (--force replaces it)\n")
            return 1
        with open(path, "w") as f:
            f.write(text)
        made["files"].append(path)
    for directory in (queue, data):
        os.makedirs(_under(root, directory), mode=0o755, exist_ok=True)
    # The tables tmta reads as lmdb: files beside Postfix's sources.
    for kind, source in tables:
        path = _under(root, source)
        if os.path.isfile(path):
            # Alias files in postalias's format, the rest in postmap's.
            if buildMaps([f"lmdb:{path}"], err=err, aliases=source in aliasTables):
                return 1
            made["databases"].append(path + ".lmdb")
    prefix = _under(root, "/usr")
    if installCompat(prefix, force, scripts, err):
        return 1
    made["links"] = [os.path.join(prefix, relative) for relative, _ in COMPAT_LINKS]
    unit = _under(root, "/etc/systemd/system/tmta.service")
    os.makedirs(os.path.dirname(unit), exist_ok=True)
    twistd = os.path.join(scripts, "twistd") if os.path.exists(
        os.path.join(scripts, "twistd")) else (shutil.which("twistd") or "twistd")
    with open(unit, "w") as f:
        f.write(UNIT.format(twistd=twistd, config=SYSTEM_CONFIG_DIRECTORY))
    made["files"].append(unit)
    with open(os.path.join(config, MANIFEST), "w") as f:
        json.dump(made, f, indent=1)
    err.write(f"tmta: installed in {config}: start it with 'systemctl disable --now "
              "postfix; systemctl enable --now tmta' (or 'tmta start')\n")
    return 0


def uninstallSystem(root: str = "/", err: TextIO = sys.stderr) -> int:
    """
    Put the machine back as it was before L{installSystem}: the links
    and the other MTA's files restored, the unit and the databases made
    for Postfix's tables removed.  The configuration and the queue stay
    (they may hold mail); the manifest goes, so that installing again
    starts afresh.
    """
    from tmta.config.loader import SYSTEM_CONFIG_DIRECTORY

    config = _under(root, SYSTEM_CONFIG_DIRECTORY)
    manifest = os.path.join(config, MANIFEST)
    try:
        with open(manifest) as f:
            made = json.load(f)
    except FileNotFoundError:
        err.write(f"tmta: fatal: no installation in {config}\n")
        return 1
    for link in made.get("links", []):
        if os.path.islink(link):
            os.unlink(link)
        if os.path.lexists(link + ".pre-tmta"):
            os.replace(link + ".pre-tmta", link)
    for database in made.get("databases", []):
        for path in (database, database + "-lock"):
            if os.path.exists(path):
                os.unlink(path)
    unit = _under(root, "/etc/systemd/system/tmta.service")
    if os.path.exists(unit):
        os.unlink(unit)
    os.unlink(manifest)
    queue = _under(root, "/var/spool/tmta")
    err.write(f"tmta: uninstalled; {config} and {queue} are left as they are\n")
    return 0


def _setParameters(text: str, settings: Dict[str, str]) -> str:
    """
    C{text} (a main.cf) with each of C{settings} set: its line replaced
    where it has one, else added at the end.
    """
    for name, value in settings.items():
        line = f"{name} = {value}"
        text, count = re.subn(rf"^{re.escape(name)}\s*=.*(?:\n[ \t].*)*$", line, text,
                              flags=re.M)
        if not count:
            text = text.rstrip("\n") + f"\n{line}\n"
    return text


def addParser(commands) -> None:
    install = commands.add_parser(
        "install-system", help="set this machine up to run tmta as its MTA (/etc/tmta, "
                               "/var/spool/tmta, sendmail links, a systemd unit)")
    install.add_argument("--root", default="/", help="install under this directory")
    install.add_argument("--take-over", action="store_true",
                         help="copy /etc/postfix's main.cf and master.cf in")
    install.add_argument("--force", action="store_true",
                         help="replace another MTA's sendmail links (kept as NAME.pre-tmta)")
    install.set_defaults(run=run, verb="install", listOf=None)
    uninstall = commands.add_parser(
        "uninstall-system", help="put the machine back as it was before install-system")
    uninstall.add_argument("--root", default="/", help="the directory installed under")
    uninstall.set_defaults(run=run, verb="uninstall", listOf=None)


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if options.verb == "install":
        return installSystem(options.root, options.take_over, options.force)
    return uninstallSystem(options.root)
