"""
Plugin guide, example 2: an SMTP restriction.  C{reject_numeric_localpart}
in any smtpd_*_restrictions list refuses recipients whose local part is
all digits (a common sign of dictionary attacks).
"""

from twisted.plugin import IPlugin
from zope.interface import implementer

from tmta.interfaces import ISMTPRestriction


@implementer(IPlugin, ISMTPRestriction)
class RejectNumericLocalPart:
    name = "reject_numeric_localpart"

    def evaluate(self, context):
        local = context.recipient.rpartition("@")[0]
        if local.isdigit():
            return "reject", (f"550 5.7.1 <{context.recipient}>: Recipient address "
                              "rejected: numeric mailbox names are not accepted here")
        return "dunno", None


rejectNumeric = RejectNumericLocalPart()
