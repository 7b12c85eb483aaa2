"""
What the parts of an SMTP session share: the state and methods of
L{tmta.smtpd.protocol.SMTPServer} that its command mixins
(L{tmta.smtpd.envelope}, L{tmta.smtpd.receiving}, L{tmta.smtpd.auth},
L{tmta.smtpd.starttls}, L{tmta.smtpd.checking}) use, declared once for
the type checker.  At run time the class adds nothing to the
L{CommandReader} it extends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from tmta.smtpd.reader import CommandReader

if TYPE_CHECKING:
    from twisted.internet import defer

    from tmta.milter.session import SessionMilters
    from tmta.smtpd.settings import SMTPSettings
    from tmta.smtpd.transcript import Transcript
    from tmta.smtpd.verdicts import RecipientContext, TransactionActions


class SessionState(CommandReader):
    """
    The session as its command mixins see it.
    """

    if TYPE_CHECKING:
        settings: SMTPSettings
        cleanupClient: Any
        resolve: Callable[[str], defer.Deferred]
        freeSpace: Callable[[], Optional[int]]
        clock: Any
        helo: Optional[str]
        protocolName: str
        clientAddress: str
        clientName: str
        reverseClientName: str
        queueId: str
        errors: int
        junkCommands: int
        sender: Optional[str]
        recipients: List[str]
        recipientDSN: List[Tuple[str, str]]
        dsnAttributes: Dict[str, str]
        declaredSize: int
        overshoot: int
        transactionActions: TransactionActions
        transactionNumber: int
        pipelinedNow: bool
        bareNewlineMode: str
        transcript: Optional[Transcript]
        tlsSummary: Optional[str]
        clientCertificate: Optional[Any]
        saslUsername: Optional[str]
        saslMethod: Optional[str]
        _transfer: Optional[Any]
        milters: Optional[SessionMilters]
        proxy: Optional[Any]
        mailCommand: str
        rcptCommand: str
        forwarded: Optional[Dict[str, str]]
        milterAddressMacros: Dict[str, str]
        mailParameters: List[str]
        rcptParameters: List[str]

        @property
        def client(self) -> str: ...

        def _error(self, text: str) -> None: ...

        def _junk(self) -> None: ...

        def _resetTransaction(self) -> None: ...

        def _abortTransfer(self) -> None: ...

        def bareNewlineReceived(self) -> None: ...

        def needsTLS(self) -> bool: ...

        def limits(self, event: str) -> bool: ...

        async def limitExceeded(self, event: str) -> Optional[str]: ...

        async def restrict(self, stage: str, context: Optional[RecipientContext] = None,
                           ) -> Optional[Tuple[str, str]]: ...

        def restrictionContext(self, stage: str, recipient: str = "",
                               addressClass: str = "") -> RecipientContext: ...

        def logRejection(self, stage: str, reply: str, recipient: str = "",
                         action: str = "reject") -> None: ...

        def milterRefused(self, stage: str, verdict, recipient: str = "") -> bool: ...

        def receivedProtocol(self) -> str: ...

        def xforwardAllowed(self) -> bool: ...

        def forwardedSummary(self) -> str: ...

        def tlsHandshakeReset(self) -> None: ...

        def tlsOffered(self) -> bool: ...

        def requireTLSOffered(self) -> bool: ...

        def authKeywords(self, secured: bool) -> Any: ...
