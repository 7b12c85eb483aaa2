"""
The smtp and lmtp delivery agents: mail leaves the host.

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""
