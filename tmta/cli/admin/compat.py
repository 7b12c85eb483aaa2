"""
C{tmta install-compat}: the links that make tmta's commands answer to
C{sendmail}, C{mailq} and C{newaliases}.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, TextIO

#: What install-compat links: the name other programs run, where they
#: look for it, and tmta's command behind it.
COMPAT_LINKS = (("sbin/sendmail", "tmta-sendmail"), ("bin/mailq", "tmta-mailq"),
                ("bin/newaliases", "tmta-newaliases"))


def installCompat(prefix: str, force: bool = False, scripts: Optional[str] = None,
                  err: TextIO = sys.stderr) -> int:
    """
    Link C{sendmail}, C{mailq} and C{newaliases} under C{prefix} to tmta's commands, so
    that cron and mail programs post through tmta.  Another MTA's files
    are not replaced unless C{force}, and then kept beside as
    C{NAME.pre-tmta}.
    """
    import shutil

    if scripts is None:
        found = shutil.which("tmta-sendmail")
        scripts = os.path.dirname(found) if found else os.path.dirname(sys.argv[0])
    planned = []
    for relative, command in COMPAT_LINKS:
        target = os.path.abspath(os.path.join(scripts, command))
        if not os.access(target, os.X_OK):
            err.write(f"tmta: fatal: {target} is not installed\n")
            return 1
        link = os.path.join(prefix, relative)
        if os.path.lexists(link):
            if os.path.islink(link) and os.path.realpath(link) == os.path.realpath(target):
                continue
            if not force:
                err.write(f"tmta: fatal: {link} exists and is another MTA's, not tmta's; "
                          "--force replaces it, keeping it as "
                          f"{os.path.basename(link)}.pre-tmta\n")
                return 1
        planned.append((link, target))
    for link, target in planned:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if os.path.lexists(link):
            os.replace(link, link + ".pre-tmta")
        os.symlink(target, link)
        err.write(f"tmta: {link} -> {target}\n")
    return 0




def addParser(commands) -> None:
    parser = commands.add_parser(
        "install-compat", help="link sendmail, mailq and newaliases to tmta's commands")
    parser.add_argument("--prefix", default="/usr", help="where they go (default /usr)")
    parser.add_argument("--force", action="store_true",
                        help="replace another MTA's files (kept as NAME.pre-tmta)")
    parser.set_defaults(run=run, listOf=None)


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    return installCompat(options.prefix, options.force)
