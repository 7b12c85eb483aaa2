"""
What every message cleanup takes in shares: the queue, the rewrite
client, the limits, the address mappings and content checks, and the
trigger that wakes qmgr.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, TypeVar

from twisted.internet import defer

from tmta.cleanup.addresses import AddressMapper
from tmta.cleanup.milters import localMacros
from tmta.cleanup.settings import CleanupSettings
from tmta.common.batching import ThreadBatcher
from tmta.common.flow import InFlowGate
from tmta.logging import Logger
from tmta.mail.contentchecks import ContentChecks
from tmta.milter.settings import milterList
from tmta.queue.store import QueueStore
from tmta.queue.writer import QueueFileWriter, commitAll
from tmta.wire import heldWrites

T = TypeVar("T")

log = Logger()


class Cleanup:
    """
    What every cleanup client connection shares: the queue, the rewrite
    client, the limits, and the trigger that wakes qmgr.

    @param resolver: makes the DNS resolver of message authentication
        (L{tmta.authentication}), when it is on.
    """

    def __init__(
        self,
        reactor,
        config,
        store: QueueStore,
        rewriter,
        notifyQmgr: Callable[[str], defer.Deferred],
        resolver: Optional[Callable] = None,
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.committer: ThreadBatcher[QueueFileWriter, Optional[OSError]] = ThreadBatcher(
            reactor, commitAll, around=heldWrites)
        self.rewriter = rewriter
        settings = self.settings = CleanupSettings.fromConfig(config)
        self.inFlow = InFlowGate(reactor, store.directory, settings.inFlowDelay)
        self._notify = notifyQmgr
        from tmta.mail.rewriting import Rewriter

        localRewriter = Rewriter(config)
        self.addresses = AddressMapper(config, localRewriter.isLocalDomain)
        #: Whether address mapping consults a table on another server:
        #: it then runs in a lookup thread (L{lookUp}).
        self.addressesRemote = self.addresses.remote or localRewriter.localDomains.remote
        self.checks = ContentChecks(config)
        self._config = config
        from tmta.tables.networks import parseNetworks

        self.mynetworks = parseNetworks(config.getList("mynetworks"))
        #: C{non_smtpd_milters}, for mail submitted locally, and the
        #: macros of its made-up session.
        self.localMilters = milterList(config, "non_smtpd_milters")
        self.localMacros = localMacros(config.get("myhostname"),
                                       config.get("milter_macro_daemon_name"),
                                       config.get("milter_macro_v"))
        from tmta.authentication.pipeline import MessageAuthentication

        #: DKIM verification and signing, and the plugins' checks, of
        #: each whole message; C{resolver} makes their DNS resolver (by
        #: default the system's).
        self.authentication = MessageAuthentication.fromConfig(config, reactor, resolver)

    def lookUp(self, remote: bool, f: Callable[..., T], *args) -> "T | defer.Deferred[T]":
        """
        C{f(*args)}: now, or, when C{remote}, in a lookup thread.
        """
        from tmta.tables.remote import maybeInThread

        return maybeInThread(self.reactor, remote, f, *args)

    def rewritesHeadersFor(self, attributes: Dict[str, str]) -> bool:
        """
        Whether the header addresses of a message from this client are
        rewritten (C{local_header_rewrite_clients}): mail posted on this
        host always; from the network, only from the clients listed --
        by default those connecting to one of this host's addresses.
        """
        client = attributes.get("client_address", "")
        if not client:
            return True
        from tmta.tables.networks import inNetworks, isOwnAddress

        for item in self.settings.headerRewriteClients:
            if item == "static:all":
                return True
            if item == "permit_mynetworks" and inNetworks(client, self.mynetworks):
                return True
            if item == "permit_inet_interfaces" and isOwnAddress(client, self._config):
                return True
        return False

    def wakeQmgr(self, queueId: str) -> None:
        """
        Tell qmgr that C{queueId} is queued.  A lost trigger delays the
        message only until qmgr's next scan of incoming/.
        """

        def failed(reason):
            log.warn("{queueId}: cannot wake qmgr: {error}", queueId=queueId,
                     error=reason.getErrorMessage())

        self._notify(queueId).addErrback(failed)
