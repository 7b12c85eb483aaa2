"""
Message authentication in cleanup (RFC 6376 DKIM, RFC 7489 DMARC, RFC
8601 Authentication-Results): incoming mail's signatures verified and
its results written in one C{Authentication-Results} header, and mail
from this site's own clients signed.  Each check is an
L{tmta.interfaces.IMessageAuthenticator}, off until its parameter turns
it on (L{tmta.authentication.pipeline}).
"""
