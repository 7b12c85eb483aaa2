"""
smtpd's side of TLS: STARTTLS (RFC 3207) and the wrapper mode of port
465 (RFC 8314), with the server's certificates and Postfix's
C{smtpd_tls_*} settings.

Levels, as Postfix has them for its server: C{none} (STARTTLS not
offered), C{may} (offered; plaintext allowed) and C{encrypt} (mail only
after STARTTLS).  With C{smtpd_tls_wrappermode} every connection starts
with the handshake.  smtpd asks for no client certificate.

This module loads OpenSSL: smtpd imports it only when TLS is configured.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from tmta.logging import Logger
from tmta.mail.tls import (
    TLSConfigError,
    certificateDer,
    cipherLists,
    configureContext,
    connectionSummary,
    publicKeyDer,
)

log = Logger()

#: The levels smtpd implements.
SERVER_LEVELS = ("none", "may", "encrypt")


def securityLevel(config) -> str:
    """
    smtpd's TLS security level: C{smtpd_tls_security_level}, or when it
    is empty the older C{smtpd_enforce_tls} and C{smtpd_use_tls}.
    """
    level = config.get("smtpd_tls_security_level").strip().lower()
    if level:
        return level
    if config.getBool("smtpd_enforce_tls"):
        return "encrypt"
    if config.getBool("smtpd_use_tls"):
        return "may"
    return "none"


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)


def readChains(paths: List[str]) -> List[Tuple[bytes, List[bytes]]]:
    """
    C{smtpd_tls_chain_files} as Postfix reads it: the PEM objects of the
    files, in order, as if they were one file, each private key followed
    by its certificate chain (server certificate first).  A key may be in
    one file and its chain in the next (C{key.pem cert.pem}).

    @return: C{(key, [certificate, ...])} for each key.
    @raise TLSConfigError: a file cannot be read, or holds something out
        of that order.
    """
    chains: List[Tuple[bytes, List[bytes]]] = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise TLSConfigError(f"cannot read {path}: {e.strerror or e}") from None
        blocks = list(_PEM_BLOCK.finditer(data))
        if not blocks:
            raise TLSConfigError(f"{path}: no PEM key or certificate in it")
        for block in blocks:
            kind = block.group(1)
            if kind.endswith(b"PRIVATE KEY"):
                chains.append((block.group(0), []))
            elif kind == b"CERTIFICATE" and chains:
                chains[-1][1].append(block.group(0))
            elif kind == b"CERTIFICATE":
                raise TLSConfigError(f"{path}: a certificate comes before any private key")
    for _, certificates in chains:
        if not certificates:
            raise TLSConfigError(f"{', '.join(paths)}: a private key has no certificate "
                                 "after it")
    return chains


def certificateFiles(config) -> List[Tuple[str, str]]:
    """
    The server's certificates as (certificate chain file, key file)
    pairs: the RSA, ECDSA and DSA pairs of C{smtpd_tls_cert_file},
    C{smtpd_tls_eccert_file} and C{smtpd_tls_dcert_file} with their key
    files (C{smtpd_tls_chain_files}, which replaces them, is
    L{readChains}'s).
    """
    pairs = []
    for cert, key in (("smtpd_tls_cert_file", "smtpd_tls_key_file"),
                      ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
                      ("smtpd_tls_dcert_file", "smtpd_tls_dkey_file")):
        certFile = config.get(cert).strip()
        if certFile:
            pairs.append((certFile, config.get(key).strip() or certFile))
    return pairs


@dataclass(frozen=True)
class ClientCertificate:
    """
    The certificate a client showed in the handshake
    (C{smtpd_tls_ask_ccert}).

    @ivar trusted: whether it chains to C{smtpd_tls_CAfile} or
        C{smtpd_tls_CApath}.
    @ivar fingerprint: of the certificate, and C{pubkeyFingerprint} of
        its public key, as Postfix writes them: the
        C{smtpd_tls_fingerprint_digest} of their DER, in upper-case hex
        pairs joined by colons.
    """

    subject: str
    issuer: str
    fingerprint: str
    pubkeyFingerprint: str
    trusted: bool


def _fingerprint(data: bytes, digest: str) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.new(digest, data).digest())


@implementer(IOpenSSLContextFactory)
class ServerTLS:
    """
    The OpenSSL context smtpd's sessions share, made once per process
    (while it may still read root's key files), and the settings that
    say how a session uses it.

    It is a context factory (L{getContext}) for C{ITLSTransport.startTLS}
    and C{twisted.protocols.tls.TLSMemoryBIOFactory}.

    @ivar level: C{may} or C{encrypt}.
    @ivar wrapper: whether each session starts with the handshake
        (C{smtpd_tls_wrappermode}).
    @ivar receivedHeader: whether the Received header records the
        protocol and cipher (C{smtpd_tls_received_header}).
    @ivar logLevel: C{smtpd_tls_loglevel}; from 1 each handshake is
        logged.
    @ivar authOnly: whether AUTH waits for TLS (C{smtpd_tls_auth_only}).
    """

    def __init__(self, context: SSL.Context, level: str, wrapper: bool,
                 receivedHeader: bool, logLevel: int, authOnly: bool,
                 askCertificate: bool = False, requireCertificate: bool = False,
                 trustStore: Optional[crypto.X509Store] = None,
                 fingerprintDigest: str = "sha256") -> None:
        self._context = context
        self.level = level
        self.wrapper = wrapper
        self.receivedHeader = receivedHeader
        self.logLevel = logLevel
        self.authOnly = authOnly
        #: C{smtpd_tls_ask_ccert} (or C{smtpd_tls_req_ccert}): a client
        #: certificate is asked for.
        self.askCertificate = askCertificate
        #: C{smtpd_tls_req_ccert} under mandatory TLS: a session without
        #: a trusted client certificate ends after the handshake.
        self.requireCertificate = requireCertificate
        self._trustStore = trustStore
        self.fingerprintDigest = fingerprintDigest

    @property
    def required(self) -> bool:
        """
        Whether mail is accepted only over TLS.
        """
        return self.level == "encrypt"

    @classmethod
    def fromConfig(cls, config) -> Optional["ServerTLS"]:
        """
        The TLS an smtpd configured as C{config} offers, or C{None} when
        it offers none.

        @raise TLSConfigError: TLS is required (C{encrypt}, wrapper mode)
            but cannot be had, or a setting asks for what tmta cannot do.
            With C{may}, a missing certificate only turns STARTTLS off,
            as in Postfix.
        """
        level = securityLevel(config)
        wrapper = config.getBool("smtpd_tls_wrappermode")
        if level not in SERVER_LEVELS:
            raise TLSConfigError(f"smtpd_tls_security_level = {level}: "
                                 "not a level smtpd has (none, may, encrypt)")
        if level == "none" and not wrapper:
            return None
        if level == "none":
            level = "encrypt"
        try:
            context = cls._makeContext(config, level)
        except TLSConfigError as e:
            if level == "may" and not wrapper:
                log.warn("cannot offer STARTTLS: {error}", error=str(e))
                return None
            raise TLSConfigError(f"TLS is required but cannot be offered: {e}") from None
        require = config.getBool("smtpd_tls_req_ccert")
        mandatory = level == "encrypt" or wrapper
        if require and not mandatory:
            log.warn("smtpd_tls_req_ccert = yes is ignored when TLS is not mandatory")
            require = False
        ask = require or config.getBool("smtpd_tls_ask_ccert")
        store = None
        if ask:
            store = cls._askForCertificates(context, config)
        digest = config.get("smtpd_tls_fingerprint_digest").strip().lower() or "sha256"
        if digest not in hashlib.algorithms_available:
            raise TLSConfigError(f"smtpd_tls_fingerprint_digest = {digest}: not a digest")
        return cls(context, level, wrapper,
                   receivedHeader=config.getBool("smtpd_tls_received_header"),
                   logLevel=_int(config.get("smtpd_tls_loglevel")),
                   authOnly=config.getBool("smtpd_tls_auth_only"),
                   askCertificate=ask, requireCertificate=require, trustStore=store,
                   fingerprintDigest=digest)

    @staticmethod
    def _askForCertificates(context: SSL.Context, config) -> crypto.X509Store:
        """
        Make C{context} ask clients for a certificate -- naming the CAs of
        C{smtpd_tls_CAfile}, as Postfix does -- and return the store the
        certificates are checked against after the handshake.  The
        handshake itself never fails on a certificate: what it is worth
        is the restrictions' call (and C{smtpd_tls_req_ccert}'s).
        """
        caFile = config.get("smtpd_tls_CAfile").strip()
        caPath = config.get("smtpd_tls_CApath").strip()
        store = crypto.X509Store()
        if caFile or caPath:
            try:
                store.load_locations(caFile or None, caPath or None)
                context.load_verify_locations(caFile or None, caPath or None)
            except (SSL.Error, crypto.Error) as e:
                raise TLSConfigError(f"cannot load the CA certificates "
                                     f"{caFile or caPath}: {_reason(e)}") from None
        if caFile:
            try:
                with open(caFile, "rb") as f:
                    names = [crypto.load_certificate(crypto.FILETYPE_PEM, m.group(0))
                             .get_subject() for m in _PEM_BLOCK.finditer(f.read())
                             if m.group(1) == b"CERTIFICATE"]
            except (OSError, crypto.Error) as e:
                raise TLSConfigError(f"cannot read {caFile}: {e}") from None
            context.set_client_ca_list(names)
        context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        return store

    def clientCertificate(self, connection: SSL.Connection) -> Optional[ClientCertificate]:
        """
        What the client's certificate is worth, after the handshake;
        C{None} when none was asked for or shown.
        """
        if not self.askCertificate:
            return None
        certificate = connection.get_peer_certificate()
        if certificate is None:
            return None
        chain = connection.get_peer_cert_chain() or [certificate]
        try:
            crypto.X509StoreContext(self._trustStore or crypto.X509Store(), certificate,
                                    chain[1:] or None).verify_certificate()
            trusted = True
        except crypto.X509StoreContextError:
            trusted = False
        return ClientCertificate(
            subject=certificate.get_subject().commonName or "",
            issuer=certificate.get_issuer().commonName or "",
            fingerprint=_fingerprint(certificateDer(certificate), self.fingerprintDigest),
            pubkeyFingerprint=_fingerprint(publicKeyDer(certificate), self.fingerprintDigest),
            trusted=trusted)

    @staticmethod
    def _makeContext(config, level: str) -> SSL.Context:
        chainFiles = config.getList("smtpd_tls_chain_files")
        pairs = [] if chainFiles else certificateFiles(config)
        chains = readChains(chainFiles) if chainFiles else []
        if not pairs and not chains:
            raise TLSConfigError("no server certificate: set smtpd_tls_cert_file "
                                 "or smtpd_tls_chain_files")
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        mandatory = level == "encrypt" or config.getBool("smtpd_tls_wrappermode")
        prefix = "smtpd_tls_mandatory_" if mandatory else "smtpd_tls_"
        exclude = config.get("smtpd_tls_exclude_ciphers")
        if mandatory:
            exclude += " " + config.get("smtpd_tls_mandatory_exclude_ciphers")
        configureContext(context, config.get(prefix + "protocols"),
                         config.get(prefix + "ciphers"), exclude, cipherLists(config))
        for certFile, keyFile in pairs:
            try:
                context.use_certificate_chain_file(certFile)
                context.use_privatekey_file(keyFile)
                context.check_privatekey()
            except SSL.Error as e:
                raise TLSConfigError(f"cannot load the certificate {certFile} "
                                     f"with the key {keyFile}: {_reason(e)}") from None
        for key, certificates in chains:
            try:
                context.use_privatekey(crypto.load_privatekey(crypto.FILETYPE_PEM, key))
                context.use_certificate(crypto.load_certificate(crypto.FILETYPE_PEM,
                                                                certificates[0]))
                for certificate in certificates[1:]:
                    context.add_extra_chain_cert(
                        crypto.load_certificate(crypto.FILETYPE_PEM, certificate))
                context.check_privatekey()
            except (SSL.Error, crypto.Error) as e:
                raise TLSConfigError(f"cannot load smtpd_tls_chain_files "
                                     f"({', '.join(chainFiles)}): {_reason(e)}") from None
        # Sessions resume from tickets; the id context lets OpenSSL's
        # cache accept them across the sessions of this process.
        context.set_session_id(b"tmta-smtpd")
        return context

    def getContext(self) -> SSL.Context:
        return self._context

    def describe(self, connection: SSL.Connection) -> str:
        """
        The handshake's summary, for the log and the Received header.
        """
        return connectionSummary(connection)


def _int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        return 0


def _reason(error: Exception) -> str:
    try:
        return "; ".join(item[2] for item in error.args[0]) or str(error)
    except (IndexError, TypeError):
        return str(error)
