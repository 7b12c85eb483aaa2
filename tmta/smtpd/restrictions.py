"""
Postfix's restriction language: the lists C{smtpd_client_restrictions},
C{smtpd_helo_restrictions}, C{smtpd_sender_restrictions},
C{smtpd_relay_restrictions}, C{smtpd_recipient_restrictions},
C{smtpd_data_restrictions} and C{smtpd_end_of_data_restrictions}, each
evaluated left to right until a restriction decides.

A name in a list is one of smtpd's own restrictions (here and in
L{tmta.smtpd.access}, L{tmta.smtpd.dnschecks}, L{tmta.smtpd.policy}),
a class of C{smtpd_restriction_classes}, or a plugin's
(L{tmta.interfaces.ISMTPRestriction}).  A name nobody knows defers
mail, as in Postfix: a typing error never lets mail through.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from zope.interface import implementer

from tmta.config import splitList
from tmta.interfaces import ISMTPRestriction
from tmta.logging import Logger
from tmta.smtpd.builtins import BUILTINS, Builtin, Sleep
from tmta.smtpd.verdicts import (
    CONFIGURATION_ERROR,
    DEFER,
    DEFER_IF_PERMIT,
    DEFER_IF_REJECT,
    DUNNO,
    PERMIT,
    REJECT,
    RecipientContext,
    RestrictionEnvironment,
    chain,
)

__all__ = [
    "RecipientContext",
    "PERMIT",
    "REJECT",
    "DEFER",
    "DUNNO",
]

log = Logger()


def _argumentTakers() -> Dict[str, Callable]:
    """
    Restrictions that take the next item of the list as their argument:
    name to C{make(argument, environment)} returning an
    L{ISMTPRestriction}.
    """
    from tmta.smtpd import access, dnschecks, policy, serveraccess

    takers: Dict[str, Callable] = {}
    takers.update(access.RESTRICTIONS)
    takers.update(serveraccess.RESTRICTIONS)
    takers.update(dnschecks.ARGUMENT_RESTRICTIONS)
    takers["check_policy_service"] = policy.PolicyRestriction.fromArgument
    takers["sleep"] = Sleep.fromArgument
    return takers


@implementer(ISMTPRestriction)
class _WarnIfReject:
    """
    C{warn_if_reject NAME}: what would reject is logged and let pass.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = f"warn_if_reject {inner.name}"

    def evaluate(self, context):
        return chain(self.inner.evaluate(context), self._soften, context)

    def _soften(self, result, context):
        action, reply = result
        if action in (REJECT, DEFER):
            log.info("warning: reject_warning: {stage} from {client}: {reply}",
                     stage=context.stage, client=context.client, reply=reply)
            return DUNNO, None
        return result


@implementer(ISMTPRestriction)
class _ClassRestriction:
    """
    A name from C{smtpd_restriction_classes}: its own list, evaluated in
    place (a PERMIT ends the class, and the list that named it with it).
    """

    def __init__(self, name: str, restrictions: "RestrictionList") -> None:
        self.name = name
        self.restrictions = restrictions

    def evaluate(self, context):
        return self.restrictions.evaluate(context)


class RestrictionList:
    """
    One restriction list, evaluated left to right until a restriction
    decides.

    @param environment: a L{RestrictionEnvironment}; for compatibility,
        the mynetworks list may be given instead, with the reject codes.
    @raise PluginError: a plugin of a listed name does not provide the
        interface.
    @raise ValueError: a restriction's argument is missing or unusable
        (a table that cannot be opened, a policy server address that is
        not one).
    """

    def __init__(self, name: str, value: str, environment, relayCode: int = 554,
                 rejectCode: int = 554, _depth: int = 0) -> None:
        if not isinstance(environment, RestrictionEnvironment):
            from tmta.config import MainConfig

            environment = RestrictionEnvironment(MainConfig({}), environment, relayCode,
                                                 rejectCode)
        if environment.restrictionList is None:
            environment.restrictionList = RestrictionList
        self.name = name
        self.environment = environment
        self.items = splitList(value)
        self.restrictions: List = []
        items = list(self.items)
        while items:
            self.restrictions.append(self._build(items, _depth))

    @property
    def networks(self):
        return self.environment.networks

    def _build(self, items: List[str], depth: int):
        from tmta.common.plugins import findPlugin
        from tmta.smtpd import dnschecks

        env = self.environment
        item = items.pop(0)
        lowered = item.lower()
        if lowered == "warn_if_reject":
            if not items:
                raise ValueError(f"{self.name}: warn_if_reject names no restriction")
            return _WarnIfReject(self._build(items, depth))
        decide = BUILTINS.get(lowered)
        if decide is not None:
            return Builtin(lowered, decide, env)
        if lowered in dnschecks.RESTRICTIONS:
            decide = dnschecks.RESTRICTIONS[lowered]
            # What a check imports only when listed, imported now.
            getattr(decide, "prepare", lambda: None)()
            return Builtin(lowered, decide, env)
        takers = _argumentTakers()
        if lowered in takers:
            if not items:
                raise ValueError(f"{self.name}: {item} needs an argument")
            return takers[lowered](items.pop(0), env)
        if item in env.classes:
            if depth > 10:
                raise ValueError(f"{self.name}: restriction classes nest too deeply at {item}")
            return _ClassRestriction(item, RestrictionList(
                item, env.classes[item], env, _depth=depth + 1))
        plugin = findPlugin(ISMTPRestriction, item)
        if plugin is None:
            raise ValueError(f"{self._where()}{self.name}: unknown restriction {item!r}: "
                             "it is not one of smtpd's, a restriction class or a "
                             "plugin's, and a list tmta cannot enforce is not served")
        return plugin

    def _where(self) -> str:
        config = self.environment.config
        line = config.lineOf(self.name) if hasattr(config, "lineOf") else None
        return f"{config.path or 'main.cf'}, line {line}: " if line else ""

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
                return result.addCallback(self._continue, index, context, restriction)
            result = self._checked(result, restriction, context)
            if result[0] != DUNNO:
                return result
        return DUNNO, None

    def _continue(self, result, index: int, context: RecipientContext, restriction):
        result = self._checked(result, restriction, context)
        if result[0] != DUNNO:
            return result
        return defer.maybeDeferred(self._from, index, context)

    def _checked(self, result, restriction,
                 context: RecipientContext) -> Tuple[str, Optional[str]]:
        """
        A restriction's answer, or a configuration error's C{defer} when
        it is not one: an answer nobody understands never lets mail
        through.  A reject or defer without a reply gets the list's
        default reply.
        """
        try:
            action, reply = result
        except (TypeError, ValueError):
            action, reply = None, None
        if action in (DEFER_IF_PERMIT, DEFER_IF_REJECT):
            if not reply:
                reply = (f"450 4.7.0 {self.subject(context)} rejected: "
                         f"{action} requested")
            if action == DEFER_IF_PERMIT:
                context.deferIfPermit = context.deferIfPermit or reply
            else:
                context.deferIfReject = context.deferIfReject or reply
            return DUNNO, None
        if action not in (PERMIT, REJECT, DEFER, DUNNO):
            log.warn("{list}: restriction {item} answered {result!r}: deferring",
                     list=self.name, item=getattr(restriction, "name", restriction),
                     result=result)
            return DEFER, CONFIGURATION_ERROR
        if action == REJECT and not reply:
            reply = self.defaultReply(self.environment.rejectCode, "5.7.1", context)
        if action == DEFER and not reply:
            # Postfix's "defer": try again later.
            reply = (f"{self.environment.deferCode} 4.3.2 {self.subject(context)} rejected: "
                     "Try again later")
        if action == REJECT and context.deferIfReject and reply.startswith("5"):
            # An earlier temporary error may have been what kept this
            # client from passing: report that instead.
            action, reply, context.deferIfReject = DEFER, context.deferIfReject, None
        return action, reply

    def subject(self, context: RecipientContext) -> str:
        """
        What a reply of this list names, as Postfix does:
        C{<name[address]>: Client host}, C{<address>: Sender address}...
        """
        if "client" in self.name:
            return f"<{context.client}>: Client host"
        if "helo" in self.name:
            return f"<{context.helo}>: Helo command"
        if "sender" in self.name:
            return f"<{context.sender or ''}>: Sender address"
        if "data" in self.name and "end_of" not in self.name:
            return "<DATA>: Data command"
        if "end_of_data" in self.name:
            return "<END-OF-MESSAGE>: End-of-data"
        return f"<{context.recipient}>: Recipient address"

    def defaultReply(self, code: int, dsn: str, context: RecipientContext) -> str:
        """
        The reply of a plain C{reject} or C{defer} in this list, naming
        what the list is about, as Postfix does.
        """
        return f"{code} {dsn} {self.subject(context)} rejected: Access denied"
