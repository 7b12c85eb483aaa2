"""
local: delivery to local accounts' mailboxes (mbox or Maildir).
"""
