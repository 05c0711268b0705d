from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from _processes import children, finish, release_together, shared_url
from botstate import MemoryStorage, open_storage
from botstate.errors import CorruptValueError
from botstate.fsm import StateContext
from botstate.wrappers import namespace
from wrappers.wrapper_backends import Minimal, Yielding, any_storage

__all__ = ["any_storage", "shared_url"]  # the fixtures, imported for pytest

CONSUMER = Path(__file__).with_name("_consumer.py")


async def test_state_and_data_round_trip(any_storage: Any) -> None:
    ctx = StateContext(any_storage, "chat:1")
    assert await ctx.get_state() is None
    assert await ctx.get_data() == {}
    await ctx.set_state("form:name")
    await ctx.set_data({"step": 1})
    assert await ctx.get_state() == "form:name"
    assert await ctx.update_data({"name": "Ann"}, age=30) == {"step": 1, "name": "Ann", "age": 30}
    await ctx.set_state("form:done")
    assert await ctx.get_data() == {"step": 1, "name": "Ann", "age": 30}


async def test_50_concurrent_updates_lose_no_key(any_storage: Any) -> None:
    ctx = StateContext(any_storage, "chat:race")
    await ctx.set_state("collecting")
    racing = Yielding(any_storage)  # every update's read and write interleave with the others'
    await asyncio.gather(
        *(StateContext(racing, "chat:race").update_data({f"k{i}": i}) for i in range(50))  # type: ignore[arg-type]
    )
    assert await ctx.get_data() == {f"k{i}": i for i in range(50)}
    assert await ctx.get_state() == "collecting"


class CountingWrites:
    """Forwards to ``inner``, counting each call of a method that writes to the backend."""

    WRITES = frozenset({"set", "set_many", "delete", "compare_and_set", "increment", "touch", "clear"})

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in self.WRITES:
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.writes[name] += 1
            return await attribute(*args, **kwargs)

        return counted


async def test_clear_forgets_state_and_data_in_one_write(any_storage: Any) -> None:
    ctx = StateContext(any_storage, "chat:1")
    await ctx.set_state("s")
    await ctx.update_data(x=1)
    counting = CountingWrites(any_storage)
    await StateContext(counting, "chat:1").clear()  # type: ignore[arg-type]
    assert sum(counting.writes.values()) == 1, counting.writes
    assert await ctx.get_state() is None
    assert await ctx.get_data() == {}
    assert await any_storage.has("chat:1") is False


async def test_state_and_data_are_one_record() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    ctx = StateContext(namespace(storage, "fsm:"), "7")
    await ctx.set_state("menu")
    await ctx.update_data(lang="en")
    assert await storage.get("fsm:7") == {"state": "menu", "data": {"lang": "en"}}


async def test_returned_data_is_a_copy() -> None:
    ctx = StateContext(MemoryStorage(), "k")
    data = await ctx.update_data(items=[1])
    data["items"].append(2)
    (await ctx.get_data())["items"].append(3)
    assert await ctx.get_data() == {"items": [1]}


async def test_a_plain_storage_still_loses_no_update_in_process() -> None:
    storage = Minimal()
    racing = Yielding(storage)
    await asyncio.gather(*(StateContext(racing, "k").update_data({str(i): i}) for i in range(20)))  # type: ignore[arg-type]
    assert len(storage.data["k"]["data"]) == 20


async def test_a_plain_storage_loses_nothing_through_a_view_made_per_call() -> None:
    # As the StateContext docstring suggests: a namespace view built for each update.
    storage = Minimal()
    racing = Yielding(storage)
    await asyncio.gather(
        *(StateContext(namespace(racing, "fsm:"), "k").update_data({str(i): i}) for i in range(20))  # type: ignore[arg-type]
    )
    assert len(storage.data["fsm:k"]["data"]) == 20


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "with compare-and-set"])
async def test_clear_racing_an_update_never_brings_the_old_conversation_back(plain: bool) -> None:
    storage: Any = Yielding(Minimal() if plain else MemoryStorage())
    await StateContext(storage, "k").set_state("old")
    await StateContext(storage, "k").update_data(secret=1)
    await asyncio.gather(StateContext(storage, "k").update_data(x=2), StateContext(storage, "k").clear())
    ctx = StateContext(storage, "k")
    assert await ctx.get_state() is None  # cleared before or after the update: never "old"
    assert "secret" not in await ctx.get_data()


async def test_ttl_expires_an_abandoned_conversation() -> None:
    ctx = StateContext(MemoryStorage(), "k", ttl=0.1)
    await ctx.set_state("waiting")
    await asyncio.sleep(0.25)
    assert await ctx.get_state() is None


async def test_a_foreign_value_is_a_corrupt_record_naming_the_key() -> None:
    storage: MemoryStorage[Any] = MemoryStorage({"k": [1, 2]})
    with pytest.raises(CorruptValueError) as info:
        await StateContext(storage, "k").get_state()
    assert info.value.key == "k"
    assert await storage.get("k") == [1, 2]


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        StateContext(MemoryStorage(), "")
    with pytest.raises(ValueError):
        StateContext(MemoryStorage(), "k", ttl=0)
    with pytest.raises(TypeError):
        await StateContext(MemoryStorage(), "k").set_state(1)  # type: ignore[arg-type]


async def test_updates_through_two_connections_to_one_file_lose_nothing(tmp_path: Path) -> None:
    from botstate.storages.sqlite import SQLiteStorage

    async with SQLiteStorage(tmp_path / "s.db") as one, SQLiteStorage(tmp_path / "s.db") as two:
        stores = [one, two]
        await asyncio.gather(*(StateContext(stores[i % 2], "k").update_data({f"k{i}": i}) for i in range(30)))
        assert await StateContext(one, "k").get_data() == {f"k{i}": i for i in range(30)}


async def test_four_processes_updating_one_conversation_lose_no_key(shared_url: str, unique: str) -> None:
    updates, key = 10, f"{unique}:chat"
    runs = [(shared_url, "fsm", key, updates, n) for n in range(4)]
    async with children(CONSUMER, runs) as processes:
        await release_together(processes, 30)
        outputs = [await finish(process, 30) for process in processes]
    assert [process.returncode for process in processes] == [0] * 4
    assert all(out.strip() == b"done" for out in outputs)
    async with open_storage(shared_url) as storage:
        data = await StateContext(storage, key).get_data()
    assert data == {f"p{n}-{i}": i for n in range(4) for i in range(updates)}
