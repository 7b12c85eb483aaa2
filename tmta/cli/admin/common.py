"""
What the subcommands share: the configuration they act on.
"""

from __future__ import annotations

import argparse

from tmta.config import Configuration, configDirectoryFromEnvironment
from tmta.config.loader import defaultDataDirectory, loadConfiguration, prepareEmbedded


def configuration(options: argparse.Namespace) -> Configuration:
    directory = options.config or configDirectoryFromEnvironment()
    # Like postconf, show what is written even where twistd tmta would
    # refuse to start with it.
    if directory:
        return loadConfiguration(directory, check=False)
    return loadConfiguration(prepareEmbedded(defaultDataDirectory()), embedded=True,
                             check=False)
