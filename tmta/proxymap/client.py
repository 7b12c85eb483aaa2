"""
The client side of the proxymap service: the table a process opens for
C{proxy:TYPE:NAME} when TYPE waits on another server and master.cf runs
proxymap.  Its lookups are asked of proxymap over one shared
connection; they wait in the caller's lookup thread, as a lookup in the
table itself would.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet import defer, threads
from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.proxymap.commands import ProxyLookup, TableLookupFailed, TableNotApproved
from tmta.tables import TableLookupError
from tmta.tables.remote import refuseReactorThread
from tmta.wire import SharedConnection

__all__ = ["ProxymapClient", "ProxyTable", "install", "installed"]


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
