"""
Every use tmta makes of names Twisted does not publish, in one place.

tmta leans on a few of Twisted's internals where its public API falls
short: adopting an inherited listening socket for a subclass of its
ports, leaving a shared socket file and backlog alone when a worker
stops, writing eagerly on an idle connection, parsing AMP boxes without
Twisted's state machine, answering AMP commands and questions without
Twisted's dispatch, and naming AMP arguments as Twisted does.  Each
is wrapped here, and L{checkTwisted} verifies at import that every
private name still exists, so that a Twisted upgrade that moves one
breaks here, loudly, with the name that moved, rather than somewhere
deep in a worker.  C{tests/test_twistedcompat.py} compares each with
Twisted's own behaviour.
"""

from __future__ import annotations

import inspect
from typing import Any, List

from twisted.internet import abstract, tcp, unix
from twisted.protocols import amp

#: The internals of Twisted's AMP dispatcher that L{tmta.wire} uses:
#: the methods it overrides to answer its own commands and questions
#: directly, and the state it shares with Twisted's requests.
AMP_DISPATCH = ("_nextTag", "_answerReceived", "_errorReceived", "_commandReceived",
                "_outstandingRequests", "_failAllReason")


class TwistedChanged(ImportError):
    """
    An internal of Twisted that tmta uses is gone or changed.
    """


def _requireAttribute(owner: Any, name: str, where: str) -> None:
    if not hasattr(owner, name):
        raise TwistedChanged(f"tmta needs {where}.{name}, which this Twisted does not have")


def checkTwisted() -> None:
    """
    Check that the private names used below still exist.

    @raise TwistedChanged: naming the first that does not.
    """
    _requireAttribute(amp, "_wireNameToPythonIdentifier", "twisted.protocols.amp")
    _requireAttribute(tcp.Port, "_fromListeningDescriptor", "twisted.internet.tcp.Port")
    _requireAttribute(unix.Port, "_fromListeningDescriptor", "twisted.internet.unix.Port")
    _requireAttribute(unix.Connector, "_makeTransport", "twisted.internet.unix.Connector")
    for name in ("_locked", "_startingTLSBuffer", "_justStartedTLS", "_unprocessed"):
        _requireAttribute(amp.BinaryBoxProtocol, name, "twisted.protocols.amp.BinaryBoxProtocol")
    # tmta.wire's AMP answers its own commands and questions without
    # Twisted's dispatch: it overrides these, and keeps its requests
    # with Twisted's (tags, outstanding answers, the failure of all).
    for name in AMP_DISPATCH:
        _requireAttribute(amp.BoxDispatcher, name, "twisted.protocols.amp.BoxDispatcher")
    _requireAttribute(amp.CommandLocator, "_commandDispatch",
                      "twisted.protocols.amp.CommandLocator")
    for name in ("_writeDisconnected", "dataBuffer"):
        _requireAttribute(abstract.FileDescriptor, name,
                          "twisted.internet.abstract.FileDescriptor")
    # Set per instance, so looked for in the code that sets them.
    if "_tempDataBuffer" not in inspect.getsource(abstract.FileDescriptor.__init__):
        raise TwistedChanged("twisted.internet.abstract.FileDescriptor no longer keeps "
                             "_tempDataBuffer")
    _requireAttribute(tcp.Port, "_shouldShutdown", "twisted.internet.tcp.Port")
    _unixPortPath()


def _unixPortPath() -> str:
    """
    The attribute where a UNIX port keeps the path it binds and, when it
    stops, unlinks: C{_bindPath} in recent Twisted (set in C{__init__}),
    C{port} in older ones (25.5, the last for Python 3.9).

    @raise TwistedChanged: neither.
    """
    if "_bindPath" in inspect.getsource(unix.Port.__init__):
        return "_bindPath"
    if "os.unlink(self.port)" in inspect.getsource(unix.Port.connectionLost):
        return "port"
    raise TwistedChanged("twisted.internet.unix.Port keeps its path neither in _bindPath "
                         "nor in port")


# -- AMP ---------------------------------------------------------------


def wireNameToIdentifier(wireName: bytes) -> str:
    """
    The Python name under which AMP passes the argument C{wireName} to a
    responder, as Twisted's own commands name it.
    """
    return amp._wireNameToPythonIdentifier(wireName)


def ampParsesPlainBoxes(protocol: amp.BinaryBoxProtocol) -> bool:
    """
    Whether what C{protocol} receives now is plain AMP boxes that tmta's
    own parser may read: no protocol switch, no TLS starting, no box
    being delivered, nothing left over in Twisted's parser.
    """
    return not (protocol.innerProtocol is not None or protocol._justStartedTLS
                or protocol._locked or protocol._unprocessed)


def ampSwitched(protocol: amp.BinaryBoxProtocol) -> bool:
    """
    Whether a box just received switched C{protocol} to another protocol
    (or locked it to deliver one): what follows is not for a box parser.
    """
    return protocol.innerProtocol is not None or protocol._locked


def ampCanBatch(protocol: amp.BinaryBoxProtocol) -> bool:
    """
    Whether boxes C{protocol} sends may be held and written together: it
    is connected, not delivering a box, not starting TLS.
    """
    return (protocol.transport is not None and not protocol._locked
            and protocol._startingTLSBuffer is None)


# -- transports --------------------------------------------------------


def writesIdle(transport: abstract.FileDescriptor) -> bool:
    """
    Whether nothing is queued to be written on C{transport}, so that new
    data may be sent at once without overtaking any: connected, not
    closing, not under TLS, no buffered data or descriptors.
    """
    return bool(
        transport.connected
        and not transport.disconnecting
        and not getattr(transport, "_writeDisconnected", True)
        and not getattr(transport, "TLS", False)
        and not transport.dataBuffer
        and not getattr(transport, "_tempDataBuffer", True)
        and not getattr(transport, "_sendmsgQueue", None)
    )


def connectorMaking(clientClass: type) -> type:
    """
    A C{unix.Connector} whose connections are C{clientClass} (a subclass
    of C{unix.Client}).
    """

    class Connector(unix.Connector):
        def _makeTransport(self):
            return clientClass(self.address, self, self.reactor, self.checkPID)

    return Connector


# -- listening sockets -------------------------------------------------


def adoptListeningPort(portClass: type, reactor, fd: int, family: int, factory):
    """
    A port of C{portClass} (a subclass of C{tcp.Port} or C{unix.Port})
    serving the inherited listening socket C{fd}, not yet started.

    C{reactor.adoptStreamPort} does this for Twisted's own classes only.
    """
    adopt: Any = portClass
    if issubclass(portClass, unix.Port):
        return adopt._fromListeningDescriptor(reactor, fd, factory)
    return adopt._fromListeningDescriptor(reactor, fd, family, factory)


def shareListeningSocket(port) -> None:
    """
    Leave the socket of C{port} as it is when the port stops: no
    C{shutdown()} (which would end the listening of every process sharing
    it) and, for a UNIX socket, no chmod or unlink of its file by path
    (the master owns the file, and this process may not reach the path).
    """
    port._shouldShutdown = False
    if isinstance(port, unix.Port):
        bindPath = getattr(port, _UNIX_PORT_PATH, None)
        if bindPath is not None:
            # Twisted leaves the file of an abstract socket alone.
            setattr(port, _UNIX_PORT_PATH,
                    (b"\0" if isinstance(bindPath, bytes) else "\0") + bindPath)


checkTwisted()
_UNIX_PORT_PATH = _unixPortPath()

__all__: List[str] = [
    "TwistedChanged",
    "adoptListeningPort",
    "ampCanBatch",
    "ampParsesPlainBoxes",
    "ampSwitched",
    "checkTwisted",
    "connectorMaking",
    "shareListeningSocket",
    "wireNameToIdentifier",
    "writesIdle",
]
