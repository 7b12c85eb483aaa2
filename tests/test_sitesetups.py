"""
The Postfix setups real sites run beside their MTA, as their guides
write them -- milters (OpenDKIM and OpenDMARC on UNIX sockets, rspamd),
an after-queue amavis filter, postscreen with DNS lists -- start: the
configuration loads, and the master finds every service runnable and
every setting honoured.  (What each does is shown end to end by
L{tests.test_milter}, L{tests.test_contentfilter} and
L{tests.test_postscreen}.)
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.test_config import DEBIAN_MASTER_CF
from tmta.config import loadConfiguration
from tmta.master.components import availableComponents
from tmta.master.startup import checkServices

#: ISPmail's (and Debian's opendkim/opendmarc packages') milters.
MILTERS_MAIN_CF = """\
smtpd_milters = unix:opendkim/opendkim.sock, unix:opendmarc/opendmarc.sock
non_smtpd_milters = $smtpd_milters
milter_default_action = accept
milter_protocol = 6
"""

#: rspamd's own integration guide (mailcow, Mailu, Mail-in-a-Box).
RSPAMD_MAIN_CF = """\
smtpd_milters = inet:localhost:11332
non_smtpd_milters = $smtpd_milters
milter_mail_macros = i {mail_addr} {client_addr} {client_name} {auth_authen}
milter_default_action = accept
"""

#: amavisd-new's README.postfix (iRedMail, docker-mailserver).
AMAVIS_MAIN_CF = """\
content_filter = smtp-amavis:[127.0.0.1]:10024
"""

AMAVIS_MASTER_CF = DEBIAN_MASTER_CF + """\
smtp-amavis unix -      -       n     -       2  smtp
    -o smtp_data_done_timeout=1200
    -o smtp_send_xforward_command=yes
    -o max_use=20
127.0.0.1:10025 inet n  -       n     -       -  smtpd
    -o content_filter=
    -o local_recipient_maps=
    -o relay_recipient_maps=
    -o smtpd_restriction_classes=
    -o smtpd_delay_reject=no
    -o smtpd_client_restrictions=permit_mynetworks,reject
    -o smtpd_helo_restrictions=
    -o smtpd_sender_restrictions=
    -o smtpd_recipient_restrictions=permit_mynetworks,reject
    -o smtpd_data_restrictions=reject_unauth_pipelining
    -o smtpd_end_of_data_restrictions=
    -o mynetworks=127.0.0.0/8
    -o smtpd_error_sleep_time=0
    -o smtpd_soft_error_limit=1001
    -o smtpd_hard_error_limit=1000
    -o smtpd_client_connection_count_limit=0
    -o smtpd_client_connection_rate_limit=0
    -o receive_override_options=no_header_body_checks,no_unknown_recipient_checks,no_milters
    -o smtpd_authorized_xforward_hosts=127.0.0.0/8
"""

#: POSTSCREEN_README's, with the DNS lists sites commonly use.
POSTSCREEN_MAIN_CF = """\
postscreen_access_list = permit_mynetworks, cidr:{directory}/postscreen_access.cidr
postscreen_denylist_action = drop
postscreen_greet_action = enforce
postscreen_dnsbl_threshold = 3
postscreen_dnsbl_action = enforce
postscreen_dnsbl_sites = zen.spamhaus.org*3
    b.barracudacentral.org=127.0.0.[2..11]*2
    bl.spameatingmonkey.net*2
    list.dnswl.org=127.0.[0..255].0*-2
postscreen_dnsbl_allowlist_threshold = -1
"""

POSTSCREEN_MASTER_CF = DEBIAN_MASTER_CF.replace(
    "smtp      inet  n       -       y       -       -       smtpd\n",
    "smtp      inet  n       -       y       -       1       postscreen\n"
    "smtpd     pass  -       -       y       -       -       smtpd\n"
    "dnsblog   unix  -       -       y       -       0       dnsblog\n"
    "tlsproxy  unix  -       -       y       -       0       tlsproxy\n")


class SiteSetupTests(SynchronousTestCase):
    def start(self, mainCf: str, masterCf: str = DEBIAN_MASTER_CF):
        """
        Load the configuration and check its services as the master does
        before it binds anything.

        @return: the configuration, and which services run.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "postscreen_access.cidr"), "w") as f:
            f.write("192.0.2.0/24 reject\n198.51.100.7 permit\n")
        with open(os.path.join(directory, "main.cf"), "w") as f:
            f.write("myhostname = mx.example.org\n"
                    + mainCf.replace("{directory}", directory))
        with open(os.path.join(directory, "master.cf"), "w") as f:
            f.write(masterCf)
        configuration = loadConfiguration(directory)
        return configuration, checkServices(configuration, availableComponents())

    def test_milters(self):
        configuration, running = self.start(MILTERS_MAIN_CF)
        from tmta.smtpd.settings import SMTPSettings

        entry = next(e for e in configuration.services if e.command == "smtpd")
        settings = SMTPSettings.fromConfig(configuration.serviceConfig(entry), None, None)
        queue = configuration.main.get("queue_directory")
        self.assertEqual([m.path for m in settings.milters],
                         [f"{queue}/opendkim/opendkim.sock", f"{queue}/opendmarc/opendmarc.sock"])
        self.assertEqual({m.defaultAction for m in settings.milters}, {"accept"})

    def test_rspamd(self):
        configuration, _ = self.start(RSPAMD_MAIN_CF)
        self.assertEqual(configuration.main.get("non_smtpd_milters"), "inet:localhost:11332")

    def test_amavis(self):
        configuration, running = self.start(AMAVIS_MAIN_CF, AMAVIS_MASTER_CF)
        returning = next(e for e in configuration.services if e.service == "127.0.0.1:10025")
        self.assertTrue(running[returning.key])
        config = configuration.serviceConfig(returning)
        self.assertEqual(config.get("content_filter"), "")
        from tmta.mail.receiving import receivingAttributes

        self.assertEqual(receivingAttributes(configuration.main),
                         {"filter": "smtp-amavis:[127.0.0.1]:10024"})
        self.assertEqual(receivingAttributes(config),
                         {"receive_override": "no_header_body_checks,no_milters"})

    def test_postscreen(self):
        configuration, running = self.start(POSTSCREEN_MAIN_CF, POSTSCREEN_MASTER_CF)
        byService = {(e.service, e.type): running[e.key] for e in configuration.services}
        self.assertTrue(byService[("smtp", "inet")])
        self.assertTrue(byService[("smtpd", "pass")])
        # postscreen asks the DNS itself and talks no TLS: these are skipped.
        self.assertFalse(byService[("dnsblog", "unix")])
        from tmta.postscreen.settings import PostscreenSettings

        settings = PostscreenSettings.fromConfig(configuration.main)
        self.assertEqual([(s.zone, s.weight) for s in settings.dnsblSites],
                         [("zen.spamhaus.org", 3), ("b.barracudacentral.org", 2),
                          ("bl.spameatingmonkey.net", 2), ("list.dnswl.org", -2)])
        self.assertEqual((settings.denylistAction, settings.actions["pregreet"]),
                         ("drop", "enforce"))
