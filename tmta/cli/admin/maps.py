"""
C{tmta map}: build a table's database or look keys up, as Postfix's
C{postmap} does; and the aliases' databases, as C{newaliases}.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, TextIO

from tmta.cli.admin.common import configuration
from tmta.config import Configuration


def queryMap(spec: str, keys: List[str], out: TextIO = sys.stdout,
             err: TextIO = sys.stderr, allWithKeys: bool = False) -> int:
    """
    Look keys up in a table, as C{postmap -q} does: each value found is
    printed (with its key when there are several keys, or with
    C{allWithKeys}, as C{postmap -q -} prints them); the exit status is
    1 when none is found.
    """
    from tmta.tables import TableError, TableLookupError, openTable

    try:
        table = openTable(spec)
    except TableError as e:
        err.write(f"tmta: fatal: {e}\n")
        return 2
    found = False
    for key in keys:
        try:
            value = table.get(key)
        except TableLookupError as e:
            # A missing or foreign database: one line, as postmap says it.
            err.write(f"tmta: fatal: {e}\n")
            return 2
        if value is not None:
            found = True
            out.write(f"{key}\t{value}\n" if len(keys) > 1 or allWithKeys else f"{value}\n")
    return 0 if found else 1


def buildMaps(specs: List[str], defaultType: str = "hash", err: TextIO = sys.stderr,
              aliases: bool = False) -> int:
    """
    Build the database of each table source, as C{postmap} (or, with
    C{aliases}, C{postalias}) does: C{FILE} or C{type:FILE}, the type
    defaulting to C{default_database_type}.  Each database is replaced
    whole, so lookups never see a partly built table.  The lines Postfix
    warns about are warned about, each with its file and line.
    """
    from tmta.tables import parseTextTable
    from tmta.tables.compiled import SUFFIXES, build

    status = 0
    for spec in specs:
        kind, sep, source = spec.partition(":")
        if not sep or "/" in kind:
            kind, source = defaultType, spec
        if kind not in SUFFIXES:
            err.write(f"tmta: fatal: {spec}: tmta builds databases only for "
                      f"{', '.join(sorted(SUFFIXES))} tables\n")
            status = 1
            continue
        try:
            with open(source, encoding="utf-8", errors="surrogateescape") as f:
                warnings: List[str] = []
                table = parseTextTable(f.read().splitlines(), aliases, source, warnings)
            for warning in warnings:
                err.write(f"tmta: warning: {warning}\n")
            build(kind, source, table)
        except OSError as e:
            err.write(f"tmta: fatal: {spec}: {e.strerror or e}\n")
            status = 1
        except ValueError as e:
            err.write(f"tmta: fatal: {spec}: {e}\n")
            status = 1
    return status


def buildAliases(configuration: Configuration, err: TextIO = sys.stderr) -> int:
    """
    C{tmta-newaliases}: build every table in C{alias_database}.  Types
    with nothing to build (C{texthash:}, C{regexp:}, ...) are skipped,
    as newaliases does.
    """
    from tmta.config import splitList
    from tmta.tables.compiled import SUFFIXES

    main = configuration.main
    specs = [spec for spec in splitList(main.get("alias_database"))
             if spec.partition(":")[0] in SUFFIXES or ":" not in spec]
    return buildMaps(specs, main.get("default_database_type"), err, aliases=True)






def addParser(commands) -> None:
    parser = commands.add_parser(
        "map", help="build a table's database (postmap FILE) or look keys up (postmap -q)")
    parser.add_argument("action", choices=["query", "build"])
    parser.add_argument("table", help="type:name, as in main.cf (build: [type:]FILE)")
    parser.add_argument("keys", nargs="*", metavar="KEY",
                        help="query: the keys (- reads them from standard input); "
                             "build: more files")
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    parser.set_defaults(run=run, listOf="keys")


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if options.action == "query":
        if not options.keys:
            parser.error("map query: name the keys, or - to read them from standard input")
        keys = options.keys
        if keys == ["-"]:
            # As postmap -q -: one key a line, each found one printed
            # with its key.
            keys = [line.rstrip("\r\n") for line in sys.stdin]
            return queryMap(options.table, keys, allWithKeys=True)
        return queryMap(options.table, keys)
    return buildMaps([options.table] + options.keys,
                     configuration(options).main.get("default_database_type"))
