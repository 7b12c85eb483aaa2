"""
DKIM (RFC 6376, and RFC 8463's Ed25519): signing mail from this site's
own clients with a key chosen by its From: domain, and verifying the
signatures of incoming mail.

dkimpy does the canonicalization, the choice of signed headers and the
whole of verification.  Signing makes its own signature over dkimpy's
canonical text with C{cryptography} (OpenSSL) because dkimpy's RSA is
pure Python: about 5 ms per 2048-bit signature, several times what the
rest of a message costs tmta.  Verification asks the DNS for every
signature's key first, through twisted.names, and hands dkimpy the
answers: nothing waits on the DNS on the reactor thread.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from twisted.internet import defer
from twisted.names import dns
from twisted.names import error as dnserror
from zope.interface import implementer

from tmta.authentication.message import AuthenticationResult, MessageUnderTest
from tmta.interfaces import IMessageAuthenticator
from tmta.logging import Logger

log = Logger()

#: What is signed by default: RFC 6376 section 5.4.1's list, less the
#: headers a forwarder or list commonly changes.
DEFAULT_SIGNED_HEADERS = (
    "from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from",
    "resent-to", "resent-cc", "in-reply-to", "references", "list-id", "list-help",
    "list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
    "message-id", "mime-version", "content-type", "content-transfer-encoding")

#: The smallest RSA key whose signature counts (RFC 8301: 1024 bits).
MINIMUM_RSA_BITS = 1024


class KeyProblem(ValueError):
    """
    A signing key that cannot be used: unreadable, or of no kind DKIM
    signs with.
    """


@dataclass(frozen=True)
class SigningKey:
    """
    A private key and where its public half is published.

    @ivar algorithm: C{rsa-sha256} or C{ed25519-sha256}.
    @ivar key: the C{cryptography} private key.
    """

    domain: str
    selector: str
    algorithm: str
    key: object

    def sign(self, digest: bytes) -> bytes:
        """
        The signature over a SHA-256 digest of the signed headers.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        if self.algorithm == "ed25519-sha256":
            return self.key.sign(digest)  # type: ignore[attr-defined]
        return self.key.sign(  # type: ignore[attr-defined]
            digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def loadPrivateKey(data: bytes, domain: str = "", selector: str = "") -> SigningKey:
    """
    A signing key from a key file: PEM (PKCS#1 or PKCS#8, RSA or
    Ed25519, as C{opendkim-genkey} and C{tmta dkim keygen} write them),
    or an Ed25519 seed in base64 (as dkimpy's C{dknewkey} writes it).

    @raise KeyProblem: no key DKIM can sign with.
    """
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if b"-----BEGIN" in data:
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyProblem(f"not a usable private key: {e}")
    else:
        try:
            seed = base64.b64decode(b"".join(data.split()), validate=True)
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        except ValueError:
            raise KeyProblem("neither a PEM private key nor an Ed25519 seed in base64")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MINIMUM_RSA_BITS:
            raise KeyProblem(f"an RSA key of {key.key_size} bits is too small to count "
                            f"(RFC 8301: at least {MINIMUM_RSA_BITS})")
        return SigningKey(domain, selector, "rsa-sha256", key)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return SigningKey(domain, selector, "ed25519-sha256", key)
    raise KeyProblem(f"a {type(key).__name__} cannot make DKIM signatures")


def publicRecord(key: SigningKey) -> str:
    """
    The TXT record that publishes C{key}'s public half
    (C{selector._domainkey.domain}).
    """
    from cryptography.hazmat.primitives import serialization

    public = key.key.public_key()  # type: ignore[attr-defined]
    if key.algorithm == "ed25519-sha256":
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(serialization.Encoding.DER,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; h=sha256; k=rsa; p={base64.b64encode(der).decode()}"


def generateKey(algorithm: str = "rsa", bits: int = 2048) -> bytes:
    """
    A new private key in PEM: RSA (PKCS#1, as OpenDKIM writes it) of
    C{bits} bits, or Ed25519 (PKCS#8).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
    if algorithm != "rsa":
        raise ValueError(f"unknown key type {algorithm!r}: rsa or ed25519")
    if bits < MINIMUM_RSA_BITS:
        raise ValueError(f"an RSA key needs at least {MINIMUM_RSA_BITS} bits")
    return rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())


def zoneRecord(key: SigningKey) -> str:
    """
    The record to publish, as a zone file line: the TXT data cut into
    strings of at most 255 characters.
    """
    text = publicRecord(key)
    strings = " ".join(f'"{text[i:i + 250]}"' for i in range(0, len(text), 250))
    return f"{key.selector}._domainkey.{key.domain}. IN TXT ( {strings} )"


def _wireHeaders(headers: Sequence[bytes]) -> List[Tuple[bytes, bytes]]:
    """
    The header section as dkimpy's (name, value) pairs: the value all
    after the colon, CRLF line ends, CRLF at the end.
    """
    pairs = []
    for header in headers:
        name, sep, value = header.partition(b":")
        if sep:
            pairs.append((name, value.replace(b"\n", b"\r\n") + b"\r\n"))
    return pairs


def _fold(tags: List[bytes], indent: int = 16) -> bytes:
    """
    Tags joined with C{; }, a new line (CRLF TAB) begun before a tag that
    would pass 76 columns; a long C{h=} list folds after its colons.

    @param indent: the columns the first line starts at (after the
        header's name).
    """
    words: List[bytes] = []
    for tag in tags:
        if tag.startswith(b"h=") and len(tag) > 70:
            names = tag.split(b":")
            words.extend(name + b":" for name in names[:-1])
            words.append(names[-1] + b";")
        else:
            words.append(tag + b";")
    lines: List[bytes] = []
    line = b""
    for word in words:
        if line and (0 if lines else indent) + len(line) + 1 + len(word) > 76:
            lines.append(line)
            line = word
        else:
            line = line + b" " + word if line else word
    lines.append(line)
    return b"\r\n\t".join(lines)


class Signer:
    """
    How this site signs: canonicalization and which headers.

    @param canonicalization: C{header/body}, e.g. C{relaxed/relaxed}.
    @param signedHeaders: header names signed (each instance present).
    @param oversignedHeaders: names signed once more than present, so
        that none can be added after signing (RFC 6376 section 8.15).
    """

    def __init__(self, canonicalization: str = "relaxed/relaxed",
                 signedHeaders: Sequence[str] = DEFAULT_SIGNED_HEADERS,
                 oversignedHeaders: Sequence[str] = ("from",),
                 clock=time.time) -> None:
        try:
            self.policy = CanonicalizationPolicy.from_c_value(canonicalization.encode())
        except InvalidCanonicalizationPolicyError:
            raise ValueError(f"unknown DKIM canonicalization {canonicalization!r}: "
                             "simple or relaxed, for the header and the body "
                             "(relaxed/relaxed)")
        self.signedHeaders = [h.lower() for h in signedHeaders]
        self.oversignedHeaders = {h.lower() for h in oversignedHeaders}
        if "from" not in self.signedHeaders:
            raise ValueError("the From: header must be signed (RFC 6376 section 5.4)")
        self.clock = clock

    def signatureHeader(self, headers: Sequence[bytes], body: bytes, key: SigningKey) -> bytes:
        """
        The C{DKIM-Signature} header (LF line ends, no LF at the end) of
        the message made of C{headers} and C{body} (LF line ends).
        """
        wire = _wireHeaders(headers)
        present: Dict[bytes, int] = {}
        for field, _ in wire:
            present[field.strip().lower()] = present.get(field.strip().lower(), 0) + 1
        names: List[bytes] = []
        for name in self.signedHeaders:
            encoded = name.encode()
            count = present.get(encoded, 0) + (1 if name in self.oversignedHeaders else 0)
            names.extend([encoded] * count)
        canonicalBody = self.policy.canonicalize_body(body.replace(b"\n", b"\r\n"))
        bodyHash = base64.b64encode(hashlib.sha256(canonicalBody).digest())
        tags = [b"v=1", b"a=" + key.algorithm.encode(), b"c=" + self.policy.to_c_value(),
                b"d=" + key.domain.encode("idna"), b"s=" + key.selector.encode(),
                b"t=%d" % int(self.clock()), b"h=" + b":".join(names), b"bh=" + bodyHash]
        unsigned = b" " + _fold(tags) + b"\r\n\tb="
        hasher = hashlib.sha256()
        dkim.hash_headers(hasher, self.policy, self.policy.canonicalize_headers(wire),
                          names, (b"DKIM-Signature", unsigned), {})
        signature = base64.b64encode(key.sign(hasher.digest()))
        folded = b"\r\n\t ".join(signature[i:i + 72] for i in range(0, len(signature), 72))
        return (b"DKIM-Signature:" + unsigned + folded).replace(b"\r\n", b"\n")


def domainOf(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower() if "@" in address else ""


def fromDomain(message: MessageUnderTest) -> str:
    """
    The domain of the (one) From: header's address; empty when there is
    no From: or it holds no one address.
    """
    from email.utils import getaddresses

    values = message.headerValues("from")
    if len(values) != 1:
        return ""
    addresses = [a for _, a in getaddresses(values) if a]
    if len(addresses) != 1:
        return ""
    return domainOf(addresses[0])


@implementer(IMessageAuthenticator)
class DKIMSigning:
    """
    Signs mail from this site's own clients (C{dkim_sign}): the From:
    domain is looked up in C{dkim_signing_table} -- the address, the
    domain, then each parent domain as C{.parent} -- for a key name,
    and the key name in C{dkim_key_table} for C{domain:selector:keyfile}
    (OpenDKIM's KeyTable form).  With no key table, the signing table
    gives C{domain:selector:keyfile} itself.

    @param lookUp: runs a table lookup (C{lookUp(f, *args)}), in a
        thread when a table is on another server.
    """

    def __init__(self, signingTables: List, keyTables: List, signer: Signer,
                 lookUp=None) -> None:
        self.signingTables = signingTables
        self.keyTables = keyTables
        self.signer = signer
        self.lookUp = lookUp or (lambda f, *args: f(*args))
        self._keys: Dict[str, SigningKey] = {}

    def keySpec(self, address: str, domain: str) -> Optional[str]:
        """
        C{domain:selector:keyfile} for mail from C{address} (whose
        domain is C{domain}), or C{None}: not signed.

        @raise tmta.tables.TableLookupError: a table could not be read.
        """
        from tmta.tables import lookupAny

        keys = [address.lower()] if address else []
        labels = domain.split(".")
        keys += [domain] + ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
        for key in keys:
            name = lookupAny(self.signingTables, key)
            if name is None:
                continue
            name = name.strip()
            if not self.keyTables:
                return name
            spec = lookupAny(self.keyTables, name)
            if spec is None:
                raise ValueError(f"dkim_signing_table names key {name!r}, which "
                                 "dkim_key_table does not have")
            return spec.strip()
        return None

    def key(self, spec: str) -> SigningKey:
        """
        The key C{domain:selector:keyfile} names, read once.

        @raise KeyProblem: it cannot be read or used.
        """
        cached = self._keys.get(spec)
        if cached is None:
            cached = self._keys[spec] = readKeySpec(spec)
        return cached

    def preload(self, spec: str) -> None:
        """
        Read the key C{spec} names now, if it can be read: while cleanup
        is still root (keys are commonly readable by root alone).
        """
        try:
            self.key(spec)
        except KeyProblem:
            pass  # refused at start-up; a lookup that names it reports it

    def _choose(self, address: str, domain: str) -> Optional[SigningKey]:
        spec = self.keySpec(address, domain)
        return None if spec is None else self.key(spec)

    @defer.inlineCallbacks
    def authenticate(self, message: MessageUnderTest):
        if not message.signing:
            return
        from email.utils import getaddresses

        domain = fromDomain(message)
        if not domain:
            return
        address = getaddresses(message.headerValues("from"))[0][1]
        key = self.lookUp(self._choose, address, domain)
        if isinstance(key, defer.Deferred):
            key = yield key
        if key is None:
            return
        message.prepend.append(self.signer.signatureHeader(message.headers, message.body, key))
        log.info("{queueId}: DKIM-Signature field added (s={selector}, d={domain})",
                 queueId=message.queueId, selector=key.selector, domain=key.domain)


def readKeySpec(spec: str) -> SigningKey:
    """
    The key C{domain:selector:keyfile} names.

    @raise KeyProblem: the spec is malformed, or the file cannot be read
        or holds no usable key.
    """
    parts = spec.split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise KeyProblem(f"{spec!r} is not domain:selector:keyfile")
    domain, selector, path = parts
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        hint = ""
        if e.errno == errno.EACCES:
            hint = (" (a key a table on another server names must be readable by "
                    "mail_owner; keys in local tables are read at start-up, as root)")
        raise KeyProblem(f"cannot read DKIM key {path}: {e.strerror}{hint}")
    try:
        return loadPrivateKey(data, domain.lower().rstrip("."), selector)
    except KeyProblem as e:
        raise KeyProblem(f"DKIM key {path}: {e}")


def signatureTags(header: bytes) -> Dict[bytes, bytes]:
    """
    A DKIM-Signature header's tags (empty when they cannot be read).
    """
    _, _, value = header.partition(b":")
    try:
        return dkim.util.parse_tag_value(value.replace(b"\n", b"\r\n"))
    except Exception:
        return {}


class KeyAnswers:
    """
    The DNS's answers for the keys a message's signatures name, asked
    for before dkimpy verifies (L{DKIMVerification}).  C{lookUp} is what
    dkimpy calls as its C{dnsfunc}.
    """

    def __init__(self) -> None:
        self.records: Dict[bytes, Optional[bytes]] = {}
        self.failed: Dict[bytes, str] = {}

    @defer.inlineCallbacks
    def fetch(self, resolver, names: Sequence[bytes], timeout: float):
        def one(name: bytes):
            d = resolver.lookupText(name.decode("ascii", "replace"), timeout=(timeout,))
            d.addCallbacks(lambda result: self._answered(name, result),
                           lambda reason: self._failed(name, reason))
            return d

        yield defer.DeferredList([one(n) for n in dict.fromkeys(names)])

    def _answered(self, name: bytes, result) -> None:
        answers, _, _ = result
        texts = [b"".join(r.payload.data) for r in answers if r.type == dns.TXT]
        self.records[name] = texts[0] if texts else None

    def _failed(self, name: bytes, reason) -> None:
        if reason.check(dnserror.DNSNameError):
            self.records[name] = None
        else:
            self.failed[name] = reason.getErrorMessage() or reason.type.__name__

    def lookUp(self, name: bytes, timeout: float = 5) -> Optional[bytes]:
        name = name.rstrip(b".")
        if name in self.failed:
            raise dkim.DnsTimeoutError(self.failed[name])
        return self.records.get(name)


@implementer(IMessageAuthenticator)
class DKIMVerification:
    """
    Verifies every DKIM signature of incoming mail (C{dkim_verify}):
    one C{dkim=} result each -- C{pass}, C{fail}, C{neutral} (a
    signature that cannot count: too small a key, a malformed header),
    C{permerror} (no key published), C{temperror} (the DNS failed) -- or
    C{dkim=none} for a message with none.
    """

    def __init__(self, resolver, timeout: float = 5, minimumKeyBits: int = MINIMUM_RSA_BITS,
                 signatureLimit: int = 10) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self.minimumKeyBits = minimumKeyBits
        self.signatureLimit = signatureLimit

    @defer.inlineCallbacks
    def authenticate(self, message: MessageUnderTest):
        if not message.verifying:
            return
        signatures = [h for h in message.headers
                      if h.split(b":", 1)[0].strip().lower() == b"dkim-signature"]
        if not signatures:
            message.results.append(AuthenticationResult("dkim", "none"))
            return
        signatures = signatures[:self.signatureLimit]
        tags = [signatureTags(h) for h in signatures]
        names = [t[b"s"] + b"._domainkey." + t[b"d"].rstrip(b".")
                 for t in tags if t.get(b"s") and t.get(b"d")]
        answers = KeyAnswers()
        yield answers.fetch(self.resolver, names, self.timeout)
        try:
            verifier = dkim.DKIM(message.wireText(), minkey=self.minimumKeyBits,
                                 timeout=self.timeout)
        except dkim.DKIMException as e:
            for t in tags:
                message.results.append(self._result(t, "permerror", str(e)))
            return
        for index, t in enumerate(tags):
            message.results.append(self._verifyOne(verifier, index, t, answers))

    def _verifyOne(self, verifier, index: int, tags: Dict[bytes, bytes],
                   answers: KeyAnswers) -> AuthenticationResult:
        # dkimpy reports a key it cannot have as a signature that does
        # not verify: the key is judged here first.
        if tags.get(b"s") and tags.get(b"d"):
            name = tags[b"s"] + b"._domainkey." + tags[b"d"].rstrip(b".")
            if name in answers.failed:
                return self._result(tags, "temperror",
                                    f"key lookup failed: {answers.failed[name]}")
            record = answers.records.get(name)
            if record is None:
                return self._result(tags, "permerror", "no key for signature")
            try:
                dkim.evaluate_pk(name, record)
            except Exception as e:
                return self._result(tags, "permerror", f"unusable key: {e}")
        try:
            if verifier.verify(idx=index, dnsfunc=answers.lookUp):
                bits = getattr(verifier, "keysize", 0)
                return self._result(tags, "pass", comment=f"{bits}-bit key" if bits else "")
            return self._result(tags, "fail", "signature verification failed")
        except dkim.KeyFormatError as e:
            return self._result(tags, "permerror", str(e))
        except dkim.ValidationError as e:
            if str(e).startswith("body hash mismatch"):
                return self._result(tags, "fail", "body hash did not verify")
            return self._result(tags, "neutral", str(e))
        except dkim.DKIMException as e:
            return self._result(tags, "permerror", str(e))

    @staticmethod
    def _result(tags: Dict[bytes, bytes], result: str, reason: str = "",
                comment: str = "") -> AuthenticationResult:
        properties = []
        for tag, name in ((b"d", "header.d"), (b"i", "header.i"), (b"a", "header.a"),
                          (b"s", "header.s")):
            if tags.get(tag):
                properties.append((name, tags[tag].decode("utf-8", "replace")))
        if tags.get(b"b"):
            properties.append(("header.b", b"".join(tags[b"b"].split())[:8].decode(
                "ascii", "replace")))
        return AuthenticationResult("dkim", result, properties, reason=reason, comment=comment)


def keyFileProblems(spec: str) -> Optional[str]:
    """
    Why the key C{domain:selector:keyfile} cannot sign, or C{None}.
    """
    try:
        readKeySpec(spec)
    except KeyProblem as e:
        return str(e)
    return None


__all__ = ["DKIMSigning", "DKIMVerification", "Signer", "SigningKey", "generateKey",
           "loadPrivateKey", "publicRecord", "zoneRecord", "readKeySpec"]
