"""
The differential SMTP test of the DNS-based restrictions, run inside a
private mount and network namespace (C{unshare -mn}) by
L{tests.test_differential_dns}: a twisted.names server on port 53 of
loopback serving test zones (DNS lists, domains with and without MX, A
and NS records, reverse names for the client addresses), the system's
/etc/resolv.conf replaced for this namespace only by one naming it, and
a private Postfix and tmta on the same C{main.cf} with peer name lookups
on, both resolving through /etc/resolv.conf as in production.

Prints one line C{RESULT <json>}: the configuration's name, how many
steps were compared and the differences.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.differential import (  # noqa: E402
    Agreement,
    PostfixSMTP,
    runSession,
    tmtaSMTP,
)
from tests.support import resolveOnLoopback  # noqa: E402

#: A script: its name, the client address, the lines to send.
Script = Tuple[str, str, List[bytes]]

ZONES = {
    "rbl.test": """
zone = [
    SOA('rbl.test', mname='ns.rbl.test', rname='root.rbl.test', serial=1, refresh=60,
        retry=60, expire=60, minimum=60),
    A('2.0.0.127.rbl.test', '127.0.0.2'),
    TXT('2.0.0.127.rbl.test', b'client listed for testing'),
    A('3.0.0.127.rbl.test', '127.0.0.4'),
    A('spammy.example.rbl.test', '127.0.0.2'),
    TXT('spammy.example.rbl.test', b'domain listed for testing'),
    A('c2.mail.test.rbl.test', '127.0.0.3'),
    A('aonly.mail.test.rbl.test', '10.0.0.1'),
]
""",
    "wl.test": """
zone = [
    SOA('wl.test', mname='ns.wl.test', rname='root.wl.test', serial=1, refresh=60,
        retry=60, expire=60, minimum=60),
    A('2.0.0.127.wl.test', '127.0.0.2'),
    A('c2.mail.test.wl.test', '127.0.0.2'),
    A('exists.mail.test.wl.test', '127.0.0.2'),
]
""",
    "mail.test": """
zone = [
    SOA('mail.test', mname='ns.mail.test', rname='root.mail.test', serial=1, refresh=60,
        retry=60, expire=60, minimum=60),
    MX('exists.mail.test', 10, 'mx.exists.mail.test'),
    A('mx.exists.mail.test', '192.0.2.10'),
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
    A('c2.mail.test', '127.0.0.2'),
    A('c3.mail.test', '192.0.2.33'),
]
""",
    "0.0.127.in-addr.arpa": """
zone = [
    SOA('0.0.127.in-addr.arpa', mname='ns.mail.test', rname='root.mail.test', serial=1,
        refresh=60, retry=60, expire=60, minimum=60),
    PTR('2.0.0.127.in-addr.arpa', 'c2.mail.test'),
    PTR('3.0.0.127.in-addr.arpa', 'c3.mail.test'),
]
""",
}

#: The DNS-based restrictions of Postfix 3.7's smtpd, each a class of its
#: own; TABLE is the access table below.
RESTRICTIONS = [
    "reject_rbl_client rbl.test", "reject_rbl_client rbl.test=127.0.0.4",
    "reject_rbl_client rbl.test=127.0.0.[1..3]", "reject_maps_rbl",
    "warn_if_reject reject_rbl_client rbl.test",
    "reject_rhsbl_client rbl.test", "reject_rhsbl_reverse_client rbl.test",
    "reject_rhsbl_sender rbl.test", "reject_rhsbl_recipient rbl.test",
    "reject_rhsbl_helo rbl.test", "reject_rhsbl_client rbl.test=127.0.0.3",
    "permit_dnswl_client wl.test", "permit_rhswl_client wl.test",
    "permit_dnswl_client wl.test, reject", "permit_rhswl_client wl.test, reject",
    "reject_unknown_sender_domain", "reject_unknown_recipient_domain",
    "reject_unknown_address", "reject_unknown_helo_hostname", "reject_unknown_hostname",
    "reject_unknown_client_hostname", "reject_unknown_reverse_client_hostname",
    "check_client_a_access TABLE", "check_client_mx_access TABLE",
    "check_client_ns_access TABLE", "check_reverse_client_a_access TABLE",
    "check_reverse_client_mx_access TABLE", "check_reverse_client_ns_access TABLE",
    "check_helo_a_access TABLE", "check_helo_mx_access TABLE", "check_helo_ns_access TABLE",
    "check_sender_a_access TABLE", "check_sender_mx_access TABLE",
    "check_sender_ns_access TABLE", "check_recipient_a_access TABLE",
    "check_recipient_mx_access TABLE", "check_recipient_ns_access TABLE",
    "permit_mx_backup", "check_client_access TABLE",
    "check_reverse_client_hostname_access TABLE",
]

ACCESS = {
    "192.0.2.66": "REJECT spammer MX address",
    "mx.spammer.mail.test": "REJECT spammer MX",
    "ns.spammer.mail.test": "REJECT spammer NS",
    "192.0.2.77": "REJECT spammer NS address",
    "192.0.2.1": "REJECT listed A",
    "192.0.2.33": "REJECT listed client A",
    "c2.mail.test": "REJECT listed client name",
    "c3.mail.test": "DEFER listed reverse name",
}

#: The variations: name, client address, HELO, sender, recipient domain.
VARIANTS = [
    ("listed-client", "127.0.0.2", "c2.mail.test", "someone@exists.mail.test", "exists.mail.test"),
    ("mismatched-ptr", "127.0.0.3", "aonly.mail.test", "someone@aonly.mail.test",
     "aonly.mail.test"),
    ("no-ptr", "127.0.0.4", "missing.mail.test", "someone@missing.mail.test",
     "missing.mail.test"),
    ("listed-domain", "127.0.0.4", "exists.mail.test", "x@spammy.example", "spammy.example"),
    ("spammer-mx", "127.0.0.4", "badmx.mail.test", "x@badmx.mail.test", "badmx.mail.test"),
    ("spammer-ns", "127.0.0.4", "nsdomain.mail.test", "x@nsdomain.mail.test",
     "nsdomain.mail.test"),
    ("backup-mx", "127.0.0.2", "c2.mail.test", "", "backup.mail.test"),
    ("primary-here", "127.0.0.4", "[127.0.0.4]", "x@exists.mail.test", "primaryhere.mail.test"),
    ("localhost", "127.0.0.1", "localhost", "alice@localhost", "r.test.example"),
    ("listed-to-relay-domain", "127.0.0.2", "c2.mail.test", "x@exists.mail.test",
     "r.test.example"),
]


def scripts() -> List[Script]:
    """
    Every restriction against every variation; the recipient's local
    part names the class to apply.
    """
    found: List[Script] = []
    for index, restriction in enumerate(RESTRICTIONS):
        for variant, source, helo, sender, domain in VARIANTS:
            found.append((f"dns/{restriction}/{variant}", source, [
                f"EHLO {helo}\r\n".encode(), f"MAIL FROM:<{sender}>\r\n".encode(),
                f"RCPT TO:<r{index}@{domain}>\r\n".encode(), b"QUIT\r\n"]))
    return found


def settings(directory: str) -> Dict[str, str]:
    table = os.path.join(directory, "access")
    with open(table, "w") as f:
        f.write("".join(f"{k} {v}\n" for k, v in ACCESS.items()))
    select = os.path.join(directory, "select")
    with open(select, "w") as f:
        # The class is named by the local part, whatever the domain.
        f.write("".join(f"/^r{i}@/ r{i}\n" for i in range(len(RESTRICTIONS))))
    values = {f"r{i}": r.replace("TABLE", f"texthash:{table}")
              for i, r in enumerate(RESTRICTIONS)}
    values.update({
        "smtpd_restriction_classes": ", ".join(f"r{i}" for i in range(len(RESTRICTIONS))),
        "smtpd_recipient_restrictions": f"check_recipient_access regexp:{select}, "
                                        "permit_mynetworks, reject_unauth_destination",
        "smtpd_relay_restrictions": "",
        "mydestination": "localhost, $myhostname",
        "local_recipient_maps": "",
        "relay_domains": "r.test.example",
        "smtpd_peername_lookup": "yes",
        "disable_dns_lookups": "no",
        "maps_rbl_domains": "rbl.test",
    })
    return values


def main() -> int:
    base = tempfile.mkdtemp(prefix="tmta-dnsdiff-")
    os.chmod(base, 0o755)
    resolveOnLoopback(base)
    zoneArguments = []
    for name, text in ZONES.items():
        path = os.path.join(base, f"{name}.zone")
        with open(path, "w") as f:
            f.write(text)
        zoneArguments += ["--pyzone", path]
    dnsServer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve",
                                  *zoneArguments[1::2]])
    tables = os.path.join(base, "tables")
    os.makedirs(tables)
    postfix = master = None
    try:
        time.sleep(1.5)
        values = settings(tables)
        postfix = PostfixSMTP(os.path.join(base, "postfix"), values).start()
        master, port = tmtaSMTP(base, values)
        master.start()
        agreement = Agreement("dns")
        for script, source, steps in scripts():
            theirs = runSession(postfix.port, steps, source, timeout=20)
            ours = runSession(port, steps, source, timeout=20)
            for number, (a, b) in enumerate(zip(theirs, ours)):
                sent = a.sent.decode("utf-8", "replace").strip()[:60]
                agreement.compare(f"{script} step {number} ({sent or 'greeting'})",
                                  a.outcome, b.outcome,
                                  f"{a.reply.splitlines()[-1:]} / {b.reply.splitlines()[-1:]}")
        print("RESULT " + json.dumps({"name": agreement.name, "total": agreement.total,
                                      "differences": agreement.differences}))
        return 0
    finally:
        if master is not None:
            master.stop()
        if postfix is not None:
            postfix.stop()
        dnsServer.terminate()
        dnsServer.wait(10)
        shutil.rmtree(base, ignore_errors=True)


def serve(paths: List[str]) -> None:
    """
    Serve the zone files on port 53 of loopback, as an authoritative
    server: an answer with no records for a name that exists (NODATA)
    is marked authoritative too, as BIND and NSD mark it, so that the C
    library's resolver (Postfix's) does not take it for a lame server.
    """
    from twisted.internet import reactor
    from twisted.names import authority, dns, server

    class Authoritative(server.DNSServerFactory):
        def _responseFromMessage(self, message, rCode=dns.OK, answers=None, authority=None,
                                 additional=None):
            response = super()._responseFromMessage(message, rCode, answers, authority,
                                                    additional)
            if any(r.auth for r in (answers or []) + (authority or [])):
                response.auth = True
            return response

    factory = Authoritative(authorities=[authority.PySourceAuthority(p) for p in paths])
    reactor.listenUDP(53, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.listenTCP(53, factory, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
