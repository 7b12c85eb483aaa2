"""
Scenarios run in a private mount and network namespace (C{unshare -mn}):
the namespace's /etc/resolv.conf names a twisted.names server on its own
loopback, so that every program in it -- tmta, a milter, a DNS list
client -- asks the test's zone through the system's resolver, as in
production.  A driver script runs one scenario in the namespace and
prints what it saw as one JSON line; the test runs the driver and reads
that line.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, Dict

from tests.support import endToEnd, serveZoneOnLoopback, stopProcess


def testZone(records: str) -> str:
    """
    The zone C{test}, in twisted.names' Python zone syntax, with
    C{records} (lines such as C{    A('host.test', '127.0.0.2'),}).
    """
    return ("zone = [\n"
            "    SOA('test', mname='ns.test', rname='root.test', serial=1,\n"
            "        refresh=60, retry=60, expire=60, minimum=60),\n"
            "    A('ns.test', '127.0.0.1'),\n" + records + "]\n")


def namespaceScenario(zone: str, scenario: Callable[[str, Dict, Callable], None]) -> int:
    """
    In a driver run by L{runNamespaceDriver}: serve C{zone}, run
    C{scenario(base, observed, atEnd)} -- a scratch directory, the dict
    of what it saw, and a way to register clean-ups (run last first,
    even when it failed) -- and print C{observed} as JSON.
    """
    base = tempfile.mkdtemp(prefix="tmta-ns-")
    os.chmod(base, 0o755)
    dnsServer = serveZoneOnLoopback(base, zone)
    observed: Dict = {}
    cleanups = []
    try:
        scenario(base, observed, cleanups.append)
    except Exception as e:
        observed["error"] = repr(e)
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as e:
                observed.setdefault("cleanup errors", []).append(repr(e))
        stopProcess(dnsServer)
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(observed))
    return 0


def runNamespaceDriver(testCase, name: str, timeout: float = 180) -> Dict:
    """
    Run the driver script C{tests/NAME} in a private namespace and
    return what it saw; skip C{testCase} where there can be none (no
    root, no unshare).
    """
    endToEnd()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        testCase.skipTest("needs root and unshare")
    if subprocess.run(["unshare", "-mn", "true"], capture_output=True).returncode != 0:
        testCase.skipTest("cannot make a private namespace here")
    driver = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), name)
    result = subprocess.run(["unshare", "-mn", sys.executable, driver],
                            capture_output=True, text=True, timeout=timeout)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise AssertionError(f"{name} printed nothing to read:\n{result.stdout}{result.stderr}")
    observed = json.loads(lines[-1])
    if "error" in observed:
        raise AssertionError(f"{name}: {observed['error']}\n{observed.get('log', '')}")
    return observed
