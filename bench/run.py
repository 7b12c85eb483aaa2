#!/usr/bin/env python3
"""
Load tmta -- and, when it is installed, private Postfix instances -- with
the same SMTP load on loopback, and print for each: accepted messages per
second, end-to-end messages per second (until every message is in the
Maildir), CPU-milliseconds per message over all of the server's
processes, and the memory of the resident processes at idle.

Postfix runs twice per round: delivering with virtual(8), and with
local(8) through an alias to the Maildir, the agent that does tmta
local's job (with the same concurrency limit, 2 per recipient).  The
servers take turns for several rounds and the medians are compared: on
this project's machines one run can differ from the next by a third.

    python bench/run.py                     # 2000 messages, 20 sessions, 2000 bytes, 5 rounds
    python bench/run.py -m 5000 -s 50 -l 10000 --no-postfix --rounds 1
    python bench/run.py --relay             # relayed through relayhost to smtp-sink
    python bench/run.py --sendmail          # posted by tmta-sendmail / Postfix's sendmail
    python bench/run.py --starttls          # every session says STARTTLS first
    python bench/run.py --milter            # every message signed by one OpenDKIM milter
    python bench/run.py --dkim              # tmta signs by itself, Postfix by OpenDKIM
    python bench/run.py --pgsql             # mailboxes in PostgreSQL, through proxy:
    python bench/run.py --all               # every tracked load, one after another
    python bench/run.py --reactor uvloop    # tmta's workers on asyncio's reactor over uvloop
    python bench/run.py --profile DIR       # cProfile each tmta worker; bench/profiles.py DIR
    python bench/run.py --baseline TREE     # and tmta as another checkout has it
    python bench/run.py --scratch /dev/shm  # queues and mailboxes on tmpfs: no disk
    python bench/run.py --journalled        # on a fresh journalled ext4 (as root)
    python bench/run.py --python PATH       # tmta on another interpreter (a PyPy venv's)

The load comes from Postfix's smtp-source (one connection per message)
when it is installed, else (and with --starttls, which smtp-source cannot
do) from a small asyncio client bundled here;
with --sendmail, from a loop running each server's sendmail command once
per message (--sessions loops at once), timed until all are delivered.
Everything listens on 127.0.0.1 only.  Servers are started in a fresh
temporary directory and stopped (by their own pid) afterwards; what they
wrote is deleted only at the end, each run's directory is placed away
from the others' where the file system allows (C{chattr +T}), and each
run first waits until the disk creates files at its usual cost
(C{--quiet-disk}).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from disk import journalledScratch, spreadSubdirectories, waitForQuietDisk
from load import runLoad, runSendmail
from repo import REPO
from servers import MailboxDatabase, OpenDKIM, Postfix, Server, Sink, Tmta, interpreter

from tests.support.processes import cpuByName, cpuSeconds, descendants, memory


def percentile(values: List[float], fraction: float) -> float:
    """
    The value below which C{fraction} of C{values} lie (nearest rank).
    """
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def measure(server: Server, args) -> Dict[str, float]:
    server.start()
    try:
        recipient = "bench@remote.example" if server.sink else "bench@localhost"
        runLoad(server.port, 50, 5, args.size, recipient, args.starttls)
        deadline = time.monotonic() + 60
        while server.delivered() < 50 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        already = server.delivered()
        tree = [server.root] + descendants(server.root)
        cpu0 = cpuSeconds(tree)
        byName0 = cpuByName(tree)
        start = time.monotonic()
        if args.sendmail:
            client = runSendmail(server.sendmail(), args.messages, args.sessions, args.size,
                                 recipient, server.sendmailEnvironment())
        else:
            client = runLoad(server.port, args.messages, args.sessions, args.size, recipient,
                             args.starttls)
        accepted = time.monotonic() - start
        deadline = time.monotonic() + 600
        while server.delivered() - already < args.messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.name}: not all messages were delivered")
            time.sleep(0.02)
        done = time.monotonic() - start
        # The log may lag the Maildir by a moment (workers batch lines).
        deadline = time.monotonic() + 10
        while len(server.delays()) < already + args.messages and time.monotonic() < deadline:
            time.sleep(0.2)
        delays = server.delays()[-args.messages:]
        tree = [server.root] + descendants(server.root)
        cpu = cpuSeconds(tree) - cpu0
        byName = cpuByName(tree)
        split = {n: (byName[n][0] - byName0.get(n, (0.0, 0.0))[0],
                     byName[n][1] - byName0.get(n, (0.0, 0.0))[1]) for n in byName}
        time.sleep(args.idle)
        resident = server.resident()
        mem = {name: memory(pid) for name, pid in resident.items()}
        return {
            "client": client,
            "accepted": args.messages / accepted,
            "e2e": args.messages / done,
            "cpu_ms": 1000 * cpu / args.messages,
            "rss": sum(r for r, p in mem.values()),
            "pss": sum(p for r, p in mem.values()),
            "split": ", ".join(
                f"{n} {1000 * (u + k) / args.messages:.2f} ({1000 * u / args.messages:.2f}"
                f"+{1000 * k / args.messages:.2f})"
                for n, (u, k) in sorted(split.items(), key=lambda x: -sum(x[1])) if u + k > 0),
            "resident": ", ".join(f"{n} {r:.0f}/{p:.0f}" for n, (r, p) in sorted(mem.items())),
            "delay_p50": percentile(delays, 0.50),
            "delay_p99": percentile(delays, 0.99),
        }
    finally:
        server.stop()
        if server.sink is not None:
            server.sink.stop()

#: The loads of C{--all}: a title and the options that make it.
SCENARIOS = [
    ("End to end into a Maildir, 20 sessions, 2 KB", []),
    ("End to end into a Maildir, 100 sessions, 2 KB", ["-s", "100"]),
    ("End to end into a Maildir, 20 sessions, 20 KB", ["-l", "20000"]),
    ("Relayed to smtp-sink, 20 sessions, 2 KB", ["--relay"]),
    ("Signed by an OpenDKIM milter, 20 sessions, 2 KB", ["--milter"]),
]


def runAll(args) -> int:
    """
    Run each of L{SCENARIOS} with the other options given, printing each
    one's figures under its title.
    """
    common = ["--rounds", str(args.rounds), "-m", str(args.messages),
              "--cool-down", str(args.cool_down), "--quiet-disk", str(args.quiet_disk),
              "--postfix-agents", args.postfix_agents]
    if args.no_postfix:
        common.append("--no-postfix")
    if args.baseline:
        common += ["--baseline", args.baseline]
    if args.scratch:
        common += ["--scratch", args.scratch]
    if args.journalled:
        common.append("--journalled")
    if args.python != sys.executable:
        common += ["--python", args.python]
    for title, extra in SCENARIOS:
        print(f"\n=== {title} ===", flush=True)
        subprocess.run([sys.executable, os.path.abspath(__file__), *common, *extra],
                       check=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--messages", type=int, default=2000)
    parser.add_argument("-s", "--sessions", type=int, default=20)
    parser.add_argument("-l", "--size", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds to let the servers settle before measuring memory")
    parser.add_argument("--no-postfix", action="store_true")
    parser.add_argument("--cool-down", type=float, default=10.0,
                        help="seconds between runs, for the previous server's processes and "
                             "writes to settle")
    parser.add_argument("--quiet-disk", type=float, default=60.0,
                        help="before each run, wait (up to 3 minutes) until creating a small file "
                             "costs less than this many CPU-microseconds; 0 not to wait")
    parser.add_argument("--rounds", type=int, default=5,
                        help="runs of each server, taken in turn; medians are reported")
    parser.add_argument("--postfix-agents", default="virtual,local",
                        help="Postfix delivery agents to compare with, of virtual and local")
    parser.add_argument("--postfix-max-use", type=int, default=None, metavar="N",
                        help="Postfix's max_use (default: its own, 100); a large N keeps its "
                             "smtpd, cleanup and delivery processes alive through the run, so "
                             "that their CPU is shown by process, not only in the total")
    parser.add_argument("--relay", action="store_true",
                        help="relay every message through relayhost to smtp-sink on loopback "
                             "instead of delivering it locally")
    parser.add_argument("--sendmail", action="store_true",
                        help="post with each server's sendmail command instead of SMTP "
                             "(default 500 messages)")
    parser.add_argument("--starttls", action="store_true",
                        help="every session says STARTTLS (both servers offer it with the same "
                             "self-signed certificate; the load comes from the bundled client)")
    parser.add_argument("--milter", action="store_true",
                        help="put one private OpenDKIM on each server's smtpd "
                             "(smtpd_milters), signing every message")
    parser.add_argument("--dkim", action="store_true",
                        help="every message DKIM-signed: by tmta itself (dkim_signing_table), "
                             "by one private OpenDKIM milter on Postfix's smtpd, with the same "
                             "key")
    parser.add_argument("--pgsql", action="store_true",
                        help="deliver with virtual, the mailbox found by virtual_mailbox_maps in "
                             "a private PostgreSQL through proxy: (both servers, the same "
                             "database; Postfix needs postfix-pgsql)")
    parser.add_argument("--all", action="store_true",
                        help="every load the project tracks, one after another: 20 sessions "
                             "of 2 KB messages, 100 sessions, 20 KB messages, and relaying")
    parser.add_argument("--reactor", choices=("direct", "epoll", "asyncio", "uvloop"),
                        default="direct",
                        help="the reactor tmta's workers run on (TMTA_WORKER_REACTOR): tmta's "
                             "own epoll reactor (the default), Twisted's, or Twisted's asyncio "
                             "reactor on asyncio's own loop or on uvloop")
    parser.add_argument("--baseline", metavar="TREE",
                        help="also run tmta from another checkout (such as a git worktree of "
                             "an earlier commit) as tmta-baseline, in turn with the others, and "
                             "print tmta's ratios to it")
    parser.add_argument("--python", metavar="PATH", default=sys.executable,
                        help="the interpreter tmta runs on (default: the one running the "
                             "bench), such as a PyPy virtualenv's python with tmta's "
                             "dependencies installed; tmta-baseline keeps the bench's own")
    parser.add_argument("--scratch", metavar="DIR",
                        help="where the servers' queues and mailboxes go (default: the system's "
                             "temporary directory); a tmpfs such as /dev/shm takes the disk's "
                             "fsyncs, and their noise, out of the figures")
    parser.add_argument("--journalled", action="store_true",
                        help="put the scratch directory on a fresh ext4 with a journal, in an "
                             "image mounted through a loop device (root only): the kind of "
                             "file system most mail hosts run on, where no cost depends on "
                             "which block group each server's files happen to land in")
    parser.add_argument("--profile", metavar="DIR",
                        help="run tmta's workers under cProfile (TMTA_WORKER_PROFILE), each "
                             "leaving SERVICE-PID.prof in DIR when it exits; summarise them "
                             "with bench/profiles.py DIR")
    args = parser.parse_args()
    if args.reactor != "direct":
        os.environ["TMTA_WORKER_REACTOR"] = args.reactor
    if args.profile:
        args.profile = os.path.abspath(args.profile)
        os.makedirs(args.profile, exist_ok=True)
        # Workers run as the mail owner, not as whoever runs the bench.
        os.chmod(args.profile, 0o1777)
        os.environ["TMTA_WORKER_PROFILE"] = args.profile
    if args.all:
        return runAll(args)
    if args.journalled:
        if args.scratch:
            parser.error("--journalled makes its own scratch directory; not with --scratch")
        if os.getuid() != 0:
            parser.error("--journalled mounts a file system: run as root")
        with journalledScratch() as scratch:
            args.scratch = scratch
            return bench(args, parser)
    return bench(args, parser)


def bench(args, parser) -> int:
    """
    Run the servers in turn for C{args.rounds} rounds and print the
    figures.
    """
    if args.sendmail and args.starttls:
        parser.error("--sendmail posts no SMTP; it does not go with --starttls")
    if args.sendmail and args.relay:
        parser.error("--sendmail delivers locally; it does not go with --relay")
    if args.sendmail and "-m" not in sys.argv and "--messages" not in sys.argv:
        args.messages = 500
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if not os.path.isdir(os.path.join(args.baseline, "tmta")):
            parser.error(f"--baseline {args.baseline}: not a tmta checkout")
    base = tempfile.mkdtemp(prefix="tmta-bench-", dir=args.scratch)
    os.chmod(base, 0o755)
    spreadSubdirectories(base)
    certificate = None
    if args.starttls:
        sys.path.insert(0, REPO)
        from tmta.config.selfsigned import writeSelfSignedCertificate

        certificate = os.path.join(base, "tls", "smtpd.pem")
        writeSelfSignedCertificate(certificate, "localhost")
    milter = signWith = None
    if args.milter or args.dkim:
        if not (shutil.which("opendkim") and shutil.which("opendkim-genkey")):
            parser.error("--milter and --dkim need Debian's opendkim and opendkim-tools")
        milter = OpenDKIM(base)
        milter.start()
    postfixMilter = milter
    if args.dkim:
        # tmta signs by itself with the milter's key; Postfix has the milter.
        signWith, milter = milter, None
    mailboxes = None
    if args.pgsql:
        if args.relay:
            parser.error("--pgsql delivers to a mailbox; it does not go with --relay")
        mailboxes = MailboxDatabase(base)
        mailboxes.start()
        args.postfix_agents = "virtual"
    if args.relay:
        if not shutil.which("smtp-sink"):
            parser.error("--relay needs Postfix's smtp-sink")
        makers = [("tmta", lambda where: Tmta(where, Sink(os.path.join(where, "tmta-sink")),
                                              certificate, python=args.python,
                                              milter=milter, signWith=signWith))]
        if not args.no_postfix and shutil.which("postfix") and os.getuid() == 0:
            makers.append(("postfix", lambda where: Postfix(
                where, "virtual", Sink(os.path.join(where, "postfix-sink")), certificate,
                args.postfix_max_use, postfixMilter)))
    else:
        makers = [("tmta", lambda where: Tmta(where, None, certificate, python=args.python,
                                              milter=milter, mailboxes=mailboxes,
                                              signWith=signWith))]
    if args.baseline:
        makers.insert(1, ("tmta-baseline", lambda where: Tmta(
            where, Sink(os.path.join(where, "baseline-sink")) if args.relay else None,
            certificate, repo=args.baseline, label="tmta-baseline", milter=milter,
            mailboxes=mailboxes, signWith=signWith)))
    if not args.relay and not args.no_postfix and shutil.which("postfix") and os.getuid() == 0:
        for agent in [a.strip() for a in args.postfix_agents.split(",") if a.strip()]:
            if agent not in ("virtual", "local"):
                parser.error(f"unknown Postfix agent {agent!r}")
            name = "postfix" if agent == "virtual" else f"postfix-{agent}"
            makers.append((name, lambda where, agent=agent: Postfix(
                where, agent, None, certificate, args.postfix_max_use, postfixMilter,
                mailboxes)))
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name, _ in makers}
    try:
        first = True
        for round in range(args.rounds):
            # Each round starts with another server, so that none always
            # runs right after the same one.
            shift = round % len(makers)
            for name, make in makers[shift:] + makers[:shift]:
                if not first:
                    time.sleep(args.cool_down)
                first = False
                disk = ""
                if args.quiet_disk:
                    cost = waitForQuietDisk(base, args.quiet_disk, 180)
                    disk = f"  (file creation {cost:.0f} us before)"
                where = os.path.join(base, f"round{round}")
                if not os.path.isdir(where):
                    os.makedirs(where)
                    spreadSubdirectories(where)
                # Each run's files are kept until the end: deleting them
                # would slow the next run's file creation (see
                # waitForQuietDisk).
                result = measure(make(where), args)
                runs[name].append(result)
                print(f"round {round + 1}: {name:15} e2e {result['e2e']:6.0f}/s  "
                      f"CPU {result['cpu_ms']:.2f} ms/msg{disk}", flush=True)
    finally:
        if postfixMilter is not None:
            postfixMilter.stop()
        if mailboxes is not None:
            mailboxes.stop()
        shutil.rmtree(base, ignore_errors=True)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    how = ("posted with sendmail, " if args.sendmail else "") + (
        "STARTTLS on every session, " if args.starttls else "") + (
        "signed by an OpenDKIM milter, " if args.milter else "") + (
        "DKIM-signed (tmta by itself, Postfix by an OpenDKIM milter), " if args.dkim else "") + (
        "mailboxes in PostgreSQL through proxy:, " if args.pgsql else "")
    print(f"\n{args.messages} messages, {args.sessions} sessions, {args.size} bytes, {how}"
          f"{'relayed to smtp-sink' if args.relay else 'delivered to a Maildir'}, "
          f"load from {runs['tmta'][0]['client']}; medians of {args.rounds} rounds")
    print(f"tmta ran on {interpreter(args.python)}"
          + (f"; tmta-baseline on {interpreter(sys.executable)}" if args.baseline else ""))
    print(f"{'server':15} {'accepted/s':>11} {'e2e/s':>8} {'CPU ms/msg':>11} "
          f"{'idle RSS MB':>12} {'idle PSS MB':>12}  resident RSS/PSS (last round)")
    for name, _ in makers:
        last = runs[name][-1]
        print(f"{name:15} {median(name, 'accepted'):11.0f} {median(name, 'e2e'):8.0f} "
              f"{median(name, 'cpu_ms'):11.2f} {median(name, 'rss'):12.0f} "
              f"{median(name, 'pss'):12.0f}  {last['resident']}")
    print("Delay from arrival to delivery (the delay= of each delivery line), medians of the "
          "rounds' figures:")
    for name, _ in makers:
        print(f"  {name}: median {1000 * median(name, 'delay_p50'):.0f} ms, "
              f"99th percentile {1000 * median(name, 'delay_p99'):.0f} ms")
    print("CPU ms per message by process (user+system), last round (workers that exited are "
          "not shown):")
    for name, _ in makers:
        print(f"  {name}: {runs[name][-1]['split']}")
    for name, _ in makers[1:]:
        ratios = [t["e2e"] / p["e2e"] for t, p in zip(runs["tmta"], runs[name])]
        cpuRatios = [t["cpu_ms"] / p["cpu_ms"] for t, p in zip(runs["tmta"], runs[name])]
        print(f"tmta/{name}: accepted {median('tmta', 'accepted') / median(name, 'accepted'):.2f}, "
              f"end to end {median('tmta', 'e2e') / median(name, 'e2e'):.2f} "
              f"(per round {', '.join(f'{r:.2f}' for r in ratios)}), "
              f"CPU per message {median('tmta', 'cpu_ms') / median(name, 'cpu_ms'):.2f} "
              f"(per round {', '.join(f'{r:.2f}' for r in cpuRatios)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
