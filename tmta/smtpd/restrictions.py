"""
Postfix's restriction lists as far as smtpd implements them:
C{smtpd_relay_restrictions} and C{smtpd_recipient_restrictions}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from tmta.tables.networks import inNetworks
from tmta.config import splitList
from tmta.interfaces import ISMTPRestriction

log = Logger()

PERMIT, REJECT, DEFER, DUNNO = "permit", "reject", "defer", "dunno"


@dataclass
class RecipientContext:
    """
    What the restrictions at RCPT look at.
    """

    clientAddress: str
    recipient: str
    addressClass: str  # local, virtual, relay or default (from trivial-rewrite)
    saslAuthenticated: bool = False


@implementer(ISMTPRestriction)
class _Builtin:
    """
    One of smtpd's own restrictions, bound to its list's settings.
    """

    def __init__(self, name: str, decide, restrictions: "RestrictionList") -> None:
        self.name = name
        self._decide = decide
        self.list = restrictions

    def evaluate(self, context: RecipientContext) -> Tuple[str, Optional[str]]:
        return self._decide(self.list, context)


def _unauthDestination(c: RecipientContext) -> bool:
    return c.addressClass not in ("local", "alias", "virtual", "relay")


def _rejectUnauthDestination(lst, c):
    if not _unauthDestination(c):
        return DUNNO, None
    return REJECT, f"{lst.relayCode} 5.7.1 <{c.recipient}>: Relay access denied"


def _deferUnauthDestination(lst, c):
    if not _unauthDestination(c):
        return DUNNO, None
    return DEFER, f"454 4.7.1 <{c.recipient}>: Relay access denied"


_BUILTINS = {
    "permit_mynetworks": lambda lst, c: (
        (PERMIT, None) if inNetworks(c.clientAddress, lst.networks) else (DUNNO, None)),
    "permit_sasl_authenticated": lambda lst, c: (
        (PERMIT, None) if c.saslAuthenticated else (DUNNO, None)),
    "reject_unauth_destination": _rejectUnauthDestination,
    "defer_unauth_destination": _deferUnauthDestination,
    "permit_auth_destination": lambda lst, c: (
        (DUNNO, None) if _unauthDestination(c) else (PERMIT, None)),
    "permit": lambda lst, c: (PERMIT, None),
    "reject": lambda lst, c: (
        REJECT, f"{lst.rejectCode} 5.7.1 <{c.recipient}>: Recipient address rejected: "
                "Access denied"),
    "defer": lambda lst, c: (
        DEFER, f"450 4.7.1 <{c.recipient}>: Recipient address rejected: Access denied"),
    "dunno": lambda lst, c: (DUNNO, None),
    # Applied after the lists in any case (smtpd_reject_unlisted_recipient).
    "reject_unlisted_recipient": lambda lst, c: (DUNNO, None),
}

BUILTIN_RESTRICTIONS = frozenset(_BUILTINS)


@implementer(ISMTPRestriction)
class _Unknown:
    """
    A name neither smtpd nor a plugin knows: defer, as Postfix does, so
    that a typing error never lets mail through.
    """

    def __init__(self, name: str, listName: str) -> None:
        self.name = name
        self.listName = listName

    def evaluate(self, context):
        log.warn("{list}: unknown restriction {item}: deferring", list=self.listName,
                 item=self.name)
        return DEFER, "451 4.3.5 Server configuration error"


class RestrictionList:
    """
    One restriction list, evaluated left to right until a restriction
    decides.  Each name is one of smtpd's own restrictions or a plugin's
    (L{tmta.interfaces.ISMTPRestriction}).

    @raise PluginError: a plugin of a listed name does not provide the
        interface.
    """

    def __init__(self, name: str, value: str, networks, relayCode: int, rejectCode: int) -> None:
        from tmta.common.plugins import findPlugin

        self.name = name
        self.items = splitList(value)
        self.networks = networks
        self.relayCode = relayCode
        self.rejectCode = rejectCode
        self.restrictions: List = []
        for item in self.items:
            decide = _BUILTINS.get(item)
            if decide is not None:
                self.restrictions.append(_Builtin(item, decide, self))
                continue
            plugin = findPlugin(ISMTPRestriction, item)
            if plugin is None:
                log.warn("{name}: unknown restriction {item}", name=name, item=item)
                plugin = _Unknown(item, name)
            self.restrictions.append(plugin)

    def evaluate(self, context: RecipientContext):
        """
        @return: C{(action, reply)}, reply the SMTP reply for reject and
            defer; or a Deferred firing with that pair, when a
            restriction answers later (a plugin that asks elsewhere).
        """
        return self._from(0, context)

    def _from(self, index: int, context: RecipientContext):
        restrictions = self.restrictions
        while index < len(restrictions):
            restriction = restrictions[index]
            index += 1
            result = restriction.evaluate(context)
            if isinstance(result, defer.Deferred):
                return result.addCallback(self._then, index, context, restriction)
            result = self._checked(result, restriction, context)
            if result[0] != DUNNO:
                return result
        return DUNNO, None

    def _then(self, result, index: int, context: RecipientContext, restriction):
        result = self._checked(result, restriction, context)
        if result[0] != DUNNO:
            return result
        return defer.maybeDeferred(self._from, index, context)

    def _checked(self, result, restriction,
                 context: RecipientContext) -> Tuple[str, Optional[str]]:
        """
        A plugin's answer, or a configuration error's C{defer} when it is
        not one: an answer nobody understands never lets mail through.
        """
        try:
            action, reply = result
        except (TypeError, ValueError):
            action, reply = None, None
        if action not in (PERMIT, REJECT, DEFER, DUNNO):
            log.warn("{list}: restriction {item} answered {result!r}: deferring",
                     list=self.name, item=restriction.name, result=result)
            return DEFER, "451 4.3.5 Server configuration error"
        if action == REJECT and not reply:
            reply = (f"{self.rejectCode} 5.7.1 <{context.recipient}>: Recipient address "
                     "rejected: Access denied")
        if action == DEFER and not reply:
            reply = (f"450 4.7.1 <{context.recipient}>: Recipient address rejected: "
                     "Access denied")
        return action, reply
