"""
The SQL tables: the templates every one shares (without a server), then
C{pgsql:} and C{mysql:} against private PostgreSQL and MariaDB servers,
key by key against C{postmap -q} on the same configuration files, and
what a server that goes away does to a lookup.
"""

from __future__ import annotations

import io
import os
import threading
from typing import Dict, List

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.differential import (
    Agreement,
    configDirectory,
    postfixHasTableType,
    postfixMissing,
    postmapQuery,
)
from tests.support import endToEnd, inThread, settled
from tests.support.databases import PrivateMariaDB, PrivatePostgreSQL
from tmta.cli.admin import queryMap
from tmta.tables import TableError, TableLookupError, openTable
from tmta.tables.remote import LookupThreads
from tmta.tables.sql import MYSQL, PGSQL, SQLITE, QueryTemplate, ResultFormat, readTableConfig


class TemplateTests(SynchronousTestCase):
    """
    A query template becomes a statement with bound parameters, never
    the key spliced into SQL, and makes no query where Postfix makes
    none.
    """

    def test_wholeLiteral(self):
        template = QueryTemplate("SELECT goto FROM alias WHERE address='%s' AND active='1'",
                                 PGSQL)
        self.assertEqual(template.statement("o'x@example.org"),
                         ("SELECT goto FROM alias WHERE address=%s AND active='1'",
                          ["o'x@example.org"]))

    def test_pieces(self):
        """
        An expansion inside a longer literal becomes a concatenation,
        as each driver writes one; C{%%} is a percent sign.
        """
        text = "SELECT 1 FROM t WHERE a='%u@%d' AND b LIKE '%%%1' AND c=%2"
        self.assertEqual(QueryTemplate(text, PGSQL).statement("ann@mail.example.org"), (
            "SELECT 1 FROM t WHERE a=(CAST(%s AS TEXT) || '@' || CAST(%s AS TEXT)) AND "
            "b LIKE ('%%' || CAST(%s AS TEXT)) AND c=%s",
            ["ann", "mail.example.org", "org", "example"]))
        self.assertEqual(QueryTemplate(text, MYSQL).statement("ann@mail.example.org")[0],
                         "SELECT 1 FROM t WHERE a=CONCAT(%s, '@', %s) AND "
                         "b LIKE CONCAT('%%', %s) AND c=%s")
        self.assertEqual(QueryTemplate(text, SQLITE).statement("ann@mail.example.org")[0],
                         "SELECT 1 FROM t WHERE a=(? || '@' || ?) AND "
                         "b LIKE ('%' || ?) AND c=?")

    def test_quotedQuotes(self):
        template = QueryTemplate("SELECT 'it''s' || '%s' FROM \"t\"", PGSQL)
        self.assertEqual(template.statement("k"), ("SELECT 'it''s' || %s FROM \"t\"", ["k"]))
        template = QueryTemplate("SELECT \"a\\\"b\", \"%s\"", MYSQL)
        self.assertEqual(template.statement("k"), ("SELECT \"a\\\"b\", %s", ["k"]))

    def test_accepts(self):
        """
        No query for an empty key, for a key without a domain when the
        template needs one, for C{@domain} when it needs a local part,
        or for too few labels.
        """
        domain = QueryTemplate("SELECT 1 WHERE d='%d'", PGSQL)
        user = QueryTemplate("SELECT 1 WHERE u='%u'", PGSQL)
        labels = QueryTemplate("SELECT 1 WHERE l='%3'", PGSQL)
        self.assertEqual([domain.accepts(k) for k in ("", "ann", "ann@", "ann@x", "@x")],
                         [False, False, False, True, True])
        self.assertEqual([user.accepts(k) for k in ("ann", "ann@x", "@x")], [True, True, False])
        self.assertEqual([labels.accepts(k) for k in ("a@b.c", "a@a.b.c", "a@.b.c", "a@x..c")],
                         [False, True, False, False])

    def test_badTemplates(self):
        for text in ("SELECT '%x'", "SELECT 'unclosed %s", "SELECT \"%s\""):
            self.assertRaises(ValueError, QueryTemplate, text, PGSQL)

    def test_resultFormat(self):
        fmt = ResultFormat("%d/%u/ for %U at %D (%1)")
        self.assertEqual(fmt.expand("ann@example.org", "key@host.example"),
                         "example.org/ann/ for key at host.example (example)")
        self.assertIsNone(fmt.expand("no-domain", "key@host.example"))
        self.assertIsNone(ResultFormat("%u").expand("@example.org", "k"))
        self.assertEqual(ResultFormat("%u").expand("plain", "k"), "plain")

    def test_configuration(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("# comment\nhosts = a b\nquery = SELECT x\n  FROM t\n\n   WHERE y='%s'\n"
                    "hosts = c\n")
        self.assertEqual(readTableConfig(path),
                         {"hosts": "c", "query": "SELECT x  FROM t   WHERE y='%s'"})
        with open(path, "w") as f:
            f.write("query SELECT 1\n")
        self.assertRaises(ValueError, readTableConfig, path)
        self.assertRaises(ValueError, readTableConfig, "relative.cf")



def _keys() -> List[str]:
    """
    Keys for the ISPmail-shaped database: found and not, in other case,
    with quotes, percent signs and SQL, without a local part or domain.
    """
    keys = ["ann@example.org", "bob@example.org", "cy@example.net", "gone@example.net",
            "team@example.org", "postmaster@example.org", "@example.net", "@example.org",
            "x@example.net", "nobody@example.org", "ANN@EXAMPLE.ORG", "Team@Example.Org",
            "o'brien@example.org", "O'Brien@example.org", "100%@example.org", "1000@example.org",
            "%@example.org", "_@example.org", "an_@example.org", "a%@example.org",
            "x' OR '1'='1", "x' OR '1'='1@example.org", "'; DROP TABLE virtual_users; --",
            "\\@example.org", "ann\\@example.org", "ann@example.org'", "ann", "example.org",
            "example.net", "EXAMPLE.NET", "org", "ann@", "@", "ann@@example.org",
            "ann@example.org.", "ann@sub.example.org", "ann+ext@example.org", "a b@example.org",
            "\"ann\"@example.org", "ann@[127.0.0.1]", "ann@example", "a@b.c.d.e.f",
            "ann@x.example.org", "café@example.org", "ann@exämple.org", "cy@EXAMPLE.net",
            "bob@example.org ", " bob@example.org", "postmaster",
            "team", "cy", "ann@example.org;", "%s", "%u@%d", "$1", "a" * 300 + "@example.org"]
    return keys


#: Configurations for the ISPmail-shaped database, by name: the query
#: and other settings each adds to the connection settings.
CONFIGURATIONS: Dict[str, str] = {
    "domains": "query = SELECT 1 FROM virtual_domains WHERE name='%s'\n",
    "mailboxes": "query = SELECT 1 FROM virtual_users\n  WHERE email='%s' AND active = 1\n",
    "aliases": "query = SELECT destination FROM virtual_aliases WHERE source='%s'\n",
    "pieces": "query = SELECT email FROM virtual_users WHERE email='%u@%d'\n"
              "result_format = %d/%u/\n",
    "labels": "query = SELECT name FROM virtual_domains WHERE name='%2.%1'\n"
              "result_format = [%s] for %U at %D\n",
    "columns": "query = SELECT email, NULL, quota FROM virtual_users WHERE email LIKE '%%%d'\n"
               "expansion_limit = 9\n",
    "domainList": "query = SELECT destination FROM virtual_aliases WHERE source='%s'\n"
                  "domain = example.org, !example.net\n",
    "legacy": "table = virtual_users\nselect_field = email\nwhere_field = email\n"
              "additional_conditions = AND active = 1\n",
}


class RemoteTableTestsMixin:
    """
    What C{pgsql:} and C{mysql:} must both do against a real server.
    """

    kind = ""

    def startServer(self):
        raise NotImplementedError()

    def connection(self) -> str:
        raise NotImplementedError()

    def setUp(self):
        endToEnd()
        self.server = self.startServer()
        self.addCleanup(self.server.stop)
        self.server.createMailDatabase()
        self.base = os.path.abspath(self.mktemp())
        os.makedirs(self.base)

    def configuration(self, name: str, text: str) -> str:
        path = os.path.join(self.base, f"{name}.cf")
        with open(path, "w") as f:
            f.write(self.connection() + text)
        settled(path)
        return f"{self.kind}:{path}"


    def test_agreesWithPostmap(self):
        """
        Every configuration, every key: C{tmta map query} answers as
        C{postmap -q} on the same file, the key always compared as the
        text it is.
        """
        missing = postfixMissing()
        if missing:
            raise SkipTest(missing)
        postfixConfig = configDirectory(os.path.join(self.base, "postfix"))
        settled(os.path.join(postfixConfig, "main.cf"))
        if not postfixHasTableType(self.kind, postfixConfig):
            raise SkipTest(f"this Postfix has no {self.kind}: tables "
                           f"(Debian's postfix-{self.kind})")
        keys = _keys()
        agreement = Agreement(f"{self.kind}")
        for name, text in CONFIGURATIONS.items():
            spec = self.configuration(name, text)
            postfixFound, _ = postmapQuery(postfixConfig, spec, keys)
            out, err = io.StringIO(), io.StringIO()
            inThread(queryMap, spec, keys, out, err, True)
            tmtaFound: Dict[str, str] = {}
            for line in out.getvalue().splitlines():
                key, _, value = line.partition("\t")
                tmtaFound.setdefault(key, value)
            for key in keys:
                agreement.compare(f"{name} {key!r}", postfixFound.get(key), tmtaFound.get(key),
                                  err.getvalue())
        print(agreement.report())
        self.assertGreaterEqual(agreement.total, 50 * len(CONFIGURATIONS))
        self.assertEqual(agreement.differences, [], agreement.report())

    def test_expansionLimit(self):
        """
        More results than C{expansion_limit} is a lookup error, not a
        value and not "not found".
        """
        table = openTable(self.configuration(
            "limited", "query = SELECT destination FROM virtual_aliases WHERE source='%s'\n"
                       "expansion_limit = 1\n"))
        self.assertEqual(inThread(table.get, "postmaster@example.org"), "ann@example.org")
        self.assertRaises(TableLookupError, inThread, table.get, "team@example.org")

    def test_reactorThreadRefused(self):
        """
        A remote table asked on the reactor's thread fails rather than
        stall the process.
        """
        from twisted.python import threadable

        table = openTable(self.configuration("domains", CONFIGURATIONS["domains"]))
        threadable.registerAsIOThread()
        self.assertRaises(TableLookupError, table.get, "example.org")

    def test_serverDown(self):
        """
        A server that is down is a lookup error at once; once it is back
        (after the retry interval) lookups succeed again.
        """
        spec = self.configuration("domains", CONFIGURATIONS["domains"] + "retry_interval = 0\n")
        table = openTable(spec)
        self.assertEqual(inThread(table.get, "example.org"), "1")
        self.server.stop()
        self.assertRaises(TableLookupError, inThread, table.get, "example.org")
        self.server.start()
        self.assertEqual(inThread(table.get, "example.org"), "1")

    def test_noServer(self):
        """
        A configuration naming no server that answers fails lookups, and
        a file with a bad line is refused when opened.
        """
        path = os.path.join(self.base, "bad.cf")
        with open(path, "w") as f:
            f.write(self.connection() + "this is no setting\n")
        self.assertRaises(TableError, openTable, f"{self.kind}:{path}")


class PostgreSQLTableTests(RemoteTableTestsMixin, SynchronousTestCase):
    kind = "pgsql"

    def startServer(self):
        return PrivatePostgreSQL(self).start()

    def connection(self) -> str:
        return (f"hosts = inet:127.0.0.1:{self.server.port}\nuser = mailuser\n"
                "password = secret\ndbname = mail\n")

    def test_unixSocketAndURI(self):
        """
        C{unix:/directory} and a C{postgresql://} URI name servers too.
        """
        for hosts in (f"unix:{self.server.socketDirectory}",
                      f"postgresql://mailuser:secret@127.0.0.1:{self.server.port}/mail"
                      "?sslmode=disable"):
            path = os.path.join(self.base, "other.cf")
            with open(path, "w") as f:
                f.write(f"hosts = {hosts}\nuser = mailuser\npassword = secret\ndbname = mail\n"
                        + CONFIGURATIONS["domains"])
            # The UNIX socket is the server's own: it is read on its port.
            table = openTable(f"pgsql:{path}")
            for host in table.pool.hosts:
                if host.local:
                    host.details["port"] = str(self.server.port)
            self.assertEqual(inThread(table.get, "example.net"), "1")


class MariaDBTableTests(RemoteTableTestsMixin, SynchronousTestCase):
    kind = "mysql"

    def startServer(self):
        return PrivateMariaDB(self).start()

    def connection(self) -> str:
        return (f"hosts = inet:127.0.0.1:{self.server.port}\nuser = mailuser\n"
                "password = secret\ndbname = mail\n")

    def test_unixSocket(self):
        path = os.path.join(self.base, "other.cf")
        with open(path, "w") as f:
            f.write(f"hosts = unix:{self.server.socket}\nuser = mailuser\npassword = secret\n"
                    "dbname = mail\n" + CONFIGURATIONS["domains"])
        self.assertEqual(inThread(openTable(f"mysql:{path}").get, "example.net"), "1")


class LookupThreadsTests(TestCase):
    """
    Lookup threads: results and errors come back to the reactor, and a
    lookup that takes too long fails with a lookup error.
    """

    def test_resultAndTimeout(self):
        threads = LookupThreads(reactor, size=2, timeout=0.5)
        self.addCleanup(threads.stop)
        release = threading.Event()
        self.addCleanup(release.set)

        def slow():
            release.wait(10)
            return "late"

        d1 = threads.run(lambda: "value")
        d2 = self.assertFailure(threads.run(slow), TableLookupError)
        d3 = self.assertFailure(threads.run(lambda: 1 / 0), ZeroDivisionError)
        d1.addCallback(self.assertEqual, "value")
        from twisted.internet.defer import gatherResults

        return gatherResults([d1, d2, d3])


class DecisionTests(TestCase):
    """
    A decision written once as a generator of lookups runs at once over
    local tables, and without blocking over remote ones: through a
    table's own C{getLater}, else in a lookup thread.
    """

    def steps(self, tables):
        from tmta.tables.remote import Lookup

        first = yield Lookup(tables, "a")
        second = yield Lookup(tables, "b")
        return (first, second)

    def test_now(self):
        from tmta.tables import DictTable
        from tmta.tables.remote import decideNow

        self.assertEqual(decideNow(self.steps([DictTable({"a": "1"}), DictTable({"b": "2"})])),
                         ("1", "2"))

    def test_later(self):
        from twisted.internet import defer
        from zope.interface import implementer

        from tmta.interfaces import IRemoteTable
        from tmta.tables import DictTable
        from tmta.tables.remote import decideLater

        threads = LookupThreads(reactor, size=1)
        self.addCleanup(threads.stop)
        asked = []

        @implementer(IRemoteTable)
        class Asynchronous:
            def get(self, key):
                raise AssertionError("asked to block")

            def getLater(self, key):
                asked.append(key)
                return defer.succeed({"a": "1"}.get(key))

        @implementer(IRemoteTable)
        class Blocking:
            def get(self, key):
                asked.append(threading.current_thread() is not threading.main_thread())
                return {"b": "2"}.get(key)

        d = defer.Deferred.fromCoroutine(decideLater(
            self.steps([DictTable({}), Asynchronous(), Blocking()]), threads))
        d.addCallback(self.assertEqual, ("1", "2"))
        d.addCallback(lambda _: self.assertEqual(asked, ["a", "b", True]))
        return d
