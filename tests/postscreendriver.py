"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_postscreen.DNSListTests}: a twisted.names server on port 53
of loopback serving DNS lists, the system's /etc/resolv.conf replaced
(for this namespace only) by one naming it, and a real master with
postscreen, whose DNS list test asks those lists as production does.

What it saw goes to the test as JSON (L{tests.support.namespace}).
"""

import os
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import (  # noqa: E402
    Master,
    freePort,
    maildirMessages,
    waitFor,
)
from tests.support.namespace import namespaceScenario, testZone  # noqa: E402
from tests.test_postscreen import POSTSCREEN_MASTER_CF, postscreenMain  # noqa: E402

#: 127.0.0.1 is on dnsbl.test (asked, as subscribers' lists are, under
#: a key: key42.dnsbl.test); 127.0.0.2 on filtered.test, with an answer
#: its filter does not pass; 127.0.0.3 on the allow list.
ZONE = testZone(
    "    A('1.0.0.127.key42.dnsbl.test', '127.0.0.2', ttl=300),\n"
    "    A('2.0.0.127.filtered.test', '127.0.0.9', ttl=300),\n"
    "    A('3.0.0.127.allow.test', '127.0.0.1', ttl=300),\n"
)


def scenario(base: str, observed: dict, atEnd) -> None:
    port = freePort()
    replyMap = os.path.join(base, "dnsbl_reply")
    with open(replyMap, "w") as f:
        f.write("key42.dnsbl.test dnsbl.test\n")
    master = Master(os.path.join(base, "conf"), postscreenMain(
        base, postscreen_greet_wait="4s",
        postscreen_dnsbl_sites="key42.dnsbl.test*2, filtered.test=127.0.0.[2..4]*3, "
                               "allow.test*-5",
        postscreen_dnsbl_reply_map=f"texthash:{replyMap}",
        postscreen_dnsbl_threshold="2", postscreen_dnsbl_allowlist_threshold="-1",
        postscreen_dnsbl_action="enforce"),
        POSTSCREEN_MASTER_CF.format(port=port)).start()
    atEnd(lambda: (master.stop(), observed.update(log=master.log())))
    spool = os.path.join(base, "mail")

    listed = smtplib.SMTP("127.0.0.1", port, timeout=60)
    listed.ehlo("listed.example")
    listed.mail("spam@example.com")
    code, text = listed.rcpt("bob@localhost")
    observed["listed"] = f"{code} {text.decode()}"
    listed.quit()

    filtered = smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=("127.0.0.2", 0))
    filtered.sendmail("alice@example.com", ["bob@localhost"], b"Subject: one\r\n\r\nx\r\n")
    observed["filtered"] = 250
    filtered.quit()

    started = time.monotonic()
    allowed = smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=("127.0.0.3", 0))
    observed["allowedAfter"] = time.monotonic() - started
    allowed.sendmail("alice@example.com", ["bob@localhost"], b"Subject: two\r\n\r\nx\r\n")
    allowed.quit()

    waitFor(lambda: len(maildirMessages(spool).get("bob", [])) == 2, timeout=30,
            what="both deliveries")
    observed["delivered"] = len(maildirMessages(spool)["bob"])
    waitFor(lambda: "PASS NEW [127.0.0.3]" in master.log(), what="PASS NEW")


if __name__ == "__main__":
    sys.exit(namespaceScenario(ZONE, scenario))
