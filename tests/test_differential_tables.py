"""
Tables, held against Postfix: the same source file and the same keys
through C{postmap -q} and C{tmta map query}, for every table type both
read from a file.  Every value must agree, and so must the lines each
warns about (the lines it skips among them).  Skipped where Postfix is
not installed.
"""

from __future__ import annotations

import io
import os
from typing import List

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.differential import (
    Agreement,
    configDirectory,
    copyFile,
    postfixHasTableType,
    postfixMissing,
    postmapBuild,
    postmapQuery,
    warnedLines,
)
from tmta.cli.admin import buildMaps, queryMap
from tmta.tables import openTable

# -- the corpus ----------------------------------------------------------------

#: POSIX extended regular expressions, with what Python's re reads
#: differently, and the lines Postfix skips.
REGEXP_TABLE = r"""# regexp_table(5), as the C library compiles it
/^[[:alpha:]]+$/            ALPHA
/^[[:digit:]]+$/            DIGITS
/^[[:upper:]][[:lower:]]+[[:digit:]]$/  CAPITALISED
/\<admin\>/                 WORD admin
/^(foo|bar)(baz)?$/         ALT $1-$2
/^([a-z]+)\.([a-z]+)@([a-z.]+)$/   NAME ${2}, $(1) AT $3
/^x{2,3}y$/                 BRACE
/^tab\t/                    ESCAPED-T
/^\d+x$/                    ESCAPED-D
/^CaSe$/i                   EXACT-CASE
/^a.c$/x                    BASIC a.c
/^a+c$/x                    BASIC a+c
/^(ab)\1$/                  BACKREF
/^p(.*)$/!/^px/             SECOND-PATTERN $1
/^dollar$/                  COST $$5
/unclosed                   SKIPPED-NO-DELIMITER
/^(x1)$/                    OUT-OF-RANGE $2
/^y1$/                      NON-NUMERIC $name
/^z1$/q                     UNKNOWN-FLAG
/^w1$/
/^[$/                       BAD-REGEX
!/^n/                       $1 NEGATED-SUBSTITUTION
if /^if-/
/-yes$/                     IF-YES
if !/-no/
/-deep$/                    IF-DEEP
endif
endif
endif
plain WORD-AT-START
/^end[.]$/                  BRACKET-DOT
/^[^@]+@[^@]+$/             ADDRESS
/^\[[0-9.]+\]$/             LITERAL
/^.+\.(exe|scr|pif)$/       ATTACHMENT $1
"""

#: PCRE2, with what Python's re lacks or reads differently.
PCRE_TABLE = r"""# pcre_table(5)
/^(?<user>[a-z]+)@example\.com\z/   NAMED $1
/^\p{Lu}{3}$/               UPPER-THREE
/^a(?i)bc$/                 INLINE-FLAG
/^\d{3}-\d{4}$/             PHONE
/^(?=.*foo)(?=.*bar)/       LOOKAHEAD
/^line.end$/                DOTALL-DEFAULT
/^line.two$/s               NO-DOTALL
/^anch/A                    ANCHORED
/^gr(e+)dy/U                UNGREEDY $1
/^end$/E                    DOLLAR-ENDONLY
/^x.x$/X                    OBSOLETE-X
/^CaSe$/i                   EXACT-CASE
/ a b c /x                  EXTENDED
/^([a-z]+)\.([a-z]+)@/      NAME $2, $1
/^[[:alpha:]]+$/            ALPHA
/^\w+$/                     WORD
/unclosed                   SKIPPED
/^(q)$/                     OUT-OF-RANGE $2
/^r1$/                      NON-NUMERIC ${x}
/^s1$/Z                     UNKNOWN-FLAG
/^(t1/                      BAD-REGEX
/^u1$/
!/\./                       NO-DOT
if /^if-/
/-yes$/                     IF-YES
endif
endif
word at start
/\.(exe|scr)$/              ATTACHMENT $1
"""

#: cidr_table(5), with the forms Postfix accepts and the lines it skips.
CIDR_TABLE = """# cidr_table(5)
192.0.2.128/25          UPPER
192.0.2.0/24            LOWER
[2001:db8::]/32         BRACKETED-SIX
[2001:db9::/32]         BRACKETED-SIX-INSIDE
[198.51.100.7]          BRACKETED-HOST
10.1.1.1/8              HOST-BITS-SKIPPED
10.0.0.0/8              TEN
172.16.0.0/33           BAD-MASK
172.16.0.0/12x          BAD-MASK-VALUE
300.1.1.0/24            BAD-NETWORK
fe80::/10               LINK-LOCAL
::1                     LOOPBACK-SIX
127.0.0.1               LOOPBACK
0.0.0.0/0               EVERYTHING-FOUR
203.0.113.0/24
if 100.64.0.0/10
!100.64.0.0/16          CGN-NOT-LOW
endif
endif
if !2001:db8::/32
::/0                    EVERYTHING-SIX-ELSE
endif
"""

#: postmap's and texthash:'s format: the key ends at white space.
TEXT_TABLE = """# postmap source
example.com             OK
[mx.example.com]:587    SMTP-SUBMISSION
[192.0.2.1]:25          secure match=mx.example.com
2001:db8::1             IPV6-KEY
alias: value            ALIAS-FORMAT
user@example.com        USER
@example.org            CATCH-ALL
.sub.example.com        PARENT
UPPER.example.net       FOLDED
"quoted key"            QUOTED
"unbalanced key         BROKEN
missing-value
example.com             DUPLICATE
continued               first
  second line
key\\ with\\ space        ESCAPED
tab\tkey                TABBED
"""


def _keys(*groups: List[str]) -> List[str]:
    seen: dict = {}
    for group in groups:
        for key in group:
            seen.setdefault(key, None)
    return list(seen)


def _regexpKeys() -> List[str]:
    words = ["admin", "Admin", "xadmin", "admin.x", "the admin", "foo", "bar", "foobaz",
             "barbaz", "FOO", "bazfoo", "john.smith@example.com", "a.b@c.d", "xxy", "xxxy",
             "xy", "xxxxy", "tab", "tabt", "tabx", "123x", "ddx", "dx", "CaSe", "case",
             "CASE", "abc", "a.c", "aXc", "a+c", "aac", "abab", "abba", "pxy", "pqr", "p",
             "dollar", "unclosed", "x1", "y1", "z1", "w1", "[", "n1", "nothing",
             "if-yes", "if-no-deep", "if-x-deep", "if-deep", "if-", "plain", "end.",
             "endx", "a@b", "a@b@c", "[192.0.2.1]", "[1.2]", "file.exe", "FILE.SCR",
             "x.pif", "exe", "Hello1", "hello1", "HELLO1", "Abc", "12345", "1a", "",
             "@", "ALPHA", "abc123", "ab12", "Zz9", "émile", "naïve@example.com"]
    generated = [f"{prefix}{word}" for prefix in ("", "x", "Q", "1", "n", "if-")
                 for word in ("admin", "foo", "bar", "tab\\t", "a.c", "end.", "-yes",
                              "-deep", "@b", "user@host.example", "dollar", "CaSe", "9")]
    generated += [f"n{i}" for i in range(40)] + [f"user{i}@example.com" for i in range(40)]
    generated += [f"Word{i}" for i in range(30)] + [f"x{'x' * i}y" for i in range(6)]
    generated += [f"file{i}.{ext}" for i in range(20) for ext in ("exe", "SCR", "txt")]
    return _keys(words, generated)


def _pcreKeys() -> List[str]:
    words = ["alice@example.com", "Alice@Example.COM",
             "bob1@example.com", "ABC", "AbC", "abcd", "ÀÉÎ", "abc", "aBC", "ABc",
             "555-1234", "5551234", "foobar", "barfoo", "foo", "line1end", "lineXend",
             "linextwo", "anchor", "xanchor", "greeedy", "greedy", "end", "xend", "xyx",
             "x-x", "CaSe", "case", "abc", "a b c", " a b c ", "john.smith@example.org",
             "alpha", "Alpha1", "word_1", "wörd", "unclosed", "q", "r1", "s1", "t1", "u1",
             "if-yes", "if-no", "word", "file.exe", "FILE.SCR", "nodot", "with.dot", "",
             "é", "日本"]
    generated = [f"{prefix}{word}" for prefix in ("", "x", "Q", "1", "if-", "a.")
                 for word in ("abc", "ABC", "foobar", "555-1234", "line.end", "anchor",
                              "greedy", "end", "word", "alice@example.com", "x.exe", "-yes")]
    generated += [f"user{i}@example.com" for i in range(60)]
    generated += [f"U{chr(65 + i % 26)}{chr(66 + i % 25)}" for i in range(60)]
    generated += [f"{i:03d}-{i * 7 % 10000:04d}" for i in range(30)]
    generated += [f"first{i}.last@example.{tld}" for i in range(20) for tld in ("com", "org")]
    return _keys(words, generated)


def _cidrKeys() -> List[str]:
    keys = ["192.0.2.1", "192.0.2.200", "192.0.2.128", "192.0.2.127", "2001:db8::1",
            "2001:db8:ffff::1", "2001:db9::5", "198.51.100.7", "198.51.100.8", "10.1.1.1",
            "10.255.255.255", "172.16.0.1", "300.1.1.1", "fe80::1", "::1", "127.0.0.1",
            "127.0.0.2", "203.0.113.5", "100.64.0.1", "100.65.0.1", "100.127.255.255",
            "2001:db8::", "2002::1", "[192.0.2.1]", "192.0.2.1 ", "not-an-address",
            "::ffff:192.0.2.1", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3",
            "fe80::1%eth0", "2001:DB8::1", ""]
    keys += [f"192.0.2.{i}" for i in range(0, 256, 3)]
    keys += [f"100.{64 + i % 70}.{i}.1" for i in range(80)]
    keys += [f"2001:db{8 + i % 3}::{i:x}" for i in range(60)]
    keys += [f"10.{i}.0.{i}" for i in range(0, 256, 5)]
    return _keys(keys)


def _textKeys() -> List[str]:
    keys = ["example.com", "EXAMPLE.COM", "[mx.example.com]:587", "[MX.example.com]:587",
            "[192.0.2.1]:25", "[192.0.2.1]", "192.0.2.1", "2001:db8::1", "2001:DB8::1",
            "alias", "alias:", "user@example.com", "@example.org", ".sub.example.com",
            "sub.example.com", "upper.example.net", "UPPER.example.net", '"quoted key"',
            "quoted key", '"unbalanced', "missing-value", "continued", "key\\ with\\ space",
            "key with space", "key\\", "tab", "nothing"]
    keys += [f"user{i}@example.com" for i in range(120)]
    keys += [f"[host{i}.example]:{25 + i}" for i in range(100)]
    keys += [f"host{i}.example.com" for i in range(60)]
    return _keys(keys)


# -- the tests -----------------------------------------------------------------


class TableAgreementTests(SynchronousTestCase):
    """
    C{postmap -q} and tmta's lookups, key by key.
    """

    def setUp(self) -> None:
        missing = postfixMissing()
        if missing:
            raise SkipTest(missing)
        self.base = self.mktemp()
        self.postfixConfig = configDirectory(os.path.join(self.base, "postfix"))

    def source(self, name: str, text: str) -> str:
        os.makedirs(self.base, exist_ok=True)
        path = os.path.join(self.base, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def tmtaQuery(self, spec: str, keys: List[str]) -> dict:
        out = io.StringIO()
        queryMap(spec, keys, out, io.StringIO())
        found: dict = {}
        for line in out.getvalue().splitlines():
            key, _, value = line.partition("\t")
            found.setdefault(key, value)
        return found

    def compare(self, name: str, postfixSpec: str, tmtaSpec: str, keys: List[str],
                postfixWarnings: List[str], tmtaWarnings: List[str]) -> None:
        postfixFound, queryWarnings = postmapQuery(self.postfixConfig, postfixSpec, keys)
        tmtaFound = self.tmtaQuery(tmtaSpec, keys)
        agreement = Agreement(name)
        for key in keys:
            agreement.compare(repr(key), postfixFound.get(key), tmtaFound.get(key))
        agreement.compare("warned lines", warnedLines(postfixWarnings + queryWarnings),
                          warnedLines(tmtaWarnings))
        print(agreement.report())
        self.assertGreaterEqual(agreement.total, 300 if name != "warnings" else 1)
        self.assertEqual(agreement.differences, [], agreement.report())

    def patternTable(self, kind: str, text: str, keys: List[str]) -> None:
        if not postfixHasTableType(kind, self.postfixConfig):
            raise SkipTest(f"this Postfix has no {kind}: tables (Debian's postfix-{kind})")
        path = self.source(f"table.{kind}", text)
        table = openTable(f"{kind}:{path}")
        self.compare(kind, f"{kind}:{path}", f"{kind}:{path}", keys, [],
                     table.source.warnings)

    def test_regexp(self) -> None:
        """
        C{regexp:} is POSIX: classes, C{\\<}, basic syntax under C{x},
        back-references, C{/p1/!/p2/}, and the lines Postfix skips.
        """
        self.patternTable("regexp", REGEXP_TABLE, _regexpKeys())

    def test_pcre(self) -> None:
        """
        C{pcre:} is PCRE2: named groups, C{\\z}, C{\\p{Lu}}, inline
        flags, Postfix's default DOTALL and its flags.
        """
        self.patternTable("pcre", PCRE_TABLE, _pcreKeys())

    def test_cidr(self) -> None:
        """
        C{cidr:} with brackets, IPv6, host bits, bad masks and blocks.
        """
        self.patternTable("cidr", CIDR_TABLE, _cidrKeys())

    def test_texthash(self) -> None:
        """
        C{texthash:}: keys end at white space, so C{[host]:port} and IPv6
        addresses are keys; C{key: value} keeps its colon.
        """
        path = self.source("texthash", TEXT_TABLE)
        table = openTable(f"texthash:{path}")
        table.get("anything")
        self.compare("texthash", f"texthash:{path}", f"texthash:{path}", _textKeys(), [],
                     table.warnings)

    def test_hash(self) -> None:
        """
        C{hash:} built by postmap and by C{tmta map build} from the same
        source.
        """
        path = self.source("hashed", TEXT_TABLE)
        postfixCopy = copyFile(path, os.path.join(self.base, "postfix-db"))
        tmtaCopy = copyFile(path, os.path.join(self.base, "tmta-db"))
        postfixWarnings = postmapBuild(self.postfixConfig, f"hash:{postfixCopy}")
        err = io.StringIO()
        self.assertEqual(buildMaps([f"hash:{tmtaCopy}"], err=err), 0)
        self.compare("hash", f"hash:{postfixCopy}", f"hash:{tmtaCopy}", _textKeys(),
                     postfixWarnings, err.getvalue().splitlines())
