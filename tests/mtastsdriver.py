"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_mtasts}: a twisted.names server on port 53 of loopback (the
namespace's resolver) serves the MX, A and C{_mta-sts} TXT records of
test domains; a twisted.web HTTPS server on 127.0.0.80:443, under a test
CA, serves their policies; a receiving tmta takes mail on 127.0.0.21:25
with a certificate for its name (C{mx.good.test}) and on 127.0.0.22:25
with one for another name (C{mx.wrong.test}).  A sending tmta with
C{smtp_mta_sts_enable = yes} sends to:

  - C{enforce.test}: C{enforce}, MX mx.good.test: delivered, Verified;
  - C{wrong.test}: C{enforce}, MX mx.wrong.test, whose certificate
    names another host: deferred;
  - C{testing.test}: C{testing}, the same MX: delivered, and what would
    have failed logged;
  - C{unlisted.test}: C{enforce} naming only mx.elsewhere.test, MX
    mx.good.test: deferred;
  - C{plain.test}: no policy: delivered as C{may} delivers;
  - C{wrong.test} again, the message saying C{TLS-Required: No} (RFC
    8689): delivered, the policy set aside.

What it saw goes to the test as JSON (L{tests.support.namespace}).
"""

import os
import smtplib
import subprocess
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import (  # noqa: E402
    CORE_MASTER_CF,
    Master,
    TestCA,
    stopProcess,
    waitFor,
)
from tests.support.namespace import namespaceScenario, testZone  # noqa: E402

POLICIES = {
    "enforce.test": "mx: mx.good.test\nmode: enforce",
    "wrong.test": "mx: mx.wrong.test\nmode: enforce",
    "testing.test": "mx: mx.wrong.test\nmode: testing",
    "unlisted.test": "mx: mx.elsewhere.test\nmode: enforce",
}
MX = {"enforce.test": "mx.good.test", "wrong.test": "mx.wrong.test",
      "testing.test": "mx.wrong.test", "unlisted.test": "mx.good.test",
      "plain.test": "mx.good.test"}

ZONE = testZone(
    "    A('mx.good.test', '127.0.0.21'),\n"
    "    A('mx.wrong.test', '127.0.0.22'),\n"
    + "".join(f"    MX({domain!r}, 10, {host!r}),\n" for domain, host in MX.items())
    + "".join(f"    TXT('_mta-sts.{domain}', b'v=STSv1; id=20261208'),\n"
              f"    A('mta-sts.{domain}', '127.0.0.80'),\n"
              f"    TXT('_smtp._tls.{domain}', b'v=TLSRPTv1; rua=mailto:tlsrpt@{domain}'),\n"
              for domain in POLICIES)
)

HTTPS_SERVER = textwrap.dedent("""\
    import sys
    from twisted.internet import reactor, ssl
    from twisted.web import resource, server

    policies = {POLICIES!r}

    class Policy(resource.Resource):
        isLeaf = True

        def render_GET(self, request):
            host = (request.getHeader("host") or "").split(":")[0]
            domain = host[len("mta-sts."):]
            if request.path != b"/.well-known/mta-sts.txt" or domain not in policies:
                request.setResponseCode(404)
                return b"no"
            request.setHeader("content-type", "text/plain")
            return (f"version: STSv1\\n{policies[domain]}\\nmax_age: 86400\\n").encode()

    context = ssl.DefaultOpenSSLContextFactory(sys.argv[2], sys.argv[1])
    reactor.listenSSL(443, server.Site(Policy()), context, interface="127.0.0.80")
    print("listening", flush=True)
    reactor.run()
""")


def scenario(base: str, observed: dict, atEnd) -> None:
    ca = TestCA(os.path.join(base, "ca"))
    goodCert, goodKey = ca.server("mx.good.test")
    wrongCert, wrongKey = ca.server("mx.elsewhere.test")
    webCert, webKey = ca.server(*[f"mta-sts.{d}" for d in POLICIES])
    script = os.path.join(base, "https.py")
    with open(script, "w") as f:
        f.write(HTTPS_SERVER.replace("{POLICIES!r}", repr(POLICIES)))
    web = subprocess.Popen([sys.executable, script, webCert, webKey], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    atEnd(lambda: stopProcess(web))
    web.stdout.readline()
    receiver = Master(os.path.join(base, "receiver"), {
        "myhostname": "receiver.test",
        "mydestination": ", ".join(MX),
        "local_transport": "discard",
        "local_recipient_maps": "",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": goodCert,
        "smtpd_tls_key_file": goodKey,
        "smtpd_peername_lookup": "no",
    }, "127.0.0.21:25 inet n - n - - smtpd\n"
       f"127.0.0.22:25 inet n - n - - smtpd -o smtpd_tls_cert_file={wrongCert} "
       f"-o smtpd_tls_key_file={wrongKey}\n"
       + CORE_MASTER_CF.split("\n", 1)[1]
       + "discard   unix  -       -       n       -       -       discard\n").start()
    atEnd(receiver.stop)
    sender = Master(os.path.join(base, "sender"), {
        "myhostname": "sender.test",
        "mydestination": "localhost",
        "smtp_mta_sts_enable": "yes",
        "smtp_tls_security_level": "may",
        "smtp_tls_CAfile": ca.caFile,
        "data_directory": os.path.join(base, "data"),
        # Where mail_owner may write, as data_directory is.
        "smtp_tls_report_history_file": os.path.join(base, "data", "tlsrpt-history"),
        "smtpd_peername_lookup": "no",
        "minimal_backoff_time": "300s",
    }, CORE_MASTER_CF.format(port="127.0.0.1:2525").replace("127.0.0.1:2525      inet",
                                                              "127.0.0.1:2525 inet")
        + "smtp      unix  -       -       n       -       -       smtp\n"
        + "retry     unix  -       -       n       -       -       error\n").start()

    def stopAll():
        sender.stop()
        observed["log"] = sender.log()[-8000:]

    atEnd(stopAll)
    client = smtplib.SMTP("127.0.0.1", 2525, timeout=30)
    for domain in MX:
        client.sendmail("someone@sender.test", [f"u@{domain}"],
                        f"Subject: to {domain}\r\n\r\nhi\r\n".encode())
    # RFC 8689's TLS-Required: No: the policy does not hold this back.
    client.sendmail("someone@sender.test", ["v@wrong.test"],
                    b"TLS-Required: No\r\nSubject: policy aside\r\n\r\nhi\r\n")
    client.quit()

    def outcome(domain: str, user: str = "u"):
        for line in sender.log().splitlines():
            if f"to=<{user}@{domain}>" in line and "status=" in line:
                return line.split("status=", 1)[1]
        return None

    waitFor(lambda: all(outcome(d) for d in MX) and outcome("wrong.test", "v"), timeout=120,
            what="every outcome")
    observed["outcomes"] = {d: outcome(d) for d in MX}
    observed["tls-required-no"] = outcome("wrong.test", "v")
    observed["kept"] = sorted(os.listdir(os.path.join(base, "data", "mta-sts")))
    # The TLS reports of those sessions, as tmta tlsrpt report would send
    # them (-n: shown, not sent).
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    observed["tlsrpt"] = subprocess.run(
        [sys.executable, "-m", "tmta.cli.admin", "-c", os.path.join(base, "sender"), "tlsrpt",
         "report", "-n"], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=repo)).stdout


if __name__ == "__main__":
    sys.exit(namespaceScenario(ZONE, scenario))
