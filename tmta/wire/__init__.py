"""
AMP as tmta's processes speak it to each other: the wire format
(L{codec}), the protocol (L{protocol}), connecting to a service
(L{connect}) and keeping connections (L{pools}).
"""

from tmta.wire.codec import RecordList, serializeBox
from tmta.wire.connect import _EagerUNIXClient, connectService
from tmta.wire.pools import ConnectionPool, MultiplexingPool, SharedConnection
from tmta.wire.protocol import QuietAMP, ServiceAMP, heldWrites

__all__ = ["ConnectionPool", "MultiplexingPool", "QuietAMP", "RecordList", "ServiceAMP",
           "SharedConnection", "_EagerUNIXClient", "connectService", "heldWrites",
           "serializeBox"]
