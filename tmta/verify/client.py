"""
The side of the verify service that smtpd and the queue manager hold:
one shared connection per process.
"""

from __future__ import annotations

from typing import Tuple

from tmta.verify.commands import VerifyQuery, VerifyUpdate
from tmta.wire import SharedConnection


class VerifyClient:
    """
    @param connect: makes a connection to the verify service (a Deferred
        firing with a connected AMP protocol).
    """

    def __init__(self, connect, clock, idle: float = 5.0) -> None:
        self.connection = SharedConnection(connect, clock, idle)

    async def _call(self, command, **arguments) -> dict:
        protocol = await self.connection.acquire()
        try:
            return await protocol.callRemote(command, **arguments)
        finally:
            self.connection.release(protocol)

    async def query(self, address: str) -> Tuple[int, str]:
        """
        @return: C{(status, text)} (see L{tmta.verify.commands}).
        @raise Exception: the service could not be asked.
        """
        answer = await self._call(VerifyQuery, address=address)
        return answer["status"], answer["text"]

    async def update(self, address: str, status: int, text: str) -> None:
        await self._call(VerifyUpdate, address=address, status=status, text=text)
