"""
What the TLS client (smtp, lmtp) and the TLS server (smtpd) share: how
Postfix's protocol lists and cipher grades become OpenSSL settings, and
how a finished handshake is described in the log.

Only processes that speak TLS import this module (it loads OpenSSL).
"""

from __future__ import annotations

from typing import Dict, Tuple

from OpenSSL import SSL, crypto

from tmta.config import splitList

_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_OPENSSL_VERSIONS = {
    "TLSv1": SSL.TLS1_VERSION,
    "TLSv1.1": SSL.TLS1_1_VERSION,
    "TLSv1.2": SSL.TLS1_2_VERSION,
    "TLSv1.3": SSL.TLS1_3_VERSION,
}

#: Postfix's cipher grades.
GRADES = ("export", "low", "medium", "high", "null")


class TLSConfigError(ValueError):
    """
    A TLS setting tmta cannot honour.
    """


def allowedVersions(spec: str) -> Tuple[int, int]:
    """
    The lowest and highest OpenSSL protocol versions a Postfix protocol
    list allows: bounds (C{>=TLSv1.2}, C{<=TLSv1.3}), exclusions
    (C{!SSLv2, !SSLv3}), or the protocols to allow, by name.

    @raise TLSConfigError: an unknown protocol name, or none left.
    """
    items = splitList(spec.replace(":", " "))
    named = [item for item in items if item in _PROTOCOLS]
    allowed = named or list(_PROTOCOLS)
    for item in items:
        if item in _PROTOCOLS:
            continue
        for prefix in (">=", "<=", "!"):
            if item.startswith(prefix):
                name = item[len(prefix):]
                break
        else:
            raise TLSConfigError(f"unknown TLS protocol {item!r}")
        if name not in _PROTOCOLS:
            raise TLSConfigError(f"unknown TLS protocol {item!r}")
        bound = _PROTOCOLS.index(name)
        if prefix == ">=":
            allowed = [p for p in allowed if _PROTOCOLS.index(p) >= bound]
        elif prefix == "<=":
            allowed = [p for p in allowed if _PROTOCOLS.index(p) <= bound]
        else:
            allowed = [p for p in allowed if p != name]
    usable = [p for p in allowed if p in _OPENSSL_VERSIONS]
    if not usable:
        raise TLSConfigError(f"no TLS protocol left by {spec!r}")
    return _OPENSSL_VERSIONS[usable[0]], _OPENSSL_VERSIONS[usable[-1]]


def cipherLists(config) -> Dict[str, str]:
    """
    The OpenSSL cipher list for each of Postfix's grades
    (C{tls_medium_cipherlist}, ...).
    """
    return {grade: config.get(f"tls_{grade}_cipherlist") for grade in GRADES}


def configureContext(context: SSL.Context, protocols: str, grade: str, exclude: str,
                     lists: Dict[str, str]) -> None:
    """
    Limit C{context} to the protocol versions of C{protocols} and the
    ciphers of C{grade} (a grade name, or an OpenSSL cipher list) less
    those of C{exclude}.

    @raise TLSConfigError: OpenSSL accepts none of them.
    """
    low, high = allowedVersions(protocols)
    context.set_min_proto_version(low)
    context.set_max_proto_version(high)
    ciphers = lists.get(grade.lower(), grade)
    for excluded in exclude.replace(",", " ").replace(":", " ").split():
        ciphers += f":!{excluded}"
    try:
        context.set_cipher_list(ciphers.encode("ascii"))
    except SSL.Error as e:
        raise TLSConfigError(f"cipher list {ciphers!r} is not usable: {e}") from None
    context.set_options(SSL.OP_NO_COMPRESSION)


def connectionSummary(connection: SSL.Connection) -> str:
    """
    A finished handshake as Postfix logs it: protocol, cipher and bits
    (C{TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)}).
    """
    version = connection.get_protocol_version_name()
    cipher = connection.get_cipher_name()
    bits = connection.get_cipher_bits()
    return f"{version} with cipher {cipher} ({bits}/{bits} bits)"


def certificateDer(certificate: crypto.X509) -> bytes:
    """
    A certificate's DER encoding: what its fingerprint, or a TLSA record
    of the whole certificate, is made from.
    """
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate)


def publicKeyDer(certificate: crypto.X509) -> bytes:
    """
    A certificate's public key, as the DER of its SubjectPublicKeyInfo:
    what a public key fingerprint, or a TLSA record of the key, is made
    from.
    """
    return crypto.dump_publickey(crypto.FILETYPE_ASN1, certificate.get_pubkey())
