"""
C{main.cf}: the parameters, their defaults and their typed values.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .defaults import (
    DEFAULTS,
    IMPLEMENTED,
    POSTFIX_DEFAULTS,
    RAW_PARAMETERS,
    computedDefaults,
    defaultDomain,
)
from .expand import ExpansionError, expand
from .parser import ConfigError, logicalLines, readLines

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
#: A parameter named in a value: $name, ${name...} or $(name...).
_REFERENCE = re.compile(r"\$[{(]?([A-Za-z0-9_]+)")
_LIST_SEPARATORS = re.compile(r"[\s,]+")
# Postfix reads only the first letter after the number as the unit:
# postscreen_dnsbl_max_ttl's default makes "5mh" of postscreen_dnsbl_ttl
# = 5m, and means five minutes.
_TIME_VALUE = re.compile(r"^(\d+(?:\.\d+)?)(?:([smhdw])\S*)?$")
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Parameters every service has, which master.cf may refer to.
_SERVICE_PARAMETERS = ("service_name", "process_name")


def parseAssignment(
    text: str, path: Optional[str], line: Optional[int]
) -> Tuple[str, str]:
    """
    Split C{name = value}, as written in main.cf or after C{-o}.

    @raise ConfigError: there is no C{=} or the name is not a parameter
        name.
    """
    name, eq, value = text.partition("=")
    name = name.strip()
    if not eq:
        raise ConfigError(path, line, f"missing '=' after {name!r}")
    if not _NAME.match(name):
        raise ConfigError(path, line, f"bad parameter name {name!r}")
    return name, value.strip()


def parseMainCf(
    lines: Iterable[str], path: Optional[str] = None, warnings: Optional[List[str]] = None
) -> Tuple[Dict[str, str], Dict[str, int]]:
    """
    Parse the text of a main.cf file.

    @param warnings: where to note what Postfix warns about and skips (a
        first line that starts with white space, a name that is not a
        parameter name); without it those are errors.
    @return: the parameters as written (later lines win) and the line on
        which each was set.
    @raise ConfigError: a line is not a C{name = value} assignment.
    """
    params: Dict[str, str] = {}
    where: Dict[str, int] = {}
    for number, text in logicalLines(lines, path, warnings):
        if warnings is not None:
            name = text.partition("=")[0].strip()
            if "=" in text and name and not _NAME.match(name):
                warnings.append(f"{path}, line {number}: {name!r} is not a parameter name: "
                                "ignored")
                continue
        name, value = parseAssignment(text, path, number)
        params[name] = value
        where[name] = number
    return params, where


def splitList(value: str) -> List[str]:
    """
    Split a Postfix list value: items separated by commas and/or white
    space.  Text in C{{ }} belongs to one item with its spaces and commas
    (C{inline:{ a=1, b=2 }}); an item that is all braced loses its
    braces and the white space inside them (C{{ check_policy_service
    inet:127.0.0.1:10023 }}).
    """
    if "{" not in value:
        return [item for item in _LIST_SEPARATORS.split(value) if item]
    items: List[str] = []
    current: List[str] = []
    depth = 0
    for c in value:
        if depth == 0 and (c == "," or c.isspace()):
            if current:
                items.append("".join(current))
                current = []
            continue
        if c == "{":
            depth += 1
        elif c == "}" and depth:
            depth -= 1
        current.append(c)
    if current:
        items.append("".join(current))
    return [item[1:-1].strip() if item.startswith("{") and item.endswith("}") else item
            for item in items]


def parseTime(value: str, defaultUnit: str = "s") -> float:
    """
    Parse a Postfix time value such as C{100s}, C{5d} or C{300}; what
    follows the unit's letter is ignored, as Postfix ignores it.

    @return: seconds.
    @raise ValueError: not a time value.
    """
    value = value.strip()
    match = _TIME_VALUE.match(value)
    if not match:
        raise ValueError(f"bad time value {value!r}")
    number, unit = match.groups()
    return float(number) * _TIME_UNITS[unit or defaultUnit]


_interfaceNetworks: Dict[str, str] = {}


def _networksFor(style: str) -> str:
    """
    The default C{mynetworks} for C{style}, from this machine's
    interfaces (read once per process).
    """
    from .defaults import interfaceAddresses, networksByStyle

    if style not in _interfaceNetworks:
        _interfaceNetworks[style] = networksByStyle(style, interfaceAddresses())
    return _interfaceNetworks[style]


def parseBool(value: str) -> bool:
    """
    Parse a Postfix boolean (C{yes} or C{no}).

    @raise ValueError: neither.
    """
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "y", "1"):
        return True
    if lowered in ("no", "false", "n", "0"):
        return False
    raise ValueError(f"bad boolean value {value!r}")


class MainConfig:
    """
    The effective parameters: defaults, then main.cf, then overrides
    (command-line C{-o} or a master.cf service's C{-o}).

    Values are stored as written and expanded when read, so that a
    service's C{-o} override of one parameter is seen by every parameter
    that refers to it.

    @ivar path: the main.cf this came from, or C{None}.
    @ivar explicit: the parameters set in main.cf or by an override.
    """

    def __init__(
        self,
        explicit: Optional[Mapping[str, str]] = None,
        path: Optional[str] = None,
        defaults: Optional[Mapping[str, str]] = None,
        lines: Optional[Mapping[str, int]] = None,
    ) -> None:
        self.path = path
        self.explicit: Dict[str, str] = dict(explicit or {})
        self._lines = dict(lines or {})
        if defaults is None:
            defaults = dict(POSTFIX_DEFAULTS)
            defaults.update(DEFAULTS)
            defaults.update(computedDefaults())
        self._defaults = dict(defaults)
        self._cache: Dict[str, str] = {}
        #: What reading main.cf warned about (lines Postfix skips).
        self.parseWarnings: List[str] = []

    @classmethod
    def fromFile(
        cls, path: str, overrides: Optional[Mapping[str, str]] = None
    ) -> "MainConfig":
        """
        Read main.cf at C{path}; a missing file means all defaults.

        @raise ConfigError: a syntax error, naming file and line.
        """
        try:
            lines = readLines(path)
        except FileNotFoundError:
            lines = []
        except OSError as e:
            raise ConfigError(path, None, f"cannot read: {e.strerror}")
        return cls.fromLines(lines, path, overrides)

    @classmethod
    def fromLines(cls, lines: List[str], path: str,
                  overrides: Optional[Mapping[str, str]] = None) -> "MainConfig":
        """
        Read main.cf from its lines (those of the file at C{path}).

        @raise ConfigError: a syntax error, naming file and line.
        """
        warnings: List[str] = []
        params, where = parseMainCf(lines, path, warnings)
        params.update(overrides or {})
        config = cls(params, path=path, lines=where)
        config.parseWarnings = warnings
        return config

    def withOverrides(self, overrides: Mapping[str, str]) -> "MainConfig":
        """
        A copy of this configuration with C{overrides} set on top.
        """
        if not overrides:
            return self
        explicit = dict(self.explicit)
        explicit.update(overrides)
        return MainConfig(explicit, self.path, self._defaults, self._lines)

    def setDefault(self, name: str, value: str) -> None:
        """
        Set the default of C{name}, for values known only at run time
        (the configuration directory itself).
        """
        self._defaults[name] = value
        self._cache.clear()

    def isExplicit(self, name: str) -> bool:
        """
        Whether C{name} is set in main.cf or by an override, rather than
        left at its default.
        """
        return name in self.explicit

    def lineOf(self, name: str) -> Optional[int]:
        """
        The main.cf line that set C{name}, if main.cf set it.
        """
        return self._lines.get(name)

    def isKnown(self, name: str) -> bool:
        """
        Whether C{name} is a parameter of Postfix's or tmta's.
        """
        return name in self._defaults or name in _SERVICE_PARAMETERS or name == "mynetworks"

    def isImplemented(self, name: str) -> bool:
        """
        Whether tmta acts on parameter C{name}.
        """
        return name in IMPLEMENTED or name in _SERVICE_PARAMETERS

    def unimplementedParameters(self) -> List[Tuple[str, Optional[int]]]:
        """
        The parameters set explicitly that Postfix knows and tmta does not
        act on yet, with the main.cf line that set them.
        """
        return [
            (name, self._lines.get(name))
            for name in sorted(self.explicit)
            if self.isKnown(name) and not self.isImplemented(name)
        ]

    def unknownParameters(self, otherValues: Iterable[str] = ()) -> List[
            Tuple[str, Optional[int]]]:
        """
        The parameters set explicitly that tmta does not know and nothing
        uses, with the main.cf line that set them (C{None} for an
        override).  As in Postfix, a parameter of the operator's own is
        used when a value names it (C{$name}) or it is a restriction
        class.

        @param otherValues: master.cf's values (its C{-o} settings), which
            may name parameters too.
        """
        used = set(splitList(self.get("smtpd_restriction_classes")))
        for value in list(self.explicit.values()) + list(otherValues):
            used.update(_REFERENCE.findall(value))
        return [
            (name, self._lines.get(name))
            for name in sorted(self.explicit)
            if not self.isKnown(name) and name not in used
        ]

    def raw(self, name: str) -> Optional[str]:
        """
        The value of C{name} as written, before expansion, or C{None} when
        it is neither set nor has a default.
        """
        if name in self.explicit:
            return self.explicit[name]
        if name == "mydomain":
            hostname = self.get("myhostname")
            return defaultDomain(hostname)
        if name == "mynetworks" and name not in self._defaults:
            return _networksFor(self.get("mynetworks_style"))
        return self._defaults.get(name)

    def defaultOf(self, name: str) -> Optional[str]:
        """
        The built-in default of C{name}, unexpanded.
        """
        if name == "mydomain":
            return defaultDomain(self._defaults.get("myhostname", ""))
        if name == "mynetworks" and name not in self._defaults:
            return _networksFor(self.get("mynetworks_style"))
        return self._defaults.get(name)

    def names(self) -> List[str]:
        """
        Every parameter name with a value, sorted.
        """
        return sorted(set(self._defaults) | set(self.explicit) | {"mynetworks"})

    def get(self, name: str, fallback: str = "") -> str:
        """
        The expanded value of C{name}; C{fallback} when it has none.

        @raise ConfigError: the value's C{$} references are malformed or
            loop.
        """
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        raw = self.raw(name)
        if raw is None:
            return fallback
        if name in RAW_PARAMETERS:
            return raw
        try:
            value = expand(raw, self.raw)
        except ExpansionError as e:
            raise ConfigError(self.path, self._lines.get(name), f"{name}: {e}")
        self._cache[name] = value
        return value

    __getitem__ = get

    def origin(self) -> str:
        """
        C{myorigin}, read from the file it names when it names one
        (Debian's C{myorigin = /etc/mailname}): the file's first line.

        @raise ConfigError: the file cannot be read or is empty.
        """
        value = self.get("myorigin")
        if not value.startswith("/"):
            return value
        try:
            with open(value, encoding="utf-8", errors="surrogateescape") as f:
                origin = f.readline().strip()
        except OSError as e:
            raise ConfigError(self.path, self._lines.get("myorigin"),
                              f"myorigin: {value}: {e.strerror or e}")
        if not origin:
            raise ConfigError(self.path, self._lines.get("myorigin"),
                              f"myorigin file {value} is empty")
        return origin

    def _typed(self, name: str, parse, *args):
        value = self.get(name)
        try:
            return parse(value, *args)
        except ValueError as e:
            raise ConfigError(self.path, self._lines.get(name), f"{name}: {e}")

    def getList(self, name: str) -> List[str]:
        """
        The expanded value of C{name} as a list.
        """
        return splitList(self.get(name))

    def getInt(self, name: str) -> int:
        """
        The expanded value of C{name} as an integer.

        @raise ConfigError: not an integer.
        """
        return self._typed(name, int)

    def getBool(self, name: str) -> bool:
        """
        The expanded value of C{name} as a boolean.

        @raise ConfigError: not C{yes} or C{no}.
        """
        return self._typed(name, parseBool)

    def getTime(self, name: str, defaultUnit: str = "s") -> float:
        """
        The expanded value of C{name} as seconds.

        @raise ConfigError: not a time value.
        """
        return self._typed(name, parseTime, defaultUnit)

    def validate(self, names: Iterable[str] = ()) -> None:
        """
        Expand every parameter tmta acts on (or just C{names}) once, so
        that a broken value stops start-up instead of a service later.
        A broken value among parameters nothing reads is not fatal, as in
        Postfix.

        @raise ConfigError: the first broken value.
        """
        for name in names or [n for n in self.names() if self.isImplemented(n)]:
            self.get(name)
