"""
C{tmta}: the operator's command, with subcommands in the manner of
Postfix's C{postconf}, C{postqueue}, C{postsuper} and C{postmap}: each
subcommand is a module here that adds its parser and runs it.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from tmta.cli.admin import (
    compat,
    config,
    dkim,
    dmarc,
    maps,
    qshape,
    queue,
    service,
    system,
    tlsrpt,
    users,
)
from tmta.cli.admin.compat import installCompat
from tmta.cli.admin.config import showConfig
from tmta.cli.admin.maps import buildAliases, buildMaps, queryMap
from tmta.cli.admin.queue import flushQueue, listQueue
from tmta.config import ConfigError

#: The subcommands, in the order C{tmta --help} lists them.
SUBCOMMANDS = (service, config, queue, qshape, maps, users, dkim, dmarc, tlsrpt, compat,
               system)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="tmta", description="tmta administration")
    parser.add_argument(
        "-c", "--config",
        help="configuration directory (default: $MAIL_CONFIG, else /etc/tmta, else ~/.tmta)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for subcommand in SUBCOMMANDS:
        subcommand.addParser(commands)
    # Options may come between a subcommand's words ("user add
    # --password-stdin NAME"): argparse ends a list positional at the
    # first option, so the words after it are the list's too.
    options, extras = parser.parse_known_args(argv)
    if extras:
        if any(word.startswith("-") for word in extras) or not options.listOf:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        setattr(options, options.listOf, getattr(options, options.listOf) + extras)
    try:
        return options.run(options, parser)
    except ConfigError as e:
        sys.stderr.write(f"tmta: fatal: {e}\n")
        return 1


__all__ = ["buildAliases", "buildMaps", "flushQueue", "installCompat", "listQueue", "main",
           "queryMap", "showConfig"]
