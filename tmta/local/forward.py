"""
Forwarding: mail that an alias or a C{.forward} file sends on to other
addresses is posted again, as a new message, through cleanup -- as
Postfix's local does -- with a C{Delivered-To:} header naming the
address it was forwarded from, so that a forwarding loop shows.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, cast

from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread

from tmta.cleanup.client import CleanupClient


class ForwardError(Exception):
    """
    Cleanup did not take the forwarded message.

    @ivar code: its SMTP reply code (4xx: try again later).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Forwarder:
    """
    Posts forwarded mail through cleanup, for an agent working in a
    thread: L{forward} blocks that thread (not the reactor) until
    cleanup has stored the message.
    """

    def __init__(self, reactor, cleanup: CleanupClient) -> None:
        self.reactor = reactor
        self.cleanup = cleanup

    def forward(self, sender: str, recipients: List[str], attributes: Dict[str, str],
                content: Iterable[bytes]) -> str:
        """
        Post a copy of the message to C{recipients}; blocking.

        @param content: the message text, from the new header on.
        @return: the new message's queue id.
        @raise ForwardError: cleanup refused it or could not be reached.
        """
        data = b"".join(content)
        try:
            return cast(str, blockingCallFromThread(self.reactor, self._post, sender,
                                                    recipients, attributes, data))
        except ForwardError:
            raise
        except Exception as e:
            raise ForwardError(451, f"cannot reach cleanup: {e}")

    def _post(self, sender, recipients, attributes, data) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._postNow(sender, recipients, attributes, data))

    async def _postNow(self, sender, recipients, attributes, data) -> str:
        result = await self.cleanup.post(sender, attributes, [(r, r) for r in recipients], data)
        if result["code"] != 250:
            raise ForwardError(result["code"], result["reason"])
        return result["queue_id"]
