"""
MTA-STS (RFC 8461): a domain's published promise that its MX hosts take
mail over TLS with certificates that verify.  The SMTP client finds the
policy -- the C{_mta-sts} TXT record says it exists and which version
is current, C{https://mta-sts.DOMAIN/.well-known/mta-sts.txt} holds it
-- and keeps it for its C{max_age}, on disk under C{data_directory} so
that every smtp process shares it.  Under C{enforce}, mail goes only to
the MX hosts the policy names, over TLS whose certificate verifies for
the MX host's name (as C{secure} with C{match=hostname}), or waits;
under C{testing}, it goes as it would anyway, and what would have failed
is logged.

The policy is fetched with twisted.web's client, through the reactor,
trusting C{smtp_tls_CAfile} when it is set and the system's CAs
otherwise; the TXT record is asked through twisted.names.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.names import dns
from twisted.names import error as dnserror

from tmta.logging import Logger

log = Logger()

#: The most of a policy body read (RFC 8461 section 3.3).
MAX_POLICY_SIZE = 64 * 1024
#: The longest a policy is kept (RFC 8461 section 3.2: max_age).
MAX_AGE_LIMIT = 31557600
#: How long a domain's TXT record answer stands before it is asked again.
RECHECK = 3600


class PolicyError(ValueError):
    """
    A policy body that does not parse.
    """


@dataclass(frozen=True)
class STSPolicy:
    """
    One domain's policy.

    @ivar mode: C{enforce}, C{testing} or C{none}.
    @ivar mx: the MX patterns (C{mx.example.com}, C{*.example.net}).
    @ivar maxAge: seconds it may be kept.
    @ivar id: the TXT record's C{id=} it was fetched under.
    @ivar fetched: when (seconds since the epoch).
    """

    mode: str
    mx: tuple
    maxAge: int
    id: str = ""
    fetched: float = 0.0

    def matches(self, host: str) -> bool:
        """
        Whether the MX host C{host} is one the policy names: exactly, or
        by a C{*.} pattern standing for one leftmost label.
        """
        host = host.rstrip(".").lower()
        for pattern in self.mx:
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def expired(self, now: float) -> bool:
        return now >= self.fetched + self.maxAge


def parsePolicy(text: str, id: str = "", fetched: float = 0.0) -> STSPolicy:
    """
    A policy body (RFC 8461 section 3.2).

    @raise PolicyError: it lacks C{version: STSv1}, a known C{mode}, a
        C{max_age}, or (but for C{mode: none}) any C{mx}.
    """
    fields: Dict[str, List[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    if fields.get("version", [""])[0] != "STSv1":
        raise PolicyError("no version: STSv1")
    mode = fields.get("mode", [""])[0].lower()
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError(f"unknown mode {mode!r}")
    age = fields.get("max_age", [""])[0]
    if not age.isdigit():
        raise PolicyError("no max_age")
    mx = tuple(m.rstrip(".").lower() for m in fields.get("mx", []) if m)
    if not mx and mode != "none":
        raise PolicyError("no mx")
    return STSPolicy(mode, mx, min(int(age), MAX_AGE_LIMIT), id, fetched)


def _recordId(texts: List[bytes]) -> Optional[str]:
    """
    The C{id=} of the one C{v=STSv1} record among C{texts}, or C{None}.
    """
    records = [t for t in texts if re.match(rb"^v=STSv1\s*(;|$)", t)]
    if len(records) != 1:
        return None
    for part in records[0].decode("ascii", "replace").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "id" and re.match(r"^[A-Za-z0-9]{1,32}$", value):
            return value
    return None


class PolicyFinder:
    """
    Finds and keeps MTA-STS policies.

    @param directory: where policies are kept between processes
        (C{$data_directory/mta-sts}).
    @param CAfile: the CAs the policy hosts' certificates are checked
        against; the system's when empty.
    """

    def __init__(self, reactor, resolver, directory: str, CAfile: str = "",
                 timeout: float = 20, clock=time.time) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.directory = directory
        self.timeout = timeout
        self.clock = clock
        self._memory: Dict[str, STSPolicy] = {}
        #: When each domain's TXT record was last asked, and the policy
        #: then in force: asked again only after L{RECHECK} seconds, not
        #: for every message.
        self._asked: Dict[str, Tuple[float, Optional[STSPolicy]]] = {}
        self._agent = self._makeAgent(CAfile)

    def _makeAgent(self, CAfile: str):
        from twisted.internet import ssl
        from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

        trustRoot = None
        if CAfile:
            with open(CAfile, "rb") as f:
                trustRoot = ssl.trustRootFromCertificates(
                    [ssl.Certificate.loadPEM(block) for block in _pemBlocks(f.read())])
        return Agent(self.reactor, BrowserLikePolicyForHTTPS(trustRoot),
                     connectTimeout=self.timeout)

    def _path(self, domain: str) -> str:
        return os.path.join(self.directory, domain)

    def _cached(self, domain: str) -> Optional[STSPolicy]:
        policy = self._memory.get(domain)
        if policy is not None:
            return policy
        try:
            with open(self._path(domain)) as f:
                data = json.load(f)
            policy = STSPolicy(data["mode"], tuple(data["mx"]), int(data["max_age"]),
                               data["id"], float(data["fetched"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._memory[domain] = policy
        return policy

    def _keep(self, domain: str, policy: STSPolicy) -> None:
        self._memory[domain] = policy
        try:
            os.makedirs(self.directory, exist_ok=True)
            temporary = self._path(domain) + f".{os.getpid()}"
            with open(temporary, "w") as f:
                json.dump({"mode": policy.mode, "mx": list(policy.mx),
                           "max_age": policy.maxAge, "id": policy.id,
                           "fetched": policy.fetched}, f)
            os.replace(temporary, self._path(domain))
        except OSError as e:
            log.warn("MTA-STS: cannot keep the policy of {domain}: {error}", domain=domain,
                     error=e.strerror)

    async def _recordId(self, domain: str) -> Optional[str]:
        """
        The current policy id the DNS gives, C{None} when it gives none.

        @raise Exception: the DNS could not answer.
        """
        try:
            answers, _, _ = await self.resolver.lookupText(f"_mta-sts.{domain}",
                                                           timeout=(self.timeout,))
        except dnserror.DNSNameError:
            return None
        return _recordId([b"".join(r.payload.data) for r in answers if r.type == dns.TXT])

    async def _fetch(self, domain: str) -> str:
        from twisted.web.client import readBody

        url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt".encode("ascii")
        response = await self._agent.request(b"GET", url)
        if response.code != 200:
            raise PolicyError(f"HTTP status {response.code}")
        kind = response.headers.getRawHeaders(b"content-type", [b""])[0]
        if not kind.lower().startswith(b"text/plain"):
            raise PolicyError(f"content type {kind.decode('ascii', 'replace')!r}")
        if response.length is not None and response.length > MAX_POLICY_SIZE:  # type: ignore
            raise PolicyError("policy too large")
        body = await readBody(response)
        if len(body) > MAX_POLICY_SIZE:
            raise PolicyError("policy too large")
        return body.decode("utf-8", "replace")

    def find(self, domain: str) -> defer.Deferred:
        """
        The policy of C{domain} in force now, or C{None} (a Deferred).
        A policy that cannot be fetched leaves the one kept, if any.
        """
        return defer.Deferred.fromCoroutine(self._find(domain.rstrip(".").lower()))

    async def _find(self, domain: str) -> Optional[STSPolicy]:
        now = self.clock()
        asked = self._asked.get(domain)
        if asked is not None and now - asked[0] < RECHECK and (
                asked[1] is None or not asked[1].expired(now)):
            return asked[1]
        policy = await self._current(domain, now)
        self._asked[domain] = (now, policy)
        return policy

    async def _current(self, domain: str, now: float) -> Optional[STSPolicy]:
        """
        The policy in force: the one kept, unless the TXT record names a
        newer one, which is fetched.
        """
        cached = self._cached(domain)
        if cached is not None and cached.expired(now):
            cached = None
        try:
            current = await self._recordId(domain)
        except Exception as e:
            log.info("MTA-STS: no TXT answer for {domain}: {error}", domain=domain,
                     error=str(e) or type(e).__name__)
            return cached
        if current is None or (cached is not None and cached.id == current):
            return cached
        try:
            text = await defer.Deferred.fromCoroutine(self._fetch(domain)).addTimeout(
                self.timeout, self.reactor)
            policy = parsePolicy(text, current, now)
        except Exception as e:
            log.warn("MTA-STS: cannot fetch the policy of {domain}: {error}", domain=domain,
                     error=str(e) or type(e).__name__)
            return cached
        self._keep(domain, policy)
        return policy


def _pemBlocks(data: bytes) -> List[bytes]:
    return re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data,
                      re.DOTALL)
