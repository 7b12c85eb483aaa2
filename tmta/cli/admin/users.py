"""
C{tmta user}: the SMTP AUTH users of C{smtpd_sasl_type = tmta}.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, TextIO

from tmta.cli.admin.common import configuration
from tmta.config import Configuration


def manageUsers(configuration: Configuration, action: str, names: List[str],
                passwordStdin: bool = False, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr) -> int:
    """
    C{tmta user}: add, change (passwd), remove or list the users of
    tmta's own SASL password table (C{smtpd_sasl_type = tmta}).  A
    password is read from standard input with C{--password-stdin}, else
    asked for twice at the terminal; it never appears on a command line.
    """
    import getpass

    from tmta.sasl import passwordFile
    from tmta.sasl.passwords import PasswordTableError, changeTable, listUsers

    main = configuration.main
    path = passwordFile(main)
    if action == "list":
        for name in listUsers(path):
            out.write(name + "\n")
        return 0
    group = None
    if os.geteuid() == 0:
        from tmta.mail.accounts import mailOwner

        group = mailOwner(main, configuration.embedded).pw_gid
    for name in names:
        password = None
        if action in ("add", "passwd"):
            if passwordStdin:
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = getpass.getpass(f"Password for {name}: ")
                if getpass.getpass("Again: ") != password:
                    err.write("tmta: fatal: the passwords differ\n")
                    return 1
            if not password:
                err.write("tmta: fatal: empty password\n")
                return 1
        try:
            changeTable(path, name, password, group=group,
                        mustExist=action != "add")
        except (PasswordTableError, OSError) as e:
            err.write(f"tmta: fatal: {path}: {e}\n")
            return 1
        done = {"add": "added", "passwd": "changed", "remove": "removed"}[action]
        err.write(f"tmta: {path}: {name} {done}\n")
    return 0




def addParser(commands) -> None:
    parser = commands.add_parser(
        "user", help="add, change, remove or list SMTP AUTH users (smtpd_sasl_type = tmta)")
    parser.add_argument("action", choices=["add", "passwd", "remove", "list"])
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input, one line per name")
    parser.add_argument("-c", "--config", default=argparse.SUPPRESS,
                        help="configuration directory")
    parser.set_defaults(run=run, listOf="names")


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if options.action != "list" and not options.names:
        parser.error(f"user {options.action}: name the user(s)")
    return manageUsers(configuration(options), options.action, options.names,
                       options.password_stdin)
