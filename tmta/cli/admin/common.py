"""
What the subcommands share: the configuration they act on.
"""

from __future__ import annotations

import argparse

from tmta.config import Configuration
from tmta.config.loader import commandConfiguration


def configuration(options: argparse.Namespace) -> Configuration:
    """
    The configuration the subcommand acts on: C{-c}, C{MAIL_CONFIG}, the
    system installation, or the user's own embedded default when it
    exists (a subcommand never makes one).
    """
    return commandConfiguration(options.config)


def takeHistory(path: str, dryRun: bool):
    """
    The records of a history file the mail system appends to (DMARC's,
    TLS reporting's), taken away from it so that what is appended
    meanwhile waits for the next run; a run that failed left its part,
    which comes first.

    @return: C{(records, done)}: call C{done()} once they are sent, to
        remove them.  With C{dryRun}, the file is only read.
    """
    import os

    from tmta.common.history import readRecords

    sending = path + ".sending"
    if not dryRun and os.path.exists(path):
        if os.path.exists(sending):
            with open(path, "rb") as new, open(sending, "ab") as old:
                old.write(new.read())
            os.unlink(path)
        else:
            os.rename(path, sending)
    source = path if dryRun else sending
    try:
        with open(source, encoding="utf-8", errors="replace") as f:
            records = readRecords(f)
    except FileNotFoundError:
        records = []

    def done() -> None:
        if not dryRun and os.path.exists(sending):
            os.unlink(sending)

    return records, done

