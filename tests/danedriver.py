"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_dane}: a private Unbound on loopback, the namespace's
resolver, validates the zone C{dane.test}, signed here with
C{ldns-signzone} and trusted by its key, and serves C{plain.test}
unsigned.  A receiving tmta offers STARTTLS on five loopback addresses
with one certificate; a sending tmta with C{smtp_tls_security_level =
dane} relays to each domain by its MX records:

  - C{dane.test}: TLSA 3 1 1 of the server's key (DANE-EE);
  - C{ta.dane.test}: TLSA 2 0 1 of the CA's certificate (DANE-TA);
  - C{bad.dane.test}: a TLSA record of another key;
  - C{unusable.dane.test}: only a PKIX-TA(0) record, which SMTP cannot use;
  - C{plain.test} (unsigned), and C{strict.plain.test}, which the
    policy table makes C{dane-only}.

What it saw goes to the test as JSON (L{tests.support.namespace}).
"""

import hashlib
import os
import re
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import (  # noqa: E402
    CORE_MASTER_CF,
    Master,
    TestCA,
    stopProcess,
    waitFor,
)
from tests.support.namespace import namespaceScenario, testZone  # noqa: E402

SERVERS = {"mx.dane.test": 21, "mxta.dane.test": 22, "mxbad.dane.test": 23,
           "mxu.dane.test": 24, "mx.plain.test": 25}


def _spki(certFile: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    with open(certFile, "rb") as f:
        certificate = x509.load_pem_x509_certificates(f.read())[0]
    return certificate.public_key().public_bytes(Encoding.DER,
                                                 PublicFormat.SubjectPublicKeyInfo)


def _der(pemFile: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    with open(pemFile, "rb") as f:
        return x509.load_pem_x509_certificate(f.read()).public_bytes(Encoding.DER)


def unbound(base: str, certFile: str, caFile: str, atEnd) -> None:
    """
    Sign C{dane.test}, and serve it (validated) and C{plain.test} from a
    private Unbound on 127.0.0.53, which resolv.conf then names.
    """
    ee = hashlib.sha256(_spki(certFile)).hexdigest()
    ta = hashlib.sha256(_der(caFile)).hexdigest()
    records = "".join(f"{name.split('.')[0]} IN A 127.0.0.{number}\n"
                      for name, number in SERVERS.items() if name.endswith(".dane.test"))
    zone = os.path.join(base, "dane.test.zone")
    with open(zone, "w") as f:
        f.write(f"""$ORIGIN dane.test.
$TTL 300
@ IN SOA ns.dane.test. root.dane.test. 1 60 60 600 60
@ IN NS ns.dane.test.
ns IN A 127.0.0.53
@ IN MX 10 mx.dane.test.
ta IN MX 10 mxta.dane.test.
bad IN MX 10 mxbad.dane.test.
unusable IN MX 10 mxu.dane.test.
{records}_25._tcp.mx IN TLSA 3 1 1 {ee}
_25._tcp.mxta IN TLSA 2 0 1 {ta}
_25._tcp.mxbad IN TLSA 3 1 1 {'ab' * 32}
_25._tcp.mxu IN TLSA 0 1 1 {ee}
""")
    with open(os.path.join(base, "plain.test.zone"), "w") as f:
        f.write("""$ORIGIN plain.test.
$TTL 300
@ IN SOA ns.plain.test. root.plain.test. 1 60 60 600 60
@ IN NS ns.plain.test.
ns IN A 127.0.0.53
@ IN MX 10 mx.plain.test.
strict IN MX 10 mx.plain.test.
mx IN A 127.0.0.25
""")
    made = lambda *command: subprocess.run(  # noqa: E731
        command, cwd=base, check=True, capture_output=True, text=True).stdout.strip()
    ksk = made("ldns-keygen", "-a", "ECDSAP256SHA256", "-k", "dane.test")
    zsk = made("ldns-keygen", "-a", "ECDSAP256SHA256", "dane.test")
    made("ldns-signzone", "-n", zone, ksk, zsk)
    config = os.path.join(base, "unbound.conf")
    with open(config, "w") as f:
        f.write(f"""server:
  interface: 127.0.0.53
  port: 53
  do-daemonize: no
  chroot: ""
  username: ""
  directory: "{base}"
  pidfile: ""
  use-syslog: no
  do-ip6: no
  module-config: "validator iterator"
  local-zone: "test." nodefault
  trust-anchor-file: "{base}/{ksk}.key"
auth-zone:
  name: "dane.test."
  zonefile: "{zone}.signed"
  for-downstream: no
  for-upstream: yes
  fallback-enabled: no
auth-zone:
  name: "plain.test."
  zonefile: "{base}/plain.test.zone"
  for-downstream: no
  for-upstream: yes
  fallback-enabled: no
""")
    process = subprocess.Popen(["unbound", "-d", "-c", config],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atEnd(lambda: stopProcess(process))

    def answers() -> bool:
        return subprocess.run(["python3", "-c", "import socket; "
                               "socket.getaddrinfo('mx.dane.test', 25)"],
                              capture_output=True).returncode == 0
    with open("/etc/resolv.conf", "w") as f:
        f.write("nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")
    waitFor(answers, timeout=30, what="Unbound to answer")


def scenario(base: str, observed: dict, atEnd) -> None:
    ca = TestCA(os.path.join(base, "ca"))
    certFile, keyFile = ca.server(*SERVERS)
    unbound(base, certFile, ca.caFile, atEnd)
    receiver = Master(os.path.join(base, "receiver"), {
        "myhostname": "receiver.test",
        "mydestination": "dane.test, ta.dane.test, bad.dane.test, unusable.dane.test, "
                         "plain.test, strict.plain.test",
        "local_transport": "discard",
        "local_recipient_maps": "",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": certFile,
        "smtpd_tls_key_file": keyFile,
        "smtpd_peername_lookup": "no",
    }, "".join(f"127.0.0.{number}:25 inet n - n - - smtpd\n" for number in SERVERS.values())
        + CORE_MASTER_CF.split("\n", 1)[1]
        + "discard   unix  -       -       n       -       -       discard\n").start()
    atEnd(receiver.stop)
    sender = Master(os.path.join(base, "sender"), {
        "myhostname": "sender.test",
        "mydestination": "localhost",
        "smtp_tls_security_level": "dane",
        "smtp_dns_support_level": "dnssec",
        "smtp_tls_policy_maps": "inline:{ strict.plain.test=dane-only }",
        "smtpd_peername_lookup": "no",
        "minimal_backoff_time": "300s",
    }, CORE_MASTER_CF.format(port="127.0.0.1:2525").replace("127.0.0.1:2525      inet",
                                                              "127.0.0.1:2525 inet")
        + "smtp      unix  -       -       n       -       -       smtp\n"
        + "retry     unix  -       -       n       -       -       error\n").start()

    def stopAll():
        sender.stop()
        observed["log"] = sender.log()[-6000:]

    atEnd(stopAll)
    domains = ["dane.test", "ta.dane.test", "bad.dane.test", "unusable.dane.test",
               "plain.test", "strict.plain.test"]
    client = smtplib.SMTP("127.0.0.1", 2525, timeout=30)
    for domain in domains:
        client.sendmail("someone@sender.test", [f"u@{domain}"],
                        f"Subject: to {domain}\r\n\r\nhi\r\n".encode())
    client.quit()

    def outcome(domain: str):
        for line in sender.log().splitlines():
            if f"to=<u@{domain}>" in line and "status=" in line:
                return line.split("status=", 1)[1]
        return None

    waitFor(lambda: all(outcome(d) for d in domains), timeout=120, what="every outcome")
    observed["outcomes"] = {d: outcome(d) for d in domains}
    log = sender.log()
    observed["tls"] = {}
    for name in SERVERS:
        found = re.search(r"(\w+) TLS connection established to " + re.escape(name) + r"\[",
                          log)
        observed["tls"][name] = found.group(1) if found else None


if __name__ == "__main__":
    # twistd's DNS server answers nothing here: Unbound is the resolver.
    sys.exit(namespaceScenario(testZone(""), scenario))
