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
