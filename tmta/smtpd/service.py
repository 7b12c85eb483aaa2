"""
The smtpd service: one process serves many SMTP sessions at once.
"""

from __future__ import annotations

import ipaddress
import os
import resource
import socket

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.internet.protocol import Factory

from tmta.cleanup.client import CleanupClient, connectCleanup
from tmta.logging import Logger
from tmta.mail.proxyprotocol import upstreamProxy
from tmta.rewrite.client import RewriteClient, connectRewrite
from tmta.smtpd.checking import Restrictions
from tmta.smtpd.protocol import SMTPServer
from tmta.smtpd.recipients import RecipientTables
from tmta.smtpd.settings import SMTPSettings
from tmta.smtpd.verdicts import RestrictionEnvironment
from tmta.tables.networks import parseNetworks

log = Logger()


def raiseOpenFileLimit(clients: int) -> None:
    """
    Make room for C{clients} sessions, a socket each, plus the process's
    own descriptors (its connections to other services among them).
    """
    wanted = clients + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        pass
    if target < wanted:
        log.warn(
            "open file limit {limit} is below what smtpd_process_client_limit needs ({wanted})",
            limit=target, wanted=wanted,
        )


#: The addresses every hosts file names localhost: answered without a
#: lookup, which costs more than the rest of a loopback session's
#: greeting.  Other loopback addresses are looked up as any address is,
#: as Postfix does (they may have names of their own, or none).
_LOCALHOST = frozenset({"127.0.0.1", "::1"})


def lookupClientName(reactor, address: str) -> defer.Deferred:
    """
    The client's host names (in a thread: the resolver blocks): the name
    from reverse DNS confirmed forward, and the reverse name alone (for
    C{reject_unknown_reverse_client_hostname}); C{unknown} for either
    when there is none.

    @return: a Deferred firing with C{(name, reverseName)}.
    """
    if address in _LOCALHOST:
        return defer.succeed(("localhost", "localhost"))
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return defer.succeed(("unknown", "unknown"))

    def lookup():
        try:
            reverse = socket.gethostbyaddr(address)[0]
        except (OSError, UnicodeError):
            return "unknown", "unknown"
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(reverse, None)}
        except (OSError, UnicodeError):
            return "unknown", reverse
        return (reverse if address in addresses else "unknown"), reverse

    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), lookup)


def queueFreeSpace(queueDirectory: str):
    """
    A function returning the bytes free to unprivileged users on the
    queue's file system, or C{None} when that cannot be told.

    The directory is opened now (the worker may still be root, and may
    not reach the queue once it is not) and asked through its descriptor.
    """
    try:
        fd = os.open(queueDirectory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        log.warn("cannot open {queue} to watch its free space: {error}",
                 queue=queueDirectory, error=e.strerror)
        return lambda: None

    def freeSpace():
        try:
            st = os.fstatvfs(fd)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    return freeSpace


def _resolver():
    """
    The DNS resolver of the DNS checks: the system's, read from
    /etc/resolv.conf now (while the process may still read it).
    """
    from twisted.names import client

    return client.createResolver()


def serverTLS(config):
    """
    The TLS smtpd offers (L{tmta.smtpd.tls.ServerTLS}), or C{None}; the
    TLS code is loaded only when there is some.
    """
    from tmta.config import parseBool

    wanted = (config.get("smtpd_tls_security_level").strip().lower() not in ("", "none")
              or any(parseBool(config.get(name)) for name in
                     ("smtpd_tls_wrappermode", "smtpd_use_tls", "smtpd_enforce_tls")))
    if not wanted:
        return None
    from tmta.smtpd.tls import ServerTLS

    return ServerTLS.fromConfig(config)


def smtpAuth(config, reactor):
    """
    How AUTH is offered (L{tmta.smtpd.auth.SMTPAuth}), or C{None} when
    C{smtpd_sasl_auth_enable} is off.

    @raise ValueError: a SASL type or option tmta does not implement.
    """
    if not config.getBool("smtpd_sasl_auth_enable"):
        return None
    from tmta.smtpd.auth import SMTPAuth
    from tmta.smtpd.saslbackends import openBackend

    return SMTPAuth.fromConfig(config, openBackend(config, reactor))


def _verifyClient(context):
    """
    The client of the verify service, when master.cf runs one under the
    name C{address_verify_service_name}.
    """
    from tmta.config.loader import hasVerifyService
    from tmta.verify.client import VerifyClient

    config = context.config
    if not hasVerifyService(config, getattr(context, "services", ())):
        return None
    name = config.get("address_verify_service_name") or "verify"
    return VerifyClient(lambda: context.connect(name), context.reactor,
                        idle=config.getTime("ipc_idle"))


class SMTPService(Service):
    def __init__(self, context) -> None:
        self.context = context
        config = context.config
        raiseOpenFileLimit(config.getInt("smtpd_process_client_limit"))
        #: smtpd_upstream_proxy_protocol: each client's PROXY header is
        #: read before it is served (not behind postscreen, which reads it).
        self.upstreamProxy = upstreamProxy(config, "smtpd")
        networks = parseNetworks(config.getList("mynetworks"))
        recipientTables = RecipientTables.fromConfig(config)
        environment = RestrictionEnvironment.fromConfig(
            config, networks, recipientTables, resolver=_resolver(),
            verify=_verifyClient(context))
        restrictions = Restrictions.fromConfig(config, environment)
        self.settings = SMTPSettings.fromConfig(config, restrictions, recipientTables,
                                                serverTLS(config),
                                                smtpAuth(config, context.reactor))
        from tmta.smtpd.limits import ClientLimits

        self.settings.limits = ClientLimits.fromConfig(
            config, lambda: context.connect("anvil"), context.reactor,
            getattr(context, "services", ()))
        self.rewrite = RewriteClient(
            connectRewrite(context), context.reactor, idle=config.getTime("ipc_idle")
        )
        reactor = context.reactor
        reactor.getThreadPool()

        self.cleanupClient = CleanupClient(
            connectCleanup(context), reactor,
            idle=config.getTime("ipc_idle"),
        )

        freeSpace = queueFreeSpace(config.get("queue_directory"))
        if config.getBool("smtpd_peername_lookup"):
            def lookup(address):
                return lookupClientName(reactor, address)
        else:
            # Every client is "unknown", as Postfix's smtpd without DNS.
            def lookup(address):
                return defer.succeed("unknown")

        def build():
            return SMTPServer(
                self.settings,
                self.cleanupClient,
                self.rewrite.resolve,
                lookup,
                reactor,
                freeSpace,
            )

        self.factory = Factory.forProtocol(build)
        tls = self.settings.tls
        if tls is not None and tls.wrapper:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            self.factory = TLSMemoryBIOFactory(tls, False, self.factory)

    def startService(self) -> None:
        super().startService()
        self.context.listen(self.factory, upstreamProxy=self.upstreamProxy)
