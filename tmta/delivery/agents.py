"""
Services for the trivial transports.
"""

from tmta.delivery import AgentService
from tmta.delivery.trivial import DiscardAgent, ErrorAgent


def makeDiscard(context):
    return AgentService(context, DiscardAgent())


def makeError(context):
    return AgentService(context, ErrorAgent(context.serviceName))
