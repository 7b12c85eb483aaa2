"""
Postfix's C{$parameter} expansion.

The forms understood are C{$name}, C{${name}}, C{$(name)},
C{${name?value}} (C{value} when C{name} is non-empty),
C{${name:value}} (C{value} when C{name} is empty), Postfix 3's braced
variants C{${name?{value}}}, C{${name:{value}}} and
C{${name?{value}:{other}}} (white space allowed around C{?} and C{:}),
and Postfix 3's comparisons C{${{text} op {text} ? {value} : {other}}},
op one of C{==} and C{!=} (as text), C{<}, C{<=}, C{>} and C{>=} (as
whole numbers) and C{<level}, C{<=level}, C{>level} and C{>=level} (as
compatibility levels such as C{3.6}).  C{$$} is a literal dollar sign; a
C{$} followed by anything else is an error, as in Postfix.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

Lookup = Callable[[str], Optional[str]]

_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
)


class ExpansionError(ValueError):
    """
    A value has a malformed or endlessly recursive C{$} reference.
    """


def _closing(text: str, start: int, opener: str, closer: str) -> int:
    """
    Find the index of the bracket that closes the one just before C{start},
    honouring nesting.
    """
    depth = 1
    i = start
    while i < len(text):
        c = text[i]
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ExpansionError(f"missing {closer!r} in {text!r}")


_OPERATORS = ("<=level", ">=level", "<level", ">level", "==", "!=", "<=", ">=", "<", ">")


def _level(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.strip().split("."))
    except ValueError:
        raise ExpansionError(f"bad compatibility level {text!r}")


def _number(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ExpansionError(f"{text!r} is not a number")


def _compare(left: str, op: str, right: str) -> bool:
    if op == "==":
        return left == right
    if op == "!=":
        return left != right
    a: Any
    b: Any
    if op.endswith("level"):
        a, b = _level(left), _level(right)
        op = op[: -len("level")]
    else:
        a, b = _number(left), _number(right)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _braced(text: str, what: str) -> Tuple[str, str]:
    """
    Split C{{inside}rest} (after leading white space) into the inside and
    the rest.
    """
    text = text.lstrip()
    if not text.startswith("{"):
        raise ExpansionError(f"expected '{{' for {what}")
    end = _closing(text, 1, "{", "}")
    return text[1:end], text[end + 1 :]


def _comparison(body: str, lookup: Lookup, depth: int) -> str:
    """
    Evaluate the inside of C{${{left} op {right} ? {value} : {other}}}.
    """
    left, rest = _braced(body, "the left operand")
    rest = rest.lstrip()
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None:
        raise ExpansionError(f"unknown operator in ${{{body}}}")
    right, rest = _braced(rest[len(op):], "the right operand")
    rest = rest.lstrip()
    if not rest.startswith("?"):
        raise ExpansionError(f"expected '?' in ${{{body}}}")
    ifTrue, rest = _braced(rest[1:], "the value when true")
    rest = rest.lstrip()
    ifFalse = ""
    if rest:
        if not rest.startswith(":"):
            raise ExpansionError(f"expected ':' in ${{{body}}}")
        ifFalse, rest = _braced(rest[1:], "the value when false")
        if rest.strip():
            raise ExpansionError(f"unexpected text after ${{{body}}}")
    chosen = ifTrue if _compare(expand(left, lookup, depth + 1), op,
                                expand(right, lookup, depth + 1)) else ifFalse
    return expand(chosen, lookup, depth + 1)


def _splitConditional(body: str) -> Tuple[str, Optional[str], Optional[str]]:
    """
    Split the inside of C{${...}} into the name, the text used when the
    name is set and the text used when it is empty.
    """
    i = 0
    while i < len(body) and body[i] in _NAME_CHARS:
        i += 1
    name, rest = body[:i], body[i:].lstrip()
    if not rest:
        return name, None, None
    op, rest = rest[0], rest[1:]
    if op not in "?:":
        raise ExpansionError(f"bad character {op!r} after ${{{name}")
    if rest.lstrip().startswith("{"):
        rest = rest.lstrip()
    if not rest.startswith("{"):
        # Legacy form: everything after the operator is the value.
        return (name, rest, None) if op == "?" else (name, None, rest)
    end = _closing(rest, 1, "{", "}")
    first, rest = rest[1:end], rest[end + 1 :].strip()
    if op == ":":
        if rest:
            raise ExpansionError(f"unexpected text after ${{{name}:{{...}}")
        return name, None, first
    if not rest:
        return name, first, None
    if not (rest.startswith(":") and rest[1:].strip().startswith("{")):
        raise ExpansionError(f"expected ':{{...}}' in ${{{name}?...}}")
    rest = rest[1:].strip()
    end = _closing(rest, 1, "{", "}")
    return name, first, rest[1:end]


def expand(value: str, lookup: Lookup, _depth: int = 0) -> str:
    """
    Expand every C{$} reference in C{value}.

    @param lookup: returns the raw (unexpanded) value of a parameter, or
        C{None} when it is not defined; an undefined parameter expands to
        the empty string, as in Postfix.
    @raise ExpansionError: a malformed reference, or a reference loop.
    """
    if "$" not in value:
        return value
    if _depth > 100:
        raise ExpansionError("parameter references nested too deeply (a loop?)")
    out = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c != "$":
            j = value.find("$", i)
            if j < 0:
                j = n
            out.append(value[i:j])
            i = j
            continue
        i += 1
        if i >= n:
            raise ExpansionError(f"'$' at the end of {value!r}")
        c = value[i]
        if c == "$":
            out.append("$")
            i += 1
            continue
        if c in "{(":
            closer = "}" if c == "{" else ")"
            end = _closing(value, i + 1, c, closer)
            body = value[i + 1 : end]
            i = end + 1
            if c == "{" and body.lstrip().startswith("{"):
                out.append(_comparison(body, lookup, _depth))
                continue
            name, ifSet, ifEmpty = _splitConditional(body)
            if not name:
                raise ExpansionError(f"missing parameter name in ${c}{body}{closer}")
        else:
            j = i
            while j < n and value[j] in _NAME_CHARS:
                j += 1
            if j == i:
                raise ExpansionError(f"unexpected {c!r} after '$' in {value!r}")
            name, ifSet, ifEmpty = value[i:j], None, None
            i = j
        raw = lookup(name)
        current = expand(raw, lookup, _depth + 1) if raw else ""
        if ifSet is None and ifEmpty is None:
            out.append(current)
        else:
            chosen = ifSet if current else ifEmpty
            out.append(expand(chosen, lookup, _depth + 1) if chosen else "")
    return "".join(out)
