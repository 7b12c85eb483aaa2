"""
The smtp and lmtp delivery agents: mail leaves the host.
"""
