"""
C{@dataclass(**SLOTS)}: a dataclass whose instances have no attribute
dictionary, where Python has C{slots=} (3.10 and later).  For objects
kept by the tens of thousands, such as the queue manager's messages and
their recipients.
"""

import sys

SLOTS = {"slots": True} if sys.version_info >= (3, 10) else {}
