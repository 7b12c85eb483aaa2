"""
Run inside a private mount and network namespace (unshare -mn) by
L{tests.test_smtp.SystemResolverTests}: a twisted.names server on port 53
of loopback, the system's /etc/resolv.conf replaced (for this namespace
only) by one naming it, smtp-sink as a domain's MX, and a real master
that must find the MX hosts through /etc/resolv.conf as production does,
and go on to the second when the first refuses connections.

Prints DELIVERED when the sink got the message.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support import Master, freePort, resolveOnLoopback, sendMessage, waitFor  # noqa: E402
from tests.test_smtp import MASTER_CF, ZONE  # noqa: E402


def main() -> int:
    base = tempfile.mkdtemp(prefix="tmta-ns-")
    os.chmod(base, 0o755)
    resolveOnLoopback(base)
    zone = os.path.join(base, "zone.py")
    with open(zone, "w") as f:
        f.write(ZONE)
    environ = dict(os.environ)
    dnsServer = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "--logfile=" + os.path.join(base, "dns.log"), "dns",
         "--pyzone", zone, "-i", "127.0.0.1", "-p", "53"], env=environ)
    dumps = os.path.join(base, "dumps")
    os.makedirs(dumps)
    os.chmod(dumps, 0o777)
    # first.example.test, the best MX of mx.example.test, is 127.0.0.11,
    # where nothing listens; second.example.test is 127.0.0.12.
    sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-d", os.path.join(dumps, "%M."),
                             "127.0.0.12:25", "20"])
    master = None
    try:
        time.sleep(1.5)
        port = freePort()
        master = Master(os.path.join(base, "conf"), {
            "mydestination": "localhost", "local_recipient_maps": "",
            "local_mailbox_accounts": "none", "mail_spool_directory": base + "/mail/",
        }, MASTER_CF.format(port=port)).start()
        sendMessage(port, "alice@localhost", ["bob@mx.example.test"], "through resolv.conf")
        waitFor(lambda: os.listdir(dumps), timeout=30, what="the message at the MX")
        waitFor(lambda: "status=sent" in master.log(), what="the log line")
        print("DELIVERED")
        print(master.log()[-1500:])
        return 0
    except AssertionError as e:
        print(f"FAILED: {e}")
        if master is not None:
            print(master.log()[-3000:])
        return 1
    finally:
        if master is not None:
            master.stop()
        for process in (sink, dnsServer):
            process.terminate()
            process.wait(10)
        # What went wrong is printed above; the directory is not kept.
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
