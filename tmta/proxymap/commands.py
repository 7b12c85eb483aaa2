"""
The AMP commands of the proxymap service.
"""

from twisted.protocols import amp

from tmta.wire.amp import Command


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
