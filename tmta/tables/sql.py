"""
What Postfix's SQL tables share (sqlite_table(5), pgsql_table(5),
mysql_table(5)): the configuration file, the C{query} template and its
expansions, the C{result_format} applied to every column of every row,
the C{domain} list and the C{expansion_limit}.

Postfix quotes the key and splices it into the query text.  tmta never
does: L{QueryTemplate} turns every expansion into a parameter the
driver binds, and an expansion inside a quoted literal (C{'%u@%d'})
into a concatenation of literals and parameters, so a key is always
compared as the text it is, whatever quotes or percent signs it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from tmta.logging import Logger
from tmta.tables import TableLookupError, readLogicalLines

__all__ = ["SQLConfigError", "readTableConfig", "settingNumber", "settingBoolean",
           "appendLimited", "KeyTemplate",
           "QueryTemplate", "ResultFormat", "Dialect", "SQLITE", "PGSQL", "MYSQL",
           "DomainFilter"]

log = Logger()


class SQLConfigError(ValueError):
    """
    A table configuration file that Postfix would refuse to open.
    """


def readTableConfig(path: str) -> Dict[str, str]:
    """
    Read a table configuration file as Postfix's C{cfg_parser} reads
    one: C{name = value} lines, a line that starts with white space
    continuing the one before, C{#} comments; a later setting replaces
    an earlier one.

    @raise SQLConfigError: a line that is no C{name = value}, or a name
        that is no absolute file name (Postfix's main.cf-prefixed form
        is not supported).
    @raise OSError: the file cannot be read.
    """
    if not path.startswith("/"):
        raise SQLConfigError(f"{path}: a table configuration must be named by its absolute "
                             "file name")
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    settings: Dict[str, str] = {}
    for number, text in readLogicalLines(lines, path):
        name, equals, value = text.partition("=")
        if not equals or not name.strip():
            raise SQLConfigError(f'{path}, line {number}: missing \'=\' after attribute name: '
                                 f'"{text.strip()}"')
        settings[name.strip()] = value.strip()
    return settings


def settingNumber(settings: Dict[str, str], name: str, default: int, where: str = "") -> int:
    """
    A numerical setting of a table configuration, or C{default}.

    @raise SQLConfigError: it is no number.
    """
    value = settings.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise SQLConfigError(f"{where}bad numerical configuration: {name} = {value}") from None


_BOOLEANS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def settingBoolean(settings: Dict[str, str], name: str, default: Optional[bool],
                   where: str = "") -> Optional[bool]:
    """
    A yes/no setting of a table configuration, or C{default}.

    @raise SQLConfigError: it is neither.
    """
    value = settings.get(name, "").strip().lower()
    if not value:
        return default
    if value not in _BOOLEANS:
        raise SQLConfigError(f"{where}bad boolean configuration: {name} = {value}")
    return _BOOLEANS[value]


def appendLimited(results: List[str], value: str, limit: int, label: str, key: str) -> None:
    """
    Add one result, failing the lookup past C{expansion_limit} as
    Postfix fails it (a temporary error, not "not found").

    @raise TableLookupError: more than C{limit} results (0: no limit).
    """
    results.append(value)
    if limit and len(results) > limit:
        log.warn("{label}: Expansion limit exceeded for key: '{key}'", label=label, key=key)
        raise TableLookupError(f"{label}: expansion limit {limit} exceeded for key {key!r}")


def _parts(text: str) -> Tuple[str, Optional[str]]:
    """
    The local part and the domain (C{None} when there is no C{@}) of an
    address, split at the last C{@}, as Postfix's table code splits.
    """
    local, at, domain = text.rpartition("@")
    return (local, domain) if at else (text, None)


@dataclass(frozen=True)
class Dialect:
    """
    How one driver writes what L{QueryTemplate} makes.

    @ivar placeholder: the text that stands for a bound parameter.
    @ivar percent: how a literal C{%} is written in a query with
        parameters (the C{%s}-style drivers double it).
    @ivar concat: the expression joining several SQL expressions into
        one text.
    @ivar doubleQuotedStrings: whether C{"..."} is a string (MySQL), not
        an identifier.
    @ivar backslashEscapes: whether a backslash escapes the next
        character in a string (MySQL).
    """

    name: str
    placeholder: str
    percent: str
    concat: Callable[[List[str]], str]
    doubleQuotedStrings: bool = False
    backslashEscapes: bool = False


SQLITE = Dialect("sqlite", "?", "%", lambda items: "(" + " || ".join(items) + ")")
PGSQL = Dialect("pgsql", "%s", "%%",
                lambda items: "(" + " || ".join(
                    f"CAST({i} AS TEXT)" if i == "%s" else i for i in items) + ")")
MYSQL = Dialect("mysql", "%s", "%%", lambda items: "CONCAT(" + ", ".join(items) + ")",
                doubleQuotedStrings=True, backslashEscapes=True)

#: The expansions a query template may use.
_QUERY_CODES = frozenset("%sSuUdD123456789")

_Piece = Union[str, "_Expansion"]


@dataclass(frozen=True)
class _Expansion:
    code: str


class KeyTemplate:
    """
    A template of a key's parts (C{%s}, C{%u}, C{%d}, C{%1}...C{%9},
    C{%%}), and which keys it applies to, as Postfix decides: a template
    with C{%d}, C{%D} or C{%1}...C{%9} makes nothing of a key without a
    domain (or with too few labels), one with C{%u} or C{%U} nothing of
    a key with an empty local part.  memcache_table(5)'s C{key_format}.
    """

    def __init__(self, text: str, where: str = "") -> None:
        self.text = text
        self.needsUser = False
        self.needsDomain = False
        self.labels = 0
        self._codes: List[Union[str, _Expansion]] = []
        index = 0
        while index < len(text):
            if text[index] == "%":
                code = text[index + 1:index + 2]
                if code not in _QUERY_CODES:
                    raise SQLConfigError(f"{where}invalid template: {text}")
                if code == "%":
                    self._codes.append("%")
                else:
                    self._note(code)
                    self._codes.append(_Expansion(code))
                index += 2
            else:
                self._codes.append(text[index])
                index += 1

    def _note(self, code: str) -> None:
        if code in "uU":
            self.needsUser = True
        elif code in "dD":
            self.needsDomain = True
        elif code.isdigit():
            self.needsDomain = True
            self.labels = max(self.labels, int(code))

    def accepts(self, key: str) -> bool:
        """
        Whether the template makes a query for C{key} (else the key is
        not found, as in Postfix).
        """
        if not key:
            return False
        local, domain = _parts(key)
        if self.needsDomain and not domain:
            return False
        if self.needsUser and domain is not None and not local:
            return False
        if self.labels and len(_labels(domain)) < self.labels:
            return False
        return True

    def _value(self, code: str, key: str) -> str:
        local, domain = _parts(key)
        if code in "sS":
            return key
        if code in "uU":
            return local
        if code in "dD":
            return domain or ""
        return _labels(domain)[-int(code)]

    def expand(self, key: str, quote: Callable[[str], str] = lambda value: value) -> str:
        """
        The template for C{key} (which L{accepts}), each expansion
        passed through C{quote} (an LDAP filter's escaping, say).
        """
        return "".join(quote(self._value(c.code, key)) if isinstance(c, _Expansion) else c
                       for c in self._codes)

    @property
    def dynamic(self) -> bool:
        """
        Whether the template depends on the key.
        """
        return any(isinstance(c, _Expansion) for c in self._codes)


class QueryTemplate(KeyTemplate):
    """
    A C{query} (or the statement the older C{table}, C{select_field},
    C{where_field} and C{additional_conditions} settings make), its
    expansions made parameters of the statement (L{statement}).
    """

    def __init__(self, text: str, dialect: Dialect, where: str = "") -> None:
        super().__init__(text, where)
        self.dialect = dialect
        self._pieces = self._parse(text, where)

    def _parse(self, text: str, where: str) -> List[Tuple[str, List[_Piece]]]:
        """
        Split the template into SQL text and quoted literals, each a
        list of text and expansions.
        """
        chunks: List[Tuple[str, List[_Piece]]] = []
        quotes = "'\""
        quote: Optional[str] = None
        pieces: List[_Piece] = []
        index = 0

        def close(kind: str) -> None:
            nonlocal pieces
            if pieces or kind != "sql":  # an empty literal ('') is kept
                chunks.append((kind, pieces))
            pieces = []

        def add(text: str) -> None:
            if pieces and isinstance(pieces[-1], str):
                pieces[-1] += text
            else:
                pieces.append(text)

        while index < len(text):
            c = text[index]
            if c == "%":
                code = text[index + 1:index + 2]
                if code not in _QUERY_CODES:
                    raise SQLConfigError(f"{where}invalid query template: {text}")
                if code == "%":
                    add("%")
                else:
                    self._note(code)
                    if quote and self.dialect.backslashEscapes and pieces and \
                            isinstance(pieces[-1], str) and _oddBackslashes(pieces[-1]):
                        raise SQLConfigError(f"{where}an expansion after a backslash in a "
                                             f"quoted string: {text}")
                    pieces.append(_Expansion(code))
                index += 2
                continue
            if quote is None and c in quotes:
                close("sql")
                quote = c
            elif quote is not None and c == quote:
                if text[index + 1:index + 2] == quote:
                    add(c + c)
                    index += 2
                    continue
                close(quote)
                quote = None
            elif quote is not None and c == "\\" and self.dialect.backslashEscapes:
                add(text[index:index + 2])
                index += 2
                continue
            else:
                add(c)
            index += 1
        if quote is not None:
            raise SQLConfigError(f"{where}unbalanced {quote} in query template: {text}")
        close("sql")
        for kind, chunk in chunks:
            if kind == '"' and not self.dialect.doubleQuotedStrings and \
                    any(isinstance(p, _Expansion) for p in chunk):
                raise SQLConfigError(f"{where}an expansion in a quoted identifier: {text}")
        return chunks

    def statement(self, key: str) -> Tuple[str, List[str]]:
        """
        The statement for C{key} (which L{accepts}) and its parameters.
        """
        dialect = self.dialect
        sql: List[str] = []
        params: List[str] = []
        for kind, pieces in self._pieces:
            if kind == "sql":
                for piece in pieces:
                    if isinstance(piece, _Expansion):
                        sql.append(dialect.placeholder)
                        params.append(self._value(piece.code, key))
                    else:
                        sql.append(piece.replace("%", dialect.percent))
                continue
            if not any(isinstance(p, _Expansion) for p in pieces):
                text = "".join(p for p in pieces if isinstance(p, str))
                sql.append(kind + text.replace("%", dialect.percent) + kind)
                continue
            items = []
            for piece in pieces:
                if isinstance(piece, _Expansion):
                    items.append(dialect.placeholder)
                    params.append(self._value(piece.code, key))
                elif piece:
                    items.append("'" + piece.replace("%", dialect.percent) + "'"
                                 if kind == "'" else
                                 '"' + piece.replace("%", dialect.percent) + '"')
            sql.append(items[0] if len(items) == 1 else dialect.concat(items))
        return "".join(sql), params


def _labels(domain: Optional[str]) -> List[str]:
    """
    A domain's labels as Postfix splits them: empty ones (of leading,
    trailing or doubled dots) are dropped.
    """
    return [label for label in (domain or "").split(".") if label]


def _oddBackslashes(text: str) -> bool:
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def buildQuery(settings: Dict[str, str], where: str = "") -> str:
    """
    The C{query} setting, or the statement Postfix builds from the
    older C{table}, C{select_field}, C{where_field} and
    C{additional_conditions} settings.

    @raise SQLConfigError: neither form is complete.
    """
    if settings.get("query"):
        return settings["query"]
    missing = [name for name in ("table", "select_field", "where_field")
               if not settings.get(name)]
    if missing:
        raise SQLConfigError(f"{where}no query, and no {missing[0]} to build one from")
    return (f"SELECT {settings['select_field']} FROM {settings['table']} WHERE "
            f"{settings['where_field']}='%s' {settings.get('additional_conditions', '')}")


class ResultFormat:
    """
    C{result_format}: how each non-null column of each row is written
    (C{%s} the value, C{%u} and C{%d} its local part and domain, C{%S},
    C{%U}, C{%D} and C{%1}...C{%9} the key's), the results joined with
    commas; a value without what the format needs is skipped, as
    Postfix skips it.
    """

    def __init__(self, text: str, where: str = "") -> None:
        self.text = text
        self.where = where
        codes = []
        index = 0
        while index < len(text):
            if text[index] == "%":
                code = text[index + 1:index + 2]
                if code not in _QUERY_CODES:
                    raise SQLConfigError(f"{where}invalid result template: {text}")
                codes.append(code)
                index += 2
            else:
                index += 1
        self.valueUser = "u" in codes
        self.valueDomain = "d" in codes
        self.keyUser = "U" in codes
        self.keyDomain = any(c in "D123456789" for c in codes)
        self.labels = max([int(c) for c in codes if c.isdigit()] or [0])

    def expand(self, value: str, key: str) -> Optional[str]:
        """
        The value as the format writes it, or C{None} when it is skipped.
        """
        vlocal, vdomain = _parts(value)
        if self.valueDomain and not vdomain:
            return None
        if self.valueUser and vdomain is not None and not vlocal:
            return None
        klocal, kdomain = _parts(key)
        if (self.keyDomain and not kdomain) or (self.keyUser and kdomain is not None
                                                and not klocal):
            log.warn("{where}lookup key '{key}' skipped after query", where=self.where,
                     key=value)
            return None
        klabels = _labels(kdomain)
        if self.labels and len(klabels) < self.labels:
            return None
        out: List[str] = []
        text, index = self.text, 0
        while index < len(text):
            c = text[index]
            if c != "%":
                out.append(c)
                index += 1
                continue
            code = text[index + 1]
            index += 2
            out.append({"%": "%", "s": value, "u": vlocal, "d": vdomain or "", "S": key,
                        "U": klocal, "D": kdomain or ""}.get(code)
                       or (klabels[-int(code)] if code.isdigit() else ""))
        return "".join(out)


class DomainFilter:
    """
    C{domain}: the only domains whose addresses are looked up (names,
    C{!name} to exclude, and C{type:table} items); any other key, and a
    key that is no address, is not found without a query.
    """

    def __init__(self, value: str, where: str = "") -> None:
        from tmta.config import splitList
        from tmta.tables import TableError, openTable
        from tmta.tables.matchlist import isTableSpec

        self.items: List[Tuple[bool, object]] = []
        for item in splitList(value):
            negated = item.startswith("!")
            item = item.lstrip("!")
            if isTableSpec(item):
                try:
                    self.items.append((negated, openTable(item)))
                except TableError as e:
                    raise SQLConfigError(f"{where}domain list: {e}") from None
            else:
                self.items.append((negated, item.lower()))

    def __bool__(self) -> bool:
        return bool(self.items)

    def admits(self, key: str) -> bool:
        """
        @raise TableLookupError: a table in the list could not be read.
        """
        local, domain = _parts(key)
        if not domain or not local:
            return False
        domain = domain.lower()
        for negated, item in self.items:
            if isinstance(item, str):
                matched = item == domain
            else:
                matched = item.get(domain) is not None  # type: ignore[attr-defined]
            if matched:
                return not negated
        return False


class SQLLookup:
    """
    The part of an SQL table that does not depend on the database: the
    settings, and turning a key into a statement and rows into a value.

    @ivar label: C{type:configuration-file}, for messages.
    """

    def __init__(self, kind: str, configPath: str, dialect: Dialect,
                 settings: Optional[Dict[str, str]] = None) -> None:
        self.configPath = configPath
        self.label = f"{kind}:{configPath}"
        where = f"{configPath}: "
        self.settings = settings if settings is not None else readTableConfig(configPath)
        self.query = QueryTemplate(buildQuery(self.settings, where), dialect, where)
        self.resultFormat = ResultFormat(self.settings.get("result_format", "%s") or "%s",
                                         where)
        self.domains = DomainFilter(self.settings.get("domain", ""), where)
        self.expansionLimit = settingNumber(self.settings, "expansion_limit", 0, where)

    def statement(self, key: str) -> Optional[Tuple[str, List[str]]]:
        """
        The statement to run for C{key} (folded to lower case, as
        Postfix folds the keys of its fixed-string tables), or C{None}
        when Postfix would answer "not found" without asking the
        database.
        """
        if not key:
            log.warn('table "{label}": empty query string -- ignored', label=self.label)
            return None
        if self.domains and not self.domains.admits(key):
            return None
        if not self.query.accepts(key):
            return None
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None  # bytes that are no UTF-8 match no row
        return self.query.statement(key)

    def value(self, key: str, rows: Sequence[Sequence[object]]) -> Optional[str]:
        """
        The lookup's value from the rows the statement returned.

        @raise TableLookupError: more results than C{expansion_limit}.
        """
        results: List[str] = []
        for row in rows:
            for column in row:
                if column is None:
                    continue
                if isinstance(column, memoryview):
                    column = column.tobytes()
                text = column.decode("utf-8", "surrogateescape") \
                    if isinstance(column, (bytes, bytearray)) else str(column)
                if not text:
                    log.warn('table "{label}": empty lookup result for: "{key}" -- ignored',
                             label=self.label, key=key)
                    continue
                expanded = self.resultFormat.expand(text, key)
                if expanded is None:
                    continue
                appendLimited(results, expanded, self.expansionLimit, self.label, key)
        value = ",".join(results)
        return value or None
