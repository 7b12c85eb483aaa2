"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_databasesites.TwoHostTests}: two tmta hosts, each with its
own configuration, queue and C{myhostname}, bound to its own loopback
address (127.0.0.2 and 127.0.0.3, port 25), share one PostgreSQL for
their domains, mailboxes, aliases, sender logins and transports, one
Redis for their client rate limits, and one mail store (the virtual
agent's Maildirs).  A twisted.names server on loopback serves the MX
records of C{example.test} (the two hosts at preferences 10 and 20) and
C{equal.test} (both at 10); a third tmta, the sender, relays to them by
those records.  smtp-source and smtplib are the clients.

What it saw goes to the test as JSON (L{tests.support.namespace}).
"""

import os
import pwd
import smtplib
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import (  # noqa: E402
    MASTER_CF,
    Master,
    freePort,
    stopProcess,
    testAccount,
    waitFor,
)
from tests.support.databases import MAIL_SCHEMA, PrivatePostgreSQL  # noqa: E402
from tests.support.namespace import namespaceScenario, testZone  # noqa: E402

ZONE = testZone(
    "    A('mx1.example.test', '127.0.0.2'),\n"
    "    A('mx2.example.test', '127.0.0.3'),\n"
    "    MX('example.test', 10, 'mx1.example.test'),\n"
    "    MX('example.test', 20, 'mx2.example.test'),\n"
    "    MX('equal.test', 10, 'mx1.example.test'),\n"
    "    MX('equal.test', 10, 'mx2.example.test'),\n"
)

#: The guide's schema, for the two test domains.
SCHEMA = MAIL_SCHEMA.replace("example.org", "example.test").replace("example.net", "equal.test")

TABLES = {
    "domains": "query = SELECT 1 FROM virtual_domains WHERE name='%s'\n",
    "mailboxes": "query = SELECT email FROM virtual_users WHERE email='%s' AND active = 1\n"
                 "result_format = %d/%u/\n",
    "aliases": "query = SELECT destination FROM virtual_aliases WHERE source='%s'\n",
    "logins": "query = SELECT email FROM virtual_users WHERE email='%s'\n",
    # Every hosted domain goes to the virtual agent by transport_maps.
    "transport": "query = SELECT 'virtual:' FROM virtual_domains WHERE name='%s'\n",
}


class _Cleanups:
    def __init__(self, atEnd) -> None:
        self.atEnd = atEnd

    def addCleanup(self, f, *args) -> None:
        self.atEnd(lambda: f(*args))


def _count(mail: str, box: str) -> int:
    new = os.path.join(mail, box, "new")
    return len(os.listdir(new)) if os.path.isdir(new) else 0


def scenario(base: str, observed: dict, atEnd) -> None:
    database = PrivatePostgreSQL(_Cleanups(atEnd)).start()
    atEnd(database.stop)
    database.createMailDatabase(SCHEMA)
    redisPort = freePort()
    redis = subprocess.Popen(["redis-server", "--port", str(redisPort), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atEnd(lambda: stopProcess(redis))
    account = pwd.getpwnam(testAccount())
    mail = os.path.join(base, "vmail")
    os.mkdir(mail)
    os.chown(mail, account.pw_uid, account.pw_gid)
    tables = os.path.join(base, "tables")
    os.mkdir(tables)
    spec = {}
    for name, text in TABLES.items():
        path = os.path.join(tables, f"{name}.cf")
        with open(path, "w") as f:
            f.write(f"hosts = 127.0.0.1:{database.port}\nuser = mailuser\npassword = secret\n"
                    f"dbname = mail\nretry_interval = 1\n{text}")
        spec[name] = f"proxy:pgsql:{path}"

    def host(number: int) -> Master:
        address = f"127.0.0.{number + 1}"
        return Master(os.path.join(base, f"mx{number}"), {
            "myhostname": f"mx{number}.example.test", "mydestination": "localhost",
            "inet_interfaces": address,
            "virtual_mailbox_domains": spec["domains"],
            "virtual_mailbox_maps": spec["mailboxes"],
            "virtual_alias_maps": spec["aliases"],
            "smtpd_sender_login_maps": spec["logins"],
            "transport_maps": spec["transport"],
            "virtual_mailbox_base": mail,
            "virtual_uid_maps": f"static:{account.pw_uid}",
            "virtual_gid_maps": f"static:{account.pw_gid}",
            "virtual_minimum_uid": "1",
            "anvil_shared_store": f"redis:inet:127.0.0.1:{redisPort}",
            "smtpd_client_message_rate_limit": "6",
            "smtpd_client_event_limit_exceptions": "127.0.0.1",
            "smtpd_sender_restrictions": "reject_sender_login_mismatch",
        }, MASTER_CF.format(port=f"{address}:25").replace(
            f"{address}:25      inet", f"{address}:25 inet")
           + "virtual   unix  -       n       n       -       -       virtual\n"
           + "retry     unix  -       -       n       -       -       error\n"
           + "proxymap  unix  -       -       n       -       -       proxymap\n"
           + "anvil     unix  -       -       n       -       1       anvil\n")

    hosts = {1: host(1).start(), 2: host(2).start()}

    def stopAll():
        for master in hosts.values():
            master.stop()
        observed["log"] = "\n".join(m.log()[-3000:] for m in hosts.values())

    atEnd(stopAll)

    # Mail accepted by either host, from the network: delivered once.
    for number in (1, 2):
        subprocess.run(["smtp-source", "-s", "5", "-m", "20", "-f", "someone@elsewhere.test",
                        "-t", "ann@example.test", f"127.0.0.{number + 1}:25"],
                       check=True, capture_output=True, timeout=120)
    waitFor(lambda: _count(mail, "example.test/ann") >= 40, timeout=60,
            what="the mail accepted by both hosts")
    time.sleep(1)
    observed["both"] = _count(mail, "example.test/ann")

    # A sender claiming a hosted address it does not own is refused (the
    # logins are in the database); one rate limit holds over both hosts.
    client = smtplib.SMTP("127.0.0.2", 25, timeout=30)
    try:
        client.sendmail("bob@example.test", ["ann@example.test"], b"Subject: x\r\n\r\nx\r\n")
        observed["loginMismatch"] = "accepted"
    except smtplib.SMTPException as e:
        observed["loginMismatch"] = str(e)
    client.quit()
    accepted = refused = 0
    for n in range(12):
        client = smtplib.SMTP(f"127.0.0.{2 + n % 2}", 25, timeout=30,
                              source_address=("127.0.0.9", 0))
        try:
            client.sendmail("someone@elsewhere.test", ["cy@equal.test"],
                            f"Subject: rate {n}\r\n\r\nx\r\n".encode())
            accepted += 1
        except smtplib.SMTPException:
            refused += 1
        client.quit()
    observed["rate"] = [accepted, refused]

    # The sender relays by MX: to the preferred host, and to the other
    # while the preferred one is down.
    senderPort = freePort()
    sender = Master(os.path.join(base, "sender"), {
        "myhostname": "sender.test", "mydestination": "localhost",
        "inet_interfaces": "127.0.0.4", "smtp_connect_timeout": "5s",
        "minimal_backoff_time": "2s", "maximal_backoff_time": "4s", "queue_run_delay": "2s",
    }, MASTER_CF.format(port=f"127.0.0.4:{senderPort}")
       + "smtp      unix  -       -       n       -       -       smtp\n"
       + "retry     unix  -       -       n       -       -       error\n").start()
    atEnd(sender.stop)
    subprocess.run(["smtp-source", "-s", "2", "-m", "5", "-f", "someone@elsewhere.test",
                    "-t", "bob@example.test", f"127.0.0.4:{senderPort}"],
                   check=True, capture_output=True, timeout=120)
    waitFor(lambda: _count(mail, "example.test/bob") >= 5, timeout=60,
            what="the mail relayed by MX")
    waitFor(lambda: sender.log().count("relay=mx") >= 5, what="the sender's log lines")
    observed["preferred"] = sender.log().count(
        "to=<bob@example.test>, relay=mx1.example.test[127.0.0.2]:25")

    # A host killed with mail in its queue delivers it after restart.
    before = _count(mail, "example.test/ann")
    subprocess.run(["smtp-source", "-s", "10", "-m", "30", "-f", "someone@elsewhere.test",
                    "-t", "ann@example.test", "127.0.0.2:25"],
                   check=True, capture_output=True, timeout=120)
    hosts[1].kill()
    observed["beforeRestart"] = _count(mail, "example.test/ann") - before
    hosts[1] = host(1).start()
    waitFor(lambda: _count(mail, "example.test/ann") - before >= 30, timeout=90,
            what="the killed host's queue after restart")

    # While it is down, mail for both domains goes to the other MX.
    hosts[1].kill()
    subprocess.run(["smtp-source", "-s", "2", "-m", "6", "-f", "someone@elsewhere.test",
                    "-t", "cy@equal.test", f"127.0.0.4:{senderPort}"],
                   check=True, capture_output=True, timeout=120)
    subprocess.run(["smtp-source", "-s", "2", "-m", "4", "-f", "someone@elsewhere.test",
                    "-t", "bob@example.test", f"127.0.0.4:{senderPort}"],
                   check=True, capture_output=True, timeout=120)
    waitFor(lambda: _count(mail, "example.test/bob") >= 9 and
            _count(mail, "equal.test/cy") >= accepted + 6, timeout=90,
            what="the mail for the host that is down, at the other")
    time.sleep(2)
    observed["afterRestart"] = _count(mail, "example.test/ann") - before
    observed["bob"] = _count(mail, "example.test/bob")
    observed["cy"] = _count(mail, "equal.test/cy")
    waitFor(lambda: sender.log().count("relay=mx") >= 15, what="the sender's log lines")
    observed["otherMX"] = sender.log().count("relay=mx2.example.test[127.0.0.3]:25")
    observed["senderLog"] = sender.log()[-2000:]


if __name__ == "__main__":
    sys.exit(namespaceScenario(ZONE, scenario))
