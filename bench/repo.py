"""
Where the repository is, put on C{sys.path}: the benchmarks share the
test suite's helpers (C{tests/support}) for ports and processes.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if REPO not in sys.path:
    sys.path.insert(0, REPO)
