"""
The proxymap service's side: opens each approved table once, and looks
keys up in the process's lookup threads, so that the connections to a
table's servers are at most the threads there are.
"""

from __future__ import annotations

from typing import Dict

from twisted.application.service import Service
from twisted.internet.protocol import Factory

from tmta.logging import Logger
from tmta.tables import FailingTable, TableError, TableLookupError, openTable, proxyApproved
from tmta.tables.proxy import ProxyLookup, TableLookupFailed, TableNotApproved
from tmta.tables.remote import LookupThreads
from tmta.wire import ServiceAMP

__all__ = ["ProxymapService"]

log = Logger()

class ProxymapProtocol(ServiceAMP):
    def __init__(self, service: "ProxymapService") -> None:
        super().__init__()
        self.service = service

    @ProxyLookup.responder
    def lookup(self, table: str, key: str):
        return self.service.lookup(table, key).addCallback(lambda value: {"value": value})


class ProxymapService(Service):
    """
    @ivar tables: the tables opened so far, by C{type:name}.
    """

    def __init__(self, context) -> None:
        self.context = context
        self.approved = proxyApproved(context.config)
        self.tables: Dict[str, object] = {}
        self.lookups = LookupThreads.forReactor(context.reactor)
        # Opened now, while the worker may still read what only root
        # may (a database password in a table's file).
        for spec in sorted(self.approved):
            self._table(spec)

    def _table(self, spec: str):
        table = self.tables.get(spec)
        if table is None:
            try:
                table = openTable(spec)
            except TableError as e:
                log.warn("{error}", error=str(e))
                table = FailingTable(str(e))
            self.tables[spec] = table
        return table

    def lookup(self, spec: str, key: str):
        """
        @return: a Deferred firing with the value, or C{None}; failing
            with L{TableNotApproved} or L{TableLookupFailed}.
        """
        from twisted.internet import defer

        if spec not in self.approved:
            log.warn("request for unapproved table: \"{table}\"", table=spec)
            return defer.fail(TableNotApproved(f"{spec} is not in proxy_read_maps"))
        table = self._table(spec)

        def failed(failure):
            failure.trap(TableLookupError)
            raise TableLookupFailed(str(failure.value))

        return self.lookups.run(table.get, key).addErrback(failed)

    def startService(self) -> None:
        super().startService()
        self.context.listen(Factory.forProtocol(lambda: ProxymapProtocol(self)))
