"""
The smtp and lmtp services: the delivery agents served on their sockets.
"""

from __future__ import annotations

from twisted.internet import defer

from tmta.delivery import AgentService
from tmta.smtp.agent import SMTPDeliveryAgent


def makeSMTPService(context):
    return AgentService(context, SMTPDeliveryAgent(context.reactor, context.config,
                                                   postmaster=postmasterNotices(context)))


def makeLMTPService(context):
    return AgentService(context, SMTPDeliveryAgent(context.reactor, context.config, lmtp=True,
                                                   postmaster=postmasterNotices(context)))


def postmasterNotices(context):
    """
    A function that queues a notice from the mail system (null sender)
    through cleanup, as bounce does.
    """
    from tmta.cleanup.client import CleanupClient, connectCleanup

    cleanup = CleanupClient(connectCleanup(context), context.reactor,
                            idle=context.config.getTime("ipc_idle"))

    async def send(recipient: str, text: bytes):
        result = await cleanup.post("", {"protocol": "local", "origin": "notice"},
                                    [(recipient, recipient)], text)
        if result["code"] != 250:
            raise RuntimeError(f"cleanup refused the notice: {result['code']} {result['reason']}")
        return result["queue_id"]

    return lambda recipient, text: defer.Deferred.fromCoroutine(send(recipient, text))
