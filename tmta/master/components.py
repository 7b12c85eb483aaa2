"""
Finding the component plugin that a master.cf command names.
"""

from __future__ import annotations

from typing import Dict

from twisted.plugin import getPlugins

from tmta.interfaces import IComponent

# master.cf command names that are another name for a component.
ALIASES = {"rewrite": "trivial-rewrite"}


def availableComponents() -> Dict[str, IComponent]:
    """
    Every installed component plugin by its master.cf command name.
    """
    import twisted.plugins

    found: Dict[str, IComponent] = {}
    for component in getPlugins(IComponent, twisted.plugins):
        found.setdefault(component.name, component)
    return found


def findComponent(command: str, components: Dict[str, IComponent]) -> IComponent | None:
    """
    The component for a master.cf command name, or C{None}.
    """
    return components.get(command) or components.get(ALIASES.get(command, ""))
