"""
Mail-aware code that several daemons share, as Postfix's C{src/global}
holds it: addresses, delivery status notifications, SMTP replies,
address rewriting, the mail system's accounts and delivery rights,
mailbox writing, command delivery, and the TLS settings main.cf gives.

It imports no daemon.  Mail-agnostic helpers are in L{tmta.common}; the
AMP conversation between processes is L{tmta.wire}.
"""
