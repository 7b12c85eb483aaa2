"""
Tests for L{tmta.config}: main.cf and master.cf syntax, expansion,
defaults and the loader.
"""

import os

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tmta.config import (
    ConfigError,
    MainConfig,
    loadConfiguration,
    parseInetAddress,
    parseMainCf,
    parseMasterCf,
    parseTime,
)
from tmta.config.expand import ExpansionError, expand
from tmta.config.loader import prepareEmbedded

DEBIAN_MASTER_CF = """\
#
# Postfix master process configuration file.
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
smtp      inet  n       -       y       -       -       smtpd
#submission inet n       -       y       -       -       smtpd
#  -o syslog_name=postfix/submission
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class ExpandTests(SynchronousTestCase):
    def lookup(self, name):
        return {"a": "x", "b": "", "c": "$a$a", "loop": "$loop", "d": "${a}y"}.get(name)

    def test_forms(self):
        cases = {
            "$a": "x",
            "${a}": "x",
            "$(a)": "x",
            "$c": "xx",
            "$d": "xy",
            "[$undefined]": "[]",
            "${a?yes}": "yes",
            "${b?yes}": "",
            "${a:no}": "",
            "${b:no}": "no",
            "${a?{1}:{2}}": "1",
            "${b?{1}:{2}}": "2",
            "${b?{1}}": "",
            "${b:{z $a}}": "z x",
            "$$a": "$a",
            "${a ? {1} : {2}}": "1",
            "${b ? {1} : {2}}": "2",
            "${{$a} == {x} ? {same} : {other}}": "same",
            "${{$a} != {x} ? {same} : {other}}": "other",
            "${{3.6} <level {3.10} ? {older} : {newer}}": "older",
            "${{10} > {9} ? {more}}": "more",
        }
        for text, wanted in cases.items():
            self.assertEqual(expand(text, self.lookup), wanted, text)

    def test_loop(self):
        self.assertRaises(ExpansionError, expand, "$loop", self.lookup)

    def test_unclosed(self):
        self.assertRaises(ExpansionError, expand, "${a", self.lookup)

    def test_lonelyDollar(self):
        for text in ("a $ b", "cost $", "${}"):
            self.assertRaises(ExpansionError, expand, text, self.lookup)


class MainCfTests(SynchronousTestCase):
    def test_syntax(self):
        params, lines = parseMainCf(
            [
                "# comment",
                "",
                "myhostname = mail.example.com",
                "mydestination = a,",
                "    b,",
                "\tc",
                "   # indented comment is still a comment",
                "relayhost=",
                "myhostname = later.example.com",
            ]
        )
        self.assertEqual(params["mydestination"], "a, b, c")
        self.assertEqual(params["relayhost"], "")
        self.assertEqual(params["myhostname"], "later.example.com")
        self.assertEqual(lines["mydestination"], 4)

    def test_errorNamesFileAndLine(self):
        e = self.assertRaises(
            ConfigError, parseMainCf, ["a = b", "this is wrong"], "/etc/tmta/main.cf"
        )
        self.assertEqual(e.line, 2)
        self.assertIn("/etc/tmta/main.cf, line 2", str(e))

    def test_leadingContinuation(self):
        e = self.assertRaises(ConfigError, parseMainCf, ["  orphan = 1"], "m.cf")
        self.assertEqual(e.line, 1)

    def test_defaults(self):
        c = MainConfig()
        self.assertEqual(
            c.getList("smtpd_relay_restrictions"),
            ["permit_mynetworks", "permit_sasl_authenticated", "defer_unauth_destination"],
        )
        self.assertEqual(c.get("inet_interfaces"), "loopback-only")
        self.assertEqual(c.get("compatibility_level"), "3.6")
        self.assertEqual(c.getTime("smtpd_timeout"), 300)
        self.assertEqual(c.getInt("smtpd_hard_error_limit"), 20)
        self.assertEqual(c.getTime("maximal_queue_lifetime"), 5 * 86400)
        self.assertEqual(c.get("relay_domains"), "")

    def test_derivedDefaults(self):
        c = MainConfig({"myhostname": "mx.example.org"})
        self.assertEqual(c.get("mydomain"), "example.org")
        self.assertEqual(
            c.getList("mydestination"), ["mx.example.org", "localhost.example.org", "localhost"]
        )
        self.assertEqual(c.get("smtpd_banner"), "mx.example.org ESMTP tmta")

    def test_stress(self):
        c = MainConfig({"stress": "yes"})
        self.assertEqual(c.getTime("smtpd_timeout"), 10)

    def test_overrides(self):
        c = MainConfig({"myhostname": "a.example"}).withOverrides({"myhostname": "b.example"})
        self.assertEqual(c.get("myorigin"), "b.example")

    def test_unknown(self):
        c = MainConfig({"no_such_thing": "1", "myhostname": "x.y"}, lines={"no_such_thing": 7})
        self.assertEqual(c.unknownParameters(), [("no_such_thing", 7)])

    def test_time(self):
        self.assertEqual(parseTime("100s"), 100)
        self.assertEqual(parseTime("2h"), 7200)
        self.assertEqual(parseTime("3", "d"), 3 * 86400)
        self.assertRaises(ValueError, parseTime, "soon")
        # Only the unit's letter counts, as in Postfix: "5mh" is what
        # postscreen_dnsbl_max_ttl's default makes of a ttl of 5m.
        self.assertEqual(parseTime("5mh"), 300)
        self.assertRaises(ValueError, parseTime, "5x")

    def test_badTypedValue(self):
        c = MainConfig({"smtpd_recipient_limit": "lots"}, path="m.cf",
                       lines={"smtpd_recipient_limit": 3})
        e = self.assertRaises(ConfigError, c.getInt, "smtpd_recipient_limit")
        self.assertEqual(e.line, 3)


class MasterCfTests(SynchronousTestCase):
    def test_debian(self):
        entries = parseMasterCf(DEBIAN_MASTER_CF.splitlines(), "master.cf")
        byName = {(e.service, e.type): e for e in entries}
        smtp = byName[("smtp", "inet")]
        self.assertEqual((smtp.private, smtp.unpriv, smtp.chroot), (False, True, True))
        self.assertIsNone(smtp.maxproc)
        self.assertEqual(smtp.command, "smtpd")
        pickup = byName[("pickup", "unix")]
        self.assertEqual((pickup.wakeup, pickup.maxproc), (60, 1))
        tlsmgr = byName[("tlsmgr", "unix")]
        self.assertEqual((tlsmgr.wakeup, tlsmgr.wakeupIfUsed), (1000, True))
        self.assertTrue(byName[("rewrite", "unix")].private)
        self.assertEqual(byName[("relay", "unix")].overrides,
                         {"syslog_name": "postfix/$service_name"})
        maildrop = byName[("maildrop", "unix")]
        self.assertFalse(maildrop.unpriv)
        self.assertEqual(maildrop.args[-1], "${recipient}")
        self.assertIn(("postlog", "unix-dgram"), byName)
        self.assertEqual(smtp.line, 7)

    def test_errors(self):
        for text in [
            "smtp inet n - y - smtpd",  # 7 columns
            "smtp tcp n - y - - smtpd",  # bad type
            "smtp inet maybe - y - - smtpd",  # bad flag
            "smtp inet n - y soon - smtpd",  # bad wakeup
            "smtp inet n - n - - smtpd -o",  # -o without value
            "smtp inet n - n - - smtpd -o novalue",  # -o without =
        ]:
            e = self.assertRaises(ConfigError, parseMasterCf, ["# x", text], "master.cf")
            self.assertEqual(e.line, 2, text)

    def test_duplicate(self):
        self.assertRaises(
            ConfigError,
            parseMasterCf,
            ["a unix - - n - - local", "a unix - - n - - local"],
        )

    def test_bracedOverride(self):
        [e] = parseMasterCf(["s inet n - n - - smtpd -o { smtpd_banner = hello there }"])
        self.assertEqual(e.overrides, {"smtpd_banner": "hello there"})

    def test_inetAddresses(self):
        self.assertEqual(parseInetAddress("127.0.0.1:2525"), ("127.0.0.1", 2525))
        self.assertEqual(parseInetAddress("[::1]:25"), ("::1", 25))
        self.assertEqual(parseInetAddress("2525"), (None, 2525))
        self.assertEqual(parseInetAddress("smtp"), (None, 25))
        self.assertRaises(ValueError, parseInetAddress, "no-such-service-name")
        self.assertRaises(ValueError, parseInetAddress, "99999")


class LoaderTests(SynchronousTestCase):
    def test_loadWithWarnings(self):
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, "main.cf"), "w") as f:
            f.write("myhostname = h.example\nbogus_parameter = 1\n"
                    # The operator's own parameters, used by name: no warning.
                    "site_restrictions = permit_mynetworks, reject\n"
                    "smtpd_client_restrictions = $site_restrictions\n"
                    "submission_restrictions = permit_sasl_authenticated, reject\n")
        with open(os.path.join(d, "master.cf"), "w") as f:
            f.write(DEBIAN_MASTER_CF + "587 inet n - n - - smtpd\n"
                    "  -o smtpd_client_restrictions=${submission_restrictions}\n")
        c = loadConfiguration(d, {"max_idle": "7s"})
        self.assertEqual(c.main.getTime("max_idle"), 7)
        self.assertEqual(c.main.get("config_directory"), os.path.abspath(d))
        self.assertNotIn("config_directory", c.main.explicit)
        chroot = [w for w in c.warnings if "chroot" in w]
        self.assertEqual(len(chroot), 1)
        self.assertTrue(any("line 2: unknown parameter bogus_parameter" in w for w in c.warnings))
        self.assertEqual([w for w in c.warnings if "unknown parameter" in w
                          and "bogus_parameter" not in w], [])
        relay = [e for e in c.services if e.service == "relay"][0]
        self.assertEqual(c.serviceConfig(relay).get("syslog_name"), "postfix/relay")

    def test_syntaxErrorStops(self):
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, "main.cf"), "w") as f:
            f.write("ok = 1\n\nbroken line\n")
        e = self.assertRaises(ConfigError, loadConfiguration, d)
        self.assertIn("main.cf, line 3", str(e))

    def test_embedded(self):
        d = prepareEmbedded(self.mktemp())
        c = loadConfiguration(d, embedded=True)
        self.assertEqual(c.main.get("queue_directory"), os.path.join(d, "queue"))
        # Mail for any safe name at localhost goes to virtual(8).
        self.assertIn("localhost", c.main.getList("virtual_mailbox_domains"))
        self.assertEqual(c.main.get("virtual_mailbox_base"), os.path.join(d, "mail"))
        from tmta.tables import openTable

        mailboxes = openTable(c.main.get("virtual_mailbox_maps"))
        self.assertEqual(mailboxes.get("anybody@localhost"), "anybody/")
        self.assertEqual(mailboxes.get("anybody+ext@localhost"), "anybody/")
        self.assertIsNone(mailboxes.get("../etc@localhost"))
        self.assertIsNone(mailboxes.get(".hidden@localhost"))
        self.assertEqual(c.warnings, [])
        # STARTTLS with a self-signed certificate, its key readable by
        # its owner only.
        certificate = os.path.join(d, "tls", "smtpd.pem")
        self.assertEqual(os.stat(certificate).st_mode & 0o777, 0o600)
        from tmta.smtpd.tls import ServerTLS

        self.assertEqual(ServerTLS.fromConfig(c.main).level, "may")
        with open(certificate, "rb") as f:
            before = f.read()
        # An operator's edits survive a second start.
        with open(os.path.join(d, "main.cf"), "a") as f:
            f.write("myhostname = edited.example\n")
        prepareEmbedded(d)
        self.assertEqual(loadConfiguration(d).main.get("myhostname"), "edited.example")
        with open(certificate, "rb") as f:
            self.assertEqual(f.read(), before)


def _uncommented(text: str, services) -> str:
    """
    Debian's stock master.cf with the commented lines of C{services}
    (and their -o lines) uncommented.
    """
    out, active = [], False
    for line in text.splitlines():
        if line.startswith("#") and not line.startswith("#  ") and not line.startswith("# "):
            active = line[1:].split()[0] in services if line[1:].strip() else False
            out.append(line[1:] if active else line)
        elif line.startswith("#  -o") and active:
            out.append(line[1:])
        else:
            if not line.startswith("#"):
                active = False
            out.append(line)
    return "\n".join(out) + "\n"


STOCK_MASTER_CF = "/usr/share/postfix/master.cf.dist"


class FailClosedTests(SynchronousTestCase):
    """
    Settings tmta cannot honour yet, whose neglect would make mail less
    safe, stop start-up, naming file and line; harmless ones are warned
    about; values of the wrong type stop start-up.
    """

    def directory(self, mainCf="", masterCf=DEBIAN_MASTER_CF):
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, "main.cf"), "w") as f:
            f.write(mainCf)
        with open(os.path.join(d, "master.cf"), "w") as f:
            f.write(masterCf)
        return d

    def refused(self, mainCf="", masterCf=DEBIAN_MASTER_CF):
        from tmta.config.parser import ConfigProblems

        return self.assertRaises(ConfigProblems, loadConfiguration,
                                 self.directory(mainCf, masterCf)).problems

    def test_unsafeMainCf(self):
        problems = self.refused(
            "myhostname = h.example\n"
            "smtpd_client_restrictions = reject\n"
            "smtpd_tls_security_level = encrypt\n"
            "smtpd_sasl_auth_enable = yes\n"
            "smtpd_upstream_proxy_protocol = nginx\n"
            "smtpd_client_connection_rate_limit = 30\n")
        for line, name in [(3, "smtpd_tls_security_level"),
                           (4, "smtpd_sasl_auth_enable"), (5, "smtpd_upstream_proxy_protocol"),
                           (6, "smtpd_client_connection_rate_limit")]:
            self.assertTrue(any(f"main.cf, line {line}: {name}:" in p for p in problems),
                            (name, problems))

    def test_ignoredSafetyStops(self):
        """
        Parameters tmta does not act on yet, set to ask for safety it
        would not give, stop start-up: DNS reply filters,
        strictness settings; and a proxy protocol other than haproxy,
        which would make every client look like the proxy.
        """
        problems = self.refused(
            "smtpd_upstream_proxy_protocol = nginx\n"
            "smtp_dns_reply_filter = pcre:/etc/postfix/reply_filter\n"
            "strict_8bitmime = yes\n"
            "mailbox_transport_maps = hash:/etc/postfix/mailbox_transports\n")
        for line, name in [(1, "smtpd_upstream_proxy_protocol"), (2, "smtp_dns_reply_filter"),
                           (3, "strict_8bitmime"), (4, "mailbox_transport_maps")]:
            self.assertTrue(any(f"main.cf, line {line}: {name}:" in p for p in problems),
                            (name, problems))
        problems = self.refused("", DEBIAN_MASTER_CF.replace(
            "smtp      inet  n       -       y       -       -       smtpd",
            "smtp      inet  n       -       y       -       -       smtpd\n"
            "  -o smtpd_upstream_proxy_protocol=nginx"))
        self.assertTrue(any("master.cf, line" in p and "smtpd_upstream_proxy_protocol" in p
                            for p in problems), problems)
        loadConfiguration(self.directory("", DEBIAN_MASTER_CF.replace(
            "smtp      inet  n       -       y       -       -       smtpd",
            "smtp      inet  n       -       y       -       -       smtpd\n"
            "  -o smtpd_upstream_proxy_protocol=haproxy")))

    def test_enforcedNotReportedIgnored(self):
        """
        What tmta enforces is never reported as ignored: an operator
        must not be told wrongly that a protection is missing.
        """
        configuration = loadConfiguration(self.directory(
            "relay_recipient_maps = texthash:/etc/postfix/relay_recipients\n"
            "smtpd_reject_unlisted_sender = yes\n"
            "smtpd_client_connection_rate_limit = 30\n",
            DEBIAN_MASTER_CF + "anvil unix - - n - 1 anvil\n"))
        for name in ("relay_recipient_maps", "smtpd_reject_unlisted_sender",
                     "smtpd_client_connection_rate_limit"):
            self.assertFalse([w for w in configuration.warnings if name in w],
                             configuration.warnings)

    def test_clientLimitsNeedAnvil(self):
        """
        Client limits are refused without anvil in master.cf, and taken
        with it.
        """
        problems = self.refused("smtpd_client_connection_rate_limit = 30\n")
        self.assertTrue(any("need the anvil service" in p for p in problems), problems)
        loadConfiguration(self.directory(
            "smtpd_client_connection_rate_limit = 30\n",
            DEBIAN_MASTER_CF + "anvil unix - - n - 1 anvil\n"))

    def test_implementedNotWarned(self):
        c = loadConfiguration(self.directory("smtpd_tls_ask_ccert = yes\n"
                                             "smtpd_client_restrictions = permit\n"
                                             "header_checks = regexp:/etc/postfix/hc\n"))
        self.assertFalse(any("smtpd_tls_ask_ccert" in w or "header_checks" in w
                             for w in c.warnings), c.warnings)

    def test_wrongTypes(self):
        problems = self.refused("message_size_limit = ten\nsmtpd_helo_required = maybe\n"
                                "smtpd_timeout = soon\n")
        self.assertEqual(len(problems), 3, problems)
        self.assertTrue(any("line 1: message_size_limit: not a whole number" in p
                            for p in problems))
        self.assertTrue(any("line 2: smtpd_helo_required: not yes or no" in p for p in problems))
        self.assertTrue(any("line 3: smtpd_timeout: not a time" in p for p in problems))

    def test_masterCfOverridesNameMasterCf(self):
        masterCf = DEBIAN_MASTER_CF + (
            "2587 inet n - y - - smtpd\n"
            "  -o smtpd_tls_wrappermode=yes\n"
            "  -o smtpd_recipient_limit=lots\n")
        problems = self.refused(masterCf=masterCf)
        line = masterCf.splitlines().index("2587 inet n - y - - smtpd") + 1
        self.assertTrue(any(f"master.cf, line {line}: smtpd_tls_wrappermode:" in p
                            for p in problems), problems)
        self.assertTrue(any(f"master.cf, line {line}: smtpd_recipient_limit: not a whole"
                            in p for p in problems), problems)
        problems = self.refused(masterCf=DEBIAN_MASTER_CF + "2587 inet n - y - - smtpd\n"
                                "  -o smtpd_banner=${broken\n")
        self.assertTrue(any("master.cf, line" in p and "smtpd_banner" in p and "main.cf" not in p
                            for p in problems), problems)

    def stock(self):
        if not os.path.exists(STOCK_MASTER_CF):
            raise SkipTest("Debian's postfix package is not installed")
        with open(STOCK_MASTER_CF) as f:
            return f.read()

    def test_debianSubmissionRefused(self):
        """
        Debian's stock master.cf with submission and submissions
        uncommented refuses to start, naming what it cannot honour.
        """
        text = _uncommented(self.stock(), {"submission", "submissions"})
        problems = self.refused(masterCf=text)
        for name in ("smtpd_tls_security_level", "smtpd_sasl_auth_enable",
                     "smtpd_tls_wrappermode"):
            self.assertTrue(any(name in p and "master.cf, line" in p for p in problems),
                            (name, problems))

    def test_debianStockLoads(self):
        c = loadConfiguration(self.directory(masterCf=self.stock()))
        self.assertIn(("smtp", "inet"), {(e.service, e.type) for e in c.services})
