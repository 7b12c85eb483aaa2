"""
The smtp and lmtp services: the delivery agents served on their sockets.
"""

from __future__ import annotations

from tmta.delivery import AgentService
from tmta.smtp.agent import SMTPDeliveryAgent


def makeSMTPService(context):
    return AgentService(context, SMTPDeliveryAgent(context.reactor, context.config))


def makeLMTPService(context):
    return AgentService(context, SMTPDeliveryAgent(context.reactor, context.config, lmtp=True))
