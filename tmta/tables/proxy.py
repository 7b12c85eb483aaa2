"""
C{proxy:TYPE:NAME}: the table a process opens when TYPE waits on
another server and master.cf runs the proxymap service
(L{tmta.proxymap}), and the AMP commands it asks that service with.
Its lookups go to proxymap over one shared connection; they wait in the
caller's lookup thread, as a lookup in the table itself would.  (As
Postfix keeps its proxy client among the shared table code.)
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet import defer, threads
from twisted.protocols import amp
from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.tables import TableLookupError
from tmta.tables.remote import refuseReactorThread
from tmta.wire import SharedConnection
from tmta.wire.amp import Command

__all__ = ["ProxymapClient", "ProxyTable", "install", "installed", "ProxyLookup",
           "TableLookupFailed", "TableNotApproved"]


class TableLookupFailed(Exception):
    """
    The table could not be consulted (its server is down or slow).
    """


class TableNotApproved(Exception):
    """
    The table is not in C{proxy_read_maps}.
    """


class ProxyLookup(Command):
    """
    Look C{key} up in C{table} (a C{type:name} without C{proxy:}).
    """

    arguments = [(b"table", amp.Unicode()), (b"key", amp.Unicode())]
    response = [(b"value", amp.Unicode(optional=True))]
    errors = {TableLookupFailed: b"TABLE_LOOKUP_FAILED",
              TableNotApproved: b"TABLE_NOT_APPROVED"}


class ProxymapClient:
    """
    One connection to proxymap, shared by every C{proxy:} table of the
    process.
    """

    def __init__(self, connect: Callable[[], defer.Deferred], reactor,
                 idle: float = 5.0) -> None:
        self.reactor = reactor
        self.connection = SharedConnection(connect, reactor, idle)

    async def lookup(self, table: str, key: str) -> Optional[str]:
        try:
            protocol = await self.connection.acquire()
        except Exception as e:
            raise TableLookupError(f"proxy:{table}: cannot reach the proxymap service: "
                                   f"{e}") from None
        try:
            answer = await protocol.callRemote(ProxyLookup, table=table, key=key)
        except (TableLookupFailed, TableNotApproved) as e:
            raise TableLookupError(f"proxy:{table}: {e}") from None
        except Exception as e:
            raise TableLookupError(f"proxy:{table}: the proxymap service failed: "
                                   f"{e}") from None
        finally:
            self.connection.release(protocol)
        return answer.get("value")


@implementer(IRemoteTable)
class ProxyTable:
    """
    C{proxy:TYPE:NAME}, answered by the proxymap service.
    """

    def __init__(self, spec: str, client: ProxymapClient) -> None:
        self.spec = spec
        self.client = client

    def getLater(self, key: str) -> "defer.Deferred[Optional[str]]":
        """
        The lookup, asked from the reactor's thread: no lookup thread
        need wait for it.
        """
        return defer.Deferred.fromCoroutine(self.client.lookup(self.spec, key))

    def get(self, key: str) -> Optional[str]:
        refuseReactorThread(f"proxy:{self.spec}")

        def ask() -> "defer.Deferred[Any]":
            return defer.Deferred.fromCoroutine(self.client.lookup(self.spec, key))

        value: Any = threads.blockingCallFromThread(self.client.reactor, ask)
        return value


_client: Optional[ProxymapClient] = None


def install(client: Optional[ProxymapClient]) -> None:
    """
    Make C{proxy:} tables of remote types, opened from now on in this
    process, ask C{client} (C{None}: open them here, as in a process
    that runs no proxymap client: the master, the command line).
    """
    global _client
    _client = client


def installed() -> Optional[ProxymapClient]:
    return _client
