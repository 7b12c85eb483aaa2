"""
The mail hosting suites operators install, each with the main.cf and
master.cf they write for Postfix and the table files they generate,
started on a real master against a private database server:

  - mailcow's shape: every table a C{proxy:mysql:} file of queries
    over its domain, mailbox and alias tables (subqueries, C{UNION},
    C{IF(EXISTS ...)}, JSON attributes), postscreen in front with a
    C{tcp:} table served by a C{spawn} service, a Dovecot for SASL, and
    an LMTP server taking the mail (smtp-sink in Dovecot's place);
  - docker-mailserver's with its LDAP account provisioner: C{ldap:}
    files for mailboxes, domains, aliases, groups and senders.

Each is filled with two domains, three mailboxes and aliases; mail for
them is delivered, unknown users are refused at RCPT.
"""

from __future__ import annotations

import os
import smtplib

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    Master,
    PrivateDovecot,
    SmtpSink,
    freePort,
    sendMessage,
    shortTemporaryDirectory,
    waitFor,
)
from tests.support.databases import PrivateMariaDB, PrivateSlapd

#: Tables in the shape of mailcow's: domains (some relayed as a backup
#: MX, some sending through a relay host), mailboxes with JSON
#: attributes, aliases (a comma-separated list of targets), alias
#: domains, sender permissions, throw-away aliases and recipient maps.
MAILCOW_SCHEMA = """
CREATE TABLE domain (domain VARCHAR(255) PRIMARY KEY,
  backupmx TINYINT(1) NOT NULL DEFAULT 0, relay_all_recipients TINYINT(1) NOT NULL DEFAULT 0,
  relayhost INT NOT NULL DEFAULT 0, active TINYINT(1) NOT NULL DEFAULT 1);
CREATE TABLE mailbox (username VARCHAR(255) PRIMARY KEY, local_part VARCHAR(255) NOT NULL,
  domain VARCHAR(255) NOT NULL, kind VARCHAR(100) NOT NULL DEFAULT '',
  attributes JSON, mailbox_path_prefix VARCHAR(150) DEFAULT '/var/vmail/',
  active TINYINT(1) NOT NULL DEFAULT 1);
CREATE TABLE alias (id INT AUTO_INCREMENT PRIMARY KEY, address VARCHAR(255) NOT NULL,
  goto TEXT NOT NULL, domain VARCHAR(255) NOT NULL,
  sender_allowed TINYINT(1) NOT NULL DEFAULT 1, active TINYINT(1) NOT NULL DEFAULT 1);
CREATE TABLE alias_domain (alias_domain VARCHAR(255) PRIMARY KEY,
  target_domain VARCHAR(255) NOT NULL, active TINYINT(1) NOT NULL DEFAULT 1);
CREATE TABLE sender_acl (id INT AUTO_INCREMENT PRIMARY KEY,
  logged_in_as VARCHAR(255) NOT NULL, send_as VARCHAR(255) NOT NULL);
CREATE TABLE spamalias (address VARCHAR(255) PRIMARY KEY, goto TEXT NOT NULL,
  validity INT, permanent TINYINT(1) NOT NULL DEFAULT 0);
CREATE TABLE transports (id INT AUTO_INCREMENT PRIMARY KEY,
  destination VARCHAR(255) NOT NULL, nexthop VARCHAR(255) NOT NULL,
  active TINYINT(1) NOT NULL DEFAULT 1);
CREATE TABLE relayhosts (id INT AUTO_INCREMENT PRIMARY KEY, hostname VARCHAR(255) NOT NULL,
  username VARCHAR(255) NOT NULL DEFAULT '', password VARCHAR(255) NOT NULL DEFAULT '',
  active TINYINT(1) NOT NULL DEFAULT 1);
CREATE TABLE recipient_maps (id INT AUTO_INCREMENT PRIMARY KEY,
  old_dest VARCHAR(255) NOT NULL, new_dest VARCHAR(255) NOT NULL,
  active TINYINT(1) NOT NULL DEFAULT 1);
INSERT INTO domain (domain, relayhost) VALUES ('example.org', 1), ('example.net', 0);
INSERT INTO domain (domain, backupmx, relay_all_recipients) VALUES ('backup.example', 1, 0);
INSERT INTO alias_domain VALUES ('alias.example', 'example.org', 1);
INSERT INTO mailbox (username, local_part, domain, attributes) VALUES
  ('ann@example.org', 'ann', 'example.org',
   '{"mailbox_format": "maildir:", "tls_enforce_in": "0"}'),
  ('bob@example.org', 'bob', 'example.org',
   '{"mailbox_format": "maildir:", "tls_enforce_in": "0"}'),
  ('cy@example.net', 'cy', 'example.net',
   '{"mailbox_format": "maildir:", "tls_enforce_in": "1"}');
INSERT INTO alias (address, goto, domain) VALUES
  ('ann@example.org', 'ann@example.org', 'example.org'),
  ('bob@example.org', 'bob@example.org', 'example.org'),
  ('cy@example.net', 'cy@example.net', 'example.net'),
  ('team@example.org', 'ann@example.org,bob@example.org', 'example.org'),
  ('kept@backup.example', 'kept@backup.example', 'backup.example');
INSERT INTO sender_acl (logged_in_as, send_as) VALUES ('bob@example.org', '@example.net');
INSERT INTO spamalias VALUES ('x7k2@example.org', 'ann@example.org', NULL, 1),
  ('expired@example.org', 'ann@example.org', 1, 0);
INSERT INTO recipient_maps (old_dest, new_dest) VALUES ('old@example.org', 'bob@example.org');
"""

#: The table files, one query each, as mailcow generates them.
MAILCOW_TABLES = {
    "domains.cf": """\
query = SELECT alias_domain FROM alias_domain WHERE alias_domain = '%s' AND active = '1'
  UNION SELECT domain FROM domain WHERE domain = '%s' AND active = '1' AND backupmx = '0'
""",
    "mailboxes.cf": """\
query = SELECT CONCAT(JSON_UNQUOTE(JSON_VALUE(attributes, '$.mailbox_format')),
    mailbox_path_prefix, '%d/%u/') FROM mailbox
  WHERE username = '%s' AND active = '1'
""",
    "aliases.cf": "query = SELECT goto FROM alias WHERE address = '%s' AND active = '1'\n",
    "alias-domains.cf": """\
query = SELECT username FROM mailbox, alias_domain
  WHERE alias_domain.alias_domain = '%d'
    AND mailbox.username = CONCAT('%u', '@', alias_domain.target_domain)
    AND mailbox.active = '1' AND alias_domain.active = '1'
""",
    "spamaliases.cf": """\
query = SELECT goto FROM spamalias
  WHERE address = '%s' AND (validity >= UNIX_TIMESTAMP() OR permanent != 0)
""",
    "senders.cf": """\
# Who may send as an address: its alias's targets, and whom the
# sender permissions name for the address or its domain.
query = SELECT goto FROM alias WHERE address = '%s' AND sender_allowed = '1'
    AND address NOT LIKE '@%%'
  UNION SELECT logged_in_as FROM sender_acl WHERE send_as IN ('%s', CONCAT('@', '%d'))
""",
    "recipient-canonical.cf": """\
query = SELECT new_dest FROM recipient_maps WHERE old_dest = '%s' AND active = '1'
""",
    "tls-enforce-in.cf": """\
query = SELECT IF(EXISTS(SELECT 1 FROM mailbox WHERE username = '%s' AND active = '1'
    AND JSON_UNQUOTE(JSON_VALUE(attributes, '$.tls_enforce_in')) = '1'),
  'reject_plaintext_session', NULL) AS tls_enforce_in
""",
    "sender-transport.cf": """\
query = SELECT GROUP_CONCAT(transport SEPARATOR '') FROM (
    SELECT 'smtp:' AS transport
    UNION ALL
    SELECT (SELECT hostname FROM relayhosts JOIN domain ON domain.relayhost = relayhosts.id
      WHERE relayhosts.active = '1' AND domain.domain = '%d')) AS chosen
""",
    "relay-domains.cf": """\
query = SELECT domain FROM domain WHERE domain = '%s' AND backupmx = '1' AND active = '1'
""",
    "relay-recipients.cf": """\
query = SELECT DISTINCT CASE WHEN '%d' IN (SELECT domain FROM domain
      WHERE relay_all_recipients = 1 AND domain = '%d' AND backupmx = 1)
    THEN '%s' ELSE (SELECT goto FROM alias WHERE address = '%s' AND active = '1') END
""",
    "transports.cf": """\
query = SELECT CONCAT('smtp_via_transport_maps:', nexthop) FROM transports
  WHERE active = '1' AND destination = '%s'
""",
    "tls-policy.cf": """\
query = SELECT 'encrypt' FROM transports WHERE 0 = 1 AND destination = '%s'
""",
}

#: The delivery services both suites' master.cf files have.
DELIVERY_SERVICES = """\
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
lmtp       unix  -       -       n       -       -       lmtp
anvil      unix  -       -       n       -       1       anvil
"""

#: smtp_header_checks in the manner of mailcow's: what would tell the
#: world of the sender's client is taken out of the mail that leaves.
ANONYMIZE_HEADERS = r"""/^\s*X-Originating-IP:/ IGNORE
if /^Received:[\s\S]*\(Authenticated sender:/
/^Received: from [\s\S]*\sby\s+(\S+)[\s\S]* with (\S+)/
  REPLACE Received: from [127.0.0.1] (localhost [127.0.0.1]) by $1 with $2
endif
"""

#: A tcp_table(5) server for postscreen_access_list, which the spawn
#: service runs once per connection, as mailcow runs its list of
#: forwarding hosts: it allows one client address.
ACCESS_SERVER = """\
import sys
from urllib.parse import unquote
for line in sys.stdin:
    key = unquote(line.split(" ", 1)[1].strip()) if line.startswith("get ") else ""
    sys.stdout.write("200 permit\\n" if key == "127.0.0.1" else "500 not%20listed\\n")
    sys.stdout.flush()
"""


def assertNotOwner(testCase, client: smtplib.SMTP, sender: str, login: str) -> None:
    """
    A logged-in client may not send as C{sender}: refused at RCPT
    (C{smtpd_delay_reject}), as not owned by C{login}; the transaction
    is reset.
    """
    client.mail(sender)
    code, reply = client.rcpt("far@away.example")
    testCase.assertEqual((code, reply[:5]), (553, b"5.7.1"))
    testCase.assertIn(f"not owned by user {login}".encode(), reply)
    client.rset()


class MailcowSiteTests(SynchronousTestCase):
    """
    A main.cf and master.cf of mailcow's shape, its tables in a private
    MariaDB through C{proxy:mysql:}.
    """

    def setUp(self):
        base = self.base = shortTemporaryDirectory(self)
        os.chmod(base, 0o755)
        self.database = PrivateMariaDB(self).start()
        self.addCleanup(self.database.stop)
        self.lmtp = SmtpSink(self, base, lmtp=True)
        self.relay = SmtpSink(self, base)
        self.database.createMailDatabase(MAILCOW_SCHEMA + f"""
INSERT INTO relayhosts (id, hostname) VALUES (1, '[127.0.0.1]:{self.relay.port}');
INSERT INTO transports (destination, nexthop) VALUES
  ('routed.example', '[127.0.0.1]:{self.relay.port}');
""")
        self.dovecot = PrivateDovecot(os.path.join(base, "dovecot"), {
            "ann@example.org": "ann-secret", "bob@example.org": "bob-secret"}).start()
        self.addCleanup(self.dovecot.stop)
        sql = os.path.join(base, "sql")
        os.mkdir(sql)
        table = {}
        for name, query in MAILCOW_TABLES.items():
            path = os.path.join(sql, name)
            with open(path, "w") as f:
                f.write(f"user = mailuser\npassword = secret\nhosts = unix:{self.database.socket}\n"
                        f"dbname = mail\n{query}")
            table[name] = f"proxy:mysql:{path}"
        conf = os.path.join(base, "conf")
        os.mkdir(conf)
        for name, text in (("custom_transport.pcre", ""),
                           ("postscreen_access.cidr", "192.0.2.0/24 reject\n"),
                           ("anonymize_headers.pcre", ANONYMIZE_HEADERS)):
            with open(os.path.join(conf, name), "w") as f:
                f.write(text)
        server = os.path.join(base, "access-server.py")
        with open(server, "w") as f:
            f.write(ACCESS_SERVER)
        os.chmod(server, 0o644)
        self.port, self.sogoPort, accessPort = freePort(), freePort(), freePort()
        self.master = Master(conf, {
            "myhostname": "mail.example.org",
            "mydestination": "localhost.localdomain, localhost",
            # Clients on 127.0.0.1 are outsiders; mailcow trusts its
            # containers' network.
            "mynetworks": "127.0.0.2/32",
            "recipient_delimiter": "+",
            "smtpd_relay_restrictions": "permit_mynetworks,\n  permit_sasl_authenticated,\n"
                                        "  defer_unauth_destination",
            "smtpd_recipient_restrictions": (
                "permit_sasl_authenticated,\n  permit_mynetworks,\n"
                f"  check_recipient_access {table['tls-enforce-in.cf']},\n"
                "  reject_invalid_helo_hostname,\n  reject_unauth_destination"),
            "smtpd_sender_restrictions": "reject_authenticated_sender_login_mismatch,\n"
                                         "  permit_mynetworks,\n  permit_sasl_authenticated,\n"
                                         "  reject_unlisted_sender",
            "smtpd_sender_login_maps": table["senders.cf"],
            "smtpd_helo_required": "yes",
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": self.dovecot.socket,
            "smtpd_tls_auth_only": "yes",
            "plaintext_reject_code": "550",
            "disable_vrfy_command": "yes",
            "postscreen_access_list": f"permit_mynetworks,\n  cidr:{conf}/postscreen_access.cidr,"
                                      f"\n  tcp:127.0.0.1:{accessPort}",
            "postscreen_denylist_action": "drop",
            "postscreen_cache_map": "proxy:btree:$data_directory/postscreen_cache",
            "postscreen_greet_action": "enforce",
            "postscreen_greet_wait": "3s",
            "postscreen_greet_banner": "$smtpd_banner",
            "postscreen_dnsbl_ttl": "5m",
            "postscreen_bare_newline_enable": "no",
            "postscreen_non_smtp_command_enable": "no",
            "postscreen_pipelining_enable": "no",
            "proxy_read_maps": "$sender_dependent_default_transport_maps,\n"
                               "  $smtp_tls_policy_maps,\n  $local_recipient_maps,\n"
                               "  $mydestination,\n  $virtual_alias_maps,\n"
                               "  $virtual_mailbox_maps,\n  $virtual_mailbox_domains,\n"
                               "  $relay_recipient_maps,\n  $relay_domains,\n"
                               "  $recipient_canonical_maps,\n  $relocated_maps,\n"
                               "  $transport_maps,\n  $smtpd_sender_login_maps,\n"
                               f"  {table['tls-enforce-in.cf']}",
            "relay_domains": table["relay-domains.cf"],
            "relay_recipient_maps": table["relay-recipients.cf"],
            "sender_dependent_default_transport_maps": table["sender-transport.cf"],
            "virtual_alias_maps": f"{table['aliases.cf']},\n  {table['spamaliases.cf']},\n"
                                  f"  {table['alias-domains.cf']}",
            "virtual_mailbox_domains": table["domains.cf"],
            "virtual_mailbox_maps": table["mailboxes.cf"],
            "virtual_mailbox_base": "/var/vmail/",
            "virtual_uid_maps": "static:5000",
            "virtual_gid_maps": "static:5000",
            "virtual_minimum_uid": "104",
            # Dovecot's LMTP service, here smtp-sink speaking LMTP.
            "virtual_transport": f"lmtp:inet:127.0.0.1:{self.lmtp.port}",
            "lmtp_destination_recipient_limit": "1",
            "recipient_canonical_maps": table["recipient-canonical.cf"],
            "recipient_canonical_classes": "envelope_recipient",
            "transport_maps": f"pcre:{conf}/custom_transport.pcre,\n  {table['transports.cf']}",
            "smtp_tls_policy_maps": table["tls-policy.cf"],
            # Its relay hosts and transports are addresses: no TLSA.
            "smtp_tls_security_level": "dane",
            "smtp_dns_support_level": "dnssec",
            "smtpd_sasl_authenticated_header": "yes",
            "smtp_header_checks": f"pcre:{conf}/anonymize_headers.pcre",
            "milter_default_action": "tempfail",
            "message_size_limit": "104857600",
            "compatibility_level": "3.7",
            "minimal_backoff_time": "2s", "maximal_backoff_time": "4s",
            "queue_run_delay": "2s",
        }, f"""\
127.0.0.1:{self.port} inet n - n - 1 postscreen
smtpd      pass  -       -       n       -       -       smtpd
  -o smtpd_sasl_auth_enable=no
  -o smtpd_sender_restrictions=permit_mynetworks,reject_unlisted_sender
127.0.0.1:{self.sogoPort} inet n - n - - smtpd
  -o smtpd_client_restrictions=permit_mynetworks,permit_sasl_authenticated,reject
  -o smtpd_tls_auth_only=no
  -o cleanup_service_name=smtp_sender_cleanup
smtp_enforced_tls unix - - n - - smtp
  -o smtp_tls_security_level=encrypt
smtp_via_transport_maps unix - - n - - smtp
pickup     fifo  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       fifo  n       -       n       300     1       qmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
{DELIVERY_SERVICES}smtp_sender_cleanup unix n - n - 0 cleanup
127.0.0.1:{accessPort} inet n n n - 0 spawn user=nobody argv=/usr/bin/python3 {server}
""").start()
        self.addCleanup(self.master.stop)

    def refused(self, recipient: str, port: int = 0):
        error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, port or self.port,
                                  "friend@outside.example", [recipient], "refused")
        return error.recipients[recipient]

    def test_deliveredAndRefused(self):
        """
        Through postscreen (the client allowed by the C{tcp:} table the
        spawn service answers), mail for mailboxes, aliases, an alias
        domain, a throw-away alias and a mapped old address goes to
        LMTP, one recipient per transaction; unknown users, expired
        aliases and plaintext mail to a mailbox that demands TLS are
        refused at RCPT.
        """
        for recipient in ["ann@example.org", "team@example.org", "bob@alias.example",
                          "x7k2@example.org", "old@example.org"]:
            sendMessage(self.port, "friend@outside.example", [recipient], recipient)
        expected = ["ann@example.org", "ann@example.org", "ann@example.org",
                    "bob@example.org", "bob@example.org", "bob@example.org"]
        waitFor(lambda: self.lmtp.recipients() == expected, timeout=60,
                what="the LMTP deliveries")
        self.assertTrue(all(text.count(b"X-Rcpt-Args:") == 1 for text in self.lmtp.messages()))
        waitFor(lambda: "ALLOWLISTED [127.0.0.1]" in self.master.log(), what="postscreen's log")
        code, reply = self.refused("nobody@example.org")
        self.assertEqual((code, reply[:5]), (550, b"5.1.1"))
        self.assertIn(b"User unknown in virtual mailbox table", reply)
        self.assertEqual(self.refused("expired@example.org")[0], 550)
        code, reply = self.refused("cy@example.net")
        self.assertEqual((code, reply[:5]), (550, b"5.7.1"))
        self.assertIn(b"Session encryption is required", reply)
        # A backup MX domain: listed recipients are relayed, others not.
        self.assertEqual(self.refused("other@backup.example")[0], 550)
        self.assertEqual(self.refused("someone@elsewhere.example")[0] // 100, 4)
        # With the database down, a recipient whose domain cannot be
        # looked up is a temporary failure, not "Relay access denied".
        self.database.stop()
        code, reply = self.refused("newcomer@example.net")
        self.assertEqual((code, reply[:5]), (451, b"4.3.0"), reply)
        self.assertNotIn("Traceback", self.master.log())

    def login(self, user: str, password: str) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.sogoPort, timeout=30)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        client.login(user, password)
        return client

    def test_senders(self):
        """
        On the webmail port, a logged-in user sends as the addresses the
        sender table gives them and no other; mail out of the site goes
        through its domain's relay host, chosen by the sender's domain
        (C{sender_dependent_default_transport_maps}), or the transport
        table's next hop.
        """
        client = self.login("ann@example.org", "ann-secret")
        assertNotOwner(self, client, "bob@example.org", "ann@example.org")
        # team@ lists ann among its targets.
        client.sendmail("team@example.org", ["far@away.example"],
                        b"X-Originating-IP: [192.0.2.7]\r\nSubject: from the team\r\n\r\nhi\r\n")
        client = self.login("bob@example.org", "bob-secret")
        # bob may send as anyone at example.net; the mail leaves by the
        # default transport, there being no relay host for example.net:
        # routed.example has its own next hop.
        client.sendmail("bob@example.net", ["someone@routed.example"],
                        b"Subject: routed\r\n\r\nhi\r\n")
        waitFor(lambda: self.relay.recipients() == ["far@away.example",
                                                    "someone@routed.example"],
                timeout=60, what="the relayed mail")
        # smtp_header_checks: the mail left without its client's traces.
        [team] = [text for text in self.relay.messages() if b"from the team" in text]
        self.assertNotIn(b"X-Originating-IP", team)
        self.assertNotIn(b"Authenticated sender", team)
        self.assertIn(b"\nReceived: from [127.0.0.1] (localhost [127.0.0.1]) by mail.example.org "
                      b"with ESMTPA", team)
        self.assertNotIn("Traceback", self.master.log())


#: The attributes docker-mailserver's LDAP tables ask for, in a schema of
#: the test's own (OpenLDAP's experimental OID arc).
MAIL_ACCOUNT_SCHEMA = """\
attributetype ( 1.3.6.1.4.1.4203.666.11.1 NAME 'mailEnabled'
  EQUALITY booleanMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.7 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.11.2 NAME 'mailAlias'
  EQUALITY caseIgnoreIA5Match SUBSTR caseIgnoreIA5SubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
attributetype ( 1.3.6.1.4.1.4203.666.11.3 NAME 'mailGroupMember'
  EQUALITY caseIgnoreIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.4.1.4203.666.11.4 NAME 'mailAccount' SUP top AUXILIARY
  MAY ( mailEnabled $ mailAlias $ mailGroupMember ) )
"""

#: Two domains, three people with mail and one without, aliases, and a
#: group whose members carry its address.
MAIL_ACCOUNTS = """\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=users,dc=example,dc=org
objectClass: organizationalUnit
ou: users
""" + "".join(f"""
dn: uid={uid},ou=users,dc=example,dc=org
objectClass: inetOrgPerson
objectClass: mailAccount
uid: {uid}
cn: {uid}
sn: {uid}
mail: {mail}
mailEnabled: {enabled}
{''.join(f'mailAlias: {a}{chr(10)}' for a in aliases)}\
{''.join(f'mailGroupMember: {g}{chr(10)}' for g in groups)}\
""" for uid, mail, enabled, aliases, groups in [
    ("ann", "ann@example.org", "TRUE", ["anne@example.org", "postmaster@example.org"],
     ["team@example.org"]),
    ("bob", "bob@example.org", "TRUE", [], ["team@example.org"]),
    ("cy", "cy@example.net", "TRUE", ["hello@example.net"], []),
    ("gone", "gone@example.net", "FALSE", [], []),
])

#: docker-mailserver's LDAP table files, as its start-up fills them in.
LDAP_TABLES = {
    "ldap-users.cf": ("(&(mail=%s)(mailEnabled=TRUE))", "mail"),
    "ldap-groups.cf": ("(&(mailGroupMember=%s)(mailEnabled=TRUE))", "mail"),
    "ldap-aliases.cf": ("(&(mailAlias=%s)(mailEnabled=TRUE))", "mail"),
    "ldap-domains.cf": ("(&(|(mail=*@%s)(mailalias=*@%s))(mailEnabled=TRUE))", "mail"),
}

#: Its filter of what mail from its users shows of them when it leaves
#: (sender-cleanup's header_checks and smtp_header_checks).
SENDER_HEADER_FILTER = r"""/^\s*Received:.*with ESMTPSA/ IGNORE
/^\s*X-Originating-IP:/ IGNORE
/^\s*X-Mailer:/ IGNORE
/^\s*User-Agent/ IGNORE
/^\s*Mime-Version: 1.0.*/ REPLACE MIME-Version: 1.0
"""


class DockerMailserverLDAPTests(SynchronousTestCase):
    """
    docker-mailserver's main.cf and master.cf with its LDAP account
    provisioner: mailboxes, domains, aliases, groups and the senders a
    login may use, in a private slapd.
    """

    def setUp(self):
        from tests.support import TestCA

        base = self.base = shortTemporaryDirectory(self)
        os.chmod(base, 0o755)
        self.directory = PrivateSlapd(self, MAIL_ACCOUNTS, MAIL_ACCOUNT_SCHEMA).start()
        self.addCleanup(self.directory.stop)
        self.lmtp = SmtpSink(self, base, lmtp=True)
        self.relay = SmtpSink(self, base)
        self.dovecot = PrivateDovecot(os.path.join(base, "dovecot"), {
            "ann@example.org": "ann-secret"}).start()
        self.addCleanup(self.dovecot.stop)
        conf = os.path.join(base, "conf")
        os.mkdir(conf)
        tables = {}
        for name, (query, attribute) in LDAP_TABLES.items():
            path = tables[name] = os.path.join(conf, name)
            with open(path, "w") as f:
                f.write(f"bind             = yes\n"
                        f"bind_dn          = cn=admin,dc=example,dc=org\n"
                        f"bind_pw          = secret\n"
                        f"query_filter     = {query}\n"
                        f"result_attribute = {attribute}\n"
                        f"search_base      = ou=users,dc=example,dc=org\n"
                        f"server_host      = ldap://127.0.0.1:{self.directory.port}\n"
                        f"start_tls        = no\n"
                        f"version          = 3\n")
        with open(os.path.join(conf, "vhost"), "w") as f:
            f.write("example.com\n")
        filterFile = os.path.join(conf, "sender_header_filter.pcre")
        with open(filterFile, "w") as f:
            f.write(SENDER_HEADER_FILTER)
        certFile, keyFile = TestCA(os.path.join(base, "ca")).server("mail.example.org")
        self.port, self.submissionPort = freePort(), freePort()
        users, aliases = f"ldap:{tables['ldap-users.cf']}", f"ldap:{tables['ldap-aliases.cf']}"
        groups = f"ldap:{tables['ldap-groups.cf']}"
        self.master = Master(conf, {
            "compatibility_level": "3.10",
            "smtpd_banner": "$myhostname ESMTP",
            "smtputf8_enable": "no",
            "myhostname": "mail.example.org",
            "mydomain": "example.org",
            "mydestination": "localhost.$mydomain, localhost",
            "relayhost": f"[127.0.0.1]:{self.relay.port}",
            # The container's networks are trusted there; here clients
            # on 127.0.0.1 are outsiders.
            "mynetworks": "127.0.0.2/32",
            "recipient_delimiter": "+",
            "smtpd_tls_chain_files": f"{keyFile} {certFile}",
            "smtpd_tls_security_level": "may",
            "smtp_tls_security_level": "may",
            "tls_ssl_options": "NO_COMPRESSION, NO_RENEGOTIATION",
            "smtpd_tls_protocols": "!SSLv2,!SSLv3,!TLSv1,!TLSv1.1",
            "smtpd_tls_mandatory_protocols": "!SSLv2,!SSLv3,!TLSv1,!TLSv1.1",
            "smtpd_tls_mandatory_ciphers": "high",
            "smtpd_helo_required": "yes",
            "smtpd_delay_reject": "yes",
            "smtpd_helo_restrictions": "permit_mynetworks, reject_invalid_helo_hostname, permit",
            "smtpd_relay_restrictions": "permit_mynetworks permit_sasl_authenticated "
                                        "defer_unauth_destination",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, permit_mynetworks, "
                                            "reject_unauth_destination, "
                                            "reject_invalid_helo_hostname, "
                                            "reject_non_fqdn_helo_hostname, "
                                            "reject_unknown_recipient_domain",
            "smtpd_client_restrictions": "permit_mynetworks, permit_sasl_authenticated, "
                                         "reject_unauth_destination",
            "smtpd_sender_restrictions": "$dms_smtpd_sender_restrictions",
            "smtpd_discard_ehlo_keywords": "silent-discard, dsn",
            "smtpd_data_restrictions": "permit_mynetworks, permit_sasl_authenticated, "
                                       "reject_unauth_pipelining",
            "disable_vrfy_command": "yes",
            "smtpd_forbid_bare_newline": "yes",
            "dms_smtpd_sender_restrictions": "permit_sasl_authenticated, permit_mynetworks, "
                                             "reject_unknown_sender_domain",
            "mua_sender_restrictions": "reject_authenticated_sender_login_mismatch, "
                                       "$dms_smtpd_sender_restrictions",
            "postscreen_dnsbl_action": "enforce",
            # Its DNS lists are on the internet, which tests do not reach.
            "postscreen_dnsbl_sites": "",
            "postscreen_dnsbl_threshold": "3",
            "postscreen_dnsbl_allowlist_threshold": "-1",
            "postscreen_greet_action": "enforce",
            "postscreen_bare_newline_action": "enforce",
            "smtpd_sasl_auth_enable": "no",
            "smtpd_sasl_path": self.dovecot.socket,
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_sasl_local_domain": "$mydomain",
            "broken_sasl_auth_clients": "yes",
            "virtual_mailbox_domains": f"{conf}/vhost, ldap:{tables['ldap-domains.cf']}",
            "virtual_mailbox_maps": users,
            "virtual_alias_maps": f"{aliases}, {groups}",
            "smtpd_sender_login_maps": f"{users} {aliases} {groups}",
            "milter_protocol": "6",
            "milter_default_action": "accept",
            "smtpd_milters": "",
            "non_smtpd_milters": "",
            "smtp_header_checks": f"pcre:{filterFile}",
            # Dovecot's LMTP socket there; smtp-sink speaking LMTP here.
            "virtual_transport": f"lmtp:inet:127.0.0.1:{self.lmtp.port}",
        }, f"""\
127.0.0.1:{self.port} inet n - n - 1 postscreen
smtpd          pass  -       -       n       -       -       smtpd
127.0.0.1:{self.submissionPort} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_sasl_authenticated_header=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_sender_restrictions=$mua_sender_restrictions
  -o smtpd_discard_ehlo_keywords=
  -o milter_macro_daemon_name=ORIGINATING
  -o cleanup_service_name=sender-cleanup
pickup         fifo  n       -       n       60      1       pickup
  -o content_filter=
  -o receive_override_options=no_header_body_checks
sender-cleanup unix  n       -       n       -       0       cleanup
  -o syslog_name=postfix/sender-cleanup
  -o header_checks=pcre:{filterFile}
cleanup        unix  n       -       n       -       0       cleanup
qmgr           unix  n       -       n       300     1       qmgr
tlsmgr         unix  -       -       n       1000?   1       tlsmgr
rewrite        unix  -       -       n       -       -       trivial-rewrite
bounce         unix  -       -       n       -       0       bounce
defer          unix  -       -       n       -       0       bounce
trace          unix  -       -       n       -       0       bounce
verify         unix  -       -       n       -       1       verify
flush          unix  n       -       n       1000?   0       flush
proxymap       unix  -       -       n       -       -       proxymap
proxywrite     unix  -       -       n       -       1       proxymap
showq          unix  n       -       n       -       -       showq
{DELIVERY_SERVICES}scache         unix  -       -       n       -       1       scache
""").start()
        self.addCleanup(self.master.stop)

    def test_deliveredAndRefused(self):
        """
        Mailboxes, an alias and a group in the directory are delivered
        over LMTP; an unknown user, a person whose mail is disabled and
        a user of a domain listed in the vhost file but not in the
        directory are refused at RCPT.
        """
        # Postscreen makes a new client wait for its greeting once.
        sendMessage(self.port, "cy@example.net", ["ann@example.org", "anne@example.org",
                                                  "team@example.org"], "to ann and the team")
        # Each original recipient keeps its delivery, as in Postfix.
        waitFor(lambda: self.lmtp.recipients() == ["ann@example.org"] * 3 + ["bob@example.org"],
                timeout=60, what="the LMTP delivery")
        for recipient in ["nobody@example.org", "gone@example.net", "someone@example.com"]:
            error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, self.port,
                                      "cy@example.net", [recipient], "refused")
            code, reply = error.recipients[recipient]
            self.assertEqual((code, reply[:5]), (550, b"5.1.1"), recipient)
            self.assertIn(b"User unknown in virtual mailbox table", reply)
        error = self.assertRaises(smtplib.SMTPRecipientsRefused, sendMessage, self.port,
                                  "cy@example.net", ["x@elsewhere.example"], "relay")
        # Its client restrictions refuse relaying before its relay
        # restrictions would defer it.
        code, reply = error.recipients["x@elsewhere.example"]
        self.assertEqual((code, reply[:5]), (554, b"5.7.1"))
        self.assertIn(b"Relay access denied", reply)
        waitFor(lambda: "PASS NEW [127.0.0.1]" in self.master.log(), what="postscreen's log")
        self.assertNotIn("Traceback", self.master.log())

    def test_submission(self):
        """
        On the submission port, after STARTTLS and AUTH, a user sends as
        their own address or an alias of theirs, never as another
        user's; the mail leaves through the relay host without what
        the sender filter takes out.
        """
        import ssl

        client = smtplib.SMTP("127.0.0.1", self.submissionPort, timeout=30)
        self.addCleanup(client.close)
        client.ehlo("client.example")
        client.starttls(context=ssl._create_unverified_context())
        client.ehlo("client.example")
        client.login("ann@example.org", "ann-secret")
        assertNotOwner(self, client, "bob@example.org", "ann@example.org")
        client.sendmail("anne@example.org", ["far@away.example"],
                        b"X-Mailer: Mailer 1.0\r\nMime-Version: 1.0 (generated)\r\n"
                        b"Subject: from anne\r\n\r\nhi\r\n")
        waitFor(lambda: self.relay.recipients() == ["far@away.example"], timeout=60,
                what="the relayed mail")
        [sent] = self.relay.messages()
        self.assertNotIn(b"with ESMTPSA", sent)
        self.assertNotIn(b"X-Mailer", sent)
        self.assertIn(b"\nMIME-Version: 1.0\n", sent)
        self.assertNotIn("Traceback", self.master.log())
