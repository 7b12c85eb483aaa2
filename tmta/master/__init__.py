"""
The master: runs the worker processes of master.cf's services on demand.

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""
