"""
Plugin guide, example 4: a message authenticator.  C{own_domain_signed},
named in C{message_authentication_plugins}, holds incoming mail whose
From: address is in this site's own domain (C{mydomain}) unless a DKIM
signature of that domain verified (C{dkim_verification = yes} runs
before it): mail from outside that claims to come from inside.
"""

from email.utils import getaddresses

from twisted.plugin import IPlugin
from zope.interface import implementer

from tmta.authentication.message import AuthenticationResult
from tmta.interfaces import IMessageAuthenticator, IMessageAuthenticatorType


@implementer(IMessageAuthenticator)
class OwnDomainSigned:
    def __init__(self, domain):
        self.domain = domain

    def authenticate(self, message):
        if not message.verifying:
            return None
        domains = {address.rpartition("@")[2].lower()
                   for _, address in getaddresses(message.headerValues("from"))}
        if self.domain not in domains:
            return None
        signed = any(r.method == "dkim" and r.result == "pass"
                     and r.property("header.d") == self.domain for r in message.results)
        message.results.append(AuthenticationResult(
            "x-own-domain", "pass" if signed else "fail", [("header.from", self.domain)]))
        if not signed:
            message.disposition = ("hold", f"unsigned mail from outside claims to be "
                                           f"from {self.domain}")
        return None


@implementer(IPlugin, IMessageAuthenticatorType)
class OwnDomainSignedType:
    name = "own_domain_signed"

    def open(self, config, reactor, resolver):
        return OwnDomainSigned(config.get("mydomain").lower())


ownDomainSigned = OwnDomainSignedType()
