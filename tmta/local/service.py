"""
The local service: one delivery at a time per process, forwarding
through cleanup.
"""

from __future__ import annotations

import os

from tmta.cleanup.client import CleanupClient, connectCleanup
from tmta.delivery import AgentService
from tmta.local.agent import LocalAgent, LocalDeliveryAgent
from tmta.local.forward import Forwarder
from tmta.local.passing import Passer
from tmta.mail.accounts import mailOwner


def makeLocalService(context):
    config = context.config
    spool = None
    if config.get("local_mailbox_accounts").strip().lower() == "none":
        # Every name gets a Maildir under mail_spool_directory, written as
        # mail_owner.  The directory is opened now, while root, and used
        # through its descriptor: it may lie under a home directory that
        # mail_owner cannot traverse (root's ~/.tmta).
        directory = config.get("mail_spool_directory").rstrip("/")
        os.makedirs(directory, 0o755, exist_ok=True)
        if os.geteuid() == 0:
            owner = mailOwner(config, embedded=True)
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        spool = f"/proc/self/fd/{fd}/"
    cleanup = CleanupClient(connectCleanup(context),
                            context.reactor, idle=config.getTime("ipc_idle"))
    agent = LocalAgent(config, spoolDirectory=spool,
                       forwarder=Forwarder(context.reactor, cleanup),
                       passer=Passer(context.reactor, context.connect))
    return AgentService(context, LocalDeliveryAgent(context.reactor, agent))
