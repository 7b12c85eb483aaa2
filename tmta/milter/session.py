"""
One conversation's milters, in order: connected at its start, told of
its CONNECT, HELO, MAIL, RCPT, DATA and unknown commands as they come,
each event going to each milter until one does not let it go on.
smtpd's SMTP sessions hold one (C{smtpd_milters}), and lend its
connections to cleanup for the message; cleanup holds one of its own for
mail that did not come through smtpd (C{non_smtpd_milters}), whose
session it makes up as Postfix does.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

from twisted.internet import defer

from tmta.milter import protocol as p
from tmta.milter.client import (
    ACCEPTED_MESSAGE,
    CONTINUE,
    ENVELOPE,
    ERROR,
    READY,
    REJECTED_CONNECTION,
    MilterClient,
    Verdict,
    connectMilter,
    describe,
    replyVerdict,
)
from tmta.milter.message import macroValues
from tmta.milter.settings import MilterSettings

#: The macros cleanup gets values for from smtpd, whatever the lists
#: name: everything the session knows (cleanup adds C{i}).
_SESSION_MACROS = ("j", "_", "v", "{daemon_name}", "{daemon_addr}", "{daemon_port}",
                   "{client_addr}", "{client_name}", "{client_port}", "{client_ptr}",
                   "{client_resolve}", "{client_connections}", "{tls_version}", "{cipher}",
                   "{cipher_bits}", "{cert_subject}", "{cert_issuer}", "{auth_type}",
                   "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}",
                   "{mail_mailer}", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}")


class SessionMilters:
    """
    The milters of one SMTP session, in C{smtpd_milters} order: each
    event goes to each in turn, until one does not let it go on.

    @param macros: the value of a macro by name in the session's present
        state (C{None}: not defined).
    """

    def __init__(self, settings: Sequence[MilterSettings], reactor,
                 macros: Callable[[str], Optional[str]]) -> None:
        self.settings = list(settings)
        self.reactor = reactor
        self.macros = macros
        self.clients: List[MilterClient] = []
        #: A message's envelope has been sent (MAIL), and not ended by
        #: its end of data or an ABORT.
        self.inTransaction = False
        self._lent: List[MilterClient] = []

    async def start(self) -> None:
        """
        Connect to every milter (at once), and negotiate with each.
        """
        self.clients = list(await defer.gatherResults(
            [defer.Deferred.fromCoroutine(connectMilter(self.reactor, s))
             for s in self.settings]))

    async def _event(self, command: bytes, data: bytes, allowed: Sequence[str]) -> Verdict:
        for client in self.clients:
            state = client.shared.state
            if state not in allowed:
                verdict = replyVerdict(client.shared.defaultReply)
            else:
                if command == p.CONNECT or (command == p.MAIL and state == ACCEPTED_MESSAGE):
                    client.shared.state = ENVELOPE
                verdict = await client.event(command, data,
                                             macroValues(client.macroNames(command), self.macros,
                                                         client.settings.macroDefaults))
            if not verdict.goesOn:
                return verdict
        return CONTINUE

    async def connect(self, name: str, address: str, port: int) -> Verdict:
        """
        CONNECT: the client's name, address and port.
        """
        if not address:
            data = p.connectData(name, p.FAMILY_UNKNOWN, 0, "")
        else:
            family = p.FAMILY_INET6 if ":" in address else p.FAMILY_INET
            data = p.connectData(name, family, port, address)
        return await self._event(p.CONNECT, data, (READY,))

    def helo(self, name: str) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(
            self._event(p.HELO, p.strings(name), (ENVELOPE, ACCEPTED_MESSAGE)))

    def mail(self, sender: str, parameters: Sequence[str]) -> defer.Deferred:
        """
        MAIL: the sender as the milter is to see it (smtpd's in angle
        brackets, as the client gave it), and its ESMTP parameters.
        """
        self.inTransaction = True
        return defer.Deferred.fromCoroutine(self._event(
            p.MAIL, p.strings(sender, *parameters), (ENVELOPE, ACCEPTED_MESSAGE)))

    def rcpt(self, recipient: str, parameters: Sequence[str]) -> defer.Deferred:
        """
        RCPT: the recipient as the milter is to see it, and its ESMTP
        parameters.
        """
        return defer.Deferred.fromCoroutine(self._event(
            p.RCPT, p.strings(recipient, *parameters), (ENVELOPE,)))

    def wantRejected(self) -> bool:
        """
        Whether a milter asked to hear of recipients refused
        (C{SMFIP_RCPT_REJ}).
        """
        return any(c.shared.rejectedRecipients for c in self.clients)

    async def rejectedRcpt(self, recipient: str, parameters: Sequence[str]) -> None:
        """
        RCPT for a recipient refused before the milters were asked, to
        those that want it; what they answer changes nothing.
        """
        for client in self.clients:
            if client.shared.rejectedRecipients and client.shared.state == ENVELOPE:
                await client.event(p.RCPT, p.strings(recipient, *parameters),
                                   macroValues(client.macroNames(p.RCPT), self.macros,
                                               client.settings.macroDefaults))

    def data(self) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._event(p.DATA, b"", (ENVELOPE,)))

    def unknown(self, command: str) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(
            self._event(p.UNKNOWN, p.strings(command), (ENVELOPE, ACCEPTED_MESSAGE)))

    def refusal(self) -> Optional[str]:
        """
        The refusal a milter gave the connection (at CONNECT or HELO),
        which every command but HELO, EHLO and QUIT gets from then on.
        """
        for client in self.clients:
            if client.shared.state == REJECTED_CONNECTION and client.shared.defaultReply:
                return client.shared.defaultReply
        return None

    def abort(self) -> None:
        """
        The transaction ended without its message (RSET, a refusal, a
        new MAIL): the milters forget it.
        """
        if not self.inTransaction:
            return
        self.inTransaction = False
        for client in self.clients:
            if client.shared.state in (ENVELOPE, ACCEPTED_MESSAGE):
                client.send(p.ABORT)
                client.shared.state = ENVELOPE

    def quit(self) -> None:
        for client in self.clients:
            client.close()
        self.clients = []

    # -- the message, at cleanup

    def lend(self, message) -> None:
        """
        Hand the milters that still want the message to cleanup, with
        L{tmta.cleanup.client.CleanupMessage.milter}: each connection's
        descriptor, its state, and the macros cleanup may need.  Until
        L{reclaim}, this process reads nothing from them.
        """
        values = {name: value for name in _SESSION_MACROS
                  if (value := self.macros(name)) is not None}
        for client in self.clients:
            transport: Any = client.transport
            if transport is None or client.shared.state in (ERROR, READY):
                continue
            transport.pauseProducing()
            family = transport.getHandle().family
            message.milter(transport.fileno(), int(family), describe(client), values)
            self._lent.append(client)
        self.inTransaction = False

    def reclaim(self) -> None:
        """
        cleanup is done with the message: read from the milters again.
        """
        lent, self._lent = self._lent, []
        for client in lent:
            if client.shared.state == ACCEPTED_MESSAGE:
                client.shared.state = ENVELOPE
            transport: Any = client.transport
            if transport is not None:
                transport.resumeProducing()


__all__ = ["SessionMilters"]
