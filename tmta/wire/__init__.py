"""
AMP as tmta's processes speak it to each other: the base of every
command (L{amp}), the wake-up trigger (L{triggers}), the wire format
(L{codec}), the protocol (L{protocol}), where a service's socket is and
connecting to it (L{connect}), and keeping connections (L{pools}).
"""

from tmta.wire.codec import RecordList, serializeBox
from tmta.wire.connect import _EagerUNIXClient, connectService
from tmta.wire.pools import ConnectionPool, MultiplexingPool, SharedConnection
from tmta.wire.protocol import QuietAMP, ServiceAMP, heldWrites

__all__ = ["ConnectionPool", "MultiplexingPool", "QuietAMP", "RecordList", "ServiceAMP",
           "SharedConnection", "_EagerUNIXClient", "connectService", "heldWrites",
           "serializeBox"]
