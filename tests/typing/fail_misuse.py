"""Must FAIL type checking: each marked line is misuse the generics catch (`# E: <error code>`)."""

from __future__ import annotations

import dataclasses

from botstate import MemoryStorage, ModelCodec, Storage, TtlStorage


@dataclasses.dataclass
class User:
    id: int


async def misuse(plain: Storage[int]) -> None:
    ints: Storage[int] = MemoryStorage()
    await ints.set("k", "not an int")  # E: arg-type
    mem: MemoryStorage[int] = MemoryStorage()
    await mem.compare_and_set("k", 1, expected="x")  # E: arg-type
    users = MemoryStorage(codec=ModelCodec(User))
    await users.set("u", {"id": 1})  # E: arg-type
    name: str = await users.get("u")  # E: assignment
    await ints.set(42, 1)  # E: arg-type
    await ints.set("k", 1, ttl="60")  # E: arg-type
    await plain.touch("k")  # E: attr-defined
    ttl_only: TtlStorage[int] = plain  # E: assignment
    del name, ttl_only
