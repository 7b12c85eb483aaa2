"""
local: delivery to local accounts' mailboxes (mbox or Maildir).

Private: not part of tmta's public API (which L{tmta} lists); it may
change in any release.
"""
