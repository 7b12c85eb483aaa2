"""
Lookup tables named C{type:name}, with Postfix's semantics.

Implemented types: C{unix:passwd.byname} (the passwd database),
C{texthash:} (read from the source text file: a key and a value per
line, C{key value} or, for aliases, C{key: value}), C{hash:} and its
kin (the database C{tmta map build} makes of such a file,
L{tmta.tables.compiled}), C{static:}
and C{inline:{ key=value, ... }}, C{regexp:}, C{pcre:} and C{cidr:}
(L{tmta.tables.patterns}), C{sqlite:} (L{tmta.tables.sqlite}),
C{pgsql:}, C{mysql:}, C{ldap:}, C{memcache:}, C{socketmap:} and C{tcp:}
(L{tmta.tables.pgsql}, L{tmta.tables.mysql}, L{tmta.tables.ldap},
L{tmta.tables.memcache},
L{tmta.tables.socketmap}, L{tmta.tables.tcp}, which wait on another
server: L{tmta.tables.remote}); plugins add more
(L{tmta.interfaces.ILookupTableType}).  C{proxy:} in front of a table
on another server asks the proxymap service (L{tmta.proxymap}); in
front of a local file it changes nothing, since tmta's processes read
files themselves.  Lookups in local tables are synchronous and cheap
(files are re-read only when they change).
"""

from __future__ import annotations

import os
import pwd
from typing import Callable, Dict, List, Optional, Tuple

from zope.interface import implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from tmta.config import splitList
from tmta.interfaces import ILookupTable, ILookupTableType, IOwnedTable, IRemoteTable
from tmta.logging import Logger

__all__ = [
    "openTable",
    "DictTable",
    "TableError",
    "TableLookupError",
]

log = Logger()


class TableError(Exception):
    """
    A table specification that tmta cannot open.
    """


def fileOwner(*paths: str) -> Optional[int]:
    """
    The owner of the first of C{paths} that exists, or C{None}.
    """
    for path in paths:
        try:
            return os.stat(path).st_uid
        except OSError:
            continue
    return None


class TableLookupError(Exception):
    """
    A table could not be consulted now (a database missing or older
    than its source, a query that fails): the lookup is neither a match
    nor a miss, and the mail it concerns waits and is tried again.
    """


@implementer(ILookupTable)
class PasswdTable:
    """
    C{unix:passwd.byname}: a key is found when it names an account.
    """

    def get(self, key: str) -> Optional[str]:
        try:
            entry = pwd.getpwnam(key)
        except (KeyError, ValueError):
            return None
        return ":".join(str(x) for x in entry)



def readLogicalLines(lines: List[str], path: str = "",
                     warnings: Optional[List[str]] = None) -> List[Tuple[int, str]]:
    """
    The logical lines of a table source, as Postfix's C{readllines}
    makes them: a line that starts with white space continues the one
    before, joined as it stands (only the line break goes); comment and
    blank lines are skipped and do not end a logical line; trailing
    white space is trimmed.

    @return: C{(number, text)}, the number that of the first physical
        line.
    @param warnings: where to note text continuing nothing, which is
        skipped.
    """
    logical: List[Tuple[int, str]] = []
    for number, line in enumerate(lines, 1):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if logical:
                logical[-1] = (logical[-1][0], logical[-1][1] + line)
            elif warnings is not None:
                warnings.append(f"{path}, line {number}: logical line must not start with "
                                f'whitespace: "{line[:30]}"')
            continue
        logical.append((number, line))
    return [(number, text.rstrip()) for number, text in logical]


def _unquotedIndex(text: str, stop: Callable[[str], bool]) -> Tuple[int, bool]:
    """
    Where the first character C{stop} accepts stands outside double
    quotes (a backslash escapes the next character), or C{len(text)};
    and whether a quote was left open.
    """
    inQuotes, index = False, 0
    while index < len(text):
        c = text[index]
        if c == "\\":
            index += 1
        elif c == '"':
            inQuotes = not inQuotes
        elif stop(c) and not inQuotes:
            break
        index += 1
    return index, inQuotes


def _postmapEntry(text: str) -> Tuple[str, str]:
    """
    C{key whitespace value}, as postmap and C{texthash:} split a line:
    at the first white space outside double quotes; the key keeps its
    quotes.

    @raise ValueError: why Postfix ignores the line.
    """
    index, inQuotes = _unquotedIndex(text, str.isspace)
    if inQuotes:
        raise ValueError(f"unbalanced '\"' in '{text}' -- ignoring this line")
    key, value = text[:index], text[index + 1:].strip()
    if not key or not value:
        raise ValueError("expected format: key whitespace value -- ignoring this line")
    return key, value


def _aliasEntry(text: str) -> Tuple[str, str]:
    """
    C{name: value}, as postalias splits a line: at the first colon
    outside double quotes; the name is unquoted and must be local.

    @raise ValueError: why Postfix ignores the line.
    """
    index, _ = _unquotedIndex(text, lambda c: c == ":")
    name, value = text[:index].strip(), text[index + 1:].strip()
    if index >= len(text) or not name or not value or "," in name:
        raise ValueError("need name:value pair")
    if name.startswith('"') and name.endswith('"') and len(name) > 1:
        name = name[1:-1]
    elif "@" in name or "%" in name:
        raise ValueError("name must be local")
    return name, value


def parseTextTable(lines: List[str], aliases: bool = False, path: str = "",
                   warnings: Optional[List[str]] = None,
                   warnDuplicates: bool = False) -> Dict[str, str]:
    """
    Parse a table source file as postmap reads it (C{key value}, the key
    ending at the first white space, so C{[host]:port} and IPv6
    addresses are keys like any other), or with C{aliases} as postalias
    reads it (C{name: value}).  Continuation lines start with white
    space, C{#} starts a comment.  Keys are case-insensitive; the first
    definition wins, as postmap warns and keeps the first.

    @param warnings: where to put what Postfix warns about (each naming
        C{path} and the line), the lines it ignores among them.
    @param warnDuplicates: whether a key defined again is warned about
        (C{texthash:} warns; postmap keeps the first silently).
    """
    table: Dict[str, str] = {}
    split = _aliasEntry if aliases else _postmapEntry
    if warnings is None:
        warnings = []
    for number, text in readLogicalLines(lines, path, warnings):
        try:
            key, value = split(text)
        except ValueError as e:
            warnings.append(f"{path}, line {number}: {e}")
            continue
        key = key.lower()
        if key in table:
            if warnDuplicates:
                warnings.append(f'{path}, line {number}: duplicate entry: "{key}"')
            continue
        if not aliases and key.endswith(":"):
            warnings.append(f'{path}, line {number}: record is in "key: value" format; '
                            "is this an alias file?")
        table[key] = value
    return table


@implementer(ILookupTable, IOwnedTable)
class TextFileTable:
    """
    C{texthash:/path}: a table read from a postmap source file, re-read
    when the file changes.  A file that cannot be read fails every
    lookup (L{TableLookupError}) until it can be, as Postfix's does.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: Optional[Tuple[float, int]] = None
        self._table: Dict[str, str] = {}
        self._failure: Optional[str] = None
        #: What the last reading warned about.
        self.warnings: List[str] = []

    def _load(self) -> Dict[str, str]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime, st.st_size)
            if stamp != self._stamp:
                with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                    lines = f.read().splitlines()
                self.warnings = []
                self._table = parseTextTable(lines, path=self.path, warnings=self.warnings,
                                             warnDuplicates=True)
                for text in self.warnings:
                    log.warn("{text}", text=text)
                self._stamp, self._failure = stamp, None
        except OSError as e:
            failure = f"texthash:{self.path}: cannot open {self.path}: {e.strerror or e}"
            if failure != self._failure:
                log.warn("{failure}", failure=failure)
            self._stamp, self._table, self._failure = None, {}, failure
            raise TableLookupError(failure)
        return self._table

    def get(self, key: str) -> Optional[str]:
        return self._load().get(key.lower())

    def owner(self) -> Optional[int]:
        return fileOwner(self.path)



@implementer(ILookupTable)
class DictTable:
    """
    C{static:value} (every key) or C{inline:{k=v, ...}}.
    """

    def __init__(self, entries: Dict[str, str], default: Optional[str] = None) -> None:
        self.entries = {k.lower(): v for k, v in entries.items()}
        self.default = default

    def get(self, key: str) -> Optional[str]:
        return self.entries.get(key.lower(), self.default)



@implementer(ILookupTableType)
class BuiltinTableType:
    """
    One of tmta's own table types.
    """

    def __init__(self, name: str, opener: Callable[[str], object]) -> None:
        self.name = name
        self._opener = opener

    def open(self, name: str):
        return self._opener(name)


def _inline(name: str) -> DictTable:
    body = name.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    entries: Dict[str, str] = {}
    for item in splitList(body):
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"expected format: key=value or {{ key = value }}, not {item!r}")
        entries.setdefault(key.strip(), value.strip())
    return DictTable(entries)


def _passwd(name: str) -> PasswdTable:
    if name != "passwd.byname":
        raise ValueError(f"unix:{name} is not a table tmta knows (only unix:passwd.byname)")
    return PasswdTable()


def _patternOpener(kind: str):
    def open(name: str):
        from tmta.tables.patterns import opener

        return opener(kind)(name)

    return open


def _compiledOpener(kind: str):
    def open(name: str):
        from tmta.tables.compiled import CompiledTable

        return CompiledTable(kind, name)

    return open


def _sqliteOpener(name: str):
    from tmta.tables.sqlite import SQLiteConfigError, SQLiteTable

    try:
        return SQLiteTable(name)
    except (OSError, SQLiteConfigError) as e:
        raise ValueError(str(e)) from None


def _remoteOpener(module: str, function: str):
    def open(name: str):
        import importlib

        return getattr(importlib.import_module(module), function)(name)

    return open


BUILTIN_TYPES: Dict[str, BuiltinTableType] = {
    kind.name: kind
    for kind in [
        BuiltinTableType("unix", _passwd),
        BuiltinTableType("static", lambda name: DictTable({}, name.strip("{}").strip())),
        BuiltinTableType("inline", _inline),
    ] + [
        BuiltinTableType(kind, _patternOpener(kind)) for kind in ("regexp", "pcre", "cidr")
    ] + [
        BuiltinTableType("sqlite", _sqliteOpener),
        BuiltinTableType("pgsql", _remoteOpener("tmta.tables.pgsql", "openPostgreSQL")),
        BuiltinTableType("mysql", _remoteOpener("tmta.tables.mysql", "openMySQL")),
        BuiltinTableType("memcache", _remoteOpener("tmta.tables.memcache", "openMemcache")),
        BuiltinTableType("ldap", _remoteOpener("tmta.tables.ldap", "openLDAP")),
        BuiltinTableType("socketmap", _remoteOpener("tmta.tables.socketmap", "openSocketmap")),
        BuiltinTableType("tcp", _remoteOpener("tmta.tables.tcp", "openTCP")),
        BuiltinTableType("texthash", TextFileTable),
    ] + [
        BuiltinTableType(kind, _compiledOpener(kind)) for kind in ("hash", "btree", "lmdb", "cdb")
    ]
}


def _proxied(spec: str):
    """
    C{proxy:spec}: a table on another server is asked of the proxymap
    service, where this process has a client for it
    (L{tmta.tables.proxy}); any other table is opened here.
    """
    table = openTable(spec)
    if IRemoteTable.providedBy(table):
        from tmta.tables.proxy import ProxyTable, installed

        client = installed()
        if client is not None:
            return ProxyTable(spec, client)
    return table


def openTable(spec: str):
    """
    Open the table C{type:name}: one of tmta's types, or a type a plugin
    adds (L{tmta.interfaces.ILookupTableType}).

    @raise TableError: an unknown type, a name the type does not accept,
        or a plugin that does not provide what it claims.
    """
    from tmta.common.plugins import PluginError, findPlugin

    kind, sep, name = spec.partition(":")
    if not sep:
        raise TableError(f"{spec!r} is not a type:name table")
    if kind == "proxy":
        return _proxied(name)
    try:
        tableType = BUILTIN_TYPES.get(kind) or findPlugin(ILookupTableType, kind)
    except PluginError as e:
        raise TableError(f"{spec}: {e}")
    if tableType is None:
        raise TableError(f"unsupported table type {kind!r} in {spec!r}")
    try:
        table = tableType.open(name)
        verifyObject(ILookupTable, table)
    except ValueError as e:
        raise TableError(f"{spec}: {e}")
    except Invalid as e:
        raise TableError(f"{spec}: table type {kind} made something that is not a lookup "
                         f"table: {' '.join(str(e).split())}")
    return table


@implementer(ILookupTable)
class FailingTable:
    """
    What stands in for a table that could not be opened (Postfix's
    surrogate table): every lookup is a temporary failure, so the mail
    waits rather than being handled as if the table were empty.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def get(self, key: str) -> Optional[str]:
        raise TableLookupError(self.reason)


def openTables(value: str) -> List:
    """
    Open every table in a list-valued parameter (C{alias_maps},
    C{local_recipient_maps}).  A table that cannot be opened is warned
    about and stands in the list as a L{FailingTable}: a list never
    quietly shrinks.  (Start-up refuses such a configuration first:
    L{tableProblems}.)
    """
    tables: List = []
    for spec in splitList(value):
        try:
            tables.append(openTable(spec))
        except TableError as e:
            log.warn("{error}: lookups fail until it can be opened", error=str(e))
            tables.append(FailingTable(str(e)))
    return tables


#: Lists whose items may be tables among names, networks and files
#: (Postfix's match lists).
MATCH_LIST_PARAMETERS = frozenset({
    "mydestination", "relay_domains", "virtual_alias_domains", "virtual_mailbox_domains",
    "mynetworks", "permit_mx_backup_networks", "debug_peer_list", "fast_flush_domains",
    "qmqpd_authorized_clients", "smtpd_authorized_xclient_hosts",
    "smtpd_authorized_xforward_hosts", "smtpd_authorized_verp_clients",
    "smtpd_client_event_limit_exceptions", "smtpd_sasl_exceptions_networks",
    "authorized_flush_users", "authorized_mailq_users", "authorized_submit_users",
    "local_header_rewrite_clients", "smtpd_log_access_permit_actions",
})

#: Parameters with tables among other items, besides the match lists.
_SOME_TABLES = MATCH_LIST_PARAMETERS | {"alias_database", "postscreen_access_list"}
_TABLE_SUFFIXES = ("_maps", "_checks", "_delivery_status_filter", "_reply_filter",
                   "_command_filter")
#: Parameters of tables only whose names do not say so.
_TABLES_ONLY = frozenset({"dkim_signing_table", "dkim_key_table"})
#: C{*_maps} that list other tables' names for proxymap, not tables.
_NOT_TABLES = frozenset({"proxy_read_maps", "proxy_write_maps"})


#: The parameters whose tables may wait on another server: the code that
#: consults them runs its lookups in a lookup thread
#: (L{tmta.tables.remote}).  A remote table anywhere else is refused at
#: start-up, not left to fail every lookup.
REMOTE_TABLE_PARAMETERS = frozenset({
    # trivial-rewrite's resolution (and cleanup's and local's use of
    # mydestination, both in threads of their own)
    "mydestination", "relay_domains", "virtual_mailbox_domains", "virtual_alias_domains",
    "transport_maps", "sender_dependent_relayhost_maps",
    "sender_dependent_default_transport_maps", "relocated_maps",
    # smtpd's recipient, sender and access checks
    "virtual_mailbox_maps", "virtual_alias_maps", "relay_recipient_maps",
    "local_recipient_maps", "smtpd_sender_login_maps", "smtpd_milter_maps",
    # cleanup's address mapping
    "canonical_maps", "sender_canonical_maps", "recipient_canonical_maps",
    "sender_bcc_maps", "recipient_bcc_maps",
    # the virtual and local delivery agents, whose deliveries run in a
    # thread of their own
    "virtual_uid_maps", "virtual_gid_maps", "alias_maps",
    # the SMTP and LMTP clients' TLS policies and SASL passwords
    "smtp_tls_policy_maps", "lmtp_tls_policy_maps", "smtp_sasl_password_maps",
    "lmtp_sasl_password_maps",
    # postscreen's verdict on a client as it connects
    "postscreen_access_list",
    # cleanup's choice of DKIM signing key
    "dkim_signing_table", "dkim_key_table",
})


def proxyApproved(config) -> frozenset:
    """
    The tables C{proxy_read_maps} lets the proxymap service serve: its
    C{type:name} items, with any C{proxy:} prefix taken off, as Postfix
    reads it.
    """
    from tmta.tables.matchlist import isTableSpec

    approved = set()
    for item in splitList(config.get("proxy_read_maps")):
        item = item.lstrip("!")
        if item.startswith("proxy:"):
            item = item[len("proxy:"):]
        if isTableSpec(item):
            approved.add(item)
    return frozenset(approved)


def tableProblems(config, names=None) -> List[Tuple[str, str]]:
    """
    The tables a configuration names that tmta cannot open: an unknown
    type (C{mysql:} with no plugin for it), a name its type refuses, or
    an item of a table-only parameter that is no C{type:name} at all.
    Each such table would fail every lookup, so the configuration must
    not serve mail.

    @param names: the parameters to look at; all, by default.
    @return: C{(parameter, problem)} pairs.
    """
    from tmta.config import ConfigError
    from tmta.tables.matchlist import isTableSpec

    approved = None
    problems: List[Tuple[str, str]] = []
    for name in names if names is not None else config.names():
        tablesOnly = name in _TABLES_ONLY or (name not in _NOT_TABLES
                                               and name.endswith(_TABLE_SUFFIXES))
        if not (tablesOnly or name in _SOME_TABLES):
            continue
        try:
            items = splitList(config.get(name))
        except ConfigError:
            continue  # the expansion error is reported on its own
        for item in items:
            item = item.lstrip("!")
            if not isTableSpec(item):
                if tablesOnly and item:
                    problems.append((name, f"{item!r} is not a type:name table"))
                continue
            if item.startswith("proxy:"):
                if approved is None:
                    approved = proxyApproved(config)
                if item[len("proxy:"):] not in approved:
                    problems.append((name, f"{item}: {item[len('proxy:'):]} is not in "
                                           "proxy_read_maps, so the proxymap service "
                                           "would refuse it"))
                    continue
            try:
                table = openTable(item)
            except TableError as e:
                problems.append((name, str(e)))
                continue
            if name not in REMOTE_TABLE_PARAMETERS and IRemoteTable.providedBy(table):
                problems.append((name, f"{item}: a table on another server is not "
                                       f"supported in {name}"))
    return problems


def lookupAny(tables: List, key: str) -> Optional[str]:
    """
    The first table's value for C{key}, as Postfix searches a table list.

    @raise TableLookupError: a table could not be consulted before one
        answered.
    """
    for table in tables:
        value = table.get(key)
        if value is not None:
            return value
    return None
