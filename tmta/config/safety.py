"""
Failing closed: settings tmta cannot honour yet that would make mail
less safe if they were ignored, and values that are not of their
parameter's type.

An operator who writes C{smtpd_tls_security_level = encrypt} or
C{smtpd_client_restrictions = reject} expects it enforced.  Until tmta
enforces such a setting, start-up stops with a message naming it, its
file and its line: a server that quietly accepts plaintext mail, or mail
from clients it was told to refuse, is worse than one that does not
start.  Settings tmta does not act on but whose absence makes nothing
less safe are warned about instead.
"""

from __future__ import annotations

import re
from typing import Callable, Dict, List, Optional, Tuple

from .maincf import MainConfig, parseBool, parseTime, splitList

#: What smtpd cannot honour yet, and a predicate on the value saying when
#: ignoring it would be unsafe.
_SMTPD_UNSAFE: Dict[str, Tuple[Callable[[str], bool], str]] = {}


def _yes(value: str) -> bool:
    try:
        return parseBool(value)
    except ValueError:
        return True  # not a boolean: the type check names it


def _nonEmpty(value: str) -> bool:
    return bool(value.strip())


def _nonZero(value: str) -> bool:
    return value.strip() not in ("", "0")


def _clientCertificateLevel(value: str) -> bool:
    return value.strip().lower() not in ("", "none", "may", "encrypt")


_SMTPD_UNSAFE["smtpd_tls_security_level"] = (
    _clientCertificateLevel, "smtpd's levels are none, may and encrypt")
_SMTPD_UNSAFE["smtpd_upstream_proxy_protocol"] = (
    lambda value: value.strip() not in ("", "haproxy"),
    "the proxy protocol supported is haproxy: every client would appear to come from the "
    "proxy, and permit_mynetworks would let it relay")

#: Rate and count limits: counted by anvil, so unsafe to set explicitly
#: without it (their defaults are those of a Postfix without anvil).
_CLIENT_LIMITS = (
    "smtpd_client_connection_count_limit",
    "smtpd_client_connection_rate_limit",
    "smtpd_client_message_rate_limit",
    "smtpd_client_recipient_rate_limit",
    "smtpd_client_new_tls_session_rate_limit",
    "smtpd_client_auth_rate_limit",
)

#: Harmless when ignored.
_SMTPD_HARMLESS: Dict[str, Tuple[Callable[[str], bool], str]] = {
}


#: Parameters tmta does not act on yet whose setting asks for more
#: safety than tmta gives without them: set to such a value, they stop
#: start-up rather than being warned about.  (smtpd's own are above.)
UNSAFE_WHEN_IGNORED: Dict[str, Tuple[Callable[[str], bool], str]] = {
    "message_reject_characters": (_nonEmpty, "messages are not checked for these characters"),
    "local_login_sender_maps": (
        lambda value: value.strip() not in ("", "static:*"),
        "sendmail -f is not restricted by local login yet"),
    "require_home_directory": (_yes, "local delivery does not check home directories yet"),
    "smtp_tls_per_site": (_nonEmpty, "use smtp_tls_policy_maps: the per-site table is not "
                          "implemented, and its TLS requirements would be dropped"),
    "smtp_tls_trust_anchor_file": (_nonEmpty, "trust anchors are not implemented: the "
                                   "system's CAs would be trusted instead"),
    "lmtp_tls_per_site": (_nonEmpty, "the per-site TLS table is not implemented"),
    "lmtp_tls_trust_anchor_file": (_nonEmpty, "trust anchors are not implemented"),
    "mailbox_transport_maps": (_nonEmpty, "per-user mailbox transports are not implemented: "
                               "mail would be delivered elsewhere"),
    "mailbox_command_maps": (_nonEmpty, "per-user mailbox commands are not implemented"),
    "fallback_transport_maps": (_nonEmpty, "per-user fallback transports are not "
                                "implemented"),
}
for _name in ("strict_7bit_headers", "strict_8bitmime", "strict_8bitmime_body",
              "strict_mime_encoding_domain"):
    UNSAFE_WHEN_IGNORED[_name] = (_yes, "this strictness is not implemented yet")
for _client in ("smtp", "lmtp"):
    UNSAFE_WHEN_IGNORED[f"{_client}_dns_reply_filter"] = (
        _nonEmpty, "DNS reply filters are not implemented yet")
UNSAFE_WHEN_IGNORED["smtpd_dns_reply_filter"] = (
    _nonEmpty, "DNS reply filters are not implemented yet")


def unsafeIgnored(config: MainConfig, names) -> List[Tuple[str, str]]:
    """
    Among C{names}, the parameters tmta does not act on whose value asks
    for safety it would not give.

    @return: C{(name, why)} pairs.
    """
    found = []
    for name in names:
        entry = UNSAFE_WHEN_IGNORED.get(name)
        if entry is None or config.isImplemented(name):
            continue
        unsafe, why = entry
        value = config.get(name)
        if unsafe(value):
            found.append((name, f"{value!r} cannot be honoured: {why}"))
    return found


class Problem:
    """
    One setting: the parameter, where it was set, and what is wrong.
    """

    def __init__(self, name: str, where: str, text: str) -> None:
        self.name, self.where, self.text = name, where, text

    def __str__(self) -> str:
        return f"{self.where}: {self.name}: {self.text}"


def _where(name: str, main: MainConfig, overrides: Dict[str, str],
           masterWhere: Optional[str]) -> str:
    if name in overrides and masterWhere:
        return masterWhere
    line = main.lineOf(name)
    return f"{main.path or 'main.cf'}, line {line}" if line else (main.path or "main.cf")


#: The table types verify keeps its cache in (C{address_verify_map}).
VERIFY_MAP_TYPES = ("btree", "hash", "lmdb")


def verifyMapProblem(spec: str) -> Optional[str]:
    """
    Why verify cannot keep its cache in C{address_verify_map = spec}, or
    C{None}: it writes a C{btree:}, C{hash:} or C{lmdb:} table at an
    absolute path, or keeps the cache in memory (empty).
    """
    given = spec = spec.strip()
    if spec.startswith("proxy:"):
        spec = spec[len("proxy:"):]
    if not spec:
        return None
    kind, _, path = spec.partition(":")
    if kind.lower() in VERIFY_MAP_TYPES and path.startswith("/"):
        return None
    return (f"address_verify_map = {given}: tmta keeps the address verification cache in "
            f"a {', '.join(VERIFY_MAP_TYPES)} table at an absolute path, or in memory "
            "(empty)")


def proxyWriteProblem(config, name: str) -> Optional[str]:
    """
    Why the cache table parameter C{name} may not be C{proxy:TABLE}: a
    TABLE that C{proxy_write_maps} does not list, which Postfix's
    proxywrite service would refuse; or C{None}.

    Each cache has one writer in tmta (the verify or postscreen
    process), so a C{proxy:} cache is kept by that process itself:
    what Postfix's proxywrite does, sharing the table between
    processes, has nothing to do.
    """
    spec = config.get(name).strip()
    if not spec.startswith("proxy:"):
        return None
    approved = {item[len("proxy:"):] if item.startswith("proxy:") else item
                for item in splitList(config.get("proxy_write_maps"))}
    if spec[len("proxy:"):] in approved:
        return None
    return (f"{name} = {spec}: {spec[len('proxy:'):]} is not in proxy_write_maps, so the "
            "proxywrite service would refuse it")


#: Restrictions that ask the verify service.
_NEEDS_VERIFY = frozenset({"reject_unverified_sender", "reject_unverified_recipient"})


def _restrictionParameters(config: MainConfig) -> List[str]:
    """
    The parameters that hold smtpd restriction lists: the stages' and
    the restriction classes'.
    """
    names = [n for n in config.names()
             if n.startswith("smtpd_") and n.endswith("_restrictions")]
    return names + [n for n in splitList(config.get("smtpd_restriction_classes"))
                    if config.raw(n) is not None]


def _pluginSASLTypes() -> List[str]:
    """
    The C{smtpd_sasl_type} values plugins claim to add.  Whether each
    really provides L{tmta.interfaces.ISASLBackendType} is smtpd's check
    (L{tmta.smtpd.checking.configurationProblems}).
    """
    import twisted.plugins
    from twisted.plugin import getPlugins

    from tmta.interfaces import ISASLBackendType

    names = []
    for plugin in getPlugins(ISASLBackendType, twisted.plugins):
        name = getattr(plugin, "name", None)
        if isinstance(name, str):
            names.append(name)
    return names


def smtpdProblems(config: MainConfig, main: MainConfig, overrides: Dict[str, str],
                  masterWhere: Optional[str] = None,
                  anvil: bool = False,
                  verify: bool = False) -> Tuple[List[Problem], List[Problem]]:
    """
    What an smtpd service configured as C{config} is asked to do and
    cannot.

    @param main: main.cf itself, to tell where a value was set.
    @param overrides: the service's C{-o} settings.
    @param masterWhere: C{"master.cf, line N"} for the service.
    @param anvil: whether master.cf runs the anvil service, which the
        client limits need.
    @param verify: whether master.cf runs the verify service, which
        C{reject_unverified_sender} and C{reject_unverified_recipient}
        need.
    @return: C{(fatal, harmless)}: settings that must stop start-up, and
        settings to warn about.
    """
    fatal: List[Problem] = []
    harmless: List[Problem] = []
    for name, (unsafe, why) in _SMTPD_UNSAFE.items():
        value = config.get(name)
        if value and unsafe(value):
            fatal.append(Problem(name, _where(name, main, overrides, masterWhere),
                                 f"{value!r} cannot be honoured: {why}"))
    for name in _CLIENT_LIMITS:
        if not anvil and config.isExplicit(name) and _nonZero(config.get(name)):
            fatal.append(Problem(name, _where(name, main, overrides, masterWhere),
                                 "client rate and count limits need the anvil service: "
                                 "add 'anvil unix - - n - 1 anvil' to master.cf"))
    if not verify:
        for name in _restrictionParameters(config):
            words = {w.lower() for w in splitList(config.get(name))}
            for restriction in sorted(words & _NEEDS_VERIFY):
                fatal.append(Problem(name, _where(name, main, overrides, masterWhere),
                                     f"{restriction} needs the verify service: add "
                                     "'verify unix - - n - 1 verify' to master.cf"))
    tlsRequired = (config.get("smtpd_tls_security_level").strip().lower() == "encrypt"
                   or _yes(config.get("smtpd_tls_wrappermode"))
                   or (not config.get("smtpd_tls_security_level").strip()
                       and _yes(config.get("smtpd_enforce_tls"))))
    if tlsRequired and not (config.get("smtpd_tls_cert_file").strip()
                            or config.get("smtpd_tls_chain_files").strip()
                            or config.get("smtpd_tls_eccert_file").strip()):
        name = "smtpd_tls_wrappermode" if _yes(config.get("smtpd_tls_wrappermode")) \
            else "smtpd_tls_security_level"
        fatal.append(Problem(name, _where(name, main, overrides, masterWhere),
                             "TLS is required but no certificate is configured "
                             "(smtpd_tls_cert_file or smtpd_tls_chain_files)"))
    if _yes(config.get("smtpd_sasl_auth_enable")):
        from tmta.sasl import BACKEND_TYPES, filterMechanisms

        kind = config.get("smtpd_sasl_type").strip().lower()
        if kind not in BACKEND_TYPES and kind not in _pluginSASLTypes():
            name = "smtpd_sasl_type" if config.isExplicit("smtpd_sasl_type") \
                else "smtpd_sasl_auth_enable"
            fatal.append(Problem(name, _where(name, main, overrides, masterWhere),
                                 f"smtpd_sasl_type {kind!r} is not implemented: AUTH needs "
                                 "smtpd_sasl_type = dovecot or tmta, or a plugin that adds "
                                 "it"))
        for name in ("smtpd_sasl_security_options", "smtpd_sasl_tls_security_options"):
            try:
                filterMechanisms([], splitList(config.get(name)))
            except ValueError as e:
                fatal.append(Problem(name, _where(name, main, overrides, masterWhere), str(e)))
    for name, (applies, why) in _SMTPD_HARMLESS.items():
        value = config.get(name)
        if value and applies(value):
            harmless.append(Problem(name, _where(name, main, overrides, masterWhere), why))
    return fatal, harmless


_INTEGER = re.compile(r"^-?\d+$")
_TIME_NAME = re.compile(r"(?:_time|_timeout|_delay|_lifetime|_interval|_deadline_time)$")


def parameterType(name: str, default: str) -> Optional[str]:
    """
    The type of a parameter as its (expanded) default shows it: C{bool},
    C{time}, C{int}, or C{None} for text.
    """
    value = default.strip()
    if value.lower() in ("yes", "no"):
        return "bool"
    if re.match(r"^\d+(?:\.\d+)?[smhdw]$", value) or (
            _INTEGER.match(value) and _TIME_NAME.search(name)):
        return "time"
    if _INTEGER.match(value):
        return "int"
    return None


def typeProblem(kind: str, value: str) -> Optional[str]:
    """
    Why C{value} is not a value of type C{kind}, or C{None}.
    """
    try:
        if kind == "bool":
            parseBool(value)
        elif kind == "time":
            parseTime(value)
        elif kind == "int":
            int(value.strip())
    except ValueError:
        return {"bool": "not yes or no", "time": "not a time (such as 300s, 5m, 1d)",
                "int": "not a whole number"}[kind] + f": {value!r}"
    return None
