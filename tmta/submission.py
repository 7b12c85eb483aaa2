"""
Submitting mail to a running tmta from a Twisted program: the durable,
retried replacement for C{twisted.mail.smtp.sendmail} in an
application::

    from tmta.submission import SubmissionClient

    client = SubmissionClient.fromConfigDirectory(reactor, "/etc/tmta")
    d = client.submit("app@example.com", ["user@example.org"], message)
    d.addCallback(lambda queueId: print("queued as", queueId))

The message goes to the running tmta's cleanup service over its public
UNIX socket (the process must be allowed to connect to it: run as the
mail system's user or in the group of C{public/cleanup}).  The Deferred
fires with the queue id only once cleanup has written the queue file
and fsynced it and its directory, so that a crash of anything after it
fires loses nothing; tmta then delivers and retries as for any mail.
It fails with L{SubmissionFailed}: temporary (a 4xx code) when tmta is
not running, cannot be reached or cannot queue now, permanent (5xx)
when the message is refused.  A message that was not acknowledged is
never left half-written in the queue.
"""

from __future__ import annotations

import os
from email.message import Message
from typing import Iterable, Union

from twisted.internet import defer, error

from tmta.cleanup.client import CleanupClient
from tmta.wire import connectService

__all__ = ["SubmissionClient", "SubmissionFailed"]


class SubmissionFailed(Exception):
    """
    The message was not queued.

    @ivar code: an SMTP-like reply code: 4xx when trying again later may
        succeed, 5xx when it will not.
    @ivar text: the enhanced status code and the reason.
    """

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


def messageBytes(message: Union[bytes, Message]) -> bytes:
    """
    The message as cleanup takes it: bytes with LF line ends.
    """
    if isinstance(message, Message):
        message = message.as_bytes()
    return message.replace(b"\r\n", b"\n")


class SubmissionClient:
    """
    Submits messages to the tmta whose queue is C{queueDirectory}, over
    one connection shared by all submissions in flight.

    @param reactor: provides C{IReactorUNIX} and C{IReactorTime}.
    """

    def __init__(self, reactor, queueDirectory: str) -> None:
        self.reactor = reactor
        self.queueDirectory = queueDirectory
        self._cleanup = CleanupClient(
            lambda: connectService(reactor, queueDirectory, "cleanup", private=False), reactor)

    @classmethod
    def fromConfigDirectory(cls, reactor, configDirectory: str) -> "SubmissionClient":
        """
        A client for the tmta configured in C{configDirectory} (its
        C{main.cf} names the queue).  This reads the file now: call it
        while setting up, not from a callback.
        """
        from tmta.config.loader import loadConfiguration

        configuration = loadConfiguration(configDirectory, check=False)
        return cls(reactor, configuration.main.get("queue_directory"))

    def submit(self, sender: str, recipients: Iterable[str],
               message: Union[bytes, Message]) -> defer.Deferred:
        """
        Queue C{message} from C{sender} (C{""} for the null sender) to
        C{recipients}.

        @return: a Deferred firing with the queue id once the message is
            durably queued, or failing with L{SubmissionFailed}.
        """
        return defer.Deferred.fromCoroutine(
            self._submit(sender, list(recipients), messageBytes(message)))

    async def _submit(self, sender: str, recipients: list, data: bytes) -> str:
        if not recipients:
            raise SubmissionFailed(554, "5.5.1 Error: no recipients")
        for address in [sender] + recipients:
            if any(c in address for c in "\r\n\0<>") or (address is not sender and not address):
                raise SubmissionFailed(501, f"5.1.3 Bad address syntax: {address!r}")
        try:
            result = await self._cleanup.post(sender, {"uid": str(os.getuid())},
                                              [(r, r) for r in recipients], data)
        except (error.ConnectError, OSError) as e:
            raise SubmissionFailed(421, f"4.3.0 tmta cannot be reached: {e}") from None
        except Exception as e:
            # The connection went before cleanup answered: it removes what
            # it had written, and nothing was promised.
            raise SubmissionFailed(421, f"4.3.0 lost the connection to tmta: {e}") from None
        code = result["code"]
        if code // 100 != 2:
            raise SubmissionFailed(code, result["reason"])
        return result["queue_id"]

    def close(self) -> None:
        """
        Drop the connection (it is made again when needed).
        """
        self._cleanup.connection.close()
