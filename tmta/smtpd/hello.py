"""
HELO and EHLO: the client's name checked and recorded, the EHLO stage's
restrictions applied (C{smtpd_delay_reject = no}), and the extensions
EHLO announces, less those C{smtpd_discard_ehlo_keywords} hides.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import defer

from tmta.common.eager import eagerly
from tmta.logging import Logger
from tmta.smtpd.session import SessionState

log = Logger()


class HelloCommands(SessionState):
    """
    HELO and EHLO, for L{tmta.smtpd.protocol.SMTPServer}.
    """

    def _badHelo(self, argument: str) -> bool:
        """
        Whether a HELO/EHLO argument is unfit for a Received header:
        control characters, white space inside, or over 255 characters.
        """
        return (
            len(argument) > 255
            or any(ord(c) < 33 or ord(c) == 127 for c in argument)
        )

    def _hello(self, verb: str, argument: str) -> bool:
        """
        Check and record a HELO or EHLO; C{False} when it was refused.
        """
        if not argument:
            self._error(f"501 Syntax: {verb} hostname")  # no status code, as Postfix
            return False
        if self._badHelo(argument):
            self._error(f"501 5.5.2 Error: invalid {verb} name")
            return False
        self._resetTransaction()
        self.helo, self.protocolName = argument, "ESMTP" if verb == "EHLO" else "SMTP"
        return True

    def _helloChecked(self, then):
        """
        Apply the EHLO stage's lists (C{smtpd_delay_reject = no}), then
        answer with C{then()}; a refusal forgets the name.
        """
        restrictions = self.settings.restrictions
        milters = self.milters
        if milters is None and (restrictions is None or not any(
                lst.restrictions for lst in restrictions.forStage("EHLO"))):
            return then()

        async def check():
            if milters is not None:
                # As Postfix: only a milter's 421 refuses HELO or EHLO.
                verdict = await milters.helo(self.helo or "")
                if verdict.kind == "shutdown" or verdict.reply.startswith("421"):
                    self.logRejection("EHLO", verdict.reply, action="milter-reject")
                    self.reply(verdict.reply)
                    self.close()
                    return
            refusal = await self.restrict("EHLO") if restrictions is not None else None
            if refusal is not None:
                self.logRejection("EHLO", refusal[1])
                self.helo, self.protocolName = None, "SMTP"
                self._error(refusal[1])
                return
            result = then()
            if isinstance(result, defer.Deferred):
                await result

        return eagerly(check())

    def smtp_HELO(self, argument: str):
        self._junk()
        if self._hello("HELO", argument):
            return self._helloChecked(lambda: self.reply(f"250 {self.settings.myhostname}"))
        return None

    def smtp_EHLO(self, argument: str):
        self._junk()
        if not self._hello("EHLO", argument):
            return None
        return self._helloChecked(self._ehloKeywords)

    def _ehloKeywords(self):
        keywords = ["PIPELINING", f"SIZE {self.settings.messageSizeLimit}"]
        if not self.settings.vrfyDisabled:
            keywords.append("VRFY")
        if self.tlsOffered():
            keywords.append("STARTTLS")
        auth = self.authKeywords(self.tlsSummary is not None)
        if isinstance(auth, defer.Deferred):
            return auth.addCallback(self._ehloReply, keywords)
        return self._ehloReply(auth, keywords)

    def _ehloReply(self, auth: Optional[str], keywords: List[str]) -> None:
        if auth:
            keywords.append(auth)
        if self.xforwardAllowed():
            keywords.append("XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
        keywords += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if self.settings.smtputf8:
            keywords.append("SMTPUTF8")
        keywords.append("CHUNKING")
        if self.requireTLSOffered():
            keywords.append("REQUIRETLS")
        hidden = self.settings.discardEhloKeywords
        if hidden:
            shown = [k for k in keywords if k.split()[0].lower() not in hidden]
            if len(shown) < len(keywords) and "silent-discard" not in hidden:
                log.info("discarding EHLO keywords: {keywords}", keywords=" ".join(
                    k.split()[0] for k in keywords if k not in shown))
            keywords = shown
        lines = [self.settings.myhostname] + keywords
        text = "\r\n".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{line}" for i, line in enumerate(lines)
        )
        self.reply(text)
