"""
One message's way from an SMTP session's DATA phase to cleanup.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from tmta.smtpd.data import DataDecoder

#: How much decoded text is gathered before it is sent on.
CHUNK = 60000


class TooBig(Exception):
    """
    The message went over C{message_size_limit}; cleanup has been told
    to forget it.
    """


class CleanupLost(Exception):
    """
    The connection to cleanup was lost before the end of data.
    """


class MessageTransfer:
    """
    Decodes the text after C{354} and streams it to cleanup.

    The envelope goes with the first content (for most messages, with
    the end of data): one write, one wake-up of cleanup.

    @param cleanup: the message at cleanup, a
        L{tmta.cleanup.client.CleanupMessage}.
    @param envelope: C{(sender, attributes, recipients)} for
        L{tmta.cleanup.client.CleanupMessage.begin}.
    @param sizeLimit: C{message_size_limit} (0: none).
    """

    def __init__(self, cleanup, envelope: tuple, sizeLimit: int,
                 bareNewline: str = "normalize", decoder=None) -> None:
        self.cleanup = cleanup
        self.sender = envelope[0]
        self._envelope: Optional[tuple] = envelope
        self.sizeLimit = sizeLimit
        #: BDAT's chunks (a L{ChunkDecoder}), or DATA's dot-terminated text.
        self.chunked = decoder is not None
        self.decoder: Any = decoder if decoder is not None else DataDecoder(bareNewline)
        self.size = 0
        self.tooBig = False
        self._pending: List[bytes] = []
        self._pendingSize = 0

    @property
    def done(self) -> bool:
        """
        Whether the end of data has been read (or the text was refused:
        L{failed}).
        """
        return self.decoder.done or self.decoder.failed

    @property
    def failed(self) -> bool:
        """
        Whether the text broke C{smtpd_forbid_bare_newline = reject}.
        """
        return self.decoder.failed

    def feed(self, data: bytes) -> bytes:
        """
        Decode C{data}, sending text on as it gathers.

        @return: the bytes not consumed: held back until more arrive, or
            (once L{done}) those after the end of data.
        """
        text, rest = self.decoder.feed(data)
        self._add(text)
        return rest

    def _add(self, text: bytes) -> None:
        if text:
            self.size += len(text)
            if self.sizeLimit and self.size > self.sizeLimit:
                self.tooBig = True
                self._pending, self._pendingSize = [], 0
            elif not self.tooBig:
                self._pending.append(text)
                self._pendingSize += len(text)
                if self._pendingSize >= CHUNK:
                    with self.cleanup.together():
                        self._sendEnvelope()
                        self.cleanup.content(self._takePending())

    def _takePending(self) -> bytes:
        data = b"".join(self._pending)
        self._pending, self._pendingSize = [], 0
        return data

    def _sendEnvelope(self) -> None:
        envelope, self._envelope = self._envelope, None
        if envelope is not None:
            self.cleanup.begin(*envelope)

    async def finish(self, beforeEnd: Optional[Callable[[Any], None]] = None
                     ) -> Tuple[int, str, str]:
        """
        Send the last of the text and wait for cleanup's answer.

        @param beforeEnd: called with the message at cleanup just before
            its end is sent (to lend cleanup the milters).

        @return: C{(code, reason, queueId)}.
        @raise TooBig: the message was over the size limit.
        @raise CleanupLost: cleanup went away before the end.
        """
        if self.chunked:
            self._add(self.decoder.flush())
        if self.tooBig:
            self.abort()
            raise TooBig()
        if not self.cleanup.connected:
            raise CleanupLost()
        if beforeEnd is not None:
            # The descriptors lent go out on their own, after the
            # envelope that names the message.
            with self.cleanup.together():
                self._sendEnvelope()
            beforeEnd(self.cleanup)
        with self.cleanup.together():
            self._sendEnvelope()
            answer = self.cleanup.end(self._takePending())
        result = await answer
        return result["code"], result["reason"], result["queue_id"]

    def abort(self) -> None:
        """
        Give the message up (cleanup, if it has heard of it, removes what
        it wrote).
        """
        if self._envelope is not None:
            self._envelope = None
            return
        self.cleanup.abort()

    def release(self) -> None:
        """
        Let the connection to cleanup go, the message finished or aborted.
        """
        self.cleanup.release()
