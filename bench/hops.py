"""
The CPU cost of one hop between tmta's processes, measured in one
process where the whole-path benchmark (bench/run.py) is too noisy to
show it: each figure is CPU-microseconds per round trip, both sides
included, over a real socket pair and tmta's own transports.

    python bench/hops.py amp     # a Deliver round trip: tmta's AMP and Twisted's
    python bench/hops.py local   # a delivery to a Maildir through local's AMP
                                 # service and its delivery thread (on tmpfs)
    python bench/hops.py local --process-wide   # identity changes made
                                                # process-wide, as glibc does
    python bench/hops.py commit --directory DIR # cleanup's commit of a batch of
                                                # queue files, with and without
                                                # starting their writeback first

As root, local delivers as mail_owner (C{postfix} or C{nobody}), taking
that identity for each delivery as it does for a system account.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import socket
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from twisted.internet import defer, reactor  # noqa: E402
from twisted.internet.protocol import Factory  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402
from twisted.protocols import amp  # noqa: E402

from tmta.common.transports import EagerWriteMixin  # noqa: E402
from tmta.delivery import AgentProtocol, Deliver  # noqa: E402
from tmta.wire import QuietAMP  # noqa: E402


def connectPair(client, server) -> None:
    """
    Connect two protocols over a socket pair, with the eager writes of
    tmta's transports.
    """
    for protocol, sock in zip((client, server), socket.socketpair()):
        transport = reactor.adoptStreamConnection(
            sock.fileno(), socket.AF_UNIX, Factory.forProtocol(lambda p=protocol: p))
        sock.close()
        transport.__class__ = type("Eager" + transport.__class__.__name__,
                                   (EagerWriteMixin, transport.__class__), {})


def deliverArguments(queueId: str, recipient: str = "bench@localhost", offset: int = 60):
    now = time.time()
    return dict(queue_id=queueId, sender="load@example.com", nexthop="localhost",
                arrival=now, activated=now,
                recipients=[{"address": recipient, "original": recipient, "offset": offset,
                             "notify": "", "orcpt": ""}])


async def timeRoundTrips(call, count: int, warm: int = 200) -> float:
    for i in range(warm):
        await call(i)
    started = time.process_time()
    for i in range(warm, warm + count):
        await call(i)
    return (time.process_time() - started) / count * 1e6


class _TmtaAnswering(QuietAMP):
    @Deliver.responder
    def deliver(self, recipients, **kw):
        return {"statuses": [{"offset": r["offset"], "status": "sent", "dsn": "2.0.0",
                              "reason": "delivered to maildir"} for r in recipients]}


class _TwistedAnswering(amp.AMP):
    @Deliver.responder
    def deliver(self, recipients, **kw):
        return _TmtaAnswering.deliver(self, recipients)


async def measureAMP(count: int) -> None:
    for label, clientClass, serverClass in (
            ("tmta's AMP (QuietAMP)", QuietAMP, _TmtaAnswering),
            ("Twisted's AMP", amp.AMP, _TwistedAnswering)):
        client = clientClass()
        connectPair(client, serverClass())
        arguments = deliverArguments("4ABCDEFGHJKLM")
        cost = await timeRoundTrips(lambda i: client.callRemote(Deliver, **arguments), count)
        print(f"{label:24} {cost:6.0f} CPU-us per Deliver round trip")
        client.transport.loseConnection()


async def measureLocal(count: int, processWide: bool) -> None:
    from tmta.common import credentials
    from tmta.config import MainConfig
    from tmta.local.agent import LocalAgent, LocalDeliveryAgent
    from tmta.queue.store import QueueStore

    if processWide:
        # What the C library's seteuid() and friends do: every thread.
        credentials._threadCallsHere = None
    base = tempfile.mkdtemp(prefix="tmta-hops-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                            else None)
    os.chmod(base, 0o755)
    queue = os.path.join(base, "queue")
    for name in ("incoming", "active"):
        os.makedirs(os.path.join(queue, name))
    spool = os.path.join(base, "mail")
    os.makedirs(spool)
    settings = {"myhostname": "mx.example.org", "alias_maps": "",
                "local_mailbox_accounts": "none", "mail_spool_directory": spool + "/"}
    if os.geteuid() == 0:
        for name in ("postfix", "nobody"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                continue
            settings["mail_owner"] = name
            break
    store = QueueStore(queue, fsync=lambda fd: None)
    agent = LocalAgent(MainConfig(settings), fsync=lambda fd: None)
    owner = agent.context.owner
    if owner is not None:
        os.chown(spool, owner.pw_uid, owner.pw_gid)
    body = b"From: load@example.com\nSubject: hop\n\n" + (b"x" * 70 + b"\n") * 27
    queued = []
    for _ in range(count + 200):
        queueId, writer = store.create("incoming")
        writer.envelope(time.time(), "load@example.com", {})
        writer.recipient("bench@localhost")
        writer.content(body)
        writer.commit()
        store.move(queueId, "incoming", "active")
        queued.append((queueId, store.readEnvelope("active", queueId).recipients[0].offset))
    client = QuietAMP()
    connectPair(client, AgentProtocol(LocalDeliveryAgent(reactor, agent), store))

    async def deliver(i):
        queueId, offset = queued[i]
        answer = await client.callRemote(Deliver, **deliverArguments(queueId, offset=offset))
        status = answer["statuses"][0]
        if status["status"] != "sent":
            raise RuntimeError(f"delivery failed: {status['reason']}")

    try:
        cost = await timeRoundTrips(deliver, count)
    finally:
        client.transport.loseConnection()
        shutil.rmtree(base, ignore_errors=True)
    who = owner.pw_name if owner is not None and os.geteuid() == 0 else "itself"
    how = "process-wide" if processWide or not credentials.perThread() else "per thread"
    print(f"local, delivering as {who} (identity {how}): {cost:.0f} CPU-us per delivery "
          f"round trip")


def measureCommit(count: int, batch: int, directory: "str | None") -> None:
    """
    Commit C{count} 2 KB queue files in batches of C{batch} with
    cleanup's L{commitAll}, with the writeback of each batch started
    before its fsyncs (as cleanup does) and without, in turn, on the
    file system of C{directory}; print the wall time and CPU per file.
    This is where the disk shows: run it where the queue lives.
    """
    from tmta.common import durable
    from tmta.queue.layout import createLayout
    from tmta.queue.store import QueueStore
    from tmta.queue.writer import commitAll

    base = tempfile.mkdtemp(prefix="tmta-hops-", dir=directory)
    body = b"From: load@example.com\nSubject: hop\n\n" + (b"x" * 70 + b"\n") * 27
    hint = durable._findSyncFileRange()
    results: dict = {"writeback started first": [], "fsyncs alone": []}
    try:
        for attempt in range(3):
            for index, (label, function) in enumerate((("writeback started first", hint),
                                                       ("fsyncs alone", None))):
                durable._syncFileRange = function
                queue = os.path.join(base, f"{attempt}-{index}")
                createLayout(queue)
                store = QueueStore(queue)
                wall, cpu = time.monotonic(), time.process_time()
                for _ in range(count // batch):
                    writers = []
                    for _ in range(batch):
                        _, writer = store.create("incoming")
                        writer.envelope(time.time(), "load@example.com", {})
                        writer.recipient("bench@localhost")
                        writer.content(body)
                        writers.append(writer)
                    if any(commitAll(writers)):
                        raise RuntimeError("a commit failed")
                files = (count // batch) * batch
                results[label].append(((time.monotonic() - wall) / files * 1e3,
                                       (time.process_time() - cpu) / files * 1e6))
    finally:
        durable._syncFileRange = hint
        shutil.rmtree(base, ignore_errors=True)
    if hint is None:
        print("this system has no sync_file_range: both ways are the same")
    for label, figures in results.items():
        print(f"{label:24} " + ", ".join(f"{w:.2f} ms {c:.0f} CPU-us" for w, c in figures)
              + f" per file, batches of {batch}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hop", choices=("amp", "local", "commit"))
    parser.add_argument("-n", "--count", type=int, default=5000)
    parser.add_argument("--process-wide", action="store_true",
                        help="local: make identity changes process-wide, as glibc does")
    parser.add_argument("--batch", type=int, default=8,
                        help="commit: queue files committed together")
    parser.add_argument("--directory", default=None,
                        help="commit: where the queue files go (default: the system's "
                             "temporary directory)")
    args = parser.parse_args()
    if args.hop == "commit":
        measureCommit(min(args.count, 2000), args.batch, args.directory)
        return 0
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False,
                                     discardBuffer=True)
    outcome = []

    async def run():
        if args.hop == "amp":
            await measureAMP(args.count)
        else:
            await measureLocal(args.count, args.process_wide)

    def done(result):
        outcome.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(run()).addBoth(done))
    reactor.run()
    if outcome and hasattr(outcome[0], "printTraceback"):
        outcome[0].printTraceback()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
