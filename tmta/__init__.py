"""
tmta: a mail transfer agent with Postfix's architecture, built as a
Twisted framework.

The public API -- importable, documented, and kept stable -- is the
C{__all__} of each module in L{PUBLIC_MODULES}:

  - L{tmta.interfaces}: every seam a plugin provides;
  - L{tmta.embedded.EmbeddedMTA}: tmta as a service of an application;
  - L{tmta.submission.SubmissionClient} and
    L{tmta.submission.SubmissionFailed}: submitting mail from a program;
  - L{tmta.config.MainConfig}, L{tmta.config.loadConfiguration},
    L{tmta.config.Configuration}, L{tmta.config.ConfigError},
    L{tmta.config.MasterEntry}, L{tmta.config.configDirectoryFromEnvironment},
    L{tmta.config.parseMainCf}, L{tmta.config.parseMasterCf},
    L{tmta.config.readMasterCf}, L{tmta.config.parseBool},
    L{tmta.config.parseTime}, L{tmta.config.parseInetAddress} and
    L{tmta.config.splitList}: the configuration, and reading parameters
    as Postfix does;
  - L{tmta.delivery.DeliveryRequest}, L{tmta.delivery.RequestRecipient},
    L{tmta.delivery.RecipientStatus}, L{tmta.delivery.logDelivery} and the
    statuses L{tmta.delivery.SENT}, L{tmta.delivery.DEFERRED} and
    L{tmta.delivery.BOUNCED}: what a delivery agent is given and answers;
  - L{tmta.tables.openTable}, L{tmta.tables.DictTable},
    L{tmta.tables.TableError} and L{tmta.tables.TableLookupError}: lookup
    tables;
  - L{tmta.smtpd.restrictions.RecipientContext} and the decisions
    L{tmta.smtpd.restrictions.PERMIT}, L{tmta.smtpd.restrictions.REJECT},
    L{tmta.smtpd.restrictions.DEFER} and L{tmta.smtpd.restrictions.DUNNO}:
    what a restriction sees and answers;
  - L{tmta.sasl.SASLClient}, L{tmta.sasl.Challenge},
    L{tmta.sasl.Authenticated}, L{tmta.sasl.AuthenticationFailed},
    L{tmta.sasl.AuthenticationUnavailable} and
    L{tmta.sasl.PasswordExchange}: what a SASL backend exchanges;
  - L{tmta.authentication.message.MessageUnderTest} and
    L{tmta.authentication.message.AuthenticationResult}: what a message
    authenticator sees and reports.

Everything else -- the master, the daemons' own modules, the wire
protocols between processes, the queue file format, and whatever a
public module does not name in its C{__all__} -- is private: it may
change in any release, and the API documentation marks it so (the
C{privacy} rules in C{setup.cfg}, which C{tests/test_publicapi.py}
checks against this list).
"""

__version__ = "0.1.0.dev0"

#: The modules whose C{__all__} is tmta's public API.
PUBLIC_MODULES = (
    "tmta.interfaces",
    "tmta.embedded",
    "tmta.submission",
    "tmta.config",
    "tmta.delivery",
    "tmta.tables",
    "tmta.smtpd.restrictions",
    "tmta.sasl",
    "tmta.authentication.message",
)
