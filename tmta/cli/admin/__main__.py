"""
C{python -m tmta.cli.admin}: the C{tmta} command.
"""

import sys

from tmta.cli.admin import main

sys.exit(main())
