"""
Finding the component that a master.cf command names: a component
plugin (L{IComponent}), or a transport plugin (L{IDeliveryAgentFactory})
served as a delivery service.
"""

from __future__ import annotations

from typing import Dict, Optional, cast

from zope.interface import implementer

from tmta.common.plugins import PluginError, availablePlugins, findPlugin
from tmta.interfaces import IComponent, IDeliveryAgentFactory

# master.cf command names that are another name for a component.
ALIASES = {"rewrite": "trivial-rewrite"}


@implementer(IComponent)
class AgentComponent:
    """
    A transport plugin as a master.cf program: its agent served on the
    service's socket by L{tmta.delivery.AgentService}.
    """

    resident = False
    worldReachable = False
    busyReply = None

    def __init__(self, factory) -> None:
        self.factory = factory
        self.name = factory.name

    def needsRoot(self, config, unpriv):
        return self.factory.needsRoot(config, unpriv)

    def clientLimit(self, config):
        return self.factory.clientLimit(config)

    def configurationProblems(self, config, entry):
        return []

    def makeService(self, context):
        from tmta.delivery import AgentService

        return AgentService(context, self.factory.makeAgent(context))


def availableComponents() -> Dict[str, IComponent]:
    """
    Every installed component, and every transport plugin as one, by its
    master.cf command name (a component wins over a transport of the
    same name).

    Plugins are looked for again only when a plugin directory changes:
    every worker asks once, as a copy of the fork server, which asked
    before it.
    """
    found: Dict[str, IComponent] = {
        name: AgentComponent(factory)
        for name, factory in availablePlugins(IDeliveryAgentFactory).items()
    }
    found.update(cast(Dict[str, IComponent], availablePlugins(IComponent)))
    return found


def findComponent(command: str, components: Dict[str, IComponent]) -> Optional[IComponent]:
    """
    The component for a master.cf command name, or C{None}.

    @raise PluginError: a plugin of that name does not provide the
        interface it claims (the message says what is missing).
    """
    name = command if command in components else ALIASES.get(command, command)
    component = components.get(name)
    if component is None:
        for interface in (IComponent, IDeliveryAgentFactory):
            findPlugin(interface, name)  # raises for a broken plugin
    return component


__all__ = ["AgentComponent", "PluginError", "availableComponents", "findComponent"]
