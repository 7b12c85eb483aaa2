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

C{pcre:} is PCRE2, the system's C{libpcre2-8} that Postfix's pcre:
tables link, compiled in byte mode as Postfix compiles it.  It is
reached with C{ctypes} too: the C{pcre2} package on PyPI carries a
newer PCRE2 of its own, whose caseless C{\\p{Lu}} matches lower case,
so it would disagree with the Postfix beside it.
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
        libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
        libc.newlocale.restype = ctypes.c_void_p
        libc.uselocale.argtypes = [ctypes.c_void_p]
        libc.uselocale.restype = ctypes.c_void_p
        global _cLocale
        _cLocale = libc.newlocale(_LC_ALL_MASK, b"C", None)
        _libc = libc
    return _libc


#: Python runs in the user's locale; Postfix's daemons in C, where a
#: byte above 127 is no letter.  Patterns are compiled and matched in
#: C, set for the calling thread alone.
_LC_ALL_MASK = 0x1FBF if _GLIBC else 0x3F
_cLocale: Optional[int] = None


class _InCLocale:
    def __enter__(self) -> None:
        self.previous = _libc.uselocale(_cLocale) if _cLocale else None  # type: ignore

    def __exit__(self, *exc) -> None:
        if self.previous:
            _libc.uselocale(self.previous)  # type: ignore


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
        with _InCLocale():
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
        with _InCLocale():
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


# -- PCRE2, from the system's library --------------------------------------

# PCRE2's option bits.
_PCRE2_CASELESS = 0x00000008
_PCRE2_DOLLAR_ENDONLY = 0x00000010
_PCRE2_DOTALL = 0x00000020
_PCRE2_EXTENDED = 0x00000080
_PCRE2_MULTILINE = 0x00000400
_PCRE2_UNGREEDY = 0x00040000
_PCRE2_ANCHORED = 0x80000000
_PCRE2_INFO_CAPTURECOUNT = 4
_PCRE2_ERROR_NOMATCH = -1

_pcre2: Optional[ctypes.CDLL] = None


def _pcreLibrary() -> ctypes.CDLL:
    """
    The 8-bit PCRE2 library, as Postfix's pcre: tables link it.

    @raise PatternError: it is not installed.
    """
    global _pcre2
    if _pcre2 is None:
        name = ctypes.util.find_library("pcre2-8") or "libpcre2-8.so.0"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise PatternError("pcre: tables need the PCRE2 library (libpcre2-8), "
                               "which is not installed") from None
        p, size, u32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32
        lib.pcre2_compile_8.argtypes = [ctypes.c_char_p, size, u32,
                                        ctypes.POINTER(ctypes.c_int), ctypes.POINTER(size), p]
        lib.pcre2_compile_8.restype = p
        lib.pcre2_get_error_message_8.argtypes = [ctypes.c_int, ctypes.c_char_p, size]
        lib.pcre2_pattern_info_8.argtypes = [p, u32, p]
        lib.pcre2_match_data_create_from_pattern_8.argtypes = [p, p]
        lib.pcre2_match_data_create_from_pattern_8.restype = p
        lib.pcre2_match_8.argtypes = [p, ctypes.c_char_p, size, size, u32, p, p]
        lib.pcre2_match_8.restype = ctypes.c_int
        lib.pcre2_get_ovector_pointer_8.argtypes = [p]
        lib.pcre2_get_ovector_pointer_8.restype = ctypes.POINTER(size)
        lib.pcre2_match_data_free_8.argtypes = [p]
        lib.pcre2_match_data_free_8.restype = None
        lib.pcre2_code_free_8.argtypes = [p]
        lib.pcre2_code_free_8.restype = None
        _pcre2 = lib
    return _pcre2


class PcrePattern:
    """
    A pattern compiled by PCRE2 in its byte mode (no C{PCRE2_UTF}), as
    Postfix compiles pcre: patterns: a key is matched as its UTF-8 bytes.
    """

    def __init__(self, pattern: str, options: int) -> None:
        lib = _pcreLibrary()
        error, offset = ctypes.c_int(), ctypes.c_size_t()
        data = _encode(pattern)
        code = lib.pcre2_compile_8(data, len(data), options, ctypes.byref(error),
                                   ctypes.byref(offset), None)
        if not code:
            message = ctypes.create_string_buffer(256)
            lib.pcre2_get_error_message_8(error.value, message, len(message))
            raise PatternError(f"error in regex at offset {offset.value}: "
                               f"{message.value.decode('utf-8', 'replace')}")
        self._lib, self._code = lib, code
        count = ctypes.c_uint32()
        lib.pcre2_pattern_info_8(code, _PCRE2_INFO_CAPTURECOUNT, ctypes.byref(count))
        self.groups = count.value

    def __del__(self) -> None:
        if getattr(self, "_code", None):
            self._lib.pcre2_code_free_8(self._code)

    def search(self, text: str) -> Optional[Groups]:
        lib, subject = self._lib, _encode(text)
        # Match data per call: a pattern is shared between threads.
        matchData = lib.pcre2_match_data_create_from_pattern_8(self._code, None)
        if not matchData:
            raise MemoryError("pcre2_match_data_create_from_pattern")
        try:
            found = lib.pcre2_match_8(self._code, subject, len(subject), 0, 0, matchData, None)
            if found == _PCRE2_ERROR_NOMATCH:
                return None
            if found < 0:
                raise PatternError(f"pcre2_match failed ({found})")
            vector = lib.pcre2_get_ovector_pointer_8(matchData)
            groups: List[Optional[str]] = []
            for n in range(self.groups + 1):
                start, end = vector[2 * n], vector[2 * n + 1]
                unset = start > len(subject)  # PCRE2_UNSET
                groups.append(None if unset else
                              subject[start:end].decode("utf-8", "surrogateescape"))
            return groups
        finally:
            lib.pcre2_match_data_free_8(matchData)


#: Flags that are warned about and ignored.
OBSOLETE_PCRE_FLAGS = "X"


def pcre(pattern: str, flags: str) -> PcrePattern:
    """
    Compile a C{pcre:} pattern with its flags as Postfix does: no case
    and C{.} matching newlines by default; C{i}, C{m}, C{s}, C{x},
    C{A}, C{E} and C{U} toggle PCRE2's options; C{X} is obsolete and
    ignored (the caller warns).

    @raise PatternError: an unknown flag or a pattern PCRE2 refuses.
    """
    options = _PCRE2_CASELESS | _PCRE2_DOTALL
    toggles = {"i": _PCRE2_CASELESS, "m": _PCRE2_MULTILINE, "s": _PCRE2_DOTALL,
               "x": _PCRE2_EXTENDED, "A": _PCRE2_ANCHORED, "E": _PCRE2_DOLLAR_ENDONLY,
               "U": _PCRE2_UNGREEDY}
    for flag in flags:
        if flag in toggles:
            options ^= toggles[flag]
        elif flag not in OBSOLETE_PCRE_FLAGS:
            raise PatternError(f'unknown regexp option "{flag}"')
    return PcrePattern(pattern, options)


def engine(kind: str):
    """
    The compile function of C{kind}: C{regexp} or C{pcre}.
    """
    return pcre if kind == "pcre" else posix


__all__: List[str] = ["PatternError", "PosixPattern", "PcrePattern", "posix", "pcre", "engine"]
