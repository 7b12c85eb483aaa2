"""
Which milters to talk to, and how: a milter list (C{smtpd_milters},
C{non_smtpd_milters}) and the C{milter_*} parameters, as Postfix reads
them -- including a list item's own settings, C{{ inet:127.0.0.1:8891,
default_action=accept, command_timeout=10s }}.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Dict, List, Optional, Tuple

from tmta.config import ConfigError
from tmta.config.maincf import MainConfig, parseTime, splitList

#: What C{milter_default_action} may say.
DEFAULT_ACTIONS = ("accept", "reject", "tempfail", "quarantine")

#: The protocol versions tmta speaks (C{milter_protocol}).
PROTOCOL_VERSIONS = (2, 3, 4, 6)

#: The parameters naming the macros sent with each event, by the event's
#: command code.
MACRO_PARAMETERS = {
    b"C": "milter_connect_macros",
    b"H": "milter_helo_macros",
    b"M": "milter_mail_macros",
    b"R": "milter_rcpt_macros",
    b"T": "milter_data_macros",
    b"N": "milter_end_of_header_macros",
    b"E": "milter_end_of_data_macros",
    b"U": "milter_unknown_command_macros",
}


@dataclass(frozen=True)
class MilterSettings:
    """
    One milter: where it listens and how it is talked to.

    @ivar name: the list item's address, as written (C{inet:host:port},
        C{unix:/path}).
    @ivar family: C{inet} or C{unix}.
    @ivar host: the host of an C{inet} milter.
    @ivar port: its port.
    @ivar path: the socket of a C{unix} milter.
    """

    name: str
    family: str
    host: str = ""
    port: int = 0
    path: str = ""
    connectTimeout: float = 30.0
    commandTimeout: float = 30.0
    contentTimeout: float = 300.0
    defaultAction: str = "tempfail"
    version: int = 6
    #: C{no_header_reply} in C{milter_protocol}: headers are not answered.
    noHeaderReply: bool = False
    #: The macros sent with each event, by its command code.
    macros: Tuple[Tuple[bytes, Tuple[str, ...]], ...] = ()
    #: C{milter_macro_defaults}: values for macros the conversation
    #: gives none, by name without braces.
    macroDefaults: Dict[str, str] = field(default_factory=dict, hash=False)

    def macrosFor(self, event: bytes) -> Tuple[str, ...]:
        for code, names in self.macros:
            if code == event:
                return names
        return ()


def _protocol(value: str) -> Tuple[int, bool]:
    words = value.replace(",", " ").split()
    version, noHeaderReply = 6, False
    for word in words:
        if word == "no_header_reply":
            noHeaderReply = True
        elif word.isdigit() and int(word) in PROTOCOL_VERSIONS:
            version = int(word)
        else:
            raise ValueError(f"unsupported milter protocol {word!r}")
    return version, noHeaderReply


def _address(item: str, queueDirectory: str) -> Dict[str, object]:
    kind, _, rest = item.partition(":")
    kind = kind.lower()
    if kind in ("unix", "local") and rest:
        path = rest if rest.startswith("/") else os.path.join(queueDirectory, rest)
        return {"family": "unix", "path": path}
    if kind in ("inet", "inet6") and rest:
        host, _, port = rest.rpartition(":")
        if not host:
            # inet:port: the local host, as Postfix reads it.
            host, port = "localhost", rest
        host = host.strip("[]")
        if port.isdigit() and 0 < int(port) < 65536:
            return {"family": "inet", "host": host, "port": int(port)}
    raise ValueError(f"bad milter address {item!r} (inet:host:port or unix:/path)")


def defaultSettings(config: MainConfig) -> MilterSettings:
    """
    The C{milter_*} parameters, for a milter whose list item sets nothing
    of its own.

    @raise ConfigError: a value that cannot be used.
    """
    try:
        version, noHeaderReply = _protocol(config.get("milter_protocol"))
        action = config.get("milter_default_action").strip().lower()
        if action not in DEFAULT_ACTIONS:
            raise ValueError(f"milter_default_action: {action!r} is not one of "
                             f"{', '.join(DEFAULT_ACTIONS)}")
        # Macro names keep their braces ({daemon_name}): they are sent so.
        macros = tuple((code, tuple(config.get(name).replace(",", " ").split()))
                       for code, name in MACRO_PARAMETERS.items())
        return MilterSettings(
            "", "", macroDefaults=macroDefaults(config.get("milter_macro_defaults")),
            connectTimeout=config.getTime("milter_connect_timeout"),
            commandTimeout=config.getTime("milter_command_timeout"),
            contentTimeout=config.getTime("milter_content_timeout"),
            defaultAction=action, version=version, noHeaderReply=noHeaderReply,
            macros=macros)
    except ValueError as e:
        raise ConfigError(config.path, None, str(e))


def macroDefaults(value: str) -> Dict[str, str]:
    """
    Parse C{milter_macro_defaults}: C{name=value} pairs, or C{{name =
    value}} when the value holds a comma or white space; a name may be
    written with its braces (C{{auth_type}}) or without.

    @raise ValueError: an item that is not C{name=value}.
    """
    defaults = {}
    for item in splitList(value):
        name, equals, macro = item.partition("=")
        name = name.strip().strip("{}").strip()
        if not equals or not name:
            raise ValueError(f"milter_macro_defaults: {item!r} is not name=value")
        defaults[name] = macro.strip()
    return defaults


def milterList(config: MainConfig, parameter: str) -> List[MilterSettings]:
    """
    The milters a list parameter names, in order, each with its settings.

    @raise ConfigError: an item that cannot be used (a bad address, an
        unknown setting or value), naming the parameter.
    """
    defaults = defaultSettings(config)
    queueDirectory = config.get("queue_directory")
    milters = []
    for item in splitList(config.get(parameter)):
        try:
            milters.append(_item(item, defaults, queueDirectory))
        except ValueError as e:
            raise ConfigError(config.path, config.lineOf(parameter), f"{parameter}: {e}")
    return milters


def _item(item: str, defaults: MilterSettings, queueDirectory: str) -> MilterSettings:
    settings: Dict[str, object] = {}
    # A braced item ({ inet:host:port, name=value, ... }) comes from
    # splitList without its braces.
    parts = splitList(item)
    if not parts:
        raise ValueError("empty milter item")
    item, options = parts[0], parts[1:]
    if options:
        for option in options:
            key, equals, value = option.partition("=")
            key, value = key.strip(), value.strip()
            if not equals:
                raise ValueError(f"{option!r}: a milter setting is name=value")
            if key in ("connect_timeout", "command_timeout", "content_timeout"):
                settings[_TIMEOUTS[key]] = parseTime(value, "s")
            elif key == "default_action":
                if value.lower() not in DEFAULT_ACTIONS:
                    raise ValueError(f"default_action {value!r} is not one of "
                                     f"{', '.join(DEFAULT_ACTIONS)}")
                settings["defaultAction"] = value.lower()
            elif key == "protocol":
                settings["version"], settings["noHeaderReply"] = _protocol(value)
            else:
                raise ValueError(f"unknown milter setting {key!r}")
    settings.update(_address(item, queueDirectory))
    return replace(defaults, name=item, **settings)  # type: ignore[arg-type]


_TIMEOUTS = {"connect_timeout": "connectTimeout", "command_timeout": "commandTimeout",
             "content_timeout": "contentTimeout"}


class MilterMaps:
    """
    C{smtpd_milter_maps}: the milters of an SMTP session by the client's
    address (a C{cidr:} table, say), instead of C{smtpd_milters}; the
    value is a milter list as C{smtpd_milters} takes it, or C{DISABLE}.
    """

    def __init__(self, config: MainConfig) -> None:
        from tmta.tables import openTables

        self.config = config
        self.tables = openTables(config.get("smtpd_milter_maps"))
        self._lists: Dict[str, List[MilterSettings]] = {}

    @cached_property
    def remote(self) -> bool:
        """
        Whether a table waits on another server (L{lookup} is then asked
        in a lookup thread).
        """
        from tmta.tables.remote import isRemote

        return isRemote(self.tables)

    def lookup(self, address: str) -> Optional[List[MilterSettings]]:
        """
        The milters for a client at C{address}: C{None} when the tables
        do not name it (C{smtpd_milters} then applies), an empty list for
        C{DISABLE}.

        @raise tmta.tables.TableLookupError: a table could not be read.
        @raise ConfigError: the value is no milter list.
        """
        from tmta.tables import lookupAny

        value = lookupAny(self.tables, address)
        if value is None:
            return None
        value = value.strip()
        if value.upper() == "DISABLE":
            return []
        if value not in self._lists:
            self._lists[value] = milterList(
                self.config.withOverrides({"smtpd_milters": value}), "smtpd_milters")
        return self._lists[value]
