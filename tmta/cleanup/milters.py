"""
cleanup's own milters (C{non_smtpd_milters}) for mail that did not come
through smtpd: what sendmail and pickup hand in.  Such mail has no SMTP
session for a milter to see, so one is made up, as Postfix's
C{cleanup_milter.c} makes it: a client C{localhost} at C{127.0.0.1}
that says EHLO C{localhost}, gives the sender (unbracketed, as Postfix
gives it) and each recipient, then DATA.  The message itself then goes
through the same milters as smtpd's do (L{tmta.milter.message}).

Mail from smtpd is never given these milters (smtpd's own are
C{smtpd_milters}), nor mail the mail system makes itself (bounces,
forwarded mail), as in Postfix.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

from tmta.milter.client import MilterClient, Verdict
from tmta.milter.session import SessionMilters

#: The made-up client, as Postfix makes it up for a local submission.
LOCAL_CLIENT_NAME = "localhost"
LOCAL_CLIENT_ADDRESS = "127.0.0.1"

#: What a local submission gets when a milter refuses one of its
#: recipients: the sender cannot be told which, so the whole message
#: waits, and the operator is warned (Postfix's reply).
RECIPIENT_REFUSED = (451, "4.3.5 Server configuration error")


def localMacros(myhostname: str, daemonName: str, version: str) -> Dict[str, str]:
    """
    The macros of a made-up local session that do not change during
    it (C{i}, C{{mail_addr}} and C{{rcpt_addr}} are added as they come).
    """
    return {
        "j": myhostname,
        "{daemon_name}": daemonName or myhostname,
        "v": version,
        "_": f"{LOCAL_CLIENT_NAME} [{LOCAL_CLIENT_ADDRESS}]",
        "{client_addr}": LOCAL_CLIENT_ADDRESS,
        "{client_name}": LOCAL_CLIENT_NAME,
        "{client_ptr}": LOCAL_CLIENT_NAME,
        "{client_port}": "0",
        "{daemon_addr}": LOCAL_CLIENT_ADDRESS,
        "{daemon_port}": "0",
    }


class LocalSession:
    """
    The made-up SMTP session of one locally submitted message, through
    C{non_smtpd_milters}.

    @ivar macros: every macro's value now; C{i} is set by the caller
        once the queue id is known.
    @ivar event: the event the last verdict answered (C{CONNECT},
        C{EHLO}, C{MAIL}, C{RCPT}, C{DATA}), for the log.
    """

    def __init__(self, settings: Sequence, reactor, macros: Dict[str, str]) -> None:
        self.macros = dict(macros)
        self.milters = SessionMilters(settings, reactor, self.macros.get)
        self.event = ""

    @property
    def clients(self) -> List[MilterClient]:
        return self.milters.clients

    async def envelope(self, sender: str, recipients: Sequence[str],
                       helo: Optional[str] = None) -> Verdict:
        """
        Connect to the milters and tell them of the made-up session up
        to DATA.

        @return: the first verdict that does not let the message go on
            (C{self.event} says at which event), or
            L{tmta.milter.client.CONTINUE}.  A
            recipient refused is L{RECIPIENT_REFUSED}'s reply.
        """
        await self.milters.start()
        steps: List[Callable] = [
            lambda: self.milters.connect(LOCAL_CLIENT_NAME, LOCAL_CLIENT_ADDRESS, 0),
            lambda: self.milters.helo(helo or LOCAL_CLIENT_NAME),
        ]
        for event, step in zip(("CONNECT", "EHLO"), steps):
            self.event = event
            verdict = await step()
            if not verdict.goesOn:
                return verdict
        self.event = "MAIL"
        self.macros["{mail_addr}"] = sender
        verdict = await self.milters.mail(sender, [])
        if not verdict.goesOn:
            return verdict
        for recipient in recipients:
            self.event = "RCPT"
            self.macros["{rcpt_addr}"] = recipient
            verdict = await self.milters.rcpt(recipient, [])
            if verdict.kind in ("reply", "shutdown"):
                code, text = RECIPIENT_REFUSED
                return Verdict("reply", f"{code} {text}")
            if not verdict.goesOn:
                return verdict
        self.event = "DATA"
        return await self.milters.data()

    def close(self) -> None:
        """
        QUIT every milter.
        """
        self.milters.quit()


__all__ = ["LocalSession", "localMacros", "RECIPIENT_REFUSED"]
