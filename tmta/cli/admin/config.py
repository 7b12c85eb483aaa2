"""
C{tmta config}: parameters and services, as Postfix's C{postconf}
shows them.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, TextIO

from tmta.cli.admin.common import configuration
from tmta.config import Configuration, MainConfig


def showConfig(
    configuration: Configuration,
    names: List[str],
    nonDefault: bool = False,
    services: bool = False,
    defaults: bool = False,
    expand: bool = False,
    unimplemented: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """
    Print parameters as C{name = value} lines, or the services table, as
    C{postconf} does.

    @return: the exit status: 1 when a named parameter is unknown.
    """
    if services:
        wanted = set(names)
        for entry in configuration.services:
            if not wanted or entry.service in wanted or f"{entry.service}/{entry.type}" in wanted:
                out.write(entry.format() + "\n")
        return 0
    main = configuration.main
    status = 0
    if unimplemented:
        for name, line in main.unimplementedParameters():
            where = f"{main.path}, line {line}" if line else "command line"
            out.write(f"{name} = {main.raw(name)}  # {where}: not implemented yet\n")
        return 0
    if names:
        selected = names
    elif nonDefault:
        selected = sorted(main.explicit)
    else:
        selected = main.names()
    defaultsOnly = MainConfig({"config_directory": main.get("config_directory")})
    for name in selected:
        if not main.isKnown(name) and name not in main.explicit:
            sys.stderr.write(f"tmta: warning: {name}: unknown parameter\n")
            status = 1
            continue
        if defaults:
            value = main.defaultOf(name) or ""
            if expand:
                value = defaultsOnly.get(name)
        elif expand:
            value = main.get(name)
        else:
            value = main.raw(name) or ""
        out.write(f"{name} = {value}".rstrip() + "\n" if value else f"{name} =\n")
    return status




def addParser(commands) -> None:
    parser = commands.add_parser("config", help="show parameters or services (postconf)")
    parser.add_argument("-n", action="store_true", help="only parameters set in main.cf")
    parser.add_argument("-M", action="store_true", help="show master.cf services")
    parser.add_argument("-d", action="store_true", help="show default values")
    parser.add_argument("-x", action="store_true", help="expand $name references")
    parser.add_argument("--unimplemented", action="store_true",
                        help="list parameters set that tmta does not act on yet")
    # Like postconf, -c may also follow the subcommand.
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    parser.add_argument("names", nargs="*")
    parser.set_defaults(run=run, listOf="names")


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return showConfig(
        configuration(options),
        options.names,
        nonDefault=options.n,
        services=options.M,
        defaults=options.d,
        expand=options.x,
        unimplemented=options.unimplemented,
    )
