"""
Tests for the restriction language (L{tmta.smtpd.restrictions},
L{tmta.smtpd.access}, L{tmta.smtpd.dnschecks}, L{tmta.smtpd.policy}):
each restriction with Postfix's semantics in a session over an
in-memory transport; the DNS lists against a twisted.names server on
loopback; check_policy_service against a policy server the test starts.
"""

import os

from twisted.internet import defer, reactor
from twisted.internet.protocol import ServerFactory
from twisted.names import authority, client, dns, server
from twisted.protocols.basic import LineOnlyReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support.smtpd import SessionHarness
from tmta.cleanup.commands import CleanupBegin, CleanupEnd
from tmta.config import MainConfig
from tmta.mail.dnslists import parseFilter
from tmta.smtpd.checking import Restrictions
from tmta.smtpd.restrictions import (
    DEFER,
    DUNNO,
    PERMIT,
    REJECT,
    RecipientContext,
    RestrictionEnvironment,
    RestrictionList,
)


def textTable(testCase, lines) -> str:
    """
    A C{texthash:} table of C{lines} (key, value) in a file of the test's.
    """
    path = os.path.join(testCase.mktemp() + ".table")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for key, value in lines:
            f.write(f"{key} {value}\n")
    return f"texthash:{path}"


class SessionRestrictionTests(SessionHarness, SynchronousTestCase):
    """
    The lists applied at their stages in a session.
    """

    def session(self, client="192.0.2.10", **params):
        self.makeServer(client=client, mydestination="localhost", **params)
        self.replies()

    def transaction(self, helo=b"HELO client.example", sender=b"<alice@example.com>",
                    recipient=b"<bob@localhost>"):
        self.send(helo + b"\r\nMAIL FROM:" + sender + b"\r\nRCPT TO:" + recipient + b"\r\n")
        return self.replies()

    def test_delayedClientRejectNamesRecipient(self):
        """
        With smtpd_delay_reject = yes, a client list's reject waits for
        RCPT.
        """
        self.session(smtpd_client_restrictions="reject")
        replies = self.transaction()
        self.assertEqual(replies[-2], "250 2.1.0 Ok")
        self.assertEqual(replies[-1],
                         "554 5.7.1 <localhost[192.0.2.10]>: Client host rejected: Access denied")

    def test_noDelayRejectsAtEachCommand(self):
        self.session(smtpd_delay_reject="no",
                     smtpd_helo_restrictions="reject_invalid_helo_hostname",
                     smtpd_sender_restrictions="reject_non_fqdn_sender")
        self.send(b"HELO bad..name\r\n")
        self.assertEqual(self.replies(),
                         ["501 5.5.2 <bad..name>: Helo command rejected: Invalid name"])
        replies = self.transaction(sender=b"<alice@nodots>")
        self.assertEqual(replies[-2], "504 5.5.2 <alice@nodots>: Sender address rejected: "
                                      "need fully-qualified address")
        self.assertEqual(replies[-1], "503 5.5.1 Error: need MAIL command")

    def test_permitEndsOnlyItsList(self):
        self.session(client="127.0.0.1", smtpd_client_restrictions="permit_mynetworks, reject",
                     smtpd_sender_restrictions="reject_non_fqdn_sender")
        self.assertEqual(self.transaction()[-1], "250 2.1.5 Ok")
        self.session(client="127.0.0.1", smtpd_client_restrictions="permit_mynetworks, reject",
                     smtpd_sender_restrictions="reject_non_fqdn_sender")
        self.assertEqual(self.transaction(sender=b"<a@b>")[-1][:4], "504 ")

    def test_nonFqdnAndInvalidHelo(self):
        self.session(smtpd_helo_restrictions="reject_non_fqdn_helo_hostname",
                     smtpd_recipient_restrictions="reject_non_fqdn_recipient")
        self.assertEqual(self.transaction(helo=b"HELO shorty")[-1],
                         "504 5.5.2 <shorty>: Helo command rejected: need fully-qualified "
                         "hostname")
        self.session(smtpd_relay_restrictions="reject_non_fqdn_recipient")
        self.assertEqual(self.transaction(recipient=b"<bob>")[-1][:4], "504 ")
        self.session(smtpd_helo_restrictions="reject_invalid_helo_hostname")
        self.assertEqual(self.transaction(helo=b"HELO [192.0.2.1]")[-1], "250 2.1.5 Ok")

    def test_unknownClientHostname(self):
        self.makeServer(client="192.0.2.10", smtpd_client_restrictions=(
            "reject_unknown_client_hostname"))
        self.server.clientName = "unknown"
        self.replies()
        self.assertEqual(self.transaction()[-1], "450 4.7.25 Client host rejected: cannot find "
                                                 "your hostname, [192.0.2.10]")

    def test_reverseHostnameAlone(self):
        """
        A client with a reverse name that does not resolve back passes
        reject_unknown_reverse_client_hostname, not
        reject_unknown_client_hostname.
        """
        from twisted.internet import defer as _defer

        names = lambda a: _defer.succeed(("unknown", "dyn-10.example.net"))  # noqa: E731
        self.makeServer(client="192.0.2.10", lookup=names, smtpd_client_restrictions=(
            "reject_unknown_reverse_client_hostname"))
        self.replies()
        self.assertEqual(self.transaction()[-1], "250 2.1.5 Ok")
        self.makeServer(client="192.0.2.10", lookup=names, smtpd_client_restrictions=(
            "reject_unknown_client_hostname"))
        self.replies()
        self.assertEqual(self.transaction()[-1][:10], "450 4.7.25")
        self.makeServer(client="192.0.2.10", lookup=lambda a: _defer.succeed(
            ("unknown", "unknown")), smtpd_client_restrictions=(
            "reject_unknown_reverse_client_hostname"))
        self.replies()
        self.assertEqual(self.transaction()[-1], "450 4.7.1 Client host rejected: cannot find "
                                                 "your reverse hostname, [192.0.2.10]")

    def test_accessTableActions(self):
        table = textTable(self, [
            ("192.0.2", "REJECT go away"),
            ("198.51.100.7", "450 4.7.9 try later"),
            ("spammer@example.com", "DEFER"),
            ("example.net", "OK"),
            ("postmaster@", "DUNNO"),
            (".evil.example", "521 5.7.0 not here"),
        ])
        self.session(smtpd_client_restrictions=f"check_client_access {table}")
        self.assertEqual(self.transaction()[-1],
                         "554 5.7.1 <localhost[192.0.2.10]>: Client host rejected: go away")
        self.session(client="198.51.100.7",
                     smtpd_client_restrictions=f"check_client_access {table}")
        self.assertEqual(self.transaction()[-1],
                         "450 4.7.9 <localhost[198.51.100.7]>: Client host rejected: try later")
        self.session(client="203.0.113.1", smtpd_sender_restrictions=f"check_sender_access {table}")
        self.assertEqual(self.transaction(sender=b"<spammer@example.com>")[-1],
                         "450 4.7.1 <spammer@example.com>: Sender address rejected: "
                         "Access denied")
        self.session(client="203.0.113.1", smtpd_sender_restrictions=f"check_sender_access {table}")
        self.assertEqual(self.transaction(sender=b"<x@mail.evil.example>")[-1],
                         "521 5.7.0 <x@mail.evil.example>: Sender address rejected: not here")

    def test_accessOkPermitsRelay(self):
        table = textTable(self, [("example.net", "OK")])
        self.session(client="203.0.113.1", smtpd_relay_restrictions=(
            f"check_sender_access {table}, reject_unauth_destination"))
        self.assertEqual(self.transaction(sender=b"<a@example.net>",
                                          recipient=b"<x@far.example>")[-1], "250 2.1.5 Ok")
        self.session(client="203.0.113.1", smtpd_relay_restrictions=(
            f"check_sender_access {table}, reject_unauth_destination"))
        self.assertEqual(self.transaction(sender=b"<a@example.org>",
                                          recipient=b"<x@far.example>")[-1],
                         "554 5.7.1 <x@far.example>: Relay access denied")

    def test_nullSenderKey(self):
        table = textTable(self, [("<>", "REJECT no bounces here")])
        self.session(smtpd_sender_restrictions=f"check_sender_access {table}")
        self.assertEqual(self.transaction(sender=b"<>")[-1],
                         "554 5.7.1 <>: Sender address rejected: no bounces here")

    def test_accessSideActionsReachCleanup(self):
        table = textTable(self, [
            ("alice@example.com", "HOLD look at it"),
            ("bob@localhost", "PREPEND X-Checked: yes"),
            ("client.example", "FILTER scan:[127.0.0.1]:10025"),
        ])
        self.session(smtpd_sender_restrictions=f"check_sender_access {table}",
                     smtpd_recipient_restrictions=f"check_recipient_access {table}",
                     smtpd_helo_restrictions=f"check_helo_access {table}")
        self.transaction()
        self.send(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        [begin] = [kw for c, kw in self.cleanup.calls if c is CleanupBegin]
        attributes = {a["name"]: a["value"] for a in begin["attributes"]}
        self.assertEqual(attributes["access_hold"], "look at it")
        self.assertEqual(attributes["access_prepend"], "X-Checked: yes")
        self.assertEqual(attributes["access_filter"], "scan:[127.0.0.1]:10025")

    def test_moreAccessActions(self):
        table = textTable(self, [
            ("carol@localhost", "DISCARD spam trap"),
            ("dave@localhost", "REDIRECT abuse@localhost"),
            ("erin@localhost", "WARN watch this one"),
            ("frank@localhost", "DUNNO"),
            ("gina@localhost", "FILTER no-colon"),
            ("hank@localhost", "BCC copy@example.com"),
        ])
        for recipient, expected in ((b"carol", {"access_discard": "spam trap"}),
                                    (b"dave", {"access_redirect": "abuse@localhost"}),
                                    (b"erin", {}), (b"frank", {}),
                                    (b"hank", {"access_bcc": "copy@example.com"})):
            self.session(smtpd_recipient_restrictions=f"check_recipient_access {table}",
                         anyLocalName=True)
            self.assertEqual(self.transaction(recipient=b"<" + recipient + b"@localhost>")[-1],
                             "250 2.1.5 Ok")
            self.send(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
            [begin] = [kw for c, kw in self.cleanup.calls if c is CleanupBegin]
            attributes = {a["name"]: a["value"] for a in begin["attributes"]
                          if a["name"].startswith("access_")}
            self.assertEqual(attributes, expected, recipient)
        # A malformed action is warned about and decides nothing, as in
        # Postfix: the next restriction does.
        self.session(smtpd_recipient_restrictions=f"check_recipient_access {table}, reject",
                     anyLocalName=True)
        self.assertEqual(self.transaction(recipient=b"<gina@localhost>")[-1][:4], "554 ")

    def test_unlistedSender(self):
        """
        A sender in one of this machine's domains must be a user here.
        """
        self.session(smtpd_sender_restrictions="reject_unlisted_sender")
        self.assertEqual(self.transaction(sender=b"<nobody-here@localhost>")[-1],
                         "550 5.1.0 <nobody-here@localhost>: Sender address rejected: User "
                         "unknown in local recipient table")
        self.session(smtpd_sender_restrictions="reject_unlisted_sender")
        self.assertEqual(self.transaction(sender=b"<bob@localhost>")[-1], "250 2.1.5 Ok")
        self.session(smtpd_sender_restrictions="reject_unlisted_sender")
        self.assertEqual(self.transaction(sender=b"<anyone@example.com>")[-1], "250 2.1.5 Ok")

    def test_unlistedSenderSetting(self):
        """
        C{smtpd_reject_unlisted_sender = yes} checks the sender after the
        sender list, as if the list ended with C{reject_unlisted_sender}.
        """
        self.session(smtpd_reject_unlisted_sender="yes")
        self.assertEqual(self.transaction(sender=b"<nobody-here@localhost>")[-1],
                         "550 5.1.0 <nobody-here@localhost>: Sender address rejected: User "
                         "unknown in local recipient table")
        self.session(smtpd_reject_unlisted_sender="yes")
        self.assertEqual(self.transaction(sender=b"<bob@localhost>")[-1], "250 2.1.5 Ok")

    def test_relayRecipientMaps(self):
        """
        C{relay_recipient_maps} lists who exists in C{relay_domains}: the
        others are refused at RCPT.
        """
        table = textTable(self, [("known@relay.example", "x")])
        settings = dict(client="127.0.0.1", relay_domains="relay.example",
                        relay_recipient_maps=table)
        self.session(**settings)
        self.assertEqual(self.transaction(recipient=b"<stranger@relay.example>")[-1],
                         "550 5.1.1 <stranger@relay.example>: Recipient address rejected: "
                         "User unknown in relay recipient table")
        self.session(**settings)
        self.assertEqual(self.transaction(recipient=b"<known@relay.example>")[-1],
                         "250 2.1.5 Ok")

    def test_unknownLocalCodeClass(self):
        """
        A 4xx C{unknown_local_recipient_reject_code} gets a 4.x.x status.
        """
        self.session(unknown_local_recipient_reject_code="450")
        self.assertEqual(self.transaction(recipient=b"<nobody-here@localhost>")[-1],
                         "450 4.1.1 <nobody-here@localhost>: Recipient address rejected: "
                         "User unknown in local recipient table")

    def test_deferIfPermit(self):
        """
        C{defer_if_permit} (the restriction and the access action) turns
        what would be accepted into a deferral; a later reject still
        rejects.
        """
        self.session(smtpd_client_restrictions="defer_if_permit")
        self.assertEqual(self.transaction()[-1],
                         "450 4.7.0 <localhost[192.0.2.10]>: Client host rejected: "
                         "defer_if_permit requested")
        table = textTable(self, [("192.0.2.10", "DEFER_IF_PERMIT try later")])
        self.session(smtpd_client_restrictions=f"check_client_access {table}, permit")
        self.assertEqual(self.transaction()[-1],
                         "450 4.7.1 <localhost[192.0.2.10]>: Client host rejected: try later")
        self.session(smtpd_client_restrictions="defer_if_permit",
                     smtpd_recipient_restrictions="reject")
        self.assertEqual(self.transaction()[-1][:4], "554 ")

    def test_deferIfReject(self):
        """
        C{defer_if_reject} turns a later reject of the same stage into a
        deferral; what is accepted stays accepted.
        """
        self.session(smtpd_recipient_restrictions="defer_if_reject, reject")
        self.assertEqual(self.transaction()[-1],
                         "450 4.7.0 <bob@localhost>: Recipient address rejected: "
                         "defer_if_reject requested")
        table = textTable(self, [("192.0.2.10", "DEFER_IF_REJECT")])
        self.session(smtpd_client_restrictions=f"check_client_access {table}, reject")
        self.assertEqual(self.transaction()[-1],
                         "450 4.7.1 <localhost[192.0.2.10]>: Client host rejected: "
                         "Service unavailable")
        self.session(smtpd_recipient_restrictions="defer_if_reject")
        self.assertEqual(self.transaction()[-1], "250 2.1.5 Ok")

    def test_multiRecipientBounce(self):
        """
        A bounce (null sender) to a second recipient is refused.
        """
        self.session(smtpd_recipient_restrictions="reject_multi_recipient_bounce")
        self.send(b"HELO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@localhost>\r\n"
                  b"RCPT TO:<alice@localhost>\r\n")
        self.assertEqual(self.replies()[-2:], [
            "250 2.1.5 Ok",
            "550 5.5.3 <alice@localhost>: Recipient address rejected: Multi-recipient bounce"])

    def test_restrictionClassAndNestedResults(self):
        table = textTable(self, [("bob@localhost", "strict"), ("abuse@localhost", "permit")])
        self.session(smtpd_restriction_classes="strict", strict="reject_non_fqdn_sender, reject",
                     smtpd_recipient_restrictions=f"check_recipient_access {table}")
        self.assertEqual(self.transaction()[-1], "554 5.7.1 <bob@localhost>: Recipient address "
                                                 "rejected: Access denied")
        self.session(smtpd_restriction_classes="strict", strict="reject_non_fqdn_sender, reject",
                     smtpd_recipient_restrictions=f"check_recipient_access {table}",
                     anyLocalName=True)
        self.assertEqual(self.transaction(recipient=b"<abuse@localhost>")[-1], "250 2.1.5 Ok")

    def test_warnIfReject(self):
        self.session(smtpd_client_restrictions="warn_if_reject reject, permit")
        self.assertEqual(self.transaction()[-1], "250 2.1.5 Ok")

    def test_unknownRestrictionStopsStartUp(self):
        """
        A name nobody knows is a list smtpd cannot enforce: smtpd is not
        built (and the master does not start), rather than serving mail
        with the restriction left out.
        """
        error = self.assertRaises(ValueError, self.makeServer,
                                  smtpd_recipient_restrictions="reject_everything_typo")
        self.assertIn("unknown restriction 'reject_everything_typo'", str(error))

    def test_missingArgument(self):
        self.assertRaises(ValueError, self.makeServer,
                          smtpd_recipient_restrictions="check_recipient_access")

    def test_dataAndEndOfData(self):
        self.session(smtpd_data_restrictions="reject_unauth_pipelining")
        # HELO does not allow pipelining: DATA sent ahead is refused.
        self.send(b"HELO client.example\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<bob@localhost>"
                  b"\r\nDATA\r\n")
        self.assertEqual(self.replies()[-1],
                         "503 5.5.0 Error: improper use of SMTP command pipelining")
        self.session(smtpd_data_restrictions="reject_unauth_pipelining")
        self.send(b"EHLO client.example\r\n")
        self.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n")
        self.assertEqual(self.replies()[-1], "354 End data with <CR><LF>.<CR><LF>")
        self.session(smtpd_end_of_data_restrictions="reject")
        self.transaction()
        self.send(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(self.replies()[-1],
                         "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied")
        self.assertNotIn(CleanupEnd, [c for c, kw in self.cleanup.calls])

    def test_senderLoginMismatch(self):
        logins = textTable(self, [("alice@example.com", "alice"),
                                  ("@shared.example", "bob, carol")])
        self.session(smtpd_sender_login_maps=logins,
                     smtpd_sender_restrictions="reject_sender_login_mismatch")
        self.assertEqual(self.transaction()[-1],
                         "553 5.7.1 <alice@example.com>: Sender address rejected: not logged in")
        self.session(smtpd_sender_login_maps=logins,
                     smtpd_sender_restrictions="reject_sender_login_mismatch")
        self.server.saslUsername = "bob"
        self.assertEqual(self.transaction()[-1],
                         "553 5.7.1 <alice@example.com>: Sender address rejected: not owned by "
                         "user bob")
        self.session(smtpd_sender_login_maps=logins,
                     smtpd_sender_restrictions="reject_sender_login_mismatch")
        self.server.saslUsername = "carol"
        self.assertEqual(self.transaction(sender=b"<x@shared.example>")[-1], "250 2.1.5 Ok")


class ListSemanticsTests(SynchronousTestCase):
    def evaluate(self, value, **context):
        env = RestrictionEnvironment.fromConfig(MainConfig({}), [])
        return RestrictionList("smtpd_recipient_restrictions", value, env).evaluate(
            RecipientContext(clientAddress="192.0.2.1", recipient="bob@example.com", **context))

    def test_firstDecisionWins(self):
        self.assertEqual(self.evaluate("dunno, permit, reject")[0], PERMIT)
        self.assertEqual(self.evaluate("defer, permit")[0], DEFER)
        self.assertEqual(self.evaluate("")[0], DUNNO)
        self.assertEqual(self.evaluate("permit_sasl_authenticated, reject")[0], REJECT)
        self.assertEqual(self.evaluate("permit_sasl_authenticated, reject",
                                       saslAuthenticated=True)[0], PERMIT)

    def test_resultFilters(self):
        self.assertEqual(parseFilter("127.0.0.2"), [[(127, 127)], [(0, 0)], [(0, 0)], [(2, 2)]])
        self.assertEqual(parseFilter("127.0.0.[2..11]")[3], [(2, 11)])
        self.assertEqual(parseFilter("127.0.0.[2;4]")[3], [(2, 2), (4, 4)])
        self.assertRaises(ValueError, parseFilter, "127.0.0")

    def test_restrictionsBuildFromConfig(self):
        config = MainConfig({"smtpd_delay_reject": "no"})
        restrictions = Restrictions.fromConfig(
            config, RestrictionEnvironment.fromConfig(config, []))
        self.assertEqual([each.name for each in restrictions.forStage("MAIL")],
                         ["smtpd_client_restrictions", "smtpd_helo_restrictions",
                          "smtpd_sender_restrictions"])


ZONES = {
    "rbl.test": """
zone = [
    SOA('rbl.test', mname='ns.rbl.test', rname='root.rbl.test', serial=1, refresh=60,
        retry=60, expire=60, minimum=60),
    A('2.2.0.192.rbl.test', '127.0.0.2'),
    TXT('2.2.0.192.rbl.test', b'listed for testing'),
    A('3.2.0.192.rbl.test', '127.0.0.4'),
    A('spammy.example.rbl.test', '127.0.0.2'),
    A('good.example.rbl.test', '10.0.0.1'),
]
""",
    "mail.test": """
zone = [
    SOA('mail.test', mname='ns.mail.test', rname='root.mail.test', serial=1, refresh=60,
        retry=60, expire=60, minimum=60),
    MX('exists.mail.test', 10, 'mx.exists.mail.test'),
    A('aonly.mail.test', '192.0.2.1'),
    MX('badmx.mail.test', 10, 'mx.spammer.mail.test'),
    A('mx.spammer.mail.test', '192.0.2.66'),
    NS('nsdomain.mail.test', 'ns.spammer.mail.test'),
    A('ns.spammer.mail.test', '192.0.2.77'),
    MX('backup.mail.test', 10, 'primary.mail.test'),
    MX('backup.mail.test', 20, 'here.mail.test'),
    MX('primaryhere.mail.test', 10, 'here.mail.test'),
    A('primary.mail.test', '192.0.2.5'),
    A('here.mail.test', '127.0.0.1'),
]
""",
}


class DNSRestrictionTests(TestCase):
    """
    DNS lists and domain checks against a twisted.names server on
    loopback serving test zones.
    """

    def setUp(self):
        zones = []
        for name, text in ZONES.items():
            path = os.path.join(self.mktemp() + name)
            with open(path, "w") as f:
                f.write(text)
            zones.append(authority.PySourceAuthority(path))
        factory = server.DNSServerFactory(authorities=zones)
        protocol = dns.DNSDatagramProtocol(factory)
        self.udp = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(self.udp.stopListening)
        port = self.udp.getHost().port
        self.resolver = client.Resolver(servers=[("127.0.0.1", port)], reactor=reactor)
        self.resolver.timeout = (2,)

    def evaluate(self, value, **context):
        env = RestrictionEnvironment.fromConfig(MainConfig({}), [], resolver=self.resolver)
        values = {"clientAddress": "192.0.2.2", "recipient": "bob@example.com"}
        values.update(context)
        return defer.maybeDeferred(
            RestrictionList("smtpd_client_restrictions", value, env).evaluate,
            RecipientContext(**values))

    @defer.inlineCallbacks
    def test_rblClient(self):
        action, reply = yield self.evaluate("reject_rbl_client rbl.test")
        self.assertEqual(action, REJECT)
        self.assertEqual(reply, "554 5.7.1 Service unavailable; Client host [192.0.2.2] "
                                "blocked using rbl.test; listed for testing")
        action, _ = yield self.evaluate("reject_rbl_client rbl.test", clientAddress="192.0.2.9")
        self.assertEqual(action, DUNNO)

    @defer.inlineCallbacks
    def test_mapsRbl(self):
        """
        reject_maps_rbl tries each of maps_rbl_domains, as
        reject_rbl_client does one.
        """
        env = RestrictionEnvironment.fromConfig(
            MainConfig({"maps_rbl_domains": "none.test, rbl.test"}), [], resolver=self.resolver)
        action, reply = yield defer.maybeDeferred(
            RestrictionList("smtpd_client_restrictions", "reject_maps_rbl", env).evaluate,
            RecipientContext(clientAddress="192.0.2.2", recipient="bob@example.com"))
        self.assertEqual(action, REJECT)
        self.assertIn("blocked using rbl.test", reply)

    @defer.inlineCallbacks
    def test_resultFilter(self):
        action, _ = yield self.evaluate("reject_rbl_client rbl.test=127.0.0.4")
        self.assertEqual(action, DUNNO)
        action, _ = yield self.evaluate("reject_rbl_client rbl.test=127.0.0.[3..5]",
                                        clientAddress="192.0.2.3")
        self.assertEqual(action, REJECT)

    @defer.inlineCallbacks
    def test_rhsbl(self):
        action, reply = yield self.evaluate("reject_rhsbl_sender rbl.test",
                                            sender="x@spammy.example")
        self.assertEqual((action, reply), (REJECT, "554 5.7.1 Service unavailable; Sender "
                                                   "address [spammy.example] blocked using "
                                                   "rbl.test"))
        # Not in 127.0.0.0/8: not a listing.
        action, _ = yield self.evaluate("reject_rhsbl_helo rbl.test", helo="good.example")
        self.assertEqual(action, DUNNO)
        action, _ = yield self.evaluate("reject_rhsbl_helo rbl.test", helo="spammy.example")
        self.assertEqual(action, REJECT)

    @defer.inlineCallbacks
    def test_unknownRecipientDomain(self):
        action, reply = yield self.evaluate("reject_unknown_recipient_domain",
                                            recipient="a@missing.mail.test")
        self.assertEqual((action, reply), (DEFER, "450 4.1.2 <a@missing.mail.test>: Recipient "
                                                  "address rejected: Domain not found"))
        action, _ = yield self.evaluate("reject_unknown_recipient_domain",
                                        recipient="a@exists.mail.test")
        self.assertEqual(action, DUNNO)

    @defer.inlineCallbacks
    def test_unknownSenderDomain(self):
        for sender, expected in (("a@exists.mail.test", DUNNO), ("a@aonly.mail.test", DUNNO),
                                 ("a@missing.mail.test", DEFER)):
            action, reply = yield self.evaluate("reject_unknown_sender_domain", sender=sender)
            self.assertEqual(action, expected, (sender, reply))
        action, reply = yield self.evaluate("reject_unknown_sender_domain",
                                            sender="a@missing.mail.test")
        self.assertEqual(reply, "450 4.1.8 <a@missing.mail.test>: Sender address rejected: "
                                "Domain not found")

    @defer.inlineCallbacks
    def test_tempfailActions(self):
        """
        When the DNS cannot tell, unknown_address_tempfail_action and
        unknown_helo_hostname_tempfail_action say what follows: by
        default a defer_if_permit (a later reject still wins), with
        defer a plain 450.
        """
        from tests.support import freePort

        # A server that never answers: every lookup fails for now.
        silent = client.Resolver(servers=[("127.0.0.1", freePort())], reactor=reactor)
        silent.timeout = (1,)
        for action, expected in (("defer_if_permit", REJECT), ("defer", DEFER)):
            env = RestrictionEnvironment.fromConfig(
                MainConfig({"unknown_address_tempfail_action": action,
                            "unknown_helo_hostname_tempfail_action": action}), [],
                resolver=silent)
            for value, context in (
                    ("reject_unknown_sender_domain, reject", {"sender": "a@no-zone.invalid"}),
                    ("reject_unknown_helo_hostname, reject", {"helo": "no-zone.invalid"})):
                decision, reply = yield defer.maybeDeferred(
                    RestrictionList("smtpd_client_restrictions", value, env).evaluate,
                    RecipientContext(clientAddress="192.0.2.2", recipient="bob@example.com",
                                     **context))
                self.assertEqual(decision, expected, (action, value, reply))
                if expected == DEFER:
                    self.assertTrue(reply.startswith("450 4."), reply)
        # A white list that cannot be asked turns a later reject into 450.
        decision, reply = yield defer.maybeDeferred(
            RestrictionList("smtpd_client_restrictions", "permit_dnswl_client wl.test, reject",
                            env).evaluate,
            RecipientContext(clientAddress="192.0.2.2", recipient="bob@example.com",
                             addressClass="relay"))
        self.assertEqual((decision, reply), (DEFER, "450 4.7.1 <192.0.2.2>: Client host "
                                                    "rejected: Service unavailable"))

    @defer.inlineCallbacks
    def test_moreDomainLists(self):
        """
        The recipient's domain and the unverified client name against a
        domain list; a white list permits.
        """
        action, reply = yield self.evaluate("reject_rhsbl_recipient rbl.test",
                                            recipient="x@spammy.example")
        self.assertEqual((action, reply), (REJECT, "554 5.7.1 Service unavailable; Recipient "
                                                   "address [spammy.example] blocked using "
                                                   "rbl.test"))
        action, reply = yield self.evaluate("reject_rhsbl_reverse_client rbl.test",
                                            reverseClientName="spammy.example")
        self.assertEqual(action, REJECT)
        self.assertIn("Unverified Client host [spammy.example]", reply)
        action, _ = yield self.evaluate("permit_rhswl_client rbl.test, reject",
                                        clientName="spammy.example", addressClass="relay")
        self.assertEqual(action, PERMIT)
        # A white list never lets a client relay.
        for restriction in ("permit_rhswl_client rbl.test", "permit_dnswl_client rbl.test"):
            action, _ = yield self.evaluate(f"{restriction}, reject",
                                            clientName="spammy.example",
                                            clientAddress="192.0.2.2", addressClass="default")
            self.assertEqual(action, REJECT, restriction)
        action, _ = yield self.evaluate("permit_rhswl_client rbl.test",
                                        clientName="good.example")
        self.assertEqual(action, DUNNO)

    @defer.inlineCallbacks
    def test_unknownHeloHostname(self):
        """
        A HELO name with no A, AAAA or MX record is refused (450, as
        unknown_hostname_reject_code says); one that has a record, or a
        valid address literal, passes.
        """
        action, reply = yield self.evaluate("reject_unknown_helo_hostname",
                                            helo="missing.mail.test")
        self.assertEqual((action, reply), (DEFER, "450 4.7.1 <missing.mail.test>: Helo "
                                                  "command rejected: Host not found"))
        for helo in ("aonly.mail.test", "exists.mail.test", "[192.0.2.1]"):
            action, _ = yield self.evaluate("reject_unknown_helo_hostname", helo=helo)
            self.assertEqual(action, DUNNO, helo)
        action, _ = yield self.evaluate("reject_unknown_helo_hostname", helo="[300.0.0.1]")
        self.assertEqual(action, REJECT)

    @defer.inlineCallbacks
    def test_serverAccess(self):
        """
        check_*_{mx,ns,a}_access look up the servers' names (and parent
        domains) and addresses; an OK there is a configuration error,
        never a permit.
        """
        table = textTable(self, [("spammer.mail.test", "REJECT spam servers"),
                                 ("192.0.2.1", "REJECT by address"),
                                 ("192.0.2.77", "OK")])
        action, reply = yield self.evaluate(f"check_sender_mx_access {table}",
                                            sender="x@badmx.mail.test")
        self.assertEqual((action, reply), (REJECT, "554 5.7.1 <x@badmx.mail.test>: Sender "
                                                   "address rejected: spam servers"))
        # No MX: the domain is its own mail server.
        action, reply = yield self.evaluate(f"check_recipient_mx_access {table}",
                                            recipient="x@aonly.mail.test")
        self.assertEqual(action, REJECT)
        self.assertIn("Recipient address rejected: by address", reply)
        action, _ = yield self.evaluate(f"check_helo_a_access {table}", helo="aonly.mail.test")
        self.assertEqual(action, REJECT)
        action, _ = yield self.evaluate(f"check_sender_mx_access {table}",
                                        sender="x@exists.mail.test")
        self.assertEqual(action, DUNNO)
        # The name servers of the nearest domain that has some.
        action, reply = yield self.evaluate(f"check_sender_ns_access {table}",
                                            sender="x@sub.nsdomain.mail.test")
        self.assertEqual(action, REJECT)
        only = textTable(self, [("192.0.2.77", "OK")])
        action, reply = yield self.evaluate(f"check_sender_ns_access {only}",
                                            sender="x@nsdomain.mail.test")
        self.assertEqual((action, reply), (DEFER, "451 4.3.5 Server configuration error"))

    @defer.inlineCallbacks
    def test_permitMxBackup(self):
        """
        permit_mx_backup permits a domain whose backup MX is this host,
        not one whose primary MX it is, nor one it is no MX of; with
        permit_mx_backup_networks, the primaries must be in them.
        """
        from tmta.rewrite import Rewriter

        def evaluate(recipient, **settings):
            config = MainConfig(settings)
            rewriter = Rewriter(config)
            env = RestrictionEnvironment.fromConfig(config, [], resolver=self.resolver)
            return defer.maybeDeferred(
                RestrictionList("smtpd_recipient_restrictions", "permit_mx_backup", env)
                .evaluate, RecipientContext(
                    clientAddress="192.0.2.2", recipient=recipient,
                    resolve=lambda a: defer.succeed(rewriter.resolve(a))))

        action, _ = yield evaluate("x@backup.mail.test")
        self.assertEqual(action, PERMIT)
        for recipient in ("x@primaryhere.mail.test", "x@exists.mail.test",
                          "x%elsewhere.example@backup.mail.test"):
            action, _ = yield evaluate(recipient)
            self.assertEqual(action, DUNNO, recipient)
        action, _ = yield evaluate("x@backup.mail.test",
                                   permit_mx_backup_networks="192.0.2.0/24")
        self.assertEqual(action, PERMIT)
        action, _ = yield evaluate("x@backup.mail.test",
                                   permit_mx_backup_networks="198.51.100.0/24")
        self.assertEqual(action, DUNNO)
        action, _ = yield evaluate("x@here.example", mydestination="here.example")
        self.assertEqual(action, PERMIT)

    @defer.inlineCallbacks
    def test_unknownDomainSkipsOwnDomains(self):
        """
        A domain this machine takes mail for itself (mydestination,
        virtual domains) is not looked up in the DNS, as in Postfix.
        """
        from tmta.rewrite import Rewriter

        rewriter = Rewriter(MainConfig({"mydestination": "missing.mail.test"}))
        action, _ = yield self.evaluate(
            "reject_unknown_sender_domain", sender="a@missing.mail.test",
            resolve=lambda address: defer.succeed(rewriter.resolve(address)))
        self.assertEqual(action, DUNNO)


class _PolicyServer(LineOnlyReceiver):
    delimiter = b"\n"

    def connectionMade(self):
        self.factory.connections += 1
        self.request = {}

    def lineReceived(self, line):
        if line:
            name, _, value = line.decode().partition("=")
            self.request[name] = value
            return
        self.factory.requests.append(self.request)
        self.request = {}
        self.sendLine(b"action=" + self.factory.answer.encode())
        self.sendLine(b"")


class PolicyServiceTests(TestCase):
    """
    check_policy_service against a small policy server on loopback.
    """

    def setUp(self):
        self.factory = ServerFactory.forProtocol(_PolicyServer)
        self.factory.requests = []
        self.factory.connections = 0
        self.factory.answer = "DUNNO"
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        config = MainConfig({"smtpd_policy_service_timeout": "5s"})
        self.env = RestrictionEnvironment.fromConfig(config, [])
        address = f"inet:127.0.0.1:{self.port.getHost().port}"
        self.list = RestrictionList("smtpd_recipient_restrictions",
                                    f"check_policy_service {address}", self.env)

    def tearDown(self):
        for server_ in self.env.policies._servers.values():
            if server_._protocol is not None:
                server_._protocol.transport.loseConnection()

    def evaluate(self, **context):
        values = dict(clientAddress="192.0.2.5", clientName="client.example",
                      recipient="bob@example.com", sender="alice@example.org",
                      helo="helo.example", stage="RCPT", saslUsername="alice",
                      saslMethod="PLAIN")
        values.update(context)
        return defer.maybeDeferred(self.list.evaluate, RecipientContext(**values))

    @defer.inlineCallbacks
    def test_requestAndAnswers(self):
        self.factory.answer = "REJECT greylisted"
        action, reply = yield self.evaluate()
        self.assertEqual((action, reply), (REJECT, "554 5.7.1 <bob@example.com>: Recipient "
                                                   "address rejected: greylisted"))
        [request] = self.factory.requests
        for name, value in (("request", "smtpd_access_policy"), ("protocol_state", "RCPT"),
                            ("client_address", "192.0.2.5"), ("sender", "alice@example.org"),
                            ("recipient", "bob@example.com"), ("helo_name", "helo.example"),
                            ("sasl_username", "alice")):
            self.assertEqual(request[name], value)
        self.factory.answer = "DUNNO"
        action, _ = yield self.evaluate()
        self.assertEqual(action, DUNNO)
        self.factory.answer = "defer_if_permit Service temporarily unavailable"
        action, _ = yield self.evaluate()
        self.assertEqual(action, DUNNO)
        self.factory.answer = "451 4.7.1 Please try again later"
        action, reply = yield self.evaluate()
        self.assertEqual((action, reply[:10]), (DEFER, "451 4.7.1 "))
        # One connection carried them all.
        self.assertEqual(self.factory.connections, 1)

    @defer.inlineCallbacks
    def test_serverDownDefers(self):
        yield self.port.stopListening()
        action, reply = yield self.evaluate()
        self.assertEqual((action, reply[:10]), (DEFER, "451 4.3.5 "))
