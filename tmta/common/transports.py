"""
Transports that write eagerly: what both a worker's accepted
connections and its own connections to other services use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import tcp
from twisted.internet.interfaces import IFileDescriptorReceiver

from tmta.common.twistedcompat import writesIdle

if TYPE_CHECKING:
    from twisted.internet.tcp import Connection as _Transport
else:
    _Transport = object


class EagerWriteMixin(_Transport):
    """
    Send written data at once when nothing is queued ahead of it.

    Twisted queues every write and sends it when the reactor next finds
    the socket writable, which costs two epoll updates and a trip around
    the reactor per write.  tmta's connections (a worker's clients, and
    its own to other services) are request and reply: each nearly always
    fits in the socket buffer, so it goes now, and only what does not fit
    takes Twisted's way.  Under TLS, or with data or descriptors already
    queued, Twisted's way is kept as is.
    """

    def write(self, data: bytes) -> None:
        if data and writesIdle(self):
            try:
                sent = self.socket.send(data)
            except OSError:
                # Would block, or the connection broke: Twisted's own
                # write path retries, or notices and reports the loss.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)


class PlainReadMixin(_Transport):
    """
    For a UNIX-socket transport: read with C{recv}, as a TCP transport
    does, unless the protocol takes file descriptors.

    Twisted's UNIX transports read every time with C{recvmsg}, through a
    wrapper that sizes a buffer for descriptors and builds a result
    tuple, in case the peer sends some: about 3 CPU-microseconds a read
    more than C{recv}.  Nothing tmta's processes say to each other
    carries descriptors, and a protocol that does not take them would
    only close them: with C{recv}, the kernel does.
    """

    def doRead(self):
        if IFileDescriptorReceiver.providedBy(self.protocol):
            return super().doRead()
        return tcp.Connection.doRead(self)
