"""
What the queue manager keeps: each message in the active queue
(L{ActiveMessage}), each delivery request for some of its recipients
(L{Job}), and a transport's answer to one (L{Outcome}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from tmta.common.slots import SLOTS
from tmta.queue.qfile import Envelope, Recipient


@dataclass(**SLOTS)
class ActiveMessage:
    """
    A message in C{active/} and what is under way for it.
    """

    queueId: str
    envelope: Envelope
    activated: float
    jobs: int = 0
    bounced: List[Tuple[Recipient, str, str]] = field(default_factory=list)
    deferred: Dict[int, str] = field(default_factory=dict)
    #: The status code of each deferral this run, for a delay notice's
    #: Status (which must agree with its Diagnostic-Code).
    deferredStatus: Dict[int, str] = field(default_factory=dict)
    unmarked: List[Recipient] = field(default_factory=list)
    #: It was deferred before, and may have a defer log to remove.
    wasDeferred: bool = False
    #: Taken up by a flush: delivered even by a transport in
    #: defer_transports.
    flushed: bool = False
    #: Its recipients still to deliver when it was taken up.
    recipientCount: int = 0
    #: Recipients delivered whose NOTIFY asks for a success notice, with
    #: the notice's action (delivered, relayed) and the reply.
    succeeded: List[Tuple[Recipient, str, str]] = field(default_factory=list)
    #: Recipients bounced whose NOTIFY asks for no failure notice.
    silent: List[Recipient] = field(default_factory=list)
    #: An address verification probe: its results go to the verify
    #: service, and it is never deferred, returned or delivered.
    probe: bool = False
    #: A probe from C{sendmail -bv}: its results are mailed to the
    #: sender as a report instead.
    report: bool = False
    #: A probe's results: C{(recipient, status, reason, dsn)}.
    probed: List[Tuple[Recipient, str, str, str]] = field(default_factory=list)


DestinationKey = Tuple[str, str]


@dataclass(**SLOTS)
class Job:
    """
    One delivery request: recipients of one message for one destination.
    """

    message: ActiveMessage
    transport: str
    nexthop: str
    destination: DestinationKey
    recipients: List[Recipient]


@dataclass
class Outcome:
    """
    A transport's answer to a job, and what it says about the
    destination.

    @ivar statuses: the answer itself, for the queue manager's
        bookkeeping.
    @ivar siteFailure: why the destination could not be reached at all
        (negative feedback), C{None} when it was (positive feedback), or
        C{False} when the answer says nothing about it (the transport
        itself failed).
    """

    statuses: object = None
    siteFailure: object = None
