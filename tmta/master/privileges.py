"""
Giving up root.

A worker is started as root when the master is root, builds what it
needs, and then becomes C{mail_owner}.  Everything it will import must be
imported before that: on machines where Python lives in a private home
directory, an unprivileged process cannot read the standard library, so a
lazy import after the switch fails.
"""

from __future__ import annotations

import importlib

from tmta.logging import Logger

log = Logger()

# Modules the standard library and Twisted import lazily on first use.
_LAZY_MODULES = (
    "encodings.idna",
    "encodings.ascii",
    "encodings.latin_1",
    "encodings.utf_8",
    "encodings.charmap",
    "stringprep",
    "unicodedata",
    "email.parser",
    "email.feedparser",
    "email.message",
    "email.policy",
    "email.utils",
    "email.header",
    "email._header_value_parser",
    "email.headerregistry",
    "email.charset",
    "email.base64mime",
    "email.quoprimime",
    "email.encoders",
    "email.iterators",
    "email.generator",
    "calendar",
    "mailbox",
    "fcntl",
    "errno",
    "uuid",
    "hashlib",
    "twisted.internet.threads",
    "twisted.python.threadpool",
    "twisted._threads",
    "twisted.internet._resolver",
    "twisted.internet.endpoints",
    "twisted.internet.unix",
    "twisted.internet.tcp",
    "twisted.internet.address",
    "twisted.python.failure",
    "twisted.logger._flatten",
    "twisted.protocols.amp",
)


def preloadModules() -> None:
    """
    Import what the standard library and Twisted would import lazily
    later, while this process can still read them.
    """
    for name in _LAZY_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
