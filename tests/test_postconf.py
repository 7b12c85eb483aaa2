"""
tmta reads Postfix's configuration files as Postfix does: C{postconf}
(Debian's postfix package) and C{tmta config} are run on the same
main.cf and master.cf files and their output compared.  The differences
that remain are tmta's deliberate ones, listed here and in docs/configuration.rst.
"""

import os
import shutil
import subprocess
import sys
from typing import Dict, List

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO
from tests.test_config import STOCK_MASTER_CF, _uncommented

#: Defaults that tmta sets otherwise, on purpose (docs/configuration.rst: known
#: differences): its own name, paths and version; loopback-only
#: listening; compatibility level 3.6 rather than Debian's 0 (so the
#: defaults that depend on it are 3.6's); no NIS aliases.
KNOWN_DEFAULT_DIFFERENCES = {
    "alias_maps", "compatibility_level", "config_directory", "data_directory",
    "inet_interfaces", "mail_name", "mail_version", "mynetworks", "queue_directory",
    "syslog_name",
    # tmta never notifies comsat.
    "biff",
    # Names the process that expands it (postconf's own pid).
    "debugger_command",
    # Postfix 3.9's defaults against SMTP smuggling and unauthorized
    # pipelining, with no exclusions for mynetworks (Debian's 3.7 has
    # them off).
    "smtpd_forbid_bare_newline", "smtpd_forbid_bare_newline_exclusions",
    "smtpd_forbid_unauth_pipelining",
}

#: What differs once expanded, besides the above: values that follow
#: compatibility_level 3.6, and mynetworks (tmta's default trusts
#: loopback only, Postfix's every network of the machine's interfaces).
KNOWN_EXPANDED_DIFFERENCES = KNOWN_DEFAULT_DIFFERENCES | {
    "append_dot_mydomain", "mynetworks", "mynetworks_style", "relay_domains",
    "respectful_logging", "smtpd_relay_before_recipient_restrictions",
    "smtpd_relay_restrictions", "smtputf8_enable", "lmtp_tls_fingerprint_digest",
    "smtp_tls_fingerprint_digest", "smtpd_tls_fingerprint_digest",
    "tlsproxy_client_fingerprint_digest", "tlsproxy_tls_fingerprint_digest",
    "fast_flush_domains", "smtpd_client_event_limit_exceptions",
    "smtpd_forbid_bare_newline_exclusions", "postscreen_forbid_bare_newline_exclusions",
    "permit_mx_backup_networks", "proxy_read_maps", "smtpd_sasl_exceptions_networks",
    "postscreen_access_list", "milter_connect_macros",
    # Derived from the above: data_directory, mail_name, alias_maps.
    "address_verify_map", "milter_macro_v", "proxy_write_maps", "postscreen_cache_map",
    "tls_random_exchange_name",
    "smtpd_banner", "postscreen_greet_banner", "local_recipient_maps",
}


def parse(text: str) -> Dict[str, str]:
    found = {}
    for line in text.splitlines():
        name, eq, value = line.partition(" =")
        if eq:
            found[name] = value.strip()
    return found


class PostconfComparison(SynchronousTestCase):
    def setUp(self):
        if shutil.which("postconf") is None:
            raise SkipTest("Debian's postfix package is not installed")

    def directory(self, mainCf: str = "", masterCf: str = "") -> str:
        d = self.mktemp()
        os.makedirs(d)
        with open(os.path.join(d, "main.cf"), "w", newline="") as f:
            f.write(mainCf)
        with open(os.path.join(d, "master.cf"), "w") as f:
            f.write(masterCf)
        return d

    def postconf(self, *args: str) -> str:
        return subprocess.run(["postconf"] + list(args), capture_output=True, text=True,
                              check=True).stdout

    def tmta(self, *args: str) -> str:
        environ = dict(os.environ, PYTHONPATH=REPO)
        return subprocess.run([sys.executable, "-m", "tmta.cli.admin", "config"] + list(args),
                              capture_output=True, text=True, check=True, env=environ).stdout

    def differences(self, theirs: Dict[str, str], ours: Dict[str, str]) -> List[str]:
        return sorted(name for name in theirs if name in ours and ours[name] != theirs[name])

    def test_defaults(self):
        """
        Every parameter postconf knows, tmta knows with the same default,
        but for its deliberate differences.
        """
        d = self.directory()
        theirs, ours = parse(self.postconf("-c", d, "-d")), parse(self.tmta("-c", d, "-d"))
        self.assertEqual(set(theirs) - set(ours), {"process_id", "process_name"})
        self.assertEqual(set(self.differences(theirs, ours)) - KNOWN_DEFAULT_DIFFERENCES, set())

    def test_defaultsExpanded(self):
        d = self.directory()
        theirs = parse(self.postconf("-c", d, "-dx"))
        ours = parse(self.tmta("-c", d, "-dx"))
        self.assertEqual(set(self.differences(theirs, ours)) - KNOWN_EXPANDED_DIFFERENCES, set())

    SYNTAX = (
        "compatibility_level = 3.6\n"
        "myhostname = mx.example.org\n"
        "mydomain = example.org\n"
        "mynetworks = 127.0.0.0/8\n"
        "mydestination = { a.example }, b.example, $myhostname\n"
        "smtpd_recipient_restrictions = permit_mynetworks,\n"
        "    { check_policy_service inet:127.0.0.1:10023 }, reject_unauth_destination\n"
        "virtual_transport = lmtp:unix:private/dovecot-lmtp\n"
        "smtpd_banner = ${mail_name ? {$myhostname ESMTP} : {nothing}}\n"
        "relay_domains = ${{$compatibility_level} <level {2} ? {$mydestination} : {x.example}}\n"
        "smtpd_helo_required = ${{$mydomain} == {example.org} ? {yes} : {no}}\n"
        "delay_warning_time = ${{4} > {3} ? {4h} : {0h}}\n"
        "alias_maps = hash:/etc/aliases\n"
    )

    def test_syntax(self):
        """
        Comparisons, white space in conditionals, braced list items and
        continuation lines expand as postconf expands them.
        """
        d = self.directory(self.SYNTAX)
        theirs, ours = parse(self.postconf("-c", d, "-nx")), parse(self.tmta("-c", d, "-nx"))
        self.assertEqual(self.differences(theirs, ours), [])
        self.assertEqual(ours["relay_domains"], "x.example")
        self.assertEqual(ours["smtpd_helo_required"], "yes")
        theirs, ours = parse(self.postconf("-c", d, "-n")), parse(self.tmta("-c", d, "-n"))
        self.assertEqual(self.differences(theirs, ours), [])

    def test_oddLines(self):
        """
        CR-only line ends, a first line that starts with white space and
        a name with a hyphen are read as postconf reads them.
        """
        d = self.directory(" leading = 1\nmyhostname = mx.example.org\r"
                           "mail_name = one\rtwo\nbad-name = 3\nmydomain = example.org\r\n")
        theirs, ours = parse(self.postconf("-c", d, "-n")), parse(self.tmta("-c", d, "-n"))
        self.assertEqual(self.differences(theirs, ours), [])
        self.assertEqual(ours.get("mydomain"), "example.org")

    def test_debianMainCf(self):
        for name in ("main.cf.debian", "main.cf.dist"):
            path = os.path.join("/usr/share/postfix", name)
            if not os.path.exists(path):
                continue
            with open(path) as f:
                d = self.directory(f.read())
            for flags in ("-n", "-nx"):
                theirs = parse(self.postconf("-c", d, flags))
                ours = parse(self.tmta("-c", d, flags))
                self.assertEqual(set(self.differences(theirs, ours))
                                 - KNOWN_EXPANDED_DIFFERENCES, set(), (name, flags))

    def test_masterCf(self):
        """
        postconf -M and tmta config -M print the same lines for Debian's
        stock master.cf, with its commented services uncommented too.
        """
        with open(STOCK_MASTER_CF) as f:
            stock = f.read()
        for text in (stock, _uncommented(stock, {"submission", "submissions", "628",
                                                 "smtpd", "dnsblog", "tlsproxy"})):
            d = self.directory("", text)
            self.assertEqual(self.tmta("-c", d, "-M").splitlines(),
                             self.postconf("-c", d, "-M").splitlines())

    def test_mynetworksStyle(self):
        """
        Without mynetworks, each mynetworks_style gives the networks
        postconf works out from this machine's interfaces.
        """
        for style in ("host", "subnet", "class"):
            d = self.directory(f"mynetworks_style = {style}\n")
            self.assertEqual(self.tmta("-c", d, "-x", "mynetworks"),
                             self.postconf("-c", d, "-x", "mynetworks"), style)
