"""
postscreen(8): one process in front of smtpd on port 25 that keeps
spambots from reaching it, as Postfix's does.

 - L{tmta.postscreen.settings}: the C{postscreen_*} parameters.
 - L{tmta.postscreen.session}: one client, from its connection to its
   hand-over to smtpd or its dismissal: the access list, the cache, and
   the tests before the greeting (pregreet, DNS lists).
 - L{tmta.postscreen.engine}: postscreen's own SMTP engine, for the tests
   after the greeting and for clients kept from smtpd.
 - L{tmta.postscreen.dnsbl}: the DNS list score.
 - L{tmta.postscreen.cache}: the clients that passed, and until when.
 - L{tmta.postscreen.service}: the service, and the hand-over to smtpd's
   C{pass} service.
"""
