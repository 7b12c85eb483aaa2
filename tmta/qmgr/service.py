"""
The qmgr service: resident, woken on its public socket.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.protocol import Factory

from tmta.qmgr.manager import QueueManager
from tmta.queue.store import QueueStore
from tmta.rewrite.client import RewriteClient, connectRewrite
from tmta.wire import ServiceAMP
from tmta.wire.triggers import Wakeup


class QmgrProtocol(ServiceAMP):
    def __init__(self, manager: QueueManager) -> None:
        super().__init__()
        self.manager = manager

    @Wakeup.responder
    def wakeup(self, reason=None, queue_id=None):
        if queue_id:
            self.manager.incoming(queue_id)
            return {}
        if reason == "timer":
            self.manager.scanDeferred()
        elif reason == "flush":
            self.manager.flush()
        self.manager.wakeup()
        return {}


def transportLimits(services, defaultLimit: int):
    """
    The process limit of each unix service in master.cf, by name.
    """
    limits = {}
    for entry in services:
        if entry.type == "unix":
            limits[entry.service] = defaultLimit if entry.maxproc is None else entry.maxproc
    return limits


class QmgrService(Service):
    def __init__(self, context) -> None:
        self.context = context
        config = context.config
        store = QueueStore.fromConfig(config)
        rewrite = RewriteClient(connectRewrite(context), context.reactor,
                                idle=config.getTime("ipc_idle"))
        context.reactor.getThreadPool()
        self.manager = QueueManager(
            context.reactor, config, store,
            lambda service: context.connect(service),
            rewrite.resolve,
            transportLimits(getattr(context, "services", []),
                            config.getInt("default_process_limit")),
        )

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: QmgrProtocol(self.manager)))
        self.manager.start()

    def stopService(self):
        super().stopService()
        # The worker exits once the deliveries under way are recorded.
        return self.manager.stop()
