"""
Tests for the pattern tables (L{tmta.tables.patterns}): Postfix's
regexp_table(5), pcre_table(5) and cidr_table(5) semantics, and
C{tmta map query}.
"""

import io
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from tmta.cli.admin import queryMap
from tmta.tables import openTable


class PatternTableTests(SynchronousTestCase):
    def table(self, kind, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return openTable(f"{kind}:{path}"), path

    def test_regexpFirstMatchAndSubstitution(self):
        table, _ = self.table("regexp", (
            "# comment\n"
            "/^(.*)@old\\.example$/   ${1}@new.example\n"
            "/^postmaster@/          REJECT no\n"
            "  more text\n"
            "/^Bob@/i                case matters\n"
            "!/\\.example$/           OK outside\n"
            "/./                     $$1 literal\n"))
        self.assertEqual(table.get("alice@old.example"), "alice@new.example")
        self.assertEqual(table.get("ALICE@OLD.EXAMPLE"), "ALICE@new.example")
        # A continuation line joins as it stands, its white space kept.
        self.assertEqual(table.get("postmaster@x.example"), "REJECT no  more text")
        self.assertEqual(table.get("Bob@x.example"), "case matters")
        self.assertEqual(table.get("bob@x.example"), "$1 literal")
        self.assertEqual(table.get("someone@elsewhere.org"), "OK outside")

    def test_newlines(self):
        """
        A folded header is one key: in regexp: (POSIX, no REG_NEWLINE)
        "." matches its newline unless the m flag is given; in pcre:
        likewise unless the s flag is given (Postfix compiles with
        PCRE2_DOTALL, and C{s} toggles it).
        """
        header = 'Content-Type: application/octet-stream;\n\tname="a.exe"'
        regexp, _ = self.table("regexp", "/^Content-Type:.*\\.exe/ REJECT\n")
        self.assertEqual(regexp.get(header), "REJECT")
        regexpM, _ = self.table("regexp", "/^Content-Type:.*\\.exe/m REJECT\n")
        self.assertIsNone(regexpM.get(header))
        pcre, _ = self.table("pcre", "/^Content-Type:.*\\.exe/ REJECT\n")
        self.assertEqual(pcre.get(header), "REJECT")
        pcreS, _ = self.table("pcre", "/^Content-Type:.*\\.exe/s REJECT\n")
        self.assertIsNone(pcreS.get(header))

    def test_ifBlocksAndDelimiters(self):
        table, _ = self.table("pcre", (
            "if /@example\\.com$/\n"
            "%^admin@%  ADMIN\n"
            "/^(\\w+)\\.(\\w+)@/  $2, $1\n"
            "endif\n"
            "/^admin@/  OTHER ADMIN\n"))
        self.assertEqual(table.get("admin@example.com"), "ADMIN")
        self.assertEqual(table.get("john.smith@example.com"), "smith, john")
        self.assertEqual(table.get("john.smith@example.org"), None)
        self.assertEqual(table.get("admin@example.org"), "OTHER ADMIN")

    def test_badLineIsSkippedAndFileReloaded(self):
        """
        A line Postfix skips is skipped with a warning naming the file
        and the line; the rest of the table stays in force, and an
        edited file is read again.
        """
        table, path = self.table("regexp", "/unclosed  X\n/^any/ SECOND\n")
        self.assertIsNone(table.get("nothing"))
        self.assertEqual(table.get("anything"), "SECOND")
        self.assertEqual(table.source.warnings, [
            f'regexp map {path}, line 1: no closing regexp delimiter "/": '
            "skipping this rule"])
        time.sleep(0.01)
        with open(path, "w") as f:
            f.write("/any/ FOUND now\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        self.assertEqual(table.get("anything"), "FOUND now")

    def test_cidr(self):
        table, _ = self.table("cidr", (
            "192.0.2.128/25     REJECT upper half\n"
            "192.0.2.0/24       OK\n"
            "2001:db8::/32      OK six\n"
            "if 198.51.100.0/24\n"
            "!198.51.100.0/28   OUTSIDE LOW\n"
            "endif\n"
            "203.0.113.7        ONE HOST\n"))
        self.assertEqual(table.get("192.0.2.200"), "REJECT upper half")
        self.assertEqual(table.get("192.0.2.1"), "OK")
        self.assertEqual(table.get("2001:db8::1"), "OK six")
        self.assertEqual(table.get("198.51.100.3"), None)
        self.assertEqual(table.get("198.51.100.99"), "OUTSIDE LOW")
        self.assertEqual(table.get("203.0.113.7"), "ONE HOST")
        self.assertEqual(table.get("not-an-address"), None)

    def test_query(self):
        _, path = self.table("regexp", "/^a/ first\n")
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(queryMap(f"regexp:{path}", ["abc"], out, err), 0)
        self.assertEqual(out.getvalue(), "first\n")
        self.assertEqual(queryMap(f"regexp:{path}", ["zzz"], io.StringIO(), err), 1)
        self.assertEqual(queryMap("nosuch:thing", ["k"], io.StringIO(), io.StringIO()), 2)

    def test_queryForeignOrMissingDatabase(self):
        """
        A hash: table whose database is missing, or is not one tmta
        built (Postfix's Berkeley DB file), is one line of error and
        exit status 2, never a traceback.
        """
        source = os.path.join(self.mktemp())
        with open(source, "w") as f:
            f.write("k v\n")
        err = io.StringIO()
        self.assertEqual(queryMap(f"hash:{source}", ["k"], io.StringIO(), err), 2)
        self.assertIn(f"tmta: fatal: hash:{source}: cannot open {source}.db", err.getvalue())
        with open(source + ".db", "wb") as f:
            f.write(b"\x00\x06\x15\x61" + b"\x00" * 4092)  # a Berkeley DB hash file's magic
        err = io.StringIO()
        self.assertEqual(queryMap(f"hash:{source}", ["k"], io.StringIO(), err), 2)
        self.assertEqual(len(err.getvalue().splitlines()), 1)
        self.assertIn("is not a database tmta built", err.getvalue())

    def test_queryFromStandardInput(self):
        """
        C{tmta map query TABLE -} reads the keys from standard input and
        prints each found one with its key, as C{postmap -q -} does.
        """
        import subprocess
        import sys

        from tests.support import REPO

        _, path = self.table("regexp", "/^a/ first\n")
        result = subprocess.run(
            [sys.executable, "-m", "tmta.cli.admin", "map", "query", f"regexp:{path}", "-"],
            input="abc\nzzz\n", capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PYTHONPATH=REPO))
        self.assertEqual((result.returncode, result.stdout), (0, "abc\tfirst\n"))


class TablesInListsTests(SynchronousTestCase):
    """
    Tables inside mydestination, relay_domains and mynetworks.
    """

    def write(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_domainLists(self):
        from tmta.config import MainConfig
        from tmta.rewrite import Rewriter

        local = self.write("mail.example.org OK\n")
        relay = self.write("partner.example OK\n")
        rewriter = Rewriter(MainConfig({
            "mydestination": f"localhost, texthash:{local}",
            "relay_domains": f"texthash:{relay}",
        }))
        self.assertTrue(rewriter.isLocalDomain("Mail.Example.Org"))
        self.assertTrue(rewriter.isLocalDomain("localhost"))
        self.assertFalse(rewriter.isLocalDomain("other.example.org"))
        self.assertTrue(rewriter.isRelayDomain("partner.example"))
        # relay_domains is in parent_domain_matches_subdomains.
        self.assertTrue(rewriter.isRelayDomain("mx.partner.example"))
        self.assertFalse(rewriter.isRelayDomain("partner.example.evil"))
        self.assertEqual(rewriter.resolve("x@mail.example.org").addressClass, "local")

    def test_networks(self):
        from tmta.tables.networks import inNetworks, parseNetworks

        table = self.write("10.1.0.0/16 OK\n")
        networks = parseNetworks(["127.0.0.0/8", f"cidr:{table}", "nosuch:table"])
        self.assertTrue(inNetworks("10.1.2.3", networks))
        self.assertTrue(inNetworks("127.0.0.1", networks))
        self.assertTrue(inNetworks("::ffff:10.1.2.3", networks))
        self.assertFalse(inNetworks("10.2.0.1", networks))


class MatchListTests(SynchronousTestCase):
    """
    List parameters read as Postfix's match lists: C{/file/name} and
    C{type:table} items, negation, and the two ways of matching
    subdomains.
    """

    def write(self, text):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_fileOfDomains(self):
        """
        docker-mailserver's C{virtual_mailbox_domains = /etc/postfix/vhost}:
        the file's names are the list.
        """
        from tmta.config import MainConfig
        from tmta.rewrite import Rewriter

        vhost = self.write("hosted.example\n# a comment\nother.example second.example\n")
        rewriter = Rewriter(MainConfig({"virtual_mailbox_domains": vhost,
                                        "mydestination": "localhost"}))
        for domain in ("hosted.example", "other.example", "second.example"):
            self.assertEqual(rewriter.resolve(f"u@{domain}").addressClass, "virtual")
        self.assertEqual(rewriter.resolve("u@elsewhere.example").addressClass, "default")

    def test_negationAndSubdomains(self):
        from tmta.tables.matchlist import MatchList

        names = MatchList("mydestination", "!bad.example.com, .example.com, example.org")
        self.assertFalse(names.matchName("bad.example.com"))
        self.assertTrue(names.matchName("good.example.com"))
        self.assertFalse(names.matchName("example.com"))
        self.assertTrue(names.matchName("example.org"))
        self.assertFalse(names.matchName("sub.example.org"))
        parent = MatchList("relay_domains", "example.org, .example.net", parent=True)
        self.assertTrue(parent.matchName("sub.example.org"))
        # With parent matching, a leading dot matches nothing more.
        self.assertFalse(parent.matchName("sub.example.net"))

    def test_unreadableFileAndUnknownTableFail(self):
        """
        An item that cannot be used fails the match that reaches it: a
        list never quietly loses an item.
        """
        from tmta.tables import TableLookupError
        from tmta.tables.matchlist import MatchList

        missing = MatchList("relay_domains", f"first.example, {os.path.abspath(self.mktemp())}")
        self.assertTrue(missing.matchName("first.example"))
        self.assertRaises(TableLookupError, missing.matchName, "other.example")
        unknown = MatchList("mydestination", "mysql:/etc/postfix/domains.cf")
        self.assertRaises(TableLookupError, unknown.matchName, "example.com")
        self.assertEqual(len(unknown.problems()), 1)

    def test_addressLists(self):
        """
        mynetworks: bracketed IPv6, files, tables; a host name matches
        nothing and a network with host bits set fails.
        """
        from tmta.tables import TableLookupError
        from tmta.tables.networks import parseNetworks

        networks = self.write("192.0.2.0/24\n[2001:db8::]/32\n")
        listed = parseNetworks(["127.0.0.0/8", "[::1]/128", networks, "localhost"])
        self.assertTrue(listed.matchAddress("192.0.2.7"))
        self.assertTrue(listed.matchAddress("2001:db8::5"))
        self.assertTrue(listed.matchAddress("::1"))
        self.assertFalse(listed.matchAddress("198.51.100.1"))
        broken = parseNetworks(["10.1.1.1/8"])
        self.assertRaises(TableLookupError, broken.matchAddress, "10.1.1.1")

    def test_valueFromFile(self):
        """
        C{myorigin = /etc/mailname}: the value is the file's content.
        """
        from tmta.config import MainConfig

        mailname = self.write("mail.example.net\n")
        self.assertEqual(MainConfig({"myorigin": mailname}).origin(), "mail.example.net")


class SQLiteTableTests(SynchronousTestCase):
    """
    sqlite: against a real database file, configured as sqlite_table(5)
    says.
    """

    def setUp(self):
        import sqlite3

        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.db = os.path.join(directory, "aliases.db")
        with sqlite3.connect(self.db) as db:
            db.execute("CREATE TABLE aliases (alias TEXT, target TEXT)")
            db.executemany("INSERT INTO aliases VALUES (?, ?)", [
                ("sales@example.com", "ann@example.com"),
                ("sales@example.com", "bob@example.com"),
                ("x'; drop table aliases; --@example.com", "never"),
            ])
        self.config = os.path.join(directory, "aliases.cf")

    def table(self, **settings):
        lines = [f"dbpath = {self.db}",
                 "query = SELECT target FROM aliases WHERE alias='%s'"]
        lines += [f"{name} = {value}" for name, value in settings.items()]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        return openTable(f"sqlite:{self.config}")

    def test_lookup(self):
        table = self.table()
        self.assertEqual(table.get("sales@example.com"), "ann@example.com,bob@example.com")
        self.assertIsNone(table.get("nobody@example.com"))
        # The key is a bound parameter, never SQL.
        self.assertEqual(table.get("x'; DROP TABLE aliases; --@example.com"), "never")
        self.assertEqual(table.get("sales@example.com").count("@"), 2)

    def test_domainLimitAndFormat(self):
        table = self.table(domain="example.org", result_format="%u")
        self.assertIsNone(table.get("sales@example.com"))
        table = self.table(result_format="%u", expansion_limit="2")
        self.assertEqual(table.get("sales@example.com"), "ann,bob")
        table = self.table(expansion_limit="1")
        from tmta.tables import TableLookupError

        # Too many results is an error (mail waits), not "not found".
        self.assertRaises(TableLookupError, table.get, "sales@example.com")

    def test_badConfiguration(self):
        from tmta.tables import TableError

        with open(self.config, "w") as f:
            f.write("query = SELECT 1\n")
        self.assertRaises(TableError, openTable, f"sqlite:{self.config}")


class CompiledTableTests(SynchronousTestCase):
    """
    hash: reads the database tmta map build makes of its source file,
    and never a database older than the source.
    """

    def source(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_buildAndLookup(self):
        from tmta.cli.admin import main

        path = self.source("# comment\nExample.COM  smtp:[relay.example]\n"
                           "postmaster: root,\n  admin\n")
        self.assertEqual(main(["map", "build", path]), 0)
        self.assertTrue(os.path.exists(path + ".db"))
        table = openTable(f"hash:{path}")
        self.assertEqual(table.get("example.com"), "smtp:[relay.example]")
        self.assertEqual(table.get("EXAMPLE.com"), "smtp:[relay.example]")
        # postmap's format, not postalias's: the key ends at white space,
        # and a continuation line joins as it stands.
        self.assertEqual(table.get("postmaster:"), "root,  admin")
        self.assertIsNone(table.get("postmaster"))
        self.assertIsNone(table.get("other"))
        out = io.StringIO()
        self.assertEqual(queryMap(f"hash:{path}", ["example.com"], out=out), 0)
        self.assertEqual(out.getvalue(), "smtp:[relay.example]\n")

    def test_rebuiltWhole(self):
        """
        A rebuild replaces the database by a rename: an open table sees
        the new entries, never a mix.
        """
        from tmta.cli.admin import buildMaps

        path = self.source("a 1\n")
        self.assertEqual(buildMaps([f"hash:{path}"]), 0)
        table = openTable(f"hash:{path}")
        self.assertEqual(table.get("a"), "1")
        before = os.stat(path + ".db").st_ino
        with open(path, "w") as f:
            f.write("a 2\nb 3\n")
        self.assertEqual(buildMaps([f"hash:{path}"]), 0)
        self.assertNotEqual(os.stat(path + ".db").st_ino, before)
        self.assertEqual((table.get("a"), table.get("b")), ("2", "3"))
        self.assertEqual([n for n in os.listdir(os.path.dirname(path)) if ".tmp" in n], [])

    def test_unusableDatabases(self):
        from tmta.cli.admin import buildMaps
        from tmta.tables import TableLookupError

        path = self.source("a 1\n")
        table = openTable(f"hash:{path}")
        self.assertRaises(TableLookupError, table.get, "a")  # never built
        self.assertEqual(buildMaps([path]), 0)
        later = os.stat(path + ".db").st_mtime + 5
        os.utime(path, (later, later))
        error = self.assertRaises(TableLookupError, table.get, "a")
        self.assertIn("older than its source", str(error))
        # A Berkeley DB file Postfix's postmap left behind.
        os.utime(path, (later - 100, later - 100))
        with open(path + ".db", "wb") as f:
            f.write(b"\x00\x06\x15\x61" + b"\x00" * 4092)
        error = self.assertRaises(TableLookupError, table.get, "a")
        self.assertIn("not a database tmta built", str(error))

    def test_transportLookupFailureDefers(self):
        """
        An address whose transport table cannot be read goes to the
        retry transport, not down the default route.
        """
        from tmta.config import MainConfig
        from tmta.rewrite import Rewriter

        path = self.source("example.com  error:no\n")
        rewriter = Rewriter(MainConfig({"transport_maps": f"hash:{path}"}))
        resolution = rewriter.resolve("a@example.com")
        self.assertEqual(resolution.transport, "retry")
        self.assertIn("table lookup failure", resolution.nexthop)


class PostfixLanguagesTests(SynchronousTestCase):
    """
    What Postfix's tables mean, where Python's C{re} and an alias-style
    reading meant something else and let mail through.
    """

    def table(self, kind, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return openTable(f"{kind}:{path}")

    def test_regexpIsPosix(self):
        """
        POSIX classes match, and C{\\d} is no digit class, as the C
        library's regcomp reads them (Python's re read the first as a
        set of characters and the second as a digit).
        """
        table = self.table("regexp", "/^\\d$/ ESCAPED-D\n/^[[:digit:]]+$/ DIGITS\n")
        self.assertEqual(table.get("2024"), "DIGITS")
        self.assertEqual(table.get("7"), "DIGITS")
        self.assertIsNone(table.get(":"))

    def test_pcreIsPcre2(self):
        """
        PCRE syntax Python's re lacks compiles and matches: named
        groups, C{\\z}, C{\\p{Lu}}, and C{.} matching a newline by
        default.
        """
        table = self.table("pcre", "/^(?<user>[a-z]+)@example\\.com\\z/ NAMED $1\n"
                                   "/^a.b$/ DOTALL\n")
        self.assertEqual(table.get("alice@example.com"), "NAMED alice")
        self.assertEqual(table.get("a\nb"), "DOTALL")

    def test_badLinesNeverDropTheTable(self):
        """
        Lines Postfix skips (an unclosed pattern, a bad network, host
        bits set, a bracketed IPv6 network it accepts) leave the other
        rules in force: a client the table rejects stays rejected.
        """
        table = self.table("cidr", "[2001:db8::]/32  REJECT six\n"
                                   "10.1.1.1/8  REJECT host bits\n"
                                   "300.0.0.0/8 REJECT bad\n"
                                   "192.0.2.0/24  REJECT four\n")
        self.assertEqual(table.get("192.0.2.9"), "REJECT four")
        self.assertEqual(table.get("2001:db8::1"), "REJECT six")
        self.assertIsNone(table.get("10.1.1.1"))
        self.assertEqual(len(table.source.warnings), 2)
        regexp = self.table("pcre", "/(?<n>x)\\p{Lu}/ REJECT named\n/^[/ broken\n/^bad/ REJECT\n")
        self.assertEqual(regexp.get("badguy"), "REJECT")
        self.assertEqual(regexp.get("xA"), "REJECT named")

    def test_missingFileFailsLookups(self):
        """
        A table file that cannot be read is a temporary failure, never a
        table that matches nothing.
        """
        from tmta.tables import TableLookupError

        for kind in ("regexp", "pcre", "cidr", "texthash"):
            table = openTable(f"{kind}:{self.mktemp()}")
            self.assertRaises(TableLookupError, table.get, "192.0.2.1")

    def test_hostPortAndIPv6Keys(self):
        """
        postmap's keys end at white space: C{[host]:port} (TLS policy,
        SASL passwords, transports) and IPv6 addresses are found.
        """
        table = self.table("texthash", "[127.0.0.1]:2525  secure\n"
                                       "2001:db8::1       OK six\n"
                                       "alias: value      KEPT\n")
        self.assertEqual(table.get("[127.0.0.1]:2525"), "secure")
        self.assertEqual(table.get("2001:db8::1"), "OK six")
        self.assertEqual(table.get("alias:"), "value      KEPT")
        self.assertIsNone(table.get("alias"))

    def test_inlineNeedsKeyValue(self):
        """
        C{inline:{ k = v }} is no table of one entry (Postfix stops on it):
        it cannot be opened, so start-up names it.
        """
        from tmta.tables import TableError

        self.assertRaises(TableError, openTable, "inline:{ k = v }")
        self.assertEqual(openTable("inline:{ a=1, { b = two words } }").get("b"), "two words")


class PostfixDatabaseTests(SynchronousTestCase):
    """
    C{lmdb:} and C{cdb:} databases -- and C{hash:} and C{btree:} ones
    where the Berkeley DB binding is installed -- are Postfix's own
    files: Postfix's C{postmap -q} reads what C{tmta map build} writes,
    and tmta reads what C{postmap} built.
    """

    def setUp(self):
        import shutil

        if not shutil.which("postmap"):
            raise self.skipTest("Postfix is not installed")
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)
        self.conf = os.path.join(self.base, "conf")
        os.makedirs(self.conf)
        open(os.path.join(self.conf, "main.cf"), "w").close()

    def postmap(self, *args):
        import subprocess

        return subprocess.run(["postmap", "-c", self.conf, *args], capture_output=True,
                              text=True, timeout=60)

    def source(self, name):
        path = os.path.join(self.base, name)
        with open(path, "w") as f:
            f.write("Alice@Example.ORG   first value\nbob   second, with commas\n")
        return path

    def test_interoperable(self):
        from tmta.cli.admin import buildMaps
        from tmta.tables.compiled import berkeleyDB

        kinds = ["lmdb", "cdb"] + (["hash", "btree"] if berkeleyDB() is not None else [])
        for kind in kinds:
            if kind not in _postconfTypes(self.conf):
                raise self.skipTest(f"Postfix has no {kind}: (postfix-{kind})")
            ours = self.source(f"ours-{kind}")
            self.assertEqual(buildMaps([f"{kind}:{ours}"], err=io.StringIO()), 0)
            for key, value in (("alice@example.org", "first value"),
                               ("BOB", "second, with commas")):
                result = self.postmap("-q", key, f"{kind}:{ours}")
                self.assertEqual((result.returncode, result.stdout), (0, value + "\n"),
                                 (kind, key, result.stderr))
            self.assertEqual(self.postmap("-q", "nobody", f"{kind}:{ours}").returncode, 1)
            theirs = self.source(f"theirs-{kind}")
            built = self.postmap(f"{kind}:{theirs}")
            self.assertEqual(built.returncode, 0, built.stderr)
            out = io.StringIO()
            self.assertEqual(queryMap(f"{kind}:{theirs}", ["Alice@example.org", "bob", "x"],
                                      out, io.StringIO()), 0)
            self.assertEqual(out.getvalue(), "Alice@example.org\tfirst value\n"
                                             "bob\tsecond, with commas\n")


def _postconfTypes(conf):
    import subprocess

    return subprocess.run(["postconf", "-c", conf, "-m"], capture_output=True,
                          text=True).stdout.split()


class SQLiteHashTests(SynchronousTestCase):
    def test_olderSQLiteDatabaseStillRead(self):
        """
        A C{hash:} database tmta wrote as SQLite (without the Berkeley
        DB binding) is still read, told apart by its first bytes.
        """
        from tmta.tables.compiled import CompiledTable, _SQLiteFormat

        source = os.path.abspath(self.mktemp())
        with open(source, "w") as f:
            f.write("k v\n")
        _SQLiteFormat.write(source + ".db", {"k": "v"})
        self.assertEqual(CompiledTable("hash", source).get("K"), "v")
