"""
The C{twistd tmta} command.  Kept import-light: twistd loads every plugin
module to list its commands.
"""

from twisted.application.service import ServiceMaker

tmta = ServiceMaker(
    "tmta",
    "tap.tmta",
    "A mail transfer agent with Postfix's architecture (the master process).",
    "tmta",
)
