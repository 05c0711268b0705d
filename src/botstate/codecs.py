"""Codecs turn values into bytes and back.

Every backend stores bytes produced by its codec, the in-memory ones included: a value that works
on ``MemoryStorage`` therefore works on Redis or SQLite too, and a handler that mutates a value
after ``set`` or ``get`` can never change what is stored.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import pickle
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

import orjson

__all__ = ["BytesCodec", "Codec", "JsonCodec", "ModelCodec", "PickleCodec", "JSON"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Codec(Protocol[T]):
    """Encodes values to bytes and back. Any exception means "cannot": storages wrap it."""

    def encode(self, value: T, /) -> bytes: ...

    def decode(self, data: bytes, /) -> T: ...


_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _reject(obj: Any) -> Any:
    hint = ""
    if isinstance(obj, (set, frozenset)):
        hint = " (store a list instead)"
    elif hasattr(obj, "isoformat"):
        hint = " (store value.isoformat() or use a ModelCodec)"
    elif dataclasses.is_dataclass(obj):
        hint = " (use ModelCodec for dataclasses)"
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable{hint}")


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, enum.Enum):  # stored as its value
        return _has_non_finite(value.value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


class JsonCodec:
    """The default codec: strict JSON through orjson.

    A round trip keeps ints, floats, strings, bools, None, lists and str-keyed dicts exactly (dict
    order included). Anything JSON would change silently is refused instead: datetimes, sets,
    non-str dict keys, str/int subclasses, NaN and infinities, integers outside [-2**63, 2**64).
    Tuples are stored as JSON arrays and come back as lists; enum members and UUIDs are stored as
    their value.
    """

    __slots__ = ()

    def encode(self, value: Any, /) -> bytes:
        try:
            data = orjson.dumps(value, default=_reject, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError as exc:
            if isinstance(exc.__cause__, TypeError):  # our _reject's message, with its hint
                raise exc.__cause__ from None
            raise
        # The text round trip is the cheapest exact-size copy: orjson's bytes keep a 4 KiB buffer
        # each, which a storage holding them (MemoryStorage) would pay per entry. On str, the null
        # search is also faster than on bytes; orjson writes NaN/inf as null, so only a null
        # needs the deeper look.
        text = data.decode()
        if "null" in text and _has_non_finite(value):
            raise ValueError("NaN and infinite floats are not JSON")
        return text.encode()

    # orjson.loads itself, not a wrapper: decoding is on every read's path.
    decode: Callable[[bytes], Any] = staticmethod(orjson.loads)

    def __repr__(self) -> str:
        return "JsonCodec()"


JSON = JsonCodec()
"""The shared default codec instance."""


class BytesCodec:
    """Stores ``bytes`` as they are: for payloads that are already encoded (images, protobufs)."""

    __slots__ = ()

    def encode(self, value: bytes, /) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"BytesCodec stores bytes, not {type(value).__name__}")
        return bytes(value)

    def decode(self, data: bytes, /) -> bytes:
        return bytes(data)


class ModelCodec(Generic[T]):
    """Round-trips a typed value: a pydantic model, a dataclass, or any type pydantic validates.

    ``MemoryStorage(codec=ModelCodec(User))`` is a ``Storage[User]``: ``get`` returns ``User``
    instances, and stored data that no longer validates raises ``CorruptValueError`` instead of
    handing out half-built objects. pydantic is used when installed (``botstate[pydantic]``); without
    it, flat dataclasses are supported through the JSON codec.
    """

    def __init__(self, type_: type[T]) -> None:
        self.type = type_
        try:
            from pydantic import TypeAdapter
        except ImportError:
            if not (isinstance(type_, type) and dataclasses.is_dataclass(type_)):
                raise TypeError(
                    f"ModelCodec({type_!r}) needs pydantic (pip install 'botstate[pydantic]')"
                ) from None
            self._adapter: Any = None
        else:
            self._adapter = TypeAdapter(type_)

    def encode(self, value: T, /) -> bytes:
        if isinstance(self.type, type) and not isinstance(value, self.type):
            raise TypeError(f"expected {self.type.__name__}, got {type(value).__name__}")
        if self._adapter is not None:
            # warnings="error": a value that does not fit a non-class type (list[int]) is refused
            # now instead of being written and failing on read.
            return cast(bytes, self._adapter.dump_json(value, warnings="error"))
        return JSON.encode(dataclasses.asdict(cast(Any, value)))

    def decode(self, data: bytes, /) -> T:
        if self._adapter is not None:
            return cast(T, self._adapter.validate_json(data))
        return self.type(**JSON.decode(data))

    def __repr__(self) -> str:
        return f"ModelCodec({getattr(self.type, '__name__', self.type)!r})"


class PickleCodec:
    """Python's pickle. Opt-in only, never a default.

    Unpickling runs code chosen by whoever wrote the bytes: anyone who can write to the storage (a
    shared Redis, a cache directory, a copied database) can then run code in the bot. Use it only
    for storages that nothing but this bot can write, and prefer ``JsonCodec``/``ModelCodec``.
    """

    __slots__ = ("protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def encode(self, value: Any, /) -> bytes:
        return pickle.dumps(value, protocol=self.protocol)

    def decode(self, data: bytes, /) -> Any:
        return pickle.loads(data)
