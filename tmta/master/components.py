"""
Finding the component plugin that a master.cf command names.
"""

from __future__ import annotations

import os
from typing import Dict, Tuple

from twisted.plugin import getPlugins

from tmta.interfaces import IComponent

# master.cf command names that are another name for a component.
ALIASES = {"rewrite": "trivial-rewrite"}


_found: Tuple[tuple, Dict[str, IComponent]] = ((), {})


def _pluginDirectoryStamps() -> tuple:
    import twisted.plugins

    stamps = []
    for directory in twisted.plugins.__path__:
        try:
            stamps.append((directory, os.stat(directory).st_mtime_ns))
        except OSError:
            stamps.append((directory, None))
    return tuple(stamps)


def availableComponents() -> Dict[str, IComponent]:
    """
    Every installed component plugin by its master.cf command name.

    The answer is kept until a plugin directory changes (a plugin file
    added, removed or replaced): finding plugins lists every plugin
    directory and reads its cache, and every worker asks once, as a copy
    of the fork server, which asked before it.
    """
    global _found
    import twisted.plugins

    stamps = _pluginDirectoryStamps()
    if stamps != _found[0]:
        found: Dict[str, IComponent] = {}
        for component in getPlugins(IComponent, twisted.plugins):
            found.setdefault(component.name, component)
        _found = (stamps, found)
    return dict(_found[1])


def findComponent(command: str, components: Dict[str, IComponent]) -> IComponent | None:
    """
    The component for a master.cf command name, or C{None}.
    """
    return components.get(command) or components.get(ALIASES.get(command, ""))
