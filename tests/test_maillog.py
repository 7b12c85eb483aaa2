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
            # Taken, to be bounced: smtpd would refuse the error
            # transport's recipients at RCPT, as Postfix's does.
            "smtpd_reject_unlisted_recipient": "no",
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


class Fail2banTests(SynchronousTestCase):
    def setUp(self):
        if not shutil.which("fail2ban-regex") or not os.path.exists(
                "/etc/fail2ban/filter.d/postfix.conf"):
            raise self.skipTest("fail2ban is not installed")

    def test_stockFiltersMatch(self):
        """
        With C{syslog_name = postfix}, fail2ban's stock C{postfix} filter
        matches every client refused for relaying, and its C{auth} mode
        every failed AUTH -- in the log as tmta writes it.
        """
        from tmta.sasl.passwords import changeTable

        base = shortTemporaryDirectory(self)
        passwords = os.path.join(base, "sasl_passwd")
        changeTable(passwords, "bob", "secret")
        os.chmod(passwords, 0o644)
        port = freePorts(1)[0]
        master = Master(os.path.join(base, "conf"), {
            "myhostname": "mx.example.org", "mydestination": "localhost",
            **localMaildirs(os.path.join(base, "mail") + "/"),
            "syslog_name": "postfix", "mynetworks": "127.0.0.2/32",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "tmta",
            "smtpd_sasl_path": passwords,
        }, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        for n in range(2):
            with self.assertRaises(smtplib.SMTPRecipientsRefused):
                sendMessage(port, "alice@example.com", [f"x{n}@elsewhere.example"], "relay?")
            client = smtplib.SMTP("127.0.0.1", port, timeout=30)
            try:
                client.ehlo("test.example")
                client.user, client.password = "bob", f"wrong{n}"
                with self.assertRaises(smtplib.SMTPAuthenticationError):
                    client.auth("PLAIN", client.auth_plain)
            finally:
                client.quit()
        waitFor(lambda: master.log().count("authentication failed") >= 2
                and master.log().count("Relay access denied") >= 2, what="the log lines")
        master.stop()

        def matched(filterName):
            result = subprocess.run(["fail2ban-regex", master.logPath, filterName],
                                    capture_output=True, text=True, timeout=120)
            found = re.search(r"Failregex: (\d+) total", result.stdout)
            self.assertIsNotNone(found, result.stdout + result.stderr)
            return int(found.group(1))

        self.assertEqual(matched("/etc/fail2ban/filter.d/postfix.conf"), 2)
        self.assertEqual(matched("postfix[mode=auth]"), 2)


class JSONMaillogTests(SynchronousTestCase):
    def test_jsonLines(self):
        """
        With C{maillog_file_format = json}, every line the master writes
        is a JSON object, and a message's delivery line gives its queue
        id, recipient and status as fields.
        """
        import json

        base = shortTemporaryDirectory(self)
        [port] = freePorts(1)
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", **localMaildirs(os.path.join(base, "mail") + "/"),
            "maillog_file_format": "json",
        }, MASTER_CF.format(port=port)).start()
        self.addCleanup(master.stop)
        queueId = sendMessage(port, "alice@localhost", ["bob@localhost"], "json")

        def delivered():
            records = [json.loads(line) for line in open(master.logPath) if line.strip()]
            return [r for r in records if r.get("queue_id") == queueId
                    and r.get("status") == "sent"]

        waitFor(delivered, what="the delivery's record")
        [record] = delivered()
        self.assertEqual((record["program"], record["to"]), ("tmta/local", "bob@localhost"))
