"""Redis-style glob patterns, translated once for every backend.

Supported: ``*`` (any run), ``?`` (one character), ``[abc]``, ``[a-z]``, ``[^a]`` and ``\\``
escaping the next character, with Redis's reading of every corner (see :func:`_scan_bracket`):
``[!a]`` is ``!`` or ``a``, ``[]a]`` matches nothing, ``[abc`` is the set ``[abc]``, and a
trailing ``\\`` is itself. Matching is always case-sensitive, by character where Redis compares
bytes. Backends use :func:`compile_glob` to filter in Python, :func:`literal_prefix` to narrow a
range scan, :func:`escape` to embed a literal (a key prefix) in a pattern, :func:`to_like` for
SQL ``LIKE`` with an explicit escape, and :func:`to_byte_like` for a ``LIKE`` prefilter on UTF-8
bytes.
"""

from __future__ import annotations

import re
from functools import lru_cache

_GLOB_SPECIAL = frozenset("*?[]\\")


def escape(literal: str) -> str:
    """Escape ``literal`` so that it matches only itself inside a glob pattern."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in literal)


def _scan_bracket(pattern: str, j: int) -> tuple[list[str], bool, int]:
    """Read a set starting after its ``[`` exactly as Redis's ``stringmatchlen`` does.

    Returns the regex items, whether the set is negated, and where the pattern resumes. Only ``^``
    negates (``[!a]`` is ``!`` or ``a``); ``\\`` escapes the next character; ``x-y`` is a range
    (reversed ones swapped), whatever ``y`` is, even ``]`` or ``\\``; a ``]`` right after ``[`` or
    ``[^`` closes an empty set (matching nothing, or any one character when negated); and a set
    left unclosed runs to the end of the pattern.
    """
    n = len(pattern)
    negate = j < n and pattern[j] == "^"
    if negate:
        j += 1
    items: list[str] = []
    while j < n:
        c = pattern[j]
        if c == "\\" and n - j >= 2:
            j += 1
            items.append(re.escape(pattern[j]))
        elif c == "]":
            return items, negate, j + 1
        elif n - j >= 3 and pattern[j + 1] == "-":
            lo, hi = sorted((c, pattern[j + 2]))
            items.append(f"{re.escape(lo)}-{re.escape(hi)}")
            j += 2
        else:
            items.append(re.escape(c))
        j += 1
    return items, negate, n


def _set_regex(items: list[str], negate: bool) -> str:
    if not items:
        return "." if negate else "(?!)"
    return ("[^" if negate else "[") + "".join(items) + "]"


def _tokens(pattern: str) -> list[tuple[str, str]]:
    """Split a pattern into ``(kind, text)``: ``lit`` characters, ``any``, ``one`` and ``set`` regexes."""
    if type(pattern) is not str:  # every backend's iteration reads its pattern through here
        raise TypeError(f"pattern must be str, not {type(pattern).__name__}")
    out: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            out.append(("lit", pattern[i + 1]))
            i += 2
        elif ch == "\\":
            out.append(("lit", "\\"))
            i += 1
        elif ch == "*":
            if not out or out[-1][0] != "any":
                out.append(("any", ""))
            i += 1
        elif ch == "?":
            out.append(("one", ""))
            i += 1
        elif ch == "[":
            items, negate, i = _scan_bracket(pattern, i + 1)
            out.append(("set", _set_regex(items, negate)))
        else:
            out.append(("lit", ch))
            i += 1
    return out


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` into a regex that must match a whole key."""
    parts = []
    for kind, text in _tokens(pattern):
        if kind == "lit":
            parts.append(re.escape(text))
        elif kind == "any":
            parts.append(".*")
        elif kind == "one":
            parts.append(".")
        else:
            parts.append(text)
    return re.compile("".join(parts), re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The literal text every match starts with (``"user:"`` for ``"user:*"``)."""
    prefix = []
    for kind, text in _tokens(pattern):
        if kind != "lit":
            break
        prefix.append(text)
    return "".join(prefix)


def is_literal(pattern: str) -> bool:
    """True when the pattern has no wildcard, so it matches exactly one key."""
    return all(kind == "lit" for kind, _ in _tokens(pattern))


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``; None if unbounded.

    With it a backend turns ``key LIKE 'p%'`` into the index-friendly, case-sensitive and
    escape-free range ``prefix <= key < upper``.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # skip surrogates: not valid in UTF-8 text
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None


def to_like(pattern: str, escape_char: str = "\\") -> str:
    """Translate to SQL ``LIKE`` when the pattern has only ``*``/``?``; raise ValueError otherwise.

    ``%``, ``_`` and the escape character in literal text are escaped, so a key holding ``%`` never
    matches more than itself. Sets (``[...]``) have no LIKE form: callers filter with
    :func:`compile_glob` instead. LIKE's case-sensitivity depends on the database; callers must
    use a binary collation or re-check with :func:`compile_glob`.
    """
    out = []
    for kind, text in _tokens(pattern):
        if kind == "lit":
            if text in ("%", "_", escape_char):
                out.append(escape_char + text)
            else:
                out.append(text)
        elif kind == "any":
            out.append("%")
        elif kind == "one":
            out.append("_")
        else:
            raise ValueError("character sets have no LIKE form")
    return "".join(out)


def to_byte_like(pattern: str) -> str:
    """A SQL ``LIKE`` pattern (escape ``\\``) that every key matching ``pattern`` satisfies when both
    are compared as UTF-8 bytes (``bytea LIKE``), for a database to narrow a scan.

    ``*`` and literals translate exactly: UTF-8 is self-synchronising, so literal bytes only ever
    match whole characters. ``?`` and sets become ``_%`` (one character is one to four bytes), a
    superset: callers re-check candidates with :func:`compile_glob`.
    """
    out = []
    for kind, text in _tokens(pattern):
        if kind == "lit":
            out.append("\\" + text if text in ("%", "_", "\\") else text)
        elif kind == "any":
            out.append("%")
        else:
            out.append("_%")
    return "".join(out)
