"""
The cleanup service: the shared state, one L{CleanupProtocol} per
client connection, and the trigger that tells qmgr of each message
queued.
"""

from __future__ import annotations

from typing import List

from twisted.application.service import Service
from twisted.internet.protocol import Factory

from tmta.cleanup.protocol import CleanupProtocol
from tmta.cleanup.state import Cleanup
from tmta.queue.store import QueueStore
from tmta.rewrite.client import RewriteClient, connectRewrite
from tmta.wire.triggers import Wakeup


def qmgrTrigger(reactor, queueDirectory: str, idle: float, service: str = "qmgr"):
    """
    A function that tells qmgr (the C{service}, C{queue_service_name})
    of one queued message, over a connection kept open while messages
    keep coming.
    """
    from tmta.wire import SharedConnection, connectService

    connection = SharedConnection(
        lambda: connectService(reactor, queueDirectory, service, private=False), reactor, idle
    )

    def send(protocol, queueId: str) -> None:
        protocol.callRemote(Wakeup, reason="incoming", queue_id=queueId)
        connection.release(protocol)

    return lambda queueId: connection.acquire().addCallback(send, queueId)


def configurationProblems(config, entry) -> List[str]:
    """
    What stops a cleanup service from starting: a C{non_smtpd_milters}
    list it cannot read, a DKIM signing key it cannot use, a message
    authentication plugin that is missing
    (L{tmta.interfaces.IComponent.configurationProblems}).
    """
    from tmta.authentication.pipeline import authenticationProblems
    from tmta.config import ConfigError
    from tmta.milter.settings import milterList

    problems = []
    try:
        milterList(config, "non_smtpd_milters")
    except ConfigError as e:
        problems.append(e.reason)
    return problems + authenticationProblems(config)


class CleanupService(Service):
    def __init__(self, context) -> None:
        self.context = context
        config = context.config
        queueDirectory = config.get("queue_directory")
        self.cleanup = Cleanup(
            context.reactor,
            config,
            QueueStore.fromConfig(config),
            RewriteClient(connectRewrite(context), context.reactor,
                          idle=config.getTime("ipc_idle")),
            qmgrTrigger(context.reactor, queueDirectory, config.getTime("ipc_idle"),
                        config.get("queue_service_name").strip() or "qmgr"),
        )

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: CleanupProtocol(self.cleanup)))
