"""
C{tmta qshape} (L{tmta.cli.admin.qshape}): Postfix's qshape table of
the queue, by domain and message age.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import REPO
from tmta.cli.admin.qshape import Shape
from tmta.queue.layout import createLayout
from tmta.queue.store import QueueStore

NOW = 1_800_000_000.0


class ShapeTests(SynchronousTestCase):
    def test_table(self):
        """
        Recipients counted by domain and by the age bucket of their
        message, the columns as wide as qshape makes them, the rows by
        count, then by the length of the name (then the name, where
        qshape leaves the order to chance); the null sender is
        MAILER-DAEMON.
        """
        shape = Shape(NOW)
        shape.add(NOW - 60, ["a@x.example.com", "b@X.Example.com", "c@y.example.com"])
        shape.add(NOW - 7 * 60, ["d@x.example.com"])
        shape.add(NOW - 30 * 3600, ["e@example.org", ""])
        self.assertEqual(shape.render(), (
            "                                         T  5 10 20 40 80 160 320 640 1280 1280+\n"
            "                                  TOTAL  6  3  1  0  0  0   0   0   0    0     2\n"
            "                          x.example.com  3  2  1  0  0  0   0   0   0    0     0\n"
            "                            example.org  1  0  0  0  0  0   0   0   0    0     1\n"
            "                          MAILER-DAEMON  1  0  0  0  0  0   0   0   0    0     1\n"
            "                          y.example.com  1  1  0  0  0  0   0   0   0    0     0\n"))

    def test_bucketsAndParents(self):
        """
        C{-t}, C{-b} and C{-l} set the buckets; C{-p} adds the parent
        domains with enough subdomains (C{-m}), named with a leading
        dot; a domain too long for its column is cut from the left.
        """
        shape = Shape(NOW, tick=10, buckets=4, linear=True, parents=True)
        for n in range(3):
            shape.add(NOW - 25 * 60, [f"u@host{n}.sub.example.net"])
        shape.add(NOW, ["u@" + "a" * 60 + ".example.net"])
        table = shape.render(minimumSubdomains=2).splitlines()
        self.assertEqual(table[0].split(), ["T", "10", "20", "30", "30+"])
        self.assertEqual(table[1].split(), ["TOTAL", "4", "1", "0", "3", "0"])
        self.assertEqual(table[2].split(), [".example.net", "4", "1", "0", "3", "0"])
        self.assertEqual(table[3].split(), [".sub.example.net", "3", "0", "0", "3", "0"])
        [cut] = [line for line in table if line.startswith("+")]
        self.assertTrue(cut.split()[0].endswith("aaa.example.net"), cut)
        self.assertEqual(len(cut), len(table[0]))
        # .example.net has two subdomains (sub.example.net and the long
        # one), too few for a row when three are asked for.
        self.assertNotIn(".example.net", [line.split()[0] for line in
                                          shape.render(minimumSubdomains=3).splitlines()[1:]])


class CommandTests(SynchronousTestCase):
    def test_fromTheQueue(self):
        """
        The pending recipients of the messages in the chosen queues
        (C{incoming} and C{active} by default), or with C{-s} their
        senders.
        """
        base = os.path.abspath(self.mktemp())
        queue = os.path.join(base, "queue")
        createLayout(queue)
        os.makedirs(os.path.join(base, "conf"))
        with open(os.path.join(base, "conf", "main.cf"), "w") as f:
            f.write(f"queue_directory = {queue}\n")
        store = QueueStore(queue)
        for name, sender, recipients in (
                ("active", "a@sender.example", ["x@one.example", "y@one.example"]),
                ("deferred", "b@sender.example", ["z@two.example"])):
            queueId, writer = store.create("incoming")
            writer.envelope(time.time() - 120, sender, {})
            for address in recipients:
                writer.recipient(address)
            writer.content(b"Subject: t\n\nbody\n")
            writer.commit()
            store.move(queueId, "incoming", name)

        def qshape(*words: str) -> str:
            result = subprocess.run(
                [sys.executable, "-m", "tmta.cli.admin", "-c", os.path.join(base, "conf"),
                 "qshape", *words], capture_output=True, text=True, cwd=REPO, check=True)
            return result.stdout

        rows = {line.split()[0]: line.split()[1:3] for line in qshape().splitlines()[1:]}
        self.assertEqual(rows, {"TOTAL": ["2", "2"], "one.example": ["2", "2"]})
        rows = {line.split()[0]: line.split()[1] for line in
                qshape("-s", "active", "deferred").splitlines()[1:]}
        self.assertEqual(rows, {"TOTAL": "2", "sender.example": "2"})
