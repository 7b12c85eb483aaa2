"""
C{twistd tmta}: parse the options, build the master service.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python import usage

from tmta.config import ConfigError, configDirectoryFromEnvironment, loadConfiguration
from tmta.config.loader import defaultDataDirectory, prepareEmbedded

log = Logger()


class Options(usage.Options):
    synopsis = "[-c CONFIG_DIR | -d DATA_DIR] [-o name=value ...]"
    longdesc = (
        "Run the tmta master.  With -c (or MAIL_CONFIG) it reads main.cf and "
        "master.cf from that directory; with neither it runs the embedded "
        "default under DATA_DIR (default ~/.tmta): loopback only, no "
        "relaying, mail delivered into a Maildir per name."
    )
    optParameters = [
        ["config", "c", None, "configuration directory with main.cf and master.cf"],
        ["data-dir", "d", None, "data directory of the embedded default (default ~/.tmta)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["overrides"] = {}

    def opt_o(self, assignment: str) -> None:
        """
        Override a main.cf parameter: -o name=value (repeatable).
        """
        name, eq, value = assignment.partition("=")
        if not eq or not name.strip():
            raise usage.UsageError(f"-o wants name=value, not {assignment!r}")
        self["overrides"][name.strip()] = value.strip()

    def postOptions(self) -> None:
        if self["config"] and self["data-dir"]:
            raise usage.UsageError("-c and -d exclude each other")


def makeService(options: Options):
    from twisted.internet import reactor

    from tmta.master.service import MasterService

    directory = options["config"] or (
        None if options["data-dir"] else configDirectoryFromEnvironment()
    )
    embedded = directory is None
    if embedded:
        data = options["data-dir"] or defaultDataDirectory()
        try:
            directory = prepareEmbedded(data)
        except OSError as e:
            raise SystemExit(f"tmta: fatal: cannot create data directory {data}: {e.strerror}")
        log.info(
            "embedded default: everything is under {data} (main.cf and master.cf to "
            "edit, queue/, mail/ with a Maildir per recipient)",
            data=directory,
        )

    def load():
        return loadConfiguration(directory, options["overrides"], embedded=embedded)

    try:
        return MasterService(reactor, load, options["overrides"])
    except ConfigError as e:
        raise SystemExit(f"tmta: fatal: {e}")
