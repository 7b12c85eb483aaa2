"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_milter.OpenDMARCTests}: a twisted.names server on port 53
of loopback serves the DMARC and SPF records of two test domains, the
system's /etc/resolv.conf (for this namespace only) names it, and a
private OpenDMARC, which checks SPF itself, is the milter of a real
master's smtpd.  Mail whose SPF-checked sender domain is its From:
domain gets OpenDMARC's C{Authentication-Results: ... dmarc=pass};
mail claiming to be from that domain while sent from another is refused,
as the domain's C{p=reject} asks.  (Run with a private Postfix in tmta's
place, the same OpenDMARC writes the same headers and gives the same
refusal.)

What it saw goes to the test as JSON (L{tests.support.namespace}).
"""

import os
import smtplib
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import (  # noqa: E402
    MASTER_CF,
    Master,
    freePort,
    localMaildirs,
    maildirMessages,
    stopProcess,
    waitFor,
)
from tests.support.namespace import namespaceScenario, testZone  # noqa: E402

ZONE = testZone(
    "    TXT('_dmarc.good.test', b'v=DMARC1; p=reject'),\n"
    "    TXT('good.test', b'v=spf1 ip4:127.0.0.5 -all'),\n"
    "    TXT('_dmarc.bad.test', b'v=DMARC1; p=reject'),\n"
    "    TXT('bad.test', b'v=spf1 ip4:192.0.2.1 -all'),\n"
)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def scenario(base: str, observed: dict, atEnd) -> None:
    milterPort = freePort()
    ignore = os.path.join(base, "ignore")
    open(ignore, "w").close()
    conf = os.path.join(base, "opendmarc.conf")
    with open(conf, "w") as f:
        f.write(f"Socket inet:{milterPort}@127.0.0.1\nBackground false\nSyslog false\n"
                f"PidFile {base}/opendmarc.pid\nAuthservID mx.example.org\n"
                f"TrustedAuthservIDs mx.example.org\nIgnoreHosts {ignore}\n"
                "SPFSelfValidate true\nRejectFailures true\nRequiredHeaders false\n")
    milter = subprocess.Popen(["opendmarc", "-f", "-c", conf],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atEnd(lambda: stopProcess(milter))
    waitFor(lambda: _listening(milterPort), what="OpenDMARC")
    port = freePort()
    spool = os.path.join(base, "mail")
    master = Master(os.path.join(base, "conf"), {
        "myhostname": "mx.example.org", "mydestination": "localhost",
        "smtpd_milters": f"inet:127.0.0.1:{milterPort}", **localMaildirs(spool + "/")},
        MASTER_CF.format(port=port)).start()
    atEnd(lambda: (master.stop(), observed.update(log=master.log())))
    client = smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=("127.0.0.5", 0))
    client.ehlo("client.good.test")
    client.sendmail("alice@good.test", ["bob@localhost"],
                    b"From: alice@good.test\r\nTo: bob@localhost\r\nSubject: aligned\r\n"
                    b"\r\nSPF passes for this one.\r\n")
    try:
        client.sendmail("mallory@bad.test", ["bob@localhost"],
                        b"From: ceo@good.test\r\nTo: bob@localhost\r\nSubject: forged\r\n"
                        b"\r\nNot from good.test at all.\r\n")
        observed["forged"] = "accepted"
    except smtplib.SMTPDataError as e:
        observed["forged"] = f"{e.smtp_code} {e.smtp_error.decode()}"
    client.quit()
    waitFor(lambda: maildirMessages(spool).get("bob"), what="the delivery")
    observed["delivered"] = [m.decode("utf-8", "replace")
                             for m in maildirMessages(spool)["bob"]]


if __name__ == "__main__":
    sys.exit(namespaceScenario(ZONE, scenario))
