"""
C{reject_unverified_sender} and C{reject_unverified_recipient}: ask the
verify service (L{tmta.verify}) whether an address is deliverable.

An address verify knows nothing of yet is probed; smtpd asks again
while the probe is under way, up to C{address_verify_poll_count} times
C{address_verify_poll_delay} apart, then answers with what it has.  An
address that is not known deliverable -- being probed, or failing for
now -- gets C{unverified_*_defer_code}; one that bounced gets
C{unverified_*_reject_code} (also 450 by default: a probe's failure is
not proof enough to refuse for good).  A 4xx here is a
C{defer_if_permit} by default (C{unverified_*_tempfail_action}): a
later restriction's reject still wins.
"""

from __future__ import annotations

from typing import Optional

from twisted.internet import defer
from twisted.internet.task import deferLater

from tmta.logging import Logger
from tmta.verify import commands as verification

log = Logger()

#: What each restriction checks: the reply's subject, the parameters'
#: prefix, and the enhanced status code of its 4xx replies.
_KINDS = {
    "sender": ("Sender address", "unverified_sender", "4.1.7"),
    "recipient": ("Recipient address", "unverified_recipient", "4.1.1"),
}


async def _poll(env, address: str) -> Optional[tuple]:
    """
    Ask verify about C{address} until it knows, or the polls run out.

    @return: C{(status, text)}, or C{None} when verify could not be
        asked.
    """
    from twisted.internet import reactor

    config = env.config
    polls = max(1, config.getInt("address_verify_poll_count"))
    delay = config.getTime("address_verify_poll_delay")
    clock = env.clock or reactor
    count = 0
    while True:
        try:
            if env.verify is None:
                raise RuntimeError("no verify service")
            status, text = await env.verify.query(address)
        except Exception as e:
            log.warn("{service} service failure: {error}",
                     service=config.get("address_verify_service_name") or "verify", error=e)
            return None
        count += 1
        if status != verification.PROBING or count >= polls:
            return status, text
        await deferLater(clock, delay, lambda: None)


def rejectUnverified(kind: str):
    """
    The decision function of C{reject_unverified_}C{kind}.
    """
    subject, prefix, dsn = _KINDS[kind]

    def decide(env, c):
        from tmta.smtpd.verdicts import DUNNO, REJECT, tempfailDecision

        address = c.sender if kind == "sender" else c.recipient
        if not address:
            return DUNNO, None
        config = env.config
        tempfail = tempfailDecision(config, f"{prefix}_tempfail_action")

        async def check():
            answer = await _poll(env, address)
            if answer is None:
                return tempfail, (f"450 {dsn} <{address}>: {subject} rejected: "
                                  "address verification problem")
            status, text = answer
            if status == verification.OK:
                return DUNNO, None
            if status in (verification.PROBING, verification.DEFER):
                code = config.getInt(f"{prefix}_defer_code")
            elif status == verification.BOUNCE:
                code = config.getInt(f"{prefix}_reject_code")
            else:
                log.warn("unknown address verification status {status}", status=status)
                return DUNNO, None
            reason = config.get(f"{prefix}_reject_reason")
            if code >= 400 and reason:
                text = reason
            if code // 100 == 4:
                return tempfail, (f"{code} {dsn} <{address}>: {subject} rejected: "
                                  f"unverified address: {text[:250]}")
            if code // 100 == 5:
                return REJECT, (f"{code} 5{dsn[1:]} <{address}>: {subject} rejected: "
                                f"undeliverable address: {text}")
            return DUNNO, None

        return defer.Deferred.fromCoroutine(check())

    return decide
