"""
Delivery requests and their results: what qmgr asks of a transport and
what the transport answers, and the AMP that carries them.

A transport (L{tmta.interfaces.IDeliveryAgent}) gets a L{DeliveryRequest}
and returns one L{RecipientStatus} per recipient.  L{AgentService} serves
any such agent on the service's socket, so a plugin author writes only
the agent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols import amp

from tmta.interfaces import IAddressVerifier
from tmta.logging import Logger
from tmta.queue.qfile import iterContent, openQueueFile, readEnvelope
from tmta.queue.store import QueueStore
from tmta.wire import RecordList, ServiceAMP
from tmta.wire.amp import Command

__all__ = [
    "SENT",
    "DEFERRED",
    "BOUNCED",
    "DeliveryRequest",
    "RequestRecipient",
    "RecipientStatus",
    "logDelivery",
]

log = Logger()

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"

#: The action of a status that sends a recipient back, undelivered, to
#: be delivered on a connection of its own (local, for a command or a
#: file, which must not hold other recipients' mail): qmgr does so at
#: once, with the request's C{alone} set.
RUN_ALONE = "alone"


@dataclass
class RequestRecipient:
    """
    One recipient of a delivery request.

    @ivar notify: RFC 3461 NOTIFY as the client gave it (C{""}: not
        given); @ivar orcpt: ORCPT, C{type;address} (C{""}: not given).
        An smtp agent passes both on to a server that offers DSN.
    """

    address: str
    original: str
    offset: int
    notify: str = ""
    orcpt: str = ""


@dataclass
class DeliveryRequest:
    """
    One delivery: some recipients of one queued message, for one next hop.

    @ivar queuePath: the queue file, to read the message from.
    @ivar arrival: when the message arrived; @ivar activated: when qmgr
        took it up; for the C{delay} and C{delays} log fields.
    """

    queueId: str
    queuePath: str
    sender: str
    nexthop: str
    recipients: List[RequestRecipient]
    arrival: float = 0.0
    activated: float = 0.0
    #: The message's RFC 3461 C{dsn_ret} and C{dsn_envid}, when given.
    attributes: Dict[str, str] = field(default_factory=dict)
    #: An address verification probe (L{tmta.verify}): find out what
    #: would become of each recipient, deliver nothing, and report
    #: C{SENT} for deliverable.
    verifyOnly: bool = False
    #: Sent on a connection of its own after a L{RUN_ALONE} answer.
    alone: bool = False

    def content(self) -> Iterator[bytes]:
        """
        The message text, in chunks (blocking reads: call from a thread
        or for small files only).
        """
        with openQueueFile(self.queuePath) as f:
            envelope = readEnvelope(f)
            yield from iterContent(f, envelope)

    def message(self) -> Tuple[Dict[str, str], bytes]:
        """
        The message's envelope attributes (where it came from: the
        client, its HELO name, the protocol) and its text (blocking
        reads, as L{content}).
        """
        with openQueueFile(self.queuePath) as f:
            envelope = readEnvelope(f)
            return dict(envelope.attributes), b"".join(iterContent(f, envelope))


@dataclass
class RecipientStatus:
    """
    What became of one recipient.

    @ivar action: for a recipient sent, what a success notice would say
        (RFC 3464): C{"delivered"} (or C{""}: final delivery),
        C{"relayed"} (handed to a server that sends no notices), or
        C{"passed"} (handed on with its NOTIFY, so the next server
        reports).
    """

    offset: int
    status: str
    dsn: str
    reason: str
    action: str = ""
    #: Whether its log line has been written (L{logDelivery}): the
    #: framework writes one for each status an agent did not log.
    logged: bool = field(default=False, compare=False, repr=False)

    def record(self) -> Dict[str, object]:
        """
        The status as the C{Deliver} answer carries it.
        """
        return {"offset": self.offset, "status": self.status, "dsn": self.dsn,
                "reason": self.reason, "action": self.action}


@dataclass
class DeliveryResult:
    """
    An agent's answer when it has more to say than each recipient's
    status.

    @ivar siteFailure: why the next hop could not be reached at all (no
        server took a session, or its name could not be looked up for
        now), or C{None}.  The queue manager lowers the destination's
        concurrency on it, and after enough in a row stops trying the
        destination for a while.
    """

    statuses: List[RecipientStatus]
    siteFailure: Optional[str] = None


class Deliver(Command):
    arguments = [
        (b"queue_id", amp.Unicode()),
        (b"sender", amp.Unicode()),
        (b"nexthop", amp.Unicode()),
        (b"arrival", amp.Float()),
        (b"activated", amp.Float()),
        (b"recipients", RecordList([("address", str), ("original", str), ("offset", int),
                                    ("notify", str, ""), ("orcpt", str, "")])),
        (b"dsn_ret", amp.Unicode(optional=True)),
        (b"dsn_envid", amp.Unicode(optional=True)),
        (b"verify", amp.Boolean(optional=True)),
        (b"alone", amp.Boolean(optional=True)),
        # RFC 8689: the message goes on only over TLS that verifies.
        (b"requiretls", amp.Boolean(optional=True)),
    ]
    response = [
        (
            b"statuses",
            RecordList([("offset", int), ("status", str), ("dsn", str), ("reason", str),
                        ("action", str, "")]),
        ),
        (b"site_failure", amp.Unicode(optional=True)),
        # The agent takes no more requests (max_use): the connection is
        # closed once the requests under way on it are answered.
        (b"retiring", amp.Boolean(optional=True)),
    ]


def logDelivery(request: DeliveryRequest, recipient: RequestRecipient, relay: str,
                status: RecipientStatus, started: float, connectionUse: int = 1) -> None:
    """
    Log a recipient's result in Postfix's form.

    @param connectionUse: which delivery this was on a reused connection
        (C{conn_use=N} is logged from the second on, as Postfix does).
    """
    now = time.time()
    a = max(0.0, request.activated - request.arrival)
    b = max(0.0, started - request.activated)
    d = max(0.0, now - started)
    orig = f", orig_to=<{recipient.original}>" if recipient.original != recipient.address else ""
    if connectionUse > 1:
        relay = f"{relay}, conn_use={connectionUse}"
    log.info(
        "{queueId}: to=<{to}>{orig}, relay={relay}, delay={delay:.2g}, "
        "delays={a:.2g}/{b:.2g}/0/{d:.2g}, dsn={dsn}, status={status} ({reason})",
        queueId=request.queueId, to=recipient.address, orig=orig, relay=relay,
        delay=now - request.arrival, a=a, b=b, d=d, dsn=status.dsn,
        status=statusWord(request, status), reason=status.reason,
    )
    status.logged = True


def statusWord(request: DeliveryRequest, status: RecipientStatus) -> str:
    """
    The log's C{status=}: what became of the recipient, or for a probe
    whether it is deliverable.
    """
    if request.verifyOnly:
        return "deliverable" if status.status == SENT else "undeliverable"
    return status.status


class AgentProtocol(ServiceAMP):
    """
    Serves one qmgr connection for an L{IDeliveryAgent}.
    """

    def __init__(self, agent, store: QueueStore, runtime=None, batch: int = 1,
                 transport: str = "none") -> None:
        """
        @param runtime: the worker's L{tmta.master.runtime.WorkerRuntime}
            (C{None} in-process), which counts each request against
            C{max_use}.
        @param batch: how many requests qmgr sends on one connection at
            once (C{<transport>_delivery_batch_limit}).
        @param transport: the master.cf service name, the C{relay=} of
            the delivery lines written for an agent that writes none.
        """
        super().__init__()
        self.agent = agent
        self.transportName = transport
        self.store = store
        self.runtime = runtime
        self.share = 1.0 / max(1, batch)

    @Deliver.responder
    def deliver(self, queue_id, sender, nexthop, arrival, activated, recipients,
                dsn_ret=None, dsn_envid=None, verify=False, alone=False, requiretls=False):
        attributes = {}
        if requiretls:
            attributes["requiretls"] = "yes"
        if dsn_ret:
            attributes["dsn_ret"] = dsn_ret
        if dsn_envid:
            attributes["dsn_envid"] = dsn_envid
        request = DeliveryRequest(
            queue_id, self.store.path("active", queue_id), sender, nexthop,
            [RequestRecipient(r["address"], r["original"], r["offset"], r["notify"], r["orcpt"])
             for r in recipients],
            arrival, activated, attributes, verifyOnly=bool(verify), alone=bool(alone),
        )
        retiring = self.runtime is not None and self.runtime.requestServed(self.share)
        if request.verifyOnly and not IAddressVerifier.providedBy(self.agent):
            # An agent that does not say it verifies would deliver the
            # probe: it is answered for here instead, as not known.
            refused: dict = {"statuses": [
                {"offset": r["offset"], "status": DEFERRED, "dsn": "4.3.0",
                 "reason": "this delivery agent does not verify addresses"}
                for r in recipients]}
            if retiring:
                refused["retiring"] = True
            return refused
        started = time.time()
        d = defer.maybeDeferred(self.agent.deliver, request)

        def answer(result):
            statuses = result.statuses if isinstance(result, DeliveryResult) else result
            self._logUnlogged(request, statuses, started)
            answer = {"statuses": [s.record() for s in statuses]}
            if isinstance(result, DeliveryResult) and result.siteFailure:
                answer["site_failure"] = result.siteFailure
            if retiring:
                answer["retiring"] = True
            return answer

        def failed(reason):
            log.failure("{queueId}: delivery agent failed", reason, queueId=queue_id)
            return {
                "statuses": [
                    {"offset": r["offset"], "status": DEFERRED, "dsn": "4.3.0",
                     "reason": "delivery agent internal error"}
                    for r in recipients
                ]
            }

        return d.addCallbacks(answer, failed)

    def _logUnlogged(self, request: DeliveryRequest, statuses: List[RecipientStatus],
                     started: float) -> None:
        """
        Write the delivery line of each status the agent did not log (a
        plugin's that never calls L{logDelivery}), with the transport's
        name as its relay.  A recipient sent back to be delivered alone
        (L{RUN_ALONE}) has no line yet: its delivery comes later.
        """
        unlogged = [s for s in statuses if not s.logged and s.action != RUN_ALONE]
        if not unlogged:
            return  # every built-in agent logs its own lines
        byOffset = {r.offset: r for r in request.recipients}
        for status in unlogged:
            recipient = byOffset.get(status.offset)
            if recipient is not None:
                logDelivery(request, recipient, self.transportName, status, started)



class AgentService(Service):
    """
    Run an L{IDeliveryAgent} on a worker's sockets.
    """

    def __init__(self, context, agent) -> None:
        self.context = context
        self.agent = agent

    def startService(self) -> None:
        super().startService()
        config = self.context.config
        store = QueueStore.fromConfig(config)
        runtime = getattr(self.context, "runtime", None)
        specific = f"{self.context.serviceName}_delivery_batch_limit"
        batch = config.getInt(specific if config.raw(specific) is not None
                              else "default_delivery_batch_limit")
        self.context.listen(Factory.forProtocol(
            lambda: AgentProtocol(self.agent, store, runtime, batch,
                                  self.context.serviceName)))
