"""
The DNS-based restrictions held against Postfix: C{tests/dnsdifferential.py}
runs a private Postfix and tmta on the same C{main.cf} in a namespace of
its own, both resolving through a twisted.names server on its loopback,
and compares the reply code and enhanced status code of every step.
"""

import json
import os
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.differential import postfixMissing
from tests.support import endToEnd


class DNSAgreementTests(SynchronousTestCase):
    def test_dnsRestrictions(self) -> None:
        endToEnd()
        missing = postfixMissing()
        if missing:
            raise SkipTest(missing)
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise SkipTest("needs root and unshare")
        if subprocess.run(["unshare", "-mn", "true"], capture_output=True).returncode:
            raise SkipTest("cannot make a private namespace here")
        driver = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dnsdifferential.py")
        run = subprocess.run(["unshare", "-mn", sys.executable, driver], capture_output=True,
                             text=True, timeout=600)
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        self.assertEqual(len(lines), 1, run.stdout[-3000:] + run.stderr[-3000:])
        result = json.loads(lines[0][len("RESULT "):])
        print(f"{result['name']}: {result['total'] - len(result['differences'])}/"
              f"{result['total']} agree")
        for difference in result["differences"]:
            print("  " + difference)
        self.assertGreater(result["total"], 1500)
        self.assertEqual(result["differences"], [])
