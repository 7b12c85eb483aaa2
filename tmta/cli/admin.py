"""
C{tmta}: the operator's command, with subcommands in the manner of
Postfix's C{postconf}, C{postqueue} and C{postsuper}.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, TextIO

from tmta.config import ConfigError, Configuration, MainConfig, configDirectoryFromEnvironment
from tmta.config.loader import defaultDataDirectory, loadConfiguration, prepareEmbedded


def _configuration(options: argparse.Namespace) -> Configuration:
    directory = options.config or configDirectoryFromEnvironment()
    # Like postconf, show what is written even where twistd tmta would
    # refuse to start with it.
    if directory:
        return loadConfiguration(directory, check=False)
    return loadConfiguration(prepareEmbedded(defaultDataDirectory()), embedded=True,
                             check=False)


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


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tmta", description="tmta administration")
    parser.add_argument(
        "-c", "--config", help="configuration directory (default: $MAIL_CONFIG, else ~/.tmta)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="show parameters or services (postconf)")
    config.add_argument("-n", action="store_true", help="only parameters set in main.cf")
    config.add_argument("-M", action="store_true", help="show master.cf services")
    config.add_argument("-d", action="store_true", help="show default values")
    config.add_argument("-x", action="store_true", help="expand $name references")
    config.add_argument("--unimplemented", action="store_true",
                        help="list parameters set that tmta does not act on yet")
    # Like postconf, -c may also follow the subcommand.
    config.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    config.add_argument("names", nargs="*")
    options = parser.parse_args(argv)
    try:
        configuration = _configuration(options)
        if options.command == "config":
            return showConfig(
                configuration,
                options.names,
                nonDefault=options.n,
                services=options.M,
                defaults=options.d,
                expand=options.x,
                unimplemented=options.unimplemented,
            )
    except ConfigError as e:
        sys.stderr.write(f"tmta: fatal: {e}\n")
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
