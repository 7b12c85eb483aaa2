"""
The smtp delivery agent: hands a message to the next hop over SMTP.

The next hop comes from trivial-rewrite: C{relayhost} when it is set,
else the recipient's domain.  Written C{[host]} or C{[host]:port} it is
used as is (no MX lookup); written C{host} or C{host:port}, its MX hosts
are tried in preference order (twisted.names, with the system's
C{/etc/resolv.conf} and C{/etc/hosts}), falling back to its address when
it has no MX.  Each address is tried in turn until one takes the
message or refuses it for good.
"""

from __future__ import annotations

import time
from dataclasses import replace
from email.utils import formatdate
from typing import Dict, List, Optional, Tuple, Union

from twisted.internet import defer, threads
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.names import client as dnsclient
from zope.interface import implementer

from tmta.delivery import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    DeliveryResult,
    RecipientStatus,
    logDelivery,
)
from tmta.interfaces import IAddressVerifier
from tmta.logging import Logger
from tmta.mail.addressmaps import GenericMapping
from tmta.mail.contentchecks import ContentChecks
from tmta.mail.tls import cipherLists
from tmta.smtp.cache import SessionCache
from tmta.smtp.client import SMTPClient
from tmta.smtp.dane import DANE_LEVELS, Candidate, DaneFinder
from tmta.smtp.nexthop import HostFinder, NextHopError, errorReason, nexthopName, parseNexthop
from tmta.smtp.sasl import SASLLogin, SASLPasswords
from tmta.smtp.settings import SMTPClientSettings
from tmta.smtp.tls import ClientTLS, TLSPolicies, TLSPolicy, TLSPolicyError
from tmta.smtp.transaction import Reply, SessionFailed, Transaction, xforwardAttributes
from tmta.tables import TableLookupError
from tmta.tables.remote import maybeInThread

log = Logger()


class _TryNext(Exception):
    """
    One address did not take the message: try the next.
    """

    def __init__(self, failure: Optional[SessionFailed], text: str = "",
                 dsn: str = "4.4.2") -> None:
        super().__init__(text)
        self.failure, self.text = failure, text
        reply = failure.reply if failure is not None else None
        self.dsn = reply.dsn if reply is not None and reply.code // 100 == 4 else dsn

    def reason(self, relay: str) -> str:
        if self.failure is not None:
            return _failure(relay, self.failure)
        return self.text.replace("{relay}", relay)


class _Target:
    """
    One server to try: its name and address, the next hop it serves,
    and the TLS policy for the session (C{None} for none).
    """

    def __init__(self, host: str, address: str, port: int, nexthop: str,
                 policy: Optional[TLSPolicy], relay: str) -> None:
        self.host, self.address, self.port = host, address, port
        self.nexthop, self.policy, self.relay = nexthop, policy, relay
        #: The SMTP AUTH login for this server, if any.
        self.login: Optional[SASLLogin] = None
        #: The domain whose MTA-STS policy in C{testing} mode covers
        #: this server: what would fail under it is logged.
        self.stsTesting = ""
        #: For TLS reporting (RFC 8460): the policy domain, and the
        #: policy's type and text, when a policy covers this server.
        self.reportDomain = ""
        self.reportPolicy: Tuple[str, List[str]] = ("", [])

    @property
    def cacheKey(self) -> Tuple:
        """
        Sessions are reused only for the same server, the same TLS
        requirements and the same login.
        """
        policy = self.policy
        login = self.login.username if self.login is not None else None
        if policy is None:
            return (self.address, self.port, "none", login)
        return (self.address, self.port, policy.level, tuple(policy.match),
                self.nexthop if policy.verifies else "", self.host, login)


@implementer(IAddressVerifier)
class SMTPDeliveryAgent:
    """
    Delivers over SMTP (or LMTP), one session per request.

    @param resolver: a twisted.names resolver (C{lookupMailExchange},
        C{lookupAddress}, C{lookupIPV6Address}).
    @param connect: C{connect(host, port, factory)} returns a Deferred
        firing with the connected protocol (a test seam; the default
        connects over TCP).
    @param postmaster: C{postmaster(recipient, text)} queues a notice
        (LF line ends) from the mail system, returning a Deferred; with
        C{protocol} in C{notify_classes} a session in which the server
        broke the SMTP protocol is reported to C{error_notice_recipient}
        with its transcript.
    @param hosts: finds the servers of a next hop (by default a
        L{HostFinder} with C{resolver}).
    """

    def __init__(self, reactor, config, resolver=None, connect=None, lmtp: bool = False,
                 postmaster=None, hosts: Optional[HostFinder] = None) -> None:
        self.reactor = reactor
        settings = self.settings = SMTPClientSettings.fromConfig(config, lmtp)
        self.lmtp = lmtp
        # TLSPolicyError here means the configuration asks for more
        # than tmta can give: the worker does not start (the master's
        # start-up check says so first).
        self.tlsPolicies = TLSPolicies(config, settings.prefix)
        self.cipherLists = cipherLists(config)
        self.saslPasswords = SASLPasswords(config, settings.prefix)
        #: C{smtp_header_checks} and the rest: edits to what is sent.
        self.contentChecks = ContentChecks(config, f"{settings.prefix}_")
        #: C{smtp_generic_maps}: the addresses sent in place of the mail's.
        self.generic = GenericMapping(config, settings.prefix)
        self.postmaster = postmaster
        # Made now: the worker may give up root next, after which it may
        # not be able to import what twisted.names loads on first use.
        self.resolver = resolver or dnsclient.createResolver()
        self.hosts = hosts or HostFinder(reactor, self.resolver, config, lmtp)
        #: Where a next hop under DANE finds its servers and their policies.
        self.dane = DaneFinder(reactor, config, lmtp, self.tlsPolicies.atLevel)
        #: MTA-STS policies (C{smtp_mta_sts_enable}), for mail to a
        #: domain's MX hosts.
        self.mtasts = None
        if not lmtp and config.getBool("smtp_mta_sts_enable"):
            import os

            from tmta.smtp.mtasts import PolicyFinder

            self.mtasts = PolicyFinder(
                reactor, self.resolver, os.path.join(config.get("data_directory"), "mta-sts"),
                config.get("smtp_tls_CAfile").strip())
        #: Where each session under an MTA-STS or DANE policy is
        #: recorded for TLS reports (C{smtp_tls_report_history_file}).
        self.tlsReportHistory = "" if lmtp else config.get(
            "smtp_tls_report_history_file").strip()
        if self.tlsReportHistory:
            # Imported while the worker may still be root.
            import tmta.common.history  # noqa: F401
        for warning in self.tlsPolicies.warnings:
            log.warn("{warning}", warning=warning)
        self._connect = connect or self._connectTCP
        self.cache = SessionCache(reactor, idle=settings.cacheIdle,
                                  lifetime=settings.cacheLifetime)

    # -- IDeliveryAgent ----------------------------------------------------

    def deliver(self, request: DeliveryRequest) -> defer.Deferred:
        return defer.Deferred.fromCoroutine(self._deliver(request))

    def _generic(self, request: DeliveryRequest,
                 content: bytes) -> Tuple[bytes, str, Dict[str, str]]:
        """
        In a thread: the message, the sender and each recipient as
        C{smtp_generic_maps} has them sent.
        """
        generic = self.generic
        sentAs: Dict[str, str] = {}
        for recipient in request.recipients:
            mapped = generic.address(recipient.address)
            if mapped != recipient.address:
                sentAs[recipient.address] = mapped
        return generic.message(content), generic.address(request.sender), sentAs

    async def _servers(self, nexthop: str, policy: TLSPolicy) -> List[Candidate]:
        """
        The servers of C{nexthop} to try, in order, each with its TLS
        policy: C{policy}, or under DANE what each server's TLSA records
        call for.

        @raise NextHopError: there are none.
        """
        if policy.level in DANE_LEVELS:
            return await self.dane.find(nexthop, policy)
        return [(h, a, p, nexthop, policy) for h, a, p in await self.hosts.find(nexthop)]

    async def _deliver(self, request: DeliveryRequest,
                       ) -> Union[DeliveryResult, List[RecipientStatus]]:
        started = time.time()
        if self.settings.sendXforward:
            attributes, content = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), request.message)
            xforward = xforwardAttributes(request.queueId, attributes)
        else:
            content = await threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(),
                lambda: b"".join(request.content()))
            xforward = {}
        if self.contentChecks.active:
            content = self.contentChecks.message(content, request.queueId)
        # What is sent for the sender and recipients (smtp_generic_maps).
        sender, sentAs = request.sender, {}  # type: str, Dict[str, str]
        if self.generic.active:
            try:
                content, sender, sentAs = await threads.deferToThreadPool(
                    self.reactor, self.reactor.getThreadPool(), self._generic, request, content)
            except TableLookupError as e:
                return self._all(request, "none", DEFERRED, "4.3.0",
                                 f"{self.settings.prefix}_generic_maps: {e}", started)
        try:
            policy = await self._lookUp(self.tlsPolicies.remote, self.tlsPolicies.forNexthop,
                                        request.nexthop)
        except Exception as e:
            return self._all(request, "none", DEFERRED, "4.7.5",
                             f"TLS policy lookup for {request.nexthop}: {e}", started)
        requireTLS = request.attributes.get("requiretls") == "yes"
        # The header is looked for only where a policy it sets aside
        # applies: not on every message.
        tlsOptional = (not requireTLS and policy is self.tlsPolicies.default
                       and (self.mtasts is not None or policy.level in DANE_LEVELS)
                       and _tlsNotRequired(content))
        if tlsOptional:
            # RFC 8689 section 5: the sender asks that the recipient
            # domain's own TLS policies (DANE, MTA-STS) not hold the
            # mail back; TLS is still used when offered.
            log.info("{queueId}: TLS-Required: No: the next hop's DANE and MTA-STS policies "
                     "are not applied", queueId=request.queueId)
            if policy.level in DANE_LEVELS:
                policy = replace(policy, level="may", tlsa=[], asGiven=None)
        sts = None
        if self.mtasts is not None and policy is self.tlsPolicies.default and not tlsOptional \
                and policy.level not in DANE_LEVELS and not request.nexthop.startswith("["):
            sts = await self.mtasts.find(parseNexthop(request.nexthop)[0])
            if sts is not None and sts.mode == "none":
                sts = None
        try:
            hosts = await self._servers(request.nexthop, policy)
            if sts is not None:
                hosts = self._underSTS(sts, parseNexthop(request.nexthop)[0], hosts)
        except NextHopError as e:
            if e.permanent:
                return self._all(request, "none", BOUNCED, e.dsn, e.reason, started)
            if not self.settings.fallbackRelays:
                return DeliveryResult(
                    self._all(request, "none", DEFERRED, e.dsn, e.reason, started), e.reason)
            hosts = []
        primary = len(hosts)
        # smtp_fallback_relay: tried after the next hop's own hosts, each
        # under its own TLS policy.
        for relay in self.settings.fallbackRelays:
            try:
                relayPolicy = await self._lookUp(self.tlsPolicies.remote,
                                                 self.tlsPolicies.forNexthop, relay)
                hosts += await self._servers(relay, relayPolicy)
            except (NextHopError, TLSPolicyError):
                continue
        lastError, lastDsn = "no address to try", "4.4.1"
        sessions = 0
        for index, (host, address, port, nexthop, policy) in enumerate(hosts):
            limit = self.settings.mxSessionLimit
            if index < primary and limit and sessions >= limit:
                # smtp_mx_session_limit: enough servers talked to; the
                # fallback relays, if any, are next.
                continue
            relay = (f"{host}[{address}]:{port}" if port
                     else f"{nexthopName(request.nexthop)}[{address}]")
            transaction = Transaction(
                sender, [r.address for r in request.recipients], content, sentAs=sentAs,
                dsn={r.address: (r.notify, r.orcpt) for r in request.recipients
                     if r.notify or r.orcpt},
                ret=request.attributes.get("dsn_ret", ""),
                envid=request.attributes.get("dsn_envid", ""),
                verifyOnly=request.verifyOnly, xforward=xforward, requireTLS=requireTLS)
            target = _Target(host, address, port, nexthop, policy if port else None, relay)
            if sts is not None and sts.mode == "testing" and index < primary:
                target.stsTesting = parseNexthop(request.nexthop)[0]
            if index < primary and port:
                self._reportPolicy(target, request.nexthop, sts)
            if port:
                target.login = await self._lookUp(self.saslPasswords.remote,
                                                  self.saslPasswords.forServer, nexthop, host,
                                                  port)
            try:
                use = await self._attempt(target, transaction)
            except _TryNext as e:
                lastError, lastDsn = e.reason(relay), e.dsn
                sessions += e.failure is not None
                continue
            except SessionFailed as e:
                return self._failed(request, transaction, relay, started, e)
            return self._results(request, transaction, relay, started, connectionUse=use)
        # No server took a session: the destination itself failed.
        return DeliveryResult(
            self._all(request, "none", DEFERRED, lastDsn, lastError, started), lastError)

    def _reportPolicy(self, target: "_Target", nexthop: str, sts) -> None:
        """
        Note which policy covers the target, for TLS reports: the
        domain's MTA-STS policy, or the server's TLSA records.
        """
        if not self.tlsReportHistory or nexthop.startswith("["):
            return
        domain = parseNexthop(nexthop)[0]
        if sts is not None:
            target.reportDomain = domain
            target.reportPolicy = ("sts", ["version: STSv1", f"mode: {sts.mode}"]
                                   + [f"mx: {m}" for m in sts.mx] + [f"max_age: {sts.maxAge}"])
        elif target.policy is not None and target.policy.tlsa:
            target.reportDomain = domain
            target.reportPolicy = ("tlsa", [str(record) for record in target.policy.tlsa])

    def _recordSession(self, target: "_Target", trust, failed: bool) -> None:
        """
        Record one session's TLS outcome under its policy
        (L{_reportPolicy}) for C{tmta tlsrpt report}.
        """
        from tmta.common.history import appendRecord

        kind, strings = target.reportPolicy
        if trust is not None and trust.status == "Verified" and not failed:
            result = "success"
        elif trust is None:
            result = "starttls-not-supported" if not failed else "validation-failure"
        elif trust.status == "Trusted":
            result = "certificate-host-mismatch"
        elif kind == "tlsa":
            result = "tlsa-invalid"
        else:
            result = "certificate-not-trusted"
        try:
            appendRecord(self.tlsReportHistory, {
                "time": int(time.time()), "policy_domain": target.reportDomain,
                "policy_type": kind, "policy_string": strings, "mx_host": target.host,
                "receiving_ip": target.address, "result": result})
        except OSError as e:
            log.warn("cannot record the TLS session with {relay} in {path}: {error}",
                     relay=target.relay, path=self.tlsReportHistory, error=e.strerror)
        except Exception:
            # A report record never stands in the way of a delivery.
            log.failure("cannot record the TLS session with {relay}", relay=target.relay)

    def _underSTS(self, sts, domain: str, hosts: List[Candidate]) -> List[Candidate]:
        """
        The servers of C{domain} under its MTA-STS policy: in C{enforce}
        mode only the MX hosts it names, each under C{secure} checking
        the MX host's name; in C{testing} mode all of them as they were,
        with what would fail logged.

        @raise NextHopError: under C{enforce}, no MX host is named.
        """
        kept: List[Candidate] = []
        for host, address, port, nexthop, policy in hosts:
            if not sts.matches(host):
                log.warn("MTA-STS policy of {domain} ({mode}): MX host {host} is not one it "
                         "names", domain=domain, mode=sts.mode, host=host)
                if sts.mode == "enforce":
                    continue
            elif sts.mode == "enforce":
                policy = replace(policy, level="secure", match=["hostname"],
                                 servername="hostname", asGiven=None)
            else:
                # testing: the certificate is judged as enforce would
                # judge it, for the log, but not required.
                policy = replace(policy, match=["hostname"], servername="hostname",
                                 asGiven=None)
            kept.append((host, address, port, nexthop, policy))
        if not kept:
            raise NextHopError(f"MTA-STS policy of {domain}: none of its MX hosts is one the "
                               "policy names", dsn="4.7.5")
        return kept

    async def _lookUp(self, remote: bool, f, *args):
        """
        C{f(*args)}: now, or, when a table it consults waits on another
        server, in a lookup thread.
        """
        result = maybeInThread(self.reactor, remote, f, *args)
        if isinstance(result, defer.Deferred):
            result = await result
        return result

    async def _attempt(self, target: "_Target", transaction: Transaction) -> int:
        """
        Run the transaction on a session to one address.

        @return: which transaction on its session it was (1: a new one).

        @raise _TryNext: this address did not take it; the next may.
        @raise SessionFailed: the server answered recipients, or refused
            the transaction for good: the results are final here.
        """
        for _ in range(3):
            try:
                session, reused = await self._session(target)
            except SessionFailed as e:
                if (not self.settings.skip5xxGreeting and e.stage == "initial greeting"
                        and e.reply is not None and e.reply.code // 100 == 5):
                    raise
                if e.tls and e.stage == "TLS handshake" and target.policy is not None \
                        and target.policy.level == "may":
                    # may: a failed handshake is retried in plaintext,
                    # on a new connection.
                    log.info("{relay}: {reason}; trying again without TLS",
                             relay=target.relay, reason=e.reason)
                    target.policy = None
                    continue
                raise _TryNext(e, dsn="4.7.5" if e.tls else "4.7.0" if e.sasl else "4.4.2")
            except Exception as e:
                raise _TryNext(None, f"connect to {{relay}}: {errorReason(e)}", "4.4.1")
            try:
                await session.send(transaction)
            except SessionFailed as e:
                self._reportProtocolError(session, target)
                if reused and e.reply is None and not transaction.replies:
                    # A cached session the server had closed meanwhile:
                    # once more, on a new one.
                    continue
                refusedForGood = (e.reply is not None and e.reply.code // 100 == 5
                                  and e.stage != "initial greeting")
                if refusedForGood or transaction.replies:
                    raise
                raise _TryNext(e)
            use = session.transactions
            settings = self.settings
            if settings.cacheOnDemand or target.nexthop.lower() in settings.cacheDestinations:
                self.cache.release(target.cacheKey, session)
            else:
                session.quit()
            return use
        raise _TryNext(None, "lost connection with {relay}", "4.4.2")

    def _failed(self, request, transaction, relay, started, e: SessionFailed):
        if e.local and e.reply is not None and e.reply.code // 100 == 5:
            # The client's own refusal (no SMTPUTF8, no REQUIRETLS, too
            # big): the server said nothing of it.
            return self._all(request, relay, BOUNCED, e.reply.dsn, _failure(relay, e),
                             started)
        if e.reply is not None and e.reply.code // 100 == 5:
            # Refused for good: MAIL FROM or DATA said 5xx.
            return self._results(request, transaction, relay, started,
                                 refused=(e.reply, e.stage))
        # Recipients were answered, then the session failed: what was
        # refused for good is bounced, the rest deferred -- never
        # bounced, never dropped.
        return self._results(request, transaction, relay, started, failure=_failure(relay, e))

    async def _session(self, target: "_Target"):
        """
        An idle session to the target from the cache, or a new one once
        it is ready (with TLS, as its policy asks).

        @return: C{(session, reused)}.
        """
        session = self.cache.take(target.cacheKey)
        if session is not None:
            return session, True
        tls = None
        if target.policy is not None and target.policy.level != "none":
            tls = ClientTLS(target.policy, target.host, parseNexthop(target.nexthop)[0],
                            self.cipherLists)
        protocol = await self._connect(target.address, target.port,
                                       self._factory(tls, target.login))
        failed = False
        try:
            await protocol.ready
        except SessionFailed as e:
            failed = e.tls
            self._reportProtocolError(protocol, target)
            raise
        finally:
            trust = getattr(protocol, "trust", None)
            if target.reportDomain:
                self._recordSession(target, trust, failed)
            if trust is not None:
                log.info("{status} TLS connection established to {relay}: {summary}",
                         status=trust.status, relay=target.relay, summary=trust.summary)
            if target.stsTesting and (trust is None or trust.status != "Verified"):
                log.warn("MTA-STS policy of {domain} (testing): {relay}: would fail under "
                         "enforce: {why}", domain=target.stsTesting, relay=target.relay,
                         why="no TLS" if trust is None else f"{trust.status} TLS"
                         + (f" ({trust.problem})" if trust.problem else ""))
        return protocol, False

    def _reportProtocolError(self, session, target: "_Target") -> None:
        """
        Send the postmaster the transcript of a session in which the
        server broke the protocol (notify_classes = protocol).
        """
        error = getattr(session, "protocolError", None)
        if error is None or not self.settings.reportProtocol or self.postmaster is None:
            return
        text = "\n".join([
            f"From: MAILER-DAEMON@{self.settings.myhostname} (Mail Delivery System)",
            f"To: {self.settings.errorRecipient}",
            f"Subject: tmta SMTP client: errors from {target.relay}",
            f"Date: {formatdate(localtime=True)}",
            "Auto-Submitted: auto-generated",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "",
            f"The server {target.relay} broke the SMTP protocol: {error}",
            "",
            "Transcript of session follows.",
            "",
            *(f" {line}" for line in session.transcript),
            "",
        ]).encode("utf-8", "replace")
        d = self.postmaster(self.settings.errorRecipient, text)
        d.addErrback(lambda f: log.warn("cannot send the protocol error transcript: {error}",
                                        error=f.getErrorMessage()))

    # -- results ------------------------------------------------------------

    def _results(self, request: DeliveryRequest, t: Transaction, relay: str, started: float,
                 refused: Optional[Tuple[Reply, str]] = None,
                 failure: Optional[str] = None, connectionUse: int = 1) -> List[RecipientStatus]:
        """
        One status per recipient from what the server answered.

        @param refused: the reply and stage that refused the whole
            transaction.
        @param failure: why the session ended before the message was
            taken (the recipients it accepted are deferred).
        """
        statuses = []
        for r in request.recipients:
            reply, stage = t.replies.get(r.address), "RCPT TO"
            if reply is not None and reply.code // 100 == 2 and t.verifyOnly:
                pass  # a probe ends at RCPT TO: its reply is the answer
            elif reply is not None and reply.code // 100 == 2:
                if failure is not None:
                    reply = None
                elif refused is not None:
                    reply, stage = refused
                elif not self.lmtp and t.final is not None:
                    reply, stage = t.final, "end of DATA"
                else:
                    stage = "end of DATA"
            if reply is None and refused is not None:
                reply, stage = refused
            if reply is None:
                status = RecipientStatus(r.offset, DEFERRED, "4.4.2",
                                         failure or "no answer for this recipient")
            else:
                kind = {2: SENT, 4: DEFERRED, 5: BOUNCED}.get(reply.code // 100, DEFERRED)
                text = str(reply) if kind == SENT else \
                    f"host {relay} said: {reply} (in reply to {stage} command)"
                dsn = reply.dsn if reply.code // 100 in (2, 4, 5) else "4.0.0"
                # For a success notice: LMTP delivers; an SMTP server
                # that took the DSN parameters reports itself.
                action = "" if self.lmtp else "passed" if t.dsnPassed else "relayed"
                status = RecipientStatus(r.offset, kind, dsn, text,
                                         action if kind == SENT else "")
            logDelivery(request, r, relay, status, started, connectionUse)
            statuses.append(status)
        return statuses

    def _all(self, request: DeliveryRequest, relay: str, kind: str, dsn: str, reason: str,
             started: float) -> List[RecipientStatus]:
        statuses = []
        for r in request.recipients:
            status = RecipientStatus(r.offset, kind, dsn, reason)
            logDelivery(request, r, relay, status, started)
            statuses.append(status)
        return statuses

    # -- where to connect -----------------------------------------------------

    # -- connecting -------------------------------------------------------------

    def _factory(self, tls: Optional[ClientTLS] = None,
                 sasl: Optional[SASLLogin] = None) -> Factory:
        def build():
            return SMTPClient(self.settings.heloName, self.reactor, self.settings.timeouts,
                              lmtp=self.lmtp, tls=tls, sasl=sasl)

        return Factory.forProtocol(build)

    def _connectTCP(self, address: str, port: int, factory: Factory) -> defer.Deferred:
        endpoint: IStreamClientEndpoint
        if port == 0:
            endpoint = UNIXClientEndpoint(self.reactor, address,
                                          timeout=self.settings.connectTimeout)
        elif ":" in address:
            bind = (self.settings.bindAddress6, 0) if self.settings.bindAddress6 else None
            endpoint = TCP6ClientEndpoint(self.reactor, address, port,
                                          timeout=self.settings.connectTimeout, bindAddress=bind)
        else:
            bind = (self.settings.bindAddress, 0) if self.settings.bindAddress else None
            endpoint = TCP4ClientEndpoint(self.reactor, address, port,
                                          timeout=self.settings.connectTimeout, bindAddress=bind)
        return endpoint.connect(factory)


def _tlsNotRequired(content: bytes) -> bool:
    """
    Whether the message's header section says C{TLS-Required: No}
    (RFC 8689 section 5).
    """
    header, _, _ = content.partition(b"\n\n")
    for line in header.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"tls-required":
            return value.strip().lower() == b"no"
    return False


def _failure(relay: str, e: SessionFailed) -> str:
    if e.local:
        # The client's own decision: the server said nothing of it.
        return f"{e.reason} {relay}"
    if e.sasl:
        if e.reply is not None:
            return f"SASL authentication failed; server {relay} said: {e.reply}"
        return f"{e.reason}, server {relay}"
    if e.protocol:
        return f"protocol error with {relay} while receiving the {e.stage} reply: {e.reason}"
    if e.tls and e.reply is None:
        if e.reason.endswith("by host"):
            return f"{e.reason} {relay}"
        return f"{e.reason} (host {relay})"
    if e.reply is not None:
        return f"host {relay} said: {e.reply} (in reply to {e.stage} command)"
    if "timed out" in e.reason:
        return f"{e.reason} from {relay}"
    return f"lost connection with {relay} while receiving the {e.stage} reply"
