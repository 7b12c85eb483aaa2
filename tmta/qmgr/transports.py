"""
The transports qmgr hands deliveries to (Postfix's C{qmgr_transport.c}
and C{qmgr_deliver.c}): for each master.cf transport, its queue of
destinations (L{TransportQueue}) with the limits main.cf sets for it
(C{<transport>_destination_concurrency_limit} and the rest, falling back
to C{default_...}), its pool of connections to the agent, and the
C{Deliver} requests sent on them.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from twisted.internet import defer

from tmta.delivery import DEFERRED, RUN_ALONE, Deliver
from tmta.logging import Logger
from tmta.qmgr.active import MessageCompletion, Outstanding
from tmta.qmgr.jobs import Job, Outcome
from tmta.qmgr.scheduler import TransportQueue, parseFeedback
from tmta.queue.qfile import Recipient
from tmta.wire import ConnectionPool, MultiplexingPool

log = Logger()


def _deferredStatuses(recipients: List[Recipient], reason: str) -> List[dict]:
    return [{"offset": r.offset, "status": DEFERRED, "dsn": "4.3.0", "reason": reason}
            for r in recipients]



class Transports:
    """
    Every transport qmgr has delivered through, made on first use.

    @param connect: C{connect(service)} returns a Deferred firing with an
        AMP connection to a private service (a transport).
    @param transportLimits: the process limit of each transport in
        master.cf, which bounds how many deliveries run at once.
    @param completion: records what the agents answer.
    @param outstanding: counts the deliveries under way.
    """

    def __init__(self, reactor, config, connect: Callable[[str], defer.Deferred],
                 completion: MessageCompletion, outstanding: Outstanding,
                 transportLimits: Optional[Dict[str, int]] = None) -> None:
        self.reactor = reactor
        self.config = config
        self.connect = connect
        self.completion = completion
        self.outstanding = outstanding
        self.transportLimits = transportLimits or {}
        self.defaultProcessLimit = completion.settings.defaultProcessLimit
        self.ipcIdle = completion.settings.ipcIdle
        self.queues: Dict[str, TransportQueue] = {}
        self.pools: Dict[str, ConnectionPool] = {}

    def close(self) -> None:
        """
        Start no more deliveries.
        """
        for queue in self.queues.values():
            queue.paused = True
            queue.close()

    def closePools(self, result=None):
        """
        Close the connections to the agents; pass C{result} through.
        """
        for pool in self.pools.values():
            pool.close()
        return result

    def reviveAll(self) -> None:
        """
        Take no destination for dead any more (a flush).
        """
        for queue in self.queues.values():
            queue.reviveAll()

    def parameter(self, transport: str, suffix: str) -> int:
        """
        C{<transport>_<suffix>}, else C{default_<suffix>}.
        """
        specific = f"{transport}_{suffix}"
        if self.config.raw(specific) is not None:
            return self.config.getInt(specific)
        return self.config.getInt(f"default_{suffix}")

    def pool(self, transport: str) -> ConnectionPool:
        """
        The connections to the transport's agent, made on first use.
        """
        pool = self.pools.get(transport)
        if pool is None:
            batch = self.parameter(transport, "delivery_batch_limit")
            if batch > 1:
                # The agent serves the requests on a connection together
                # (<transport>_delivery_batch_limit).
                pool = MultiplexingPool(lambda: self.connect(transport), self.reactor, batch,
                                        self.ipcIdle)
            else:
                pool = ConnectionPool(lambda: self.connect(transport), self.reactor,
                                      self.ipcIdle)
            self.pools[transport] = pool
        return pool

    def recipientLimit(self, transport: str) -> int:
        """
        How many recipients one request to C{transport} may carry.
        """
        return max(1, self.parameter(transport, "destination_recipient_limit"))

    def queue(self, name: str) -> TransportQueue:
        """
        The transport's queue of destinations, made on first use.
        """
        queue = self.queues.get(name)
        if queue is None:
            # With batches, the limits count agent processes (connections),
            # each serving up to a batch of deliveries at once.
            batch = max(1, self.parameter(name, "delivery_batch_limit"))
            limit = self.transportLimits.get(name, self.defaultProcessLimit) * batch
            queue = TransportQueue(
                name, limit,
                max(0, self.parameter(name, "destination_concurrency_limit")) * batch,
                lambda job: defer.Deferred.fromCoroutine(self.deliver(job)),
                self.completion.delivered,
                suspend=self._suspended,
                initialConcurrency=self._initialConcurrency(name) * batch,
                positiveFeedback=self._feedback(name, "positive"),
                negativeFeedback=self._feedback(name, "negative"),
                cohortLimit=self.parameter(name, "destination_concurrency_failed_cohort_limit"),
                deadTime=self.completion.settings.minimalBackoff,
                clock=self.reactor,
            )
            self.queues[name] = queue
        return queue

    def _initialConcurrency(self, transport: str) -> int:
        specific = f"{transport}_initial_destination_concurrency"
        if self.config.raw(specific) is not None:
            return self.config.getInt(specific)
        return self.config.getInt("initial_destination_concurrency")

    def _feedback(self, transport: str, kind: str):
        suffix = f"destination_concurrency_{kind}_feedback"
        name = f"{transport}_{suffix}"
        if self.config.raw(name) is None:
            name = f"default_{suffix}"
        try:
            return parseFeedback(self.config.get(name))
        except ValueError as e:
            log.warn("{name}: {error}; using 1", name=name, error=e)
            return parseFeedback("1")

    @staticmethod
    def _request(agent, job: Job, recipients: List[Recipient], **flags) -> defer.Deferred:
        """
        Ask the agent to deliver the job's message to C{recipients}.
        """
        message = job.message
        attributes = message.envelope.attributes
        for name in ("dsn_ret", "dsn_envid"):
            if attributes.get(name):
                flags[name] = attributes[name]
        if attributes.get("requiretls") == "yes":
            flags["requiretls"] = True
        if message.probe:
            flags["verify"] = True
        return agent.callRemote(
            Deliver,
            queue_id=message.queueId,
            sender=message.envelope.sender,
            nexthop=job.nexthop,
            arrival=message.envelope.arrival,
            activated=message.activated,
            recipients=[
                {"address": r.address, "original": r.original, "offset": r.offset,
                 "notify": r.notify, "orcpt": r.orcpt}
                for r in recipients
            ],
            **flags,
        )

    def _suspended(self, job: Job, reason: str) -> None:
        """
        The job's destination is taken for dead: defer its recipients
        without trying.
        """
        self.completion.defer(job.message, job.nexthop, job.recipients, reason, "4.4.1")
        self.completion.jobDone(job.message)

    async def deliver(self, job: Job):
        """
        Hand a job to its transport.

        @return: an L{Outcome} with the transport's statuses, or with
            C{None} when it gave none (the job's recipients are then
            deferred, with the reason, and the destination gets no
            feedback).
        """
        self.outstanding.begin()
        message = job.message
        pool = self.pool(job.transport)
        try:
            agent = await pool.acquire()
        except Exception:
            self.completion.defer(message, job.nexthop, job.recipients,
                                  "mail transport unavailable")
            return Outcome(None, False)
        try:
            result = await self._request(agent, job, job.recipients)
        except Exception as e:
            pool.discard(agent)
            self.completion.defer(message, job.nexthop, job.recipients,
                                  f"delivery agent {job.transport} failed: {e}")
            return Outcome(None, False)
        if result.get("retiring"):
            pool.retire(agent)
        else:
            pool.release(agent)
        statuses = result["statuses"]
        alone = {s["offset"] for s in statuses if s.get("action") == RUN_ALONE}
        if alone:
            statuses = [s for s in statuses if s["offset"] not in alone] + \
                await self._deliverAlone(job, [r for r in job.recipients if r.offset in alone])
        return Outcome(statuses, result.get("site_failure") or None)

    async def _deliverAlone(self, job: Job, recipients: List[Recipient]) -> List[dict]:
        """
        Deliver recipients the agent sent back (L{RUN_ALONE}: a command
        or a file, which must hold nobody else's mail) on a connection
        of their own, which no other delivery shares.

        @return: their statuses; deferred when the agent could not be
            asked.
        """
        try:
            agent = await self.connect(job.transport)
        except Exception as e:
            return _deferredStatuses(recipients, f"mail transport unavailable: {e}")
        try:
            result = await self._request(agent, job, recipients, alone=True)
        except Exception as e:
            return _deferredStatuses(recipients, f"delivery agent {job.transport} failed: {e}")
        finally:
            if agent.transport is not None:
                agent.transport.loseConnection()
        return [s for s in result["statuses"] if s.get("action") != RUN_ALONE]
