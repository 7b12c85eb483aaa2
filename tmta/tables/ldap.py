"""
C{ldap:/etc/postfix/file.cf}: lookups in an LDAP directory, as
Postfix's ldap_table(5) describes, through ldap3 (C{pip install
'tmta[ldap]'}).

The configuration file gives C{server_host} (names, C{host:port},
C{ldap://}, C{ldaps://} and C{ldapi://} URLs, the last with its socket's
path %-encoded), C{server_port}, C{version},
C{timeout}, C{search_base} and C{query_filter} (both with C{%s},
C{%u}, C{%d}, C{%1}... expansions, the key escaped as RFC 4514 and
RFC 4515 ask, never spliced raw), C{scope}, C{dereference},
C{result_attribute}, C{special_result_attribute} (DN or URL values
searched in turn, up to C{recursion_limit} deep),
C{terminal_result_attribute}, C{leaf_result_attribute},
C{result_format}, C{domain}, C{expansion_limit}, C{size_limit},
C{bind} (C{yes}, C{no} or C{sasl}), C{bind_dn}, C{bind_pw}, the SASL
settings (C{sasl_mechs} among C{EXTERNAL}, C{DIGEST-MD5} and C{PLAIN},
which ldap3 has -- by default C{EXTERNAL} without C{bind_pw}, else
C{DIGEST-MD5} --, C{sasl_realm}, C{sasl_authz_id}, and C{sasl_minssf},
which needs the security of TLS or of a local socket, as ldap3 has no
SASL security layer), C{start_tls} and the C{tls_*} settings.  A
directory that is down or too slow is a lookup error: the mail waits.
"""

from __future__ import annotations

import re
import ssl
from typing import Dict, List, Optional
from urllib.parse import unquote

from zope.interface import implementer

from tmta.interfaces import IRemoteTable
from tmta.logging import Logger
from tmta.tables import TableLookupError
from tmta.tables.remote import (
    CONNECT_TIMEOUT,
    ConnectionPool,
    Host,
    refuseReactorThread,
    requireDriver,
)
from tmta.tables.sql import (
    DomainFilter,
    KeyTemplate,
    ResultFormat,
    SQLConfigError,
    appendLimited,
    readTableConfig,
    settingBoolean,
    settingNumber,
)

__all__ = ["LDAPTable", "filterQuote", "dnQuote"]

log = Logger()

def filterQuote(value: str) -> str:
    """
    A key made safe inside a search filter (RFC 4515): C{*}, C{(},
    C{)} and C{\\} as C{\\XX}, as Postfix quotes them.
    """
    return re.sub(r"[*()\\]", lambda m: "\\%02X" % ord(m.group()), value)


def dnQuote(value: str) -> str:
    """
    A key made safe inside a search base (RFC 4514), as Postfix quotes
    it: white space and C{"#+,;<>\\} as C{\\XX}.
    """
    return re.sub(r'[ \t"#+,;<>\\]', lambda m: "\\%02X" % ord(m.group()), value)


def _attributes(settings: Dict[str, str], name: str, default: str = "") -> List[str]:
    return [a for a in re.split(r"[\s,]+", settings.get(name, default)) if a]


@implementer(IRemoteTable)
class LDAPTable:
    def __init__(self, configPath: str) -> None:
        self.ldap3 = requireDriver("ldap3", "ldap", "ldap")
        where = f"{configPath}: "
        settings = readTableConfig(configPath)
        self.label = f"ldap:{configPath}"
        if not settings.get("search_base"):
            raise SQLConfigError(f"{where}no search_base")
        self.base = KeyTemplate(settings["search_base"], where)
        self.filter = KeyTemplate(settings.get("query_filter",
                                               "(mailacceptinggeneralid=%s)"), where)
        self.resultFormat = ResultFormat(settings.get("result_format")
                                         or settings.get("result_filter", "%s") or "%s", where)
        self.domains = DomainFilter(settings.get("domain", ""), where)
        scopes = {"sub": "SUBTREE", "one": "LEVEL", "base": "BASE"}
        scope = settings.get("scope", "sub") or "sub"
        if scope not in scopes:
            raise SQLConfigError(f"{where}unrecognized value for scope: {scope}")
        self.scope = getattr(self.ldap3, scopes[scope])
        self.terminal = _attributes(settings, "terminal_result_attribute")
        self.leaf = _attributes(settings, "leaf_result_attribute")
        self.result = _attributes(settings, "result_attribute", "maildrop")
        self.special = _attributes(settings, "special_result_attribute")
        #: Every attribute asked for, in Postfix's order: terminal, leaf,
        #: ordinary, then special.
        self.attributes = self.terminal + self.leaf + self.result + self.special
        self.recursionLimit = max(1, settingNumber(settings, "recursion_limit", 1000, where))
        self.expansionLimit = settingNumber(settings, "expansion_limit", 0, where)
        self.sizeLimit = settingNumber(settings, "size_limit", self.expansionLimit, where)
        dereference = settingNumber(settings, "dereference", 0, where)
        self.dereference = [self.ldap3.DEREF_NEVER, self.ldap3.DEREF_SEARCH,
                            self.ldap3.DEREF_BASE, self.ldap3.DEREF_ALWAYS][
            dereference if 0 <= dereference <= 3 else 0]
        self.timeout = settingNumber(settings, "timeout", 10, where)
        self.version = settingNumber(settings, "version", 2, where)
        self.bindDN = settings.get("bind_dn", "")
        self.bindPassword = settings.get("bind_pw", "")
        self.sasl = settings.get("bind", "").strip().lower() == "sasl"
        self.bind = self.sasl or bool(settingBoolean(settings, "bind", True, where))
        self.startTLS = bool(settingBoolean(settings, "start_tls", False, where))
        self.tls = self._tls(settings, where)
        port = settingNumber(settings, "server_port", 389, where)
        hosts = [self._host(item, port, where)
                 for item in re.split(r"[\s,]+", settings.get("server_host", "localhost")) if item]
        if self.sasl:
            self.mechanism, self.credentials = self._saslLogin(settings, hosts, where)
        self.pool = ConnectionPool(self.label, hosts or [self._host("localhost", port, where)],
                                   self._connect, self._isConnectionError, self._unbind)

    def _saslLogin(self, settings: Dict[str, str], hosts: List[Host], where: str):
        """
        The SASL mechanism and the credentials ldap3 is given for it.

        @raise SQLConfigError: no mechanism ldap3 has, or a security
            strength asked for that only a SASL layer could give.
        """
        wanted = [m.upper() for m in re.split(r"[\s,]+", settings.get("sasl_mechs", "")) if m]
        if not wanted:
            wanted = ["DIGEST-MD5" if self.bindPassword else "EXTERNAL"]
        mechanism = next((m for m in wanted if m in ("EXTERNAL", "DIGEST-MD5", "PLAIN")), None)
        if mechanism is None:
            raise SQLConfigError(f"{where}sasl_mechs {' '.join(wanted)}: none of them is "
                                 "supported (EXTERNAL, DIGEST-MD5, PLAIN)")
        minimum = settingNumber(settings, "sasl_minssf", 0, where)
        protected = self.startTLS or all(h.details.get("secure") or h.details.get("ipc")
                                         for h in hosts)
        if minimum > 0 and not protected:
            raise SQLConfigError(f"{where}sasl_minssf = {minimum}: a SASL security layer is "
                                 "not supported; use ldaps://, start_tls or ldapi://")
        authz = settings.get("sasl_authz_id", "") or None
        if mechanism == "EXTERNAL":
            # The authorization identity itself (empty: the one the
            # connection shows), which ldap3 sends as the credentials.
            return mechanism, authz or ""
        if mechanism == "PLAIN":
            return mechanism, (authz, self.bindDN, self.bindPassword)
        return mechanism, (settings.get("sasl_realm", "") or None, self.bindDN,
                           self.bindPassword, authz)

    def _tls(self, settings: Dict[str, str], where: str):
        names = ("tls_ca_cert_file", "tls_ca_cert_dir", "tls_cert", "tls_key",
                 "tls_cipher_suite")
        require = settingBoolean(settings, "tls_require_cert", False, where)
        if not (self.startTLS or any(settings.get(n) for n in names) or require):
            return None
        return self.ldap3.Tls(
            validate=ssl.CERT_REQUIRED if require else ssl.CERT_NONE,
            ca_certs_file=settings.get("tls_ca_cert_file") or None,
            ca_certs_path=settings.get("tls_ca_cert_dir") or None,
            local_certificate_file=settings.get("tls_cert") or None,
            local_private_key_file=settings.get("tls_key") or None,
            ciphers=settings.get("tls_cipher_suite") or None)

    @staticmethod
    def _host(item: str, port: int, where: str) -> Host:
        if item.lower().startswith("ldapi://"):
            path = unquote(item[len("ldapi://"):])
            if not path.startswith("/"):
                raise SQLConfigError(f"{where}server_host {item}: no socket path")
            return Host(item, local=True, url=item, ipc=True, secure=False)
        match = re.match(r"^(ldaps?)://([^/:]*|\[[^\]]*\])(?::(\d+))?/?$", item)
        if match:
            secure = match.group(1) == "ldaps"
            return Host(item, local=False, host=match.group(2).strip("[]") or "localhost",
                        port=int(match.group(3) or (636 if secure else 389)), secure=secure)
        if "://" in item:
            raise SQLConfigError(f"{where}server_host {item}: only ldap://, ldaps:// and "
                                 "ldapi:// URLs are supported")
        host, colon, number = item.rpartition(":")
        if colon and number.isdigit() and host:
            return Host(item, local=False, host=host.strip("[]"), port=int(number),
                        secure=False)
        return Host(item, local=False, host=item, port=port, secure=False)

    def _connect(self, host: Host):
        ldap3 = self.ldap3
        timeout = min(self.timeout, CONNECT_TIMEOUT) or CONNECT_TIMEOUT
        if host.details.get("ipc"):
            server = ldap3.Server(host.details["url"], get_info=ldap3.NONE,
                                  connect_timeout=timeout)
        else:
            server = ldap3.Server(host.details["host"], port=host.details["port"],
                                  use_ssl=host.details["secure"], get_info=ldap3.NONE,
                                  tls=self.tls, connect_timeout=timeout)
        login: Dict = {"user": self.bindDN or None if self.bind else None,
                       "password": self.bindPassword if self.bind else None}
        if self.sasl:
            login = {"authentication": ldap3.SASL, "sasl_mechanism": self.mechanism,
                     "sasl_credentials": self.credentials}
        connection = ldap3.Connection(
            server, **login, version=self.version,
            auto_bind=ldap3.AUTO_BIND_NONE, receive_timeout=self.timeout or None,
            raise_exceptions=False, read_only=True, auto_escape=False, auto_encode=True,
            check_names=False)
        connection.open()
        if connection.closed:
            raise ConnectionError(f"cannot connect: {connection.last_error}")
        if self.startTLS and not connection.start_tls():
            connection.unbind()
            raise ConnectionError(f"STARTTLS failed: {connection.result}")
        if self.bind and not connection.bind():
            result = connection.result
            connection.unbind()
            raise ConnectionError(f"bind failed: {result.get('description')} "
                                  f"{result.get('message', '')}".strip())
        return connection

    def _unbind(self, connection) -> None:
        connection.unbind()

    def _isConnectionError(self, error: BaseException) -> bool:
        from ldap3.core.exceptions import LDAPCommunicationError, LDAPSocketOpenError

        return isinstance(error, (OSError, ConnectionError, LDAPCommunicationError,
                                  LDAPSocketOpenError))

    def _search(self, connection, base: str, query: str, scope) -> Optional[List[Dict]]:
        """
        The entries a search finds (C{None}: its base does not exist).

        @raise TableLookupError: the search failed.
        @raise ConnectionError: the connection failed.
        """
        ok = connection.search(base, query, search_scope=scope, attributes=self.attributes,
                               size_limit=self.sizeLimit, time_limit=self.timeout,
                               dereference_aliases=self.dereference)
        result = connection.result or {}
        code = result.get("result", 0 if ok else -1)
        if code == 32:  # noSuchObject
            return None
        if code == 4 or (self.sizeLimit and len(connection.response or []) > self.sizeLimit):
            log.warn("{label}: Query size limit ({limit}) exceeded", label=self.label,
                     limit=self.sizeLimit)
            raise TableLookupError(f"{self.label}: query size limit {self.sizeLimit} exceeded")
        if code not in (0,):
            if code in (-1, 51, 52, 81, 85):  # busy, unavailable, down, timeout
                raise ConnectionError(f"search failed: {result.get('description')}")
            raise TableLookupError(f"{self.label}: search error {code}: "
                                   f"{result.get('description')} {result.get('message', '')}")
        return [entry for entry in connection.response or []
                if entry.get("type") == "searchResEntry"]

    def _values(self, connection, entries: List[Dict], key: str, results: List[str],
                depth: int) -> None:
        """
        Add what C{entries} give to C{results}, as Postfix's
        C{dict_ldap_get_values} does, following special attributes.
        """
        terminalCount, leafCount = len(self.terminal), len(self.leaf)
        ordinary = terminalCount + leafCount + len(self.result)
        for entry in entries:
            attributes = {name.lower(): values for name, values in
                          (entry.get("raw_attributes") or {}).items() if values}
            terminal = any(a.lower() in attributes for a in self.terminal)
            leaf = True
            if not terminal and leafCount:
                leaf = not any(a.lower() in attributes for a in self.special)
            for name, values in attributes.items():
                index = next((i for i, a in enumerate(self.attributes) if a.lower() == name),
                             len(self.attributes))
                if index < ordinary or terminal:
                    if (terminal and index >= terminalCount) or (
                            not leaf and index < terminalCount + leafCount):
                        continue
                    for raw in values:
                        value = raw.decode("utf-8", "surrogateescape")
                        expanded = self.resultFormat.expand(value, key) if value else None
                        if expanded is None:
                            continue
                        appendLimited(results, expanded, self.expansionLimit, self.label, key)
                elif index < len(self.attributes):
                    if depth >= self.recursionLimit:
                        log.warn("{label}: Recursion limit exceeded for special attribute "
                                 "{name}", label=self.label, name=name)
                        raise TableLookupError(f"{self.label}: recursion limit "
                                               f"{self.recursionLimit} exceeded")
                    for raw in values:
                        dn = raw.decode("utf-8", "surrogateescape")
                        found = self._search(connection, dn, "(objectClass=*)",
                                             self.ldap3.BASE)
                        if found:
                            self._values(connection, found, key, results, depth + 1)

    def get(self, key: str) -> Optional[str]:
        refuseReactorThread(self.label)
        key = key.lower()  # folded, as Postfix folds the keys of fixed tables
        if not key or (self.domains and not self.domains.admits(key)):
            return None
        if not (self.base.accepts(key) and self.filter.accepts(key)):
            return None
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None
        base = self.base.expand(key, dnQuote)
        query = self.filter.expand(key, filterQuote)

        def lookup(connection) -> List[str]:
            entries = self._search(connection, base, query, self.scope)
            if entries is None:
                if self.base.dynamic:
                    return []
                log.warn("{label}: Search base '{base}' not found", label=self.label,
                         base=base)
                raise TableLookupError(f"{self.label}: search base {base!r} not found")
            results: List[str] = []
            self._values(connection, entries, key, results, 1)
            return results

        results = self.pool.run(lookup)
        return ",".join(results) or None

    def close(self) -> None:
        self.pool.closeAll()


def openLDAP(name: str) -> LDAPTable:
    try:
        return LDAPTable(name)
    except (OSError, SQLConfigError) as e:
        raise ValueError(str(e)) from None

