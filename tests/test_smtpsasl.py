"""
Tests for the smtp client's SMTP AUTH (L{tmta.smtp.sasl}): a private
Postfix smarthost that checks logins against a Cyrus sasldb, and the
mechanism choice on its own.
"""

import os
import pwd
import shutil
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import sendMessage, waitFor
from tests.test_smtp import RelayHarness
from tmta.config import MainConfig
from tmta.smtp.sasl import SASLPasswords, allowedMechanisms


class SmarthostTests(RelayHarness, SynchronousTestCase):
    """
    tmta relays through C{relayhost = [localhost]:PORT} to a private
    Postfix that relays only for clients that logged in.
    """

    def setUp(self):
        super().setUp()
        if shutil.which("saslpasswd2") is None:
            raise SkipTest("Debian's sasl2-bin (saslpasswd2) is not installed")
        from tests.support import PrivatePostfix

        saslData = os.path.join(self.base, "sasldb")
        os.makedirs(saslData)
        sasldb = os.path.join(saslData, "sasldb2")
        subprocess.run(["saslpasswd2", "-f", sasldb, "-u", "test.realm", "-c", "-p",
                        "relayuser"], input=b"right password", check=True)
        account = pwd.getpwnam("postfix")
        os.chown(sasldb, account.pw_uid, account.pw_gid)
        self.mx = PrivatePostfix(os.path.join(self.base, "postfix"), "remote.example", {
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_local_domain": "test.realm",
            "mynetworks": "192.0.2.0/24",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        })
        # Debian's Postfix reads Cyrus's smtpd.conf from the sasl
        # directory of its configuration (cyrus_sasl_config_path is
        # ignored there).
        os.makedirs(os.path.join(self.mx.conf, "sasl"))
        with open(os.path.join(self.mx.conf, "sasl", "smtpd.conf"), "w") as f:
            f.write(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
                    f"mech_list: PLAIN LOGIN\nsasldb_path: {sasldb}\n")
        self.sinkPort = self.mx.port
        self.mx.start()
        self.addCleanup(self.mx.stop)

    def relay(self, password, options="noanonymous", mechanisms=""):
        self.startMaster(**{
            "relayhost": f"[localhost]:{self.sinkPort}",
            "smtp_sasl_auth_enable": "yes",
            "smtp_sasl_password_maps":
                f"inline:{{ {{ [localhost]:{self.sinkPort} = relayuser:{password} }} }}",
            "smtp_sasl_security_options": options,
            "smtp_sasl_mechanism_filter": mechanisms,
        })

    def deferral(self, queueId):
        waitFor(lambda: f"{queueId}: to=<bob@remote.example>" in self.master.log(),
                what="the delivery attempt")
        return [line for line in self.master.log().splitlines()
                if f"{queueId}: to=<bob@remote.example>" in line][0]

    def test_rightPasswordDelivers(self):
        self.relay("right password")
        sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "logged in")
        waitFor(lambda: self.mx.messages(), what="the message at the smarthost")
        self.assertIn(b"Subject: logged in", self.mx.messages()[0])

    def test_loginMechanism(self):
        self.relay("right password", mechanisms="login")
        sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "by LOGIN")
        waitFor(lambda: self.mx.messages(), what="the message at the smarthost")

    def test_wrongPasswordDefersWithTheReply(self):
        self.relay("wrong password")
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "refused")
        line = self.deferral(queueId)
        self.assertIn("status=deferred", line)
        self.assertIn(f"SASL authentication failed; server localhost[127.0.0.1]:"
                      f"{self.sinkPort} said: 535 5.7.8", line)
        self.assertEqual(self.mx.messages(), [])

    def test_plaintextRefusedByDefault(self):
        """
        Postfix's default options (noplaintext) allow no password in the
        clear: nothing is sent, and the reason says why.
        """
        self.relay("right password", options="noplaintext, noanonymous")
        queueId = sendMessage(self.port, "alice@localhost", ["bob@remote.example"], "clear")
        line = self.deferral(queueId)
        self.assertIn("status=deferred", line)
        self.assertIn("no mechanism available", line)
        self.assertEqual(self.mx.messages(), [])


class MechanismTests(SynchronousTestCase):
    def test_securityOptions(self):
        self.assertEqual(allowedMechanisms("noanonymous", []), ("PLAIN", "LOGIN"))
        self.assertEqual(allowedMechanisms("noplaintext, noanonymous", []), ())
        self.assertEqual(allowedMechanisms("noanonymous", ["login"]), ("LOGIN",))

    def test_lookupByNexthopThenHost(self):
        passwords = SASLPasswords(MainConfig({
            "smtp_sasl_auth_enable": "yes",
            "smtp_sasl_security_options": "noanonymous",
            "smtp_sasl_password_maps": "inline:{ [relay.isp.example]:587=a:1, "
                                       "mx.example.com=b:2 }"}))
        login = passwords.forServer("[relay.isp.example]:587", "relay.isp.example", 587)
        self.assertEqual((login.username, login.password), ("a", "1"))
        login = passwords.forServer("example.com", "mx.example.com", 25)
        self.assertEqual((login.username, login.password), ("b", "2"))
        self.assertIsNone(passwords.forServer("other.example", "mx.other.example", 25))
        self.assertEqual(login.mechanisms("PLAIN LOGIN CRAM-MD5", encrypted=False),
                         ["PLAIN", "LOGIN"])
        self.assertEqual(login.mechanisms("CRAM-MD5", encrypted=False), [])
