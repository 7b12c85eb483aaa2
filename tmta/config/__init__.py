"""
Configuration: C{main.cf} and C{master.cf} with Postfix's syntax, names
and defaults, and the embedded default used when there is none.
"""

from .loader import Configuration, configDirectoryFromEnvironment, loadConfiguration
from .maincf import MainConfig, parseBool, parseMainCf, parseTime, splitList
from .mastercf import MasterEntry, parseInetAddress, parseMasterCf, readMasterCf
from .parser import ConfigError

__all__ = [
    "ConfigError",
    "Configuration",
    "MainConfig",
    "MasterEntry",
    "configDirectoryFromEnvironment",
    "loadConfiguration",
    "parseBool",
    "parseInetAddress",
    "parseMainCf",
    "parseMasterCf",
    "parseTime",
    "readMasterCf",
    "splitList",
]
