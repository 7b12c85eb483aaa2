"""
verify(8): address verification for C{reject_unverified_sender} and
C{reject_unverified_recipient}.

One verify process keeps what is known of each address it was asked
about -- deliverable, undeliverable for now, undeliverable, or being
probed -- in C{address_verify_map}.  An address it knows nothing of (or
whose answer has grown old) is probed: a message flagged as a probe is
queued through cleanup, routed by qmgr as any other, and the delivery
agent it reaches only finds out what would become of it (the SMTP
client ends its session after RCPT TO; local looks up the alias, the
C{.forward} file or the account) and reports back here instead of
delivering.  smtpd asks again a few times while the probe is under way
(C{address_verify_poll_count}, C{address_verify_poll_delay}), and
answers 450 while there is no answer yet.

The modules: L{tmta.verify.commands} (what smtpd and qmgr send),
L{tmta.verify.cache} (the address records and when to probe),
L{tmta.verify.client} (the side smtpd and qmgr hold) and
L{tmta.verify.service} (the daemon).
"""
