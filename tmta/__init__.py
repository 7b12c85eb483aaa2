"""
tmta: a mail transfer agent with Postfix's architecture, built as a
Twisted framework.

The public API -- importable, documented, and kept stable -- is:

  - L{tmta.interfaces}: every seam a plugin provides;
  - L{tmta.embedded.EmbeddedMTA}: tmta as a service of an application;
  - L{tmta.submission.SubmissionClient} and
    L{tmta.submission.SubmissionFailed}: submitting mail from a program;
  - L{tmta.config.MainConfig}, L{tmta.config.loadConfiguration},
    L{tmta.config.Configuration} and L{tmta.config.ConfigError}: the
    configuration;
  - L{tmta.delivery.DeliveryRequest}, L{tmta.delivery.RequestRecipient},
    L{tmta.delivery.RecipientStatus}, L{tmta.delivery.logDelivery} and the
    statuses C{SENT}, C{DEFERRED} and C{BOUNCED}: what a delivery agent
    is given and answers;
  - L{tmta.tables.openTable}, L{tmta.tables.DictTable},
    L{tmta.tables.TableError} and L{tmta.tables.TableLookupError}: lookup
    tables;
  - L{tmta.smtpd.restrictions.RecipientContext} and the decisions
    C{PERMIT}, C{REJECT}, C{DEFER} and C{DUNNO}: what a restriction sees
    and answers;
  - L{tmta.sasl}'s types (L{tmta.sasl.SASLClient}, L{tmta.sasl.Challenge},
    L{tmta.sasl.Authenticated}, L{tmta.sasl.AuthenticationFailed},
    L{tmta.sasl.AuthenticationUnavailable},
    L{tmta.sasl.PasswordExchange}): what a SASL backend exchanges.

Everything else -- the master, the daemons' own modules, the wire
protocols between processes, the queue file format -- is private: it
may change in any release, and the API documentation marks it so.
"""

__version__ = "0.1.0.dev0"
