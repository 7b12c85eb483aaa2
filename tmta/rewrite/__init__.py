"""
The C{trivial-rewrite} service: address rewriting and resolution for
the other daemons.

The rules are L{tmta.mail.rewriting.Rewriter}'s; L{commands} holds the
AMP commands the service answers, L{service} the service and L{client}
the cached client that cleanup, smtpd and qmgr use.
"""

from tmta.mail.rewriting import Resolution, Rewriter

__all__ = ["Resolution", "Rewriter"]
