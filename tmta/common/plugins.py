"""
Finding plugins: components, transports, table types and smtpd
restrictions, in any C{twisted/plugins/} directory on C{sys.path}.

Every plugin found is checked with C{zope.interface.verify.verifyObject}
against the interface it claims.  One that does not provide it is left
out and remembered with the reason (L{brokenPlugins}), so that
configuration naming it stops start-up with a message saying which
plugin and what is missing, rather than failing when first used.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from twisted.plugin import getPlugins
from zope.interface import Interface
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

_cache: Dict[Interface, Tuple[tuple, Dict[str, object], Dict[str, str]]] = {}


class PluginError(Exception):
    """
    A plugin that configuration names cannot be used.
    """


def _directoryStamps() -> tuple:
    import twisted.plugins

    stamps: List[Tuple[str, Optional[int]]] = []
    for directory in twisted.plugins.__path__:
        try:
            stamps.append((directory, os.stat(directory).st_mtime_ns))
        except OSError:
            stamps.append((directory, None))
    return tuple(stamps)


def describe(plugin: object) -> str:
    """
    How a message names a plugin: its module and class.
    """
    kind = type(plugin)
    return f"{kind.__module__}.{kind.__qualname__}"


def _scan(interface) -> Tuple[Dict[str, object], Dict[str, str]]:
    import twisted.plugins

    stamps = _directoryStamps()
    cached = _cache.get(interface)
    if cached is not None and cached[0] == stamps:
        return cached[1], cached[2]
    found: Dict[str, object] = {}
    broken: Dict[str, str] = {}
    for plugin in getPlugins(interface, twisted.plugins):
        name = getattr(plugin, "name", None)
        try:
            verifyObject(interface, plugin)
        except Invalid as e:
            label = name if isinstance(name, str) else describe(plugin)
            reason = " ".join(str(e).split())
            broken.setdefault(label, f"plugin {describe(plugin)} does not provide "
                                     f"{interface.__name__}: {reason}")
            continue
        if name is not None:
            found.setdefault(name, plugin)
    _cache[interface] = (stamps, found, broken)
    return found, broken


def availablePlugins(interface) -> Dict[str, object]:
    """
    Every installed plugin providing C{interface}, by its C{name}.

    The answer is kept until a plugin directory changes: finding plugins
    lists every plugin directory and reads its cache.
    """
    return dict(_scan(interface)[0])


def brokenPlugins(interface) -> Dict[str, str]:
    """
    The plugins claiming C{interface} that do not provide it, by name,
    with the reason.
    """
    return dict(_scan(interface)[1])


def findPlugin(interface, name: str):
    """
    The plugin providing C{interface} named C{name}, or C{None}.

    @raise PluginError: a plugin of that name claims C{interface} but does
        not provide it.
    """
    found, broken = _scan(interface)
    plugin = found.get(name)
    if plugin is None and name in broken:
        raise PluginError(broken[name])
    return plugin


def allBroken(interfaces) -> List[str]:
    """
    Every broken plugin of C{interfaces}, for a start-up warning.
    """
    return [reason for interface in interfaces for reason in brokenPlugins(interface).values()]
