"""
The Sendmail milter protocol (version 6, as Postfix speaks it), the MTA's
side: Postfix's C{src/milter}.

smtpd talks to C{smtpd_milters} during the SMTP session (connect, HELO,
MAIL, RCPT, DATA) and hands the connections to cleanup for the message
itself (headers, body, end of message), since cleanup holds the message
as it goes into the queue and applies what the milters change; cleanup
talks to C{non_smtpd_milters} alone, for mail from sendmail and pickup.

 - L{tmta.milter.protocol}: packets, and the protocol's codes.
 - L{tmta.milter.client}: one connection to one milter, with Postfix's
   states, skips and default action.
 - L{tmta.milter.settings}: the C{milter_*} parameters and the milter
   lists, with per-milter settings.
 - L{tmta.milter.session}: one conversation's milters, told of each
   event of the session in order.
 - L{tmta.milter.message}: a message's content phase through a chain of
   milters, each seeing the changes of those before it, and the macros
   sent with each event.
"""
