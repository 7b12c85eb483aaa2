"""
tmta: a mail transfer agent with Postfix's architecture, built as a
Twisted framework.
"""

__version__ = "0.1.0.dev0"
