"""
The operator's commands: C{tmta} and its subcommands.

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""
