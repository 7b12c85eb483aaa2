"""
The proxymap service (L{tmta.proxymap}): it serves the tables
C{proxy_read_maps} lists and no other, over AMP to the C{proxy:} tables
of other processes; and start-up refuses a C{proxy:} table it would
refuse.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tmta.config import MainConfig
from tmta.proxymap.service import ProxymapService
from tmta.tables import proxyApproved, tableProblems
from tmta.tables.proxy import TableLookupFailed, TableNotApproved


class _Context:
    def __init__(self, config) -> None:
        self.config = config
        self.reactor = reactor


class ProxymapServiceTests(TestCase):
    def setUp(self):
        self.source = os.path.abspath(self.mktemp())
        with open(self.source, "w") as f:
            f.write("ann@example.org ann@mail.example.org\n")
        self.config = MainConfig({
            "virtual_alias_maps": f"proxy:texthash:{self.source}",
            "transport_maps": "proxy:texthash:/nonexistent/transport",
        })
        self.service = ProxymapService(_Context(self.config))
        self.addCleanup(self.service.lookups.stop)

    def test_approved(self):
        """
        C{proxy_read_maps} (by default every lookup table parameter)
        approves a table by its name, C{proxy:} taken off; network
        items are no tables.
        """
        approved = proxyApproved(self.config)
        self.assertIn(f"texthash:{self.source}", approved)
        self.assertNotIn("[::1]/128", approved)
        self.assertEqual(proxyApproved(MainConfig({"proxy_read_maps": "!proxy:hash:/a [fe80::1]"
                                                                     " /file cidr:/b"})),
                         frozenset({"hash:/a", "cidr:/b"}))

    def test_lookups(self):
        """
        An approved table answers; one that cannot be read fails the
        lookup; one not approved is refused.
        """
        found = self.service.lookup(f"texthash:{self.source}", "ann@example.org")
        missing = self.service.lookup(f"texthash:{self.source}", "bob@example.org")
        failing = self.assertFailure(
            self.service.lookup("texthash:/nonexistent/transport", "x"), TableLookupFailed)
        refused = self.assertFailure(self.service.lookup("texthash:/etc/passwd", "root"),
                                     TableNotApproved)
        found.addCallback(self.assertEqual, "ann@mail.example.org")
        missing.addCallback(self.assertIsNone)
        from twisted.internet.defer import gatherResults

        return gatherResults([found, missing, failing, refused])

    def test_unapprovedRefusedAtStartup(self):
        """
        A C{proxy:} table that C{proxy_read_maps} does not list is a
        configuration problem: proxymap would refuse every lookup.
        """
        config = MainConfig({"virtual_alias_maps": f"proxy:texthash:{self.source}",
                             "proxy_read_maps": "$virtual_mailbox_maps"})
        self.assertEqual(tableProblems(config, ["virtual_alias_maps"]), [
            ("virtual_alias_maps", f"proxy:texthash:{self.source}: texthash:{self.source} is "
                                   "not in proxy_read_maps, so the proxymap service would "
                                   "refuse it")])
        self.assertEqual(tableProblems(self.config, ["virtual_alias_maps"]), [])




class ProxyWriteTests(TestCase):
    """
    A cache table named C{proxy:TABLE} is kept by its one writer when
    C{proxy_write_maps} lists TABLE (as it lists C{$address_verify_map}
    and C{$postscreen_cache_map} by default), and refused otherwise.
    """

    def test_approved(self):
        from tmta.config.safety import proxyWriteProblem

        path = os.path.abspath(self.mktemp())
        config = MainConfig({"address_verify_map": f"proxy:btree:{path}"})
        self.assertIsNone(proxyWriteProblem(config, "address_verify_map"))
        self.assertIsNone(proxyWriteProblem(MainConfig({}), "address_verify_map"))
        refused = MainConfig({"address_verify_map": f"proxy:btree:{path}",
                              "proxy_write_maps": "$postscreen_cache_map"})
        self.assertIn("is not in proxy_write_maps",
                      proxyWriteProblem(refused, "address_verify_map"))

    def test_opened(self):
        from tmta.tables.writable import SQLiteStore, openWritable

        path = os.path.abspath(self.mktemp())
        store = openWritable(f"proxy:btree:{path}", reactor)
        self.assertIsInstance(store, SQLiteStore)
        store.put("a@example.org", "ok")
        self.assertEqual(store.get("a@example.org"), "ok")
        return store.close()
