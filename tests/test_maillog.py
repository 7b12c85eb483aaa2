"""
tmta's log is Postfix's maillog: the tools operators run on Postfix's
log read tmta's.  Here Debian's C{pflogsumm} reads the log of a real
master that received, delivered, deferred, bounced and refused mail,
and its counts are what was sent.
"""

import os
import re
import shutil
import smtplib
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    MASTER_CF,
    Master,
    freePorts,
    localMaildirs,
    sendMessage,
    shortTemporaryDirectory,
    waitFor,
)


class PflogsummTests(SynchronousTestCase):
    def setUp(self):
        if not shutil.which("pflogsumm"):
            raise self.skipTest("pflogsumm is not installed")

    def test_countsAreWhatWasSent(self):
        """
        Five messages accepted (three delivered, one deferred, one
        bounced, whose notice to the sender is delivered too) and one
        recipient refused: pflogsumm counts 5 received, 4 delivered,
        1 deferred, 1 bounced and 1 rejected.
        """
        base = shortTemporaryDirectory(self)
        port, closed = freePorts(2)
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "mx.example.org", "mydestination": "localhost, $myhostname",
            **localMaildirs(os.path.join(base, "mail") + "/"),
            # The test's client is not trusted: relaying is refused.
            "mynetworks": "127.0.0.2/32",
            "smtpd_relay_restrictions": "reject_unauth_destination",
            "relay_domains": "slow.example, gone.example",
            "transport_maps": "inline:{ {slow.example = smtp:[127.0.0.1]:" + str(closed)
                              + "}, {gone.example = error:mailbox gone} }",
        }, MASTER_CF.format(port=port) + (
            "smtp      unix  -       -       n       -       -       smtp\n"
            "error     unix  -       -       n       -       -       error\n")).start()
        self.addCleanup(master.stop)
        for n in range(3):
            sendMessage(port, "alice@localhost", ["bob@localhost"], f"delivered {n}")
        sendMessage(port, "alice@localhost", ["carol@slow.example"], "deferred")
        sendMessage(port, "alice@localhost", ["dave@gone.example"], "bounced")
        with self.assertRaises(smtplib.SMTPRecipientsRefused):
            sendMessage(port, "alice@localhost", ["eve@elsewhere.example"], "refused")

        def settled():
            log = master.log()
            return (len(re.findall(r"status=sent", log)) >= 4
                    and "status=deferred" in log and "status=bounced" in log)

        waitFor(settled, what="every delivery logged")
        master.stop()
        report = subprocess.run(
            ["pflogsumm", "--syslog-name=tmta", master.logPath],
            capture_output=True, text=True, check=True).stdout
        totals = {name: int(count) for count, name in
                  re.findall(r"^\s+(\d+)\s+(received|delivered|deferred|bounced|rejected)\b",
                             report, re.M)}
        self.assertEqual(totals, {"received": 5, "delivered": 4, "deferred": 1, "bounced": 1,
                                  "rejected": 1}, report)
