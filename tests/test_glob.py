"""Redis-style globs: one translation every backend shares, so a pattern selects the same keys everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from botstate._glob import compile_glob, escape, is_literal, literal_prefix, prefix_upper_bound, to_like

HOSTILE = ["a*b", "a?b", "[x]", "back\\slash", "trailing\\", "]", "*", "?", "[^!]", "100%_sure", "a\nb"]


def matches(pattern: str, key: str) -> bool:
    return compile_glob(pattern).fullmatch(key) is not None


@pytest.mark.parametrize("literal", HOSTILE)
def test_escaped_literal_matches_only_itself(literal: str) -> None:
    pattern = escape(literal)
    assert matches(pattern, literal)
    assert is_literal(pattern)
    assert literal_prefix(pattern) == literal
    assert not any(matches(pattern, other) for other in HOSTILE if other != literal)


def test_escaped_prefix_does_not_widen_a_pattern() -> None:
    pattern = escape("user[1]*") + ":*"
    assert matches(pattern, "user[1]*:42")
    assert not matches(pattern, "user1x:42")
    assert literal_prefix(pattern) == "user[1]*:"


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("*", ["", "anything", "multi\nline"], []),
        ("a*", ["a", "abc", "a\n"], ["ba", "A"]),
        ("a**b", ["ab", "axxb"], ["a"]),
        ("?", ["x", "\n", "🙂"], ["", "xy"]),
        ("user:?", ["user:1"], ["user:", "user:10"]),
        ("[abc]", ["a", "c"], ["d", "", "ab"]),
        ("[a-c]", ["a", "b", "c"], ["d", "-", "A"]),
        ("[z-a]", ["a", "m", "z"], ["[z-a]", "-"]),  # reversed ranges are swapped, as in Redis
        ("[a-c-e]", ["a", "c", "-", "e"], ["d"]),  # a range does not start another one
        # Each corner below reads as Redis 7 reads it (checked against HSCAN MATCH on a server).
        ("[-a]", ["a", "-"], ["b"]),
        ("[a-]", ["a", "]", "^"], ["-", "b"]),  # "a-]" is the range "]".."a"; the set is unclosed
        ("[a-", ["a", "-"], ["b"]),
        ("[--a]", ["-", "[", "]", "a"], ["b", "!"]),
        ("[^a]", ["b", "-", "!"], ["a", ""]),
        ("[!a]", ["!", "a"], ["b"]),  # only "^" negates
        ("[!]", ["!"], ["a"]),
        ("[\\]]", ["]"], ["\\"]),
        ("[\\]", ["]"], ["[]", "\\"]),  # an escaped "]" does not close the set
        ("[]a]", [], ["]", "a", "]a]", "b"]),  # "[]" is an empty set: it matches nothing
        ("[]", [], ["", "]", "[]", "a"]),
        ("[^]", ["a", "]", "^"], ["", "ab"]),  # a negated empty set is any one character
        ("[^]]", ["a]", "]]"], ["a", "]"]),
        ("[\\a-\\c]", ["a", "-", "c"], ["b", "\\"]),  # escapes do not make range ends
        ("[a-\\]", ["a", "\\", "]", "^"], ["b"]),
        ("[.]", ["."], ["x"]),
        ("\\*", ["*"], ["x", "\\*"]),
        ("a\\", ["a\\"], ["a"]),  # a trailing backslash is itself
        ("\\", ["\\"], [""]),
        ("[abc", ["a", "b", "c"], ["[abc", "d"]),  # an unclosed set runs to the end of the pattern
        ("[a\\", ["a", "\\"], ["[a\\"]),
        ("[abc\\]", ["a", "]"], ["\\"]),
        ("[", [], ["[", ""]),
        ("x[", [], ["x[", "x"]),
        ("*[", [], ["[", "x["]),
        ("User:*", ["User:1"], ["user:1"]),  # always case-sensitive
        ("ключ*", ["ключ:1"], ["КЛЮЧ:1"]),
    ],
)
def test_compile_glob(pattern: str, yes: list[str], no: list[str]) -> None:
    for key in yes:
        assert matches(pattern, key), key
    for key in no:
        assert not matches(pattern, key), key


def test_compile_glob_matches_whole_keys_only() -> None:
    assert compile_glob("user:1").fullmatch("user:10") is None
    assert compile_glob("a?").fullmatch("ab") is not None


@pytest.mark.parametrize(
    ("pattern", "prefix", "literal"),
    [
        ("user:*", "user:", False),
        ("user:1", "user:1", True),
        ("user:?", "user:", False),
        ("user:[12]", "user:", False),
        ("user\\*:*", "user*:", False),
        ("*", "", False),
        ("", "", True),
        ("[abc", "", False),
        ("x[", "x", False),
        ("a\\", "a\\", True),
    ],
)
def test_literal_prefix_and_is_literal(pattern: str, prefix: str, literal: bool) -> None:
    assert literal_prefix(pattern) == prefix
    assert is_literal(pattern) is literal


@pytest.mark.parametrize(
    ("prefix", "upper"),
    [
        ("ab", "ac"),
        ("user:", "user;"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff", None),
        ("", None),
        ("\ud7ff", "\ue000"),  # skips the surrogates, which UTF-8 text cannot hold
    ],
)
def test_prefix_upper_bound(prefix: str, upper: str | None) -> None:
    assert prefix_upper_bound(prefix) == upper


@pytest.mark.parametrize("prefix", ["user:", "a\U0010ffff", "ключ", "x\ud7ff"])
def test_prefix_upper_bound_is_above_every_extension(prefix: str) -> None:
    upper = prefix_upper_bound(prefix)
    assert upper is not None
    for key in (prefix, prefix + "\x00", prefix + "\U0010ffff" * 3, prefix + "zzz"):
        assert prefix <= key < upper


@pytest.mark.parametrize(
    ("pattern", "like"),
    [
        ("user:*", "user:%"),
        ("user:?", "user:_"),
        ("100%_sure", "100\\%\\_sure"),
        ("u?er*", "u_er%"),
        ("back\\\\slash", "back\\\\slash"),
        ("\\*literal", "*literal"),
        ("a**", "a%"),
    ],
)
def test_to_like_escapes_percent_underscore_and_escape(pattern: str, like: str) -> None:
    assert to_like(pattern) == like


def test_to_like_with_another_escape_character() -> None:
    assert to_like("50%!*", "!") == "50!%!!%"


def test_to_like_refuses_character_sets() -> None:
    with pytest.raises(ValueError):
        to_like("user:[12]")


@pytest.mark.parametrize("pattern", [5, b"user:*", None])
def test_a_pattern_that_is_not_str_is_a_type_error_saying_so(pattern: Any) -> None:
    for read in (compile_glob, is_literal, literal_prefix):
        with pytest.raises(TypeError, match="pattern must be str"):
            read(pattern)
