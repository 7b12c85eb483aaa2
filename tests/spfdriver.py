"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_spfdmarc.PolicydSPFDifferentialTests}: the same clients,
HELO names and senders given to policyd-spf (Debian's
postfix-policyd-spf-python, over Postfix's policy protocol on its
standard input) and to a real master whose smtpd lists C{check_spf},
against SPF records a twisted.names server serves on port 53 of
loopback (the namespace's /etc/resolv.conf names it).  For each case,
what each decided (refused or let on) and the SPF result it wrote.

What it saw goes to the test as JSON (L{tests.support.namespace}).
"""

import os
import re
import smtplib
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import (  # noqa: E402
    MASTER_CF,
    Master,
    freePort,
    localMaildirs,
    maildirMessages,
    waitFor,
)
from tests.support.namespace import namespaceScenario, testZone  # noqa: E402

ZONE = testZone(
    "    TXT('good.test', b'v=spf1 ip4:127.0.0.5 -all'),\n"
    "    TXT('soft.test', b'v=spf1 ip4:127.0.0.5 ~all'),\n"
    "    TXT('neutral.test', b'v=spf1 ?all'),\n"
    "    TXT('broken.test', b'v=spf1 ip4:127.0.0.5 frobnicate -all'),\n"
    "    TXT('mx.test', b'v=spf1 mx include:good.test -all'),\n"
    "    MX('mx.test', 10, 'mail.mx.test'),\n"
    "    A('mail.mx.test', '127.0.0.8'),\n"
    "    TXT('helo.test', b'v=spf1 ip4:127.0.0.9 -all'),\n"
    "    A('helo.test', '127.0.0.9'),\n"
)

#: (client address, HELO name, sender)
CASES = [
    ("127.0.0.5", "client.test", "alice@good.test"),
    ("127.0.0.6", "client.test", "alice@good.test"),
    ("127.0.0.6", "client.test", "alice@soft.test"),
    ("127.0.0.5", "client.test", "alice@none.test"),
    ("127.0.0.5", "client.test", "alice@neutral.test"),
    ("127.0.0.5", "client.test", "alice@broken.test"),
    ("127.0.0.8", "client.test", "alice@mx.test"),
    ("127.0.0.5", "client.test", "alice@mx.test"),
    ("127.0.0.7", "helo.test", "alice@good.test"),
    ("127.0.0.9", "helo.test", ""),
    ("127.0.0.7", "helo.test", ""),
]


def policydSPF(base: str, observed: dict) -> None:
    requests = "".join(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
        f"client_address={ip}\nclient_name=unknown\nhelo_name={helo}\nsender={sender}\n"
        f"recipient=bob@localhost\ninstance=case{n}\n\n"
        for n, (ip, helo, sender) in enumerate(CASES))
    # Debian's settings, but for the loopback clients it skips by default.
    conf = os.path.join(base, "policyd-spf.conf")
    with open(conf, "w") as f:
        f.write("debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\nMail_From_reject = Fail\n"
                "PermError_reject = False\nTempError_Defer = False\n"
                "skip_addresses = 192.0.2.255/32\n")
    output = subprocess.run(["policyd-spf", conf], input=requests, capture_output=True, text=True,
                            timeout=120).stdout
    answers = [line[len("action="):] for line in output.splitlines()
               if line.startswith("action=")]
    decided = []
    for answer in answers:
        if re.match(r"^5\d\d ", answer):
            decided.append(["refused", answer])
        else:
            found = re.search(r"Received-SPF: (\w+)", answer)
            decided.append(["accepted", found.group(1).lower() if found else ""])
    observed["policyd-spf"] = decided
    observed["policyd-spf output"] = output


def tmta(base: str, observed: dict, atEnd) -> None:
    port = freePort()
    spool = os.path.join(base, "mail")
    master = Master(os.path.join(base, "conf"), {
        "myhostname": "mx.example.org", "mydestination": "localhost",
        "mynetworks": "127.0.0.1/32",
        "smtpd_recipient_restrictions": "reject_unauth_destination, check_spf",
        **localMaildirs(spool + "/")}, MASTER_CF.format(port=port)).start()
    atEnd(lambda: (master.stop(), observed.update(log=master.log())))
    decided = []
    for n, (ip, helo, sender) in enumerate(CASES):
        client = smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=(ip, 0))
        client.ehlo(helo)
        user = f"case{n}"
        try:
            client.sendmail(sender, [f"{user}@localhost"],
                            f"Subject: case {n}\r\n\r\ncase {n}\r\n".encode())
        except smtplib.SMTPRecipientsRefused as e:
            [(code, text)] = e.recipients.values()
            decided.append(["refused", f"{code} {text.decode()}"])
            client.quit()
            continue
        client.quit()
        waitFor(lambda: maildirMessages(spool).get(user), what=f"case {n}")
        [message] = maildirMessages(spool)[user]
        found = re.search(rb"Received-SPF: (\w+)", message)
        decided.append(["accepted", found.group(1).decode().lower() if found else ""])
    observed["tmta"] = decided


def scenario(base: str, observed: dict, atEnd) -> None:
    policydSPF(base, observed)
    tmta(base, observed, atEnd)


if __name__ == "__main__":
    sys.exit(namespaceScenario(ZONE, scenario))
