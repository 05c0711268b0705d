"""Codecs: what survives a round trip exactly, and what is refused instead of silently changed."""

from __future__ import annotations

import dataclasses
import enum
import math
import sys
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pydantic
import pytest

from botstate import JSON, BytesCodec, JsonCodec, ModelCodec, PickleCodec


class Text(str):
    pass


class Number(int):
    pass


class NotANumber(enum.Enum):
    VALUE = math.nan


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class User:
    id: int
    name: str
    tags: list[str] = dataclasses.field(default_factory=list)


class Profile(pydantic.BaseModel):
    id: int
    langs: list[str]


@dataclasses.dataclass
class Point:
    x: int


# -- JsonCodec ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        2**63 - 1,
        -(2**63),
        0.1,
        1.0,
        -0.0,
        1e-300,
        "",
        "héllo 🙂 \x00 \n",
        True,
        False,
        None,
        [],
        {},
        [1, "2", [3, [4, {"five": 5.0}]]],
        {"": "empty key", "nested": {"deep": [None]}},
    ],
)
def test_json_round_trips_exactly(value: Any) -> None:
    got = JSON.decode(JSON.encode(value))
    assert got == value
    assert type(got) is type(value)
    assert repr(got) == repr(value)  # 1.0 stays a float, -0.0 keeps its sign, True is not 1


def test_json_keeps_dict_order() -> None:
    got = JSON.decode(JSON.encode({"z": 1, "a": {"y": 2, "b": 3}}))
    assert list(got) == ["z", "a"]
    assert list(got["a"]) == ["y", "b"]


def test_json_stores_tuples_as_lists_and_enums_and_uuids_as_their_value() -> None:
    assert JSON.decode(JSON.encode((1, (2, 3)))) == [1, [2, 3]]
    assert JSON.decode(JSON.encode(Color.RED)) == "red"
    assert JSON.decode(JSON.encode(uuid.UUID(int=1))) == "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 1),
        datetime(2026, 1, 1, tzinfo=UTC),
        date(2026, 1, 1),
        {1, 2},
        frozenset({1}),
        {"nested": [{"deep": {1}}]},
        {1: "int key"},
        {None: "none key"},
        math.nan,
        math.inf,
        {"list": [1.0, -math.inf]},
        {"enum": NotANumber.VALUE},
        2**64,
        -(2**63) - 1,
        Text("a str subclass"),
        Number(1),
        {"key": Text("nested subclass")},
        b"bytes",
        User(1, "Ann"),
        object(),
    ],
    ids=lambda v: type(v).__name__,
)
def test_json_refuses_what_it_would_change(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        JSON.encode(value)


def test_json_refuses_undecodable_bytes() -> None:
    for data in (b"\xff\xfe", b"{not json", b""):
        with pytest.raises(ValueError):
            JSON.decode(data)


def test_json_codec_instances_are_interchangeable() -> None:
    assert JsonCodec().encode({"a": 1}) == JSON.encode({"a": 1})
    assert repr(JSON) == "JsonCodec()"


# -- BytesCodec --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"\x00\xffraw", bytearray(b"ba"), memoryview(b"mv"), b""])
def test_bytes_codec_stores_bytes_as_they_are(value: Any) -> None:
    codec = BytesCodec()
    data = codec.encode(value)
    assert type(data) is bytes
    assert data == bytes(value)
    got = codec.decode(data)
    assert type(got) is bytes
    assert got == bytes(value)


@pytest.mark.parametrize("value", ["text", 1, None, [1]])
def test_bytes_codec_refuses_other_types(value: Any) -> None:
    with pytest.raises(TypeError):
        BytesCodec().encode(value)


# -- PickleCodec ----------------------------------------------------------------------------------------


def test_pickle_codec_round_trips_python_objects() -> None:
    codec = PickleCodec()
    value = {"when": datetime(2026, 1, 1), "ids": {1, 2}, "user": User(1, "Ann", ["a"]), 3: (4, 5)}
    got = codec.decode(codec.encode(value))
    assert got == value
    assert type(got[3]) is tuple


def test_pickle_codec_protocol() -> None:
    assert PickleCodec(protocol=2).encode([1])[:2] == b"\x80\x02"


# -- ModelCodec -------------------------------------------------------------------------------------------


def test_model_codec_with_a_dataclass() -> None:
    codec = ModelCodec(User)
    user = User(1, "Ann", ["admin"])
    got = codec.decode(codec.encode(user))
    assert type(got) is User
    assert got == user
    assert got is not user
    assert repr(codec) == "ModelCodec('User')"


def test_model_codec_with_a_pydantic_model() -> None:
    codec = ModelCodec(Profile)
    profile = Profile(id=7, langs=["en", "ru"])
    got = codec.decode(codec.encode(profile))
    assert type(got) is Profile
    assert got == profile


@pytest.mark.parametrize(
    ("codec", "wrong"),
    [
        (ModelCodec(User), {"id": 1, "name": "Ann"}),
        (ModelCodec(User), Point(1)),
        (ModelCodec(Profile), {"id": 1, "langs": []}),
        (ModelCodec(Profile), User(1, "Ann")),
    ],
)
def test_model_codec_refuses_values_of_another_type(codec: ModelCodec[Any], wrong: Any) -> None:
    with pytest.raises(TypeError):
        codec.encode(wrong)


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (ModelCodec(User), b'{"id": "not a number", "name": "Ann"}'),
        (ModelCodec(User), b'{"name": "no id"}'),
        (ModelCodec(Profile), b'{"id": 1}'),
        (ModelCodec(Profile), b"\xff not json"),
    ],
)
def test_model_codec_refuses_invalid_stored_data(codec: ModelCodec[Any], data: bytes) -> None:
    with pytest.raises(ValueError):
        codec.decode(data)


def test_model_codec_without_pydantic_handles_flat_dataclasses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydantic", None)  # "import pydantic" now fails
    codec = ModelCodec(Point)
    assert codec.decode(codec.encode(Point(3))) == Point(3)
    with pytest.raises(TypeError):
        codec.encode({"x": 3})
    with pytest.raises(TypeError):
        ModelCodec(dict)


def test_encoded_values_hold_no_spare_buffer() -> None:
    """A storage keeping encoded values (MemoryStorage) pays their allocation per entry."""
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [JsonCodec().encode({"state": "menu", "count": i, "lang": "en"}) for i in range(2000)]
        per_value = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_value < 200
