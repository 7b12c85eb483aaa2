"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_postscreen.DNSListTests}: a twisted.names server on port 53
of loopback serving DNS lists, the system's /etc/resolv.conf replaced
(for this namespace only) by one naming it, and a real master with
postscreen, whose DNS list test asks those lists as production does.

Prints one JSON line of what was seen.
"""

import json
import os
import smtplib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import (  # noqa: E402
    Master,
    freePort,
    maildirMessages,
    serveZoneOnLoopback,
    stopProcess,
    waitFor,
)
from tests.test_postscreen import POSTSCREEN_MASTER_CF, postscreenMain  # noqa: E402

#: 127.0.0.1 is on dnsbl.test (asked, as subscribers' lists are, under
#: a key: key42.dnsbl.test); 127.0.0.2 on filtered.test, with an answer
#: its filter does not pass; 127.0.0.3 on the allow list.
ZONE = """
zone = [
    SOA('test', mname='ns.test', rname='root.test', serial=1,
        refresh=60, retry=60, expire=60, minimum=60),
    A('ns.test', '127.0.0.1'),
    A('1.0.0.127.key42.dnsbl.test', '127.0.0.2', ttl=300),
    A('2.0.0.127.filtered.test', '127.0.0.9', ttl=300),
    A('3.0.0.127.allow.test', '127.0.0.1', ttl=300),
]
"""


def main() -> int:
    base = tempfile.mkdtemp(prefix="tmta-ns-")
    os.chmod(base, 0o755)
    dnsServer = serveZoneOnLoopback(base, ZONE)
    master = None
    observed = {}
    try:
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
        spool = os.path.join(base, "mail")

        listed = smtplib.SMTP("127.0.0.1", port, timeout=60)
        listed.ehlo("listed.example")
        listed.mail("spam@example.com")
        code, text = listed.rcpt("bob@localhost")
        observed["listed"] = f"{code} {text.decode()}"
        listed.quit()

        filtered = smtplib.SMTP("127.0.0.1", port, timeout=60,
                                source_address=("127.0.0.2", 0))
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
        observed["log"] = master.log()
    except Exception as e:
        observed["error"] = repr(e)
        observed["log"] = master.log() if master is not None else ""
    finally:
        if master is not None:
            master.stop()
        stopProcess(dnsServer)
    print(json.dumps(observed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
