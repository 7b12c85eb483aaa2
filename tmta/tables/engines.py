"""
The regular-expression engines behind C{regexp:} and C{pcre:} tables:
the ones Postfix itself uses, so a pattern means in tmta what it means
in Postfix.

C{regexp:} is POSIX extended regular expressions as the C library's
C{regcomp(3)} compiles them (Postfix's C{dict_regexp} calls the same
functions); Python's C{re} is a different language, in which
C{[[:alpha:]]}, C{\\<} or a back-reference in a bracket mean something
else or nothing.  The C library is reached with C{ctypes}: no binding
on PyPI wraps it.

C{pcre:} is PCRE2, through the C{pcre2} package (a maintained binding
that carries the library), compiled in UTF mode without Unicode
properties for C{\\w} and the POSIX classes, as Postfix compiles it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from typing import List, Optional, Sequence

#: A match: the groups' texts, group 0 the whole match, C{None} for a
#: group that took no part.
Groups = Sequence[Optional[str]]


class PatternError(ValueError):
    """
    A pattern the engine will not compile, or a flag it does not know.
    """


# -- POSIX, from the C library -------------------------------------------------

REG_EXTENDED, REG_ICASE, REG_NEWLINE = 1, 2, 4
_REG_NOMATCH = 1
#: Postfix substitutes $1 to $9 at most; group 0 is the whole match.
_MAX_GROUPS = 10
#: Larger than any C library's C{regex_t} (glibc's is 64 bytes).
_REGEX_T_SIZE = 256

_libc: Optional[ctypes.CDLL] = None


_GLIBC = platform.libc_ver()[0] == "glibc"


class _RegMatch(ctypes.Structure):
    # glibc's regoff_t is an int; musl's a long.
    _fields_ = ([("so", ctypes.c_int), ("eo", ctypes.c_int)]
                if _GLIBC else
                [("so", ctypes.c_long), ("eo", ctypes.c_long)])


def _library() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.regcomp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        libc.regcomp.restype = ctypes.c_int
        libc.regexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                 ctypes.POINTER(_RegMatch), ctypes.c_int]
        libc.regexec.restype = ctypes.c_int
        libc.regerror.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                  ctypes.c_size_t]
        libc.regerror.restype = ctypes.c_size_t
        libc.regfree.argtypes = [ctypes.c_void_p]
        libc.regfree.restype = None
        _libc = libc
    return _libc


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class PosixPattern:
    """
    A pattern compiled by the C library's C{regcomp}.

    @ivar groups: how many parenthesised groups the pattern has, so far
        as substitution can use them (at most 9).
    """

    def __init__(self, pattern: str, cflags: int) -> None:
        libc = _library()
        self._regex = ctypes.create_string_buffer(_REGEX_T_SIZE)
        error = libc.regcomp(self._regex, _encode(pattern), cflags)
        if error:
            message = ctypes.create_string_buffer(256)
            libc.regerror(error, self._regex, message, len(message))
            raise PatternError(message.value.decode("utf-8", "replace"))
        self._libc = libc
        # regex_t is opaque but for re_nsub: glibc keeps it after six
        # pointer-sized fields, musl first.
        offset = 6 * ctypes.sizeof(ctypes.c_void_p) if _GLIBC else 0
        nsub = ctypes.c_size_t.from_buffer(self._regex, offset).value
        self.groups = min(nsub, _MAX_GROUPS - 1)

    def __del__(self) -> None:
        libc = getattr(self, "_libc", None)
        if libc is not None:
            libc.regfree(self._regex)

    def search(self, text: str) -> Optional[Groups]:
        subject = _encode(text)
        if b"\0" in subject:
            subject = subject.split(b"\0", 1)[0]  # as a C string ends
        matches = (_RegMatch * _MAX_GROUPS)()
        result = self._libc.regexec(self._regex, subject, _MAX_GROUPS, matches, 0)
        if result == _REG_NOMATCH:
            return None
        if result:
            raise PatternError(f"regexec failed ({result})")
        return [subject[m.so:m.eo].decode("utf-8", "surrogateescape") if m.so >= 0 else None
                for m in matches]


def posix(pattern: str, flags: str) -> PosixPattern:
    """
    Compile a C{regexp:} pattern with its flags as Postfix does:
    extended syntax and no case by default; C{i} toggles case, C{x}
    extended syntax, C{m} newline-sensitive matching.

    @raise PatternError: an unknown flag or a pattern C{regcomp} refuses.
    """
    cflags = REG_EXTENDED | REG_ICASE
    toggles = {"i": REG_ICASE, "m": REG_NEWLINE, "x": REG_EXTENDED}
    for flag in flags:
        if flag not in toggles:
            raise PatternError(f'unknown regexp option "{flag}"')
        cflags ^= toggles[flag]
    return PosixPattern(pattern, cflags)


# -- PCRE2 ---------------------------------------------------------------------

# PCRE2's own option bits, which the pcre2 package passes through.
_PCRE2_CASELESS = 0x00000008
_PCRE2_DOLLAR_ENDONLY = 0x00000010
_PCRE2_DOTALL = 0x00000020
_PCRE2_MULTILINE = 0x00000400
_PCRE2_EXTENDED = 0x00000080
_PCRE2_UNGREEDY = 0x00040000


class PcrePattern:
    """
    A pattern compiled by PCRE2.  C{A} (anchored) is kept apart: it is
    applied when matching.
    """

    def __init__(self, pattern: str, options: int, anchored: bool) -> None:
        import pcre2

        try:
            self._pattern = pcre2.compile(pattern, options | pcre2.ASCII)
        except pcre2.error as e:
            raise PatternError(f"error in regex: {e}") from None
        except UnicodeEncodeError:
            raise PatternError("pattern is not UTF-8") from None
        self._match = self._pattern.match if anchored else self._pattern.search
        self.groups = self._pattern.groups

    def search(self, text: str) -> Optional[Groups]:
        try:
            found = self._match(text)
        except (UnicodeEncodeError, ValueError):
            return None  # not UTF-8: PCRE2 in UTF mode matches nothing
        if found is None:
            return None
        return [found.group(n) for n in range(self.groups + 1)]


#: Flags that are warned about and ignored.
OBSOLETE_PCRE_FLAGS = "X"


def pcre(pattern: str, flags: str) -> PcrePattern:
    """
    Compile a C{pcre:} pattern with its flags as Postfix does: no case
    and C{.} matching newlines by default; C{i}, C{m}, C{s}, C{x},
    C{A}, C{E} and C{U} toggle PCRE2's options; C{X} is obsolete and
    ignored.

    @raise PatternError: an unknown flag or a pattern PCRE2 refuses.
    """
    options = _PCRE2_CASELESS | _PCRE2_DOTALL
    anchored = False
    toggles = {"i": _PCRE2_CASELESS, "m": _PCRE2_MULTILINE, "s": _PCRE2_DOTALL,
               "x": _PCRE2_EXTENDED, "E": _PCRE2_DOLLAR_ENDONLY, "U": _PCRE2_UNGREEDY}
    for flag in flags:
        if flag == "A":
            anchored = not anchored
        elif flag in toggles:
            options ^= toggles[flag]
        elif flag not in OBSOLETE_PCRE_FLAGS:
            raise PatternError(f'unknown regexp option "{flag}"')
    return PcrePattern(pattern, options, anchored)


def engine(kind: str):
    """
    The compile function of C{kind}: C{regexp} or C{pcre}.
    """
    return pcre if kind == "pcre" else posix


__all__: List[str] = ["PatternError", "PosixPattern", "PcrePattern", "posix", "pcre", "engine"]
