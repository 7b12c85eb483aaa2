"""
C{ldap:} tables against a private OpenLDAP slapd, key by key against
C{postmap -q} on the same configuration files: filters with the key
escaped, DN-valued (special) attributes followed, leaf and terminal
attributes, dynamic search bases, limits; and a directory that is down.
"""

from __future__ import annotations

import io
import os
import subprocess

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.differential import Agreement, configDirectory, postfixHasTableType, postfixMissing
from tests.support import endToEnd, inThread, settled
from tests.support.databases import PrivateSlapd
from tmta.cli.admin import queryMap
from tmta.tables import TableLookupError, openTable
from tmta.tables.ldap import dnQuote, filterQuote

COMMON = "version = 3\nbind = no\n"

CONFIGURATIONS = {
    "basic": "search_base = dc=example,dc=org\nquery_filter = (mailLocalAddress=%s)\n"
             "result_attribute = mailRoutingAddress\n",
    "groups": "search_base = dc=example,dc=org\nquery_filter = (mailLocalAddress=%s)\n"
              "result_attribute = mailRoutingAddress\nspecial_result_attribute = member\n",
    "leaves": "search_base = dc=example,dc=org\nquery_filter = (mailLocalAddress=%s)\n"
              "result_attribute = mailRoutingAddress\nspecial_result_attribute = member\n"
              "leaf_result_attribute = mail\n",
    "terminal": "search_base = dc=example,dc=org\nquery_filter = (mailLocalAddress=%s)\n"
                "result_attribute = mailRoutingAddress\nspecial_result_attribute = member\n"
                "terminal_result_attribute = mailHost\n",
    "shallow": "search_base = dc=example,dc=org\nquery_filter = (mailLocalAddress=%s)\n"
               "result_attribute = mail\nspecial_result_attribute = member\n"
               "recursion_limit = 1\n",
    "dynamic": "search_base = ou=people,dc=%2,dc=%1\nquery_filter = (uid=%u)\n"
               "result_attribute = mail\nresult_format = <%s> for %U\nscope = one\n",
    "domain": "search_base = dc=example,dc=org\nquery_filter = (&(objectClass=*)(mail=%s))\n"
              "result_attribute = uid cn\ndomain = example.org\n",
    "limited": "search_base = dc=example,dc=org\nquery_filter = (mailLocalAddress=%s)\n"
               "result_attribute = mailRoutingAddress\nspecial_result_attribute = member\n"
               "expansion_limit = 2\n",
}

KEYS = ["ann@example.org", "anne@example.org", "bob@example.org", "team@example.org",
        "list@example.org", "nested@example.org", "o'brien@example.org", "a*b@example.org",
        "a*@example.org", "*", "*@example.org", "paren(x)@example.org", "paren(*)@example.org",
        "back\\slash@example.org", "back\\5cslash@example.org", "x)(uid=*",
        "ann@example.org)(mail=*", "nobody@example.org", "ANN@EXAMPLE.ORG", "ann",
        "ann@other.test", "@example.org", "ann@", "ann@example", "ann@sub.example.org",
        "a,b@example.org", "a+b@example.org", "#ann@example.org", "ann@example.org ",
        "caf\u00e9@example.org", "star@example.org", "uid=ann", "team", "%s", "ann@a.b.c"]



class QuotingTests(SynchronousTestCase):
    def test_quoting(self):
        self.assertEqual(filterQuote("a*(b)\\c"), "a\\2A\\28b\\29\\5Cc")
        self.assertEqual(dnQuote('a b,c+d"e#f;g<h>i\\j'),
                         "a\\20b\\2Cc\\2Bd\\22e\\23f\\3Bg\\3Ch\\3Ei\\5Cj")


class LDAPTableTests(SynchronousTestCase):
    def setUp(self):
        endToEnd()
        self.server = PrivateSlapd(self).start()
        self.addCleanup(self.server.stop)
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def configuration(self, name: str, text: str) -> str:
        path = os.path.join(self.base, f"{name}.cf")
        with open(path, "w") as f:
            f.write(f"server_host = ldap://127.0.0.1:{self.server.port}\n" + COMMON + text)
        settled(path)
        return f"ldap:{path}"


    def test_agreesWithPostmap(self):
        missing = postfixMissing()
        if missing:
            raise SkipTest(missing)
        postfixConfig = configDirectory(os.path.join(self.base, "postfix"))
        settled(os.path.join(postfixConfig, "main.cf"))
        if not postfixHasTableType("ldap", postfixConfig):
            raise SkipTest("this Postfix has no ldap: tables (Debian's postfix-ldap)")
        agreement = Agreement("ldap")
        for name, text in CONFIGURATIONS.items():
            spec = self.configuration(name, text)
            for key in KEYS:
                postmap = subprocess.run(["/usr/sbin/postmap", "-c", postfixConfig, "-q", key,
                                          spec], capture_output=True, timeout=60)
                stderr = postmap.stderr.decode("utf-8", "replace")
                postfix = ("error" if "fatal:" in stderr else
                           postmap.stdout.decode("utf-8", "surrogateescape").rstrip("\n")
                           if postmap.returncode == 0 else None)
                out, err = io.StringIO(), io.StringIO()
                status = inThread(queryMap, spec, [key], out, err)
                tmta = "error" if status == 2 else \
                    out.getvalue().rstrip("\n") if status == 0 else None
                agreement.compare(f"{name} {key!r}", _sorted(postfix), _sorted(tmta),
                                  stderr + err.getvalue())
        print(agreement.report())
        self.assertGreaterEqual(agreement.total, 50 * 5)
        self.assertEqual(agreement.differences, [], agreement.report())

    def test_saslExternalOverLdapi(self):
        """
        C{bind = sasl} with C{EXTERNAL} over C{ldapi://}: root is the
        directory's manager, who alone may read C{description}; bound
        anonymously, the same search finds nothing.  postmap agrees.
        """
        search = ("search_base = dc=example,dc=org\nquery_filter = (mailLocalAddress=%s)\n"
                  "result_attribute = description\nversion = 3\n")
        specs = {}
        for name, bind in (("external", "bind = sasl\nsasl_mechs = EXTERNAL\n"),
                           ("anonymous", "bind = no\n")):
            path = os.path.join(self.base, f"{name}.cf")
            with open(path, "w") as f:
                f.write(f"server_host = {self.server.ldapi}\n{bind}{search}")
            settled(path)
            specs[name] = f"ldap:{path}"
        external, anonymous = openTable(specs["external"]), openTable(specs["anonymous"])
        self.assertEqual(inThread(external.get, "team@example.org"), None)
        self.assertEqual(inThread(external.get, "anne@example.org"), "secret-ann")
        self.assertIsNone(inThread(anonymous.get, "anne@example.org"))
        missing = postfixMissing()
        if missing:
            return
        postfixConfig = configDirectory(os.path.join(self.base, "postfix"))
        settled(os.path.join(postfixConfig, "main.cf"))
        if not postfixHasTableType("ldap", postfixConfig):
            return
        for key in ("ann@example.org", "bob@example.org", "nobody@example.org"):
            postmap = subprocess.run(["/usr/sbin/postmap", "-c", postfixConfig, "-q", key,
                                      specs["external"]], capture_output=True, text=True,
                                     timeout=60)
            self.assertEqual(postmap.stdout.strip() or None, inThread(external.get, key),
                             postmap.stderr)

    def test_saslRefused(self):
        """
        What ldap3 cannot do stops the table from opening: a mechanism
        it lacks, a security layer.
        """
        from tmta.tables import TableError

        for settings in ("bind = sasl\nsasl_mechs = GSSAPI\n",
                         "bind = sasl\nsasl_mechs = EXTERNAL\nsasl_minssf = 56\n"):
            path = os.path.join(self.base, "refused.cf")
            with open(path, "w") as f:
                f.write(f"server_host = ldap://127.0.0.1:{self.server.port}\n{settings}"
                        "search_base = dc=example,dc=org\n")
            self.assertRaises(TableError, openTable, f"ldap:{path}")

    def test_directoryDown(self):
        """
        A directory that is down is a lookup error; once it is back,
        lookups succeed.
        """
        table = openTable(self.configuration("basic", CONFIGURATIONS["basic"]))
        self.assertEqual(inThread(table.get, "ann@example.org"), "ann@mail.example.org")
        self.server.stop()
        self.assertRaises(TableLookupError, inThread, table.get, "ann@example.org")
        self.server.start()
        for host in table.pool.hosts:
            host.downUntil = 0
        self.assertEqual(inThread(table.get, "bob@example.org"), "bob@mail.example.org")


def _sorted(value):
    """
    A multi-valued answer with its values in order: a directory returns
    an entry's values, and entries, in an order of its own.
    """
    if value in (None, "error"):
        return value
    return ",".join(sorted(value.split(",")))
