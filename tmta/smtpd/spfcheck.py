"""
C{check_spf}: SPF (RFC 7208) as an smtpd restriction, with policyd-spf's
default policy: the client's HELO name and its MAIL FROM address are
evaluated once per transaction (L{tmta.mail.spf}); a C{fail} of either
is refused with 550 5.7.23, every other result lets the mail on.  The
result is written into the message as a C{Received-SPF} header, and
handed to cleanup for its C{Authentication-Results} header and DMARC.

List it where policyd-spf's C{check_policy_service} would stand: after
C{permit_mynetworks}, C{permit_sasl_authenticated} and
C{reject_unauth_destination} in C{smtpd_recipient_restrictions}.
"""

from __future__ import annotations

from tmta.smtpd.verdicts import DUNNO, REJECT, RecipientContext, RestrictionEnvironment


def _refusal(outcome) -> str:
    return f"550 5.7.23 Message rejected due to: {outcome.explanation}"


def _prepare() -> None:
    """
    Import pyspf (and the DNS library it loads) while smtpd may still be
    root: after it gives root up, a private Python installation may be
    unreadable (L{tmta.master.privileges}).
    """
    import tmta.mail.spf  # noqa: F401


def checkSPF(env: RestrictionEnvironment, c: RecipientContext):
    if c.sender is None or c.stage in ("CONNECT", "EHLO") or env.resolver is None:
        return DUNNO, None

    async def decide():
        if c.actions.spf is None:
            from tmta.mail.spf import SPFEvaluator

            reactor = env.clock
            if reactor is None:
                from twisted.internet import reactor  # type: ignore[no-redef]
            evaluator = SPFEvaluator(reactor, env.resolver, env.config.get("myhostname"))
            c.actions.spf = await evaluator.check(c.clientAddress, c.sender, c.helo)
            shown = c.actions.spf[1] or c.actions.spf[0]
            if shown is not None:
                c.actions.prepend.append(shown.header)
        helo, mail = c.actions.spf
        for outcome in (helo, mail):
            if outcome is not None and outcome.result == "fail":
                return REJECT, _refusal(outcome)
        return DUNNO, None

    from twisted.internet import defer

    return defer.Deferred.fromCoroutine(decide())


checkSPF.prepare = _prepare  # type: ignore[attr-defined]
