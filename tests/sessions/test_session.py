"""The I/O rules of a session, asserted on the calls a real (counting) storage receives."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import types
from typing import Any

import pytest

from botstate import MemoryStorage, SerializationError
from botstate.sessions import (
    NoSessionError,
    Session,
    SessionError,
    SessionNotLoadedError,
    Sessions,
    UpdateInfo,
    chat_key,
    user_key,
)
from wrappers.wrapper_backends import Yielding

CHAT = UpdateInfo(bot_id=1, chat_id=42, user_id=7)
KEY = "session:1:chat:42"


def cart() -> dict[str, Any]:
    return {"items": [], "total": 0}


# -- what the handler sees ---------------------------------------------------------------------


async def test_missing_session_starts_from_a_fresh_initial_value() -> None:
    sessions = Sessions(MemoryStorage(), initial=cart)
    async with sessions.open(CHAT) as first:
        first.data["items"].append("tea")
        shared = first.data
    async with sessions.open(UpdateInfo(bot_id=1, chat_id=43)) as other:
        assert other.data == cart()
        assert other.data is not shared


async def test_changes_persist_for_the_next_update_of_the_same_key() -> None:
    sessions = Sessions(MemoryStorage(), initial=cart)
    async with sessions.open(CHAT) as session:
        session.data["items"].append("tea")
    async with sessions.open(UpdateInfo(bot_id=1, chat_id=42, user_id=8)) as session:
        assert session.data["items"] == ["tea"]


async def test_without_initial_a_missing_session_is_none() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    sessions = Sessions(storage)
    async with sessions.open(CHAT) as session:
        assert session.data is None
        session.data = {"step": 1}
    assert await storage.get(KEY) == {"step": 1}


async def test_keys_are_prefixed_with_the_name_so_kinds_share_a_storage() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    async with Sessions(storage, name="cart").open(CHAT) as session:
        session.data = 1
    async with Sessions(storage, name="form").open(CHAT) as session:
        session.data = 2
    assert await storage.get("cart:1:chat:42") == 1
    assert await storage.get("form:1:chat:42") == 2


async def test_a_str_is_used_as_the_session_key() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    async with Sessions(storage, initial=int).open("custom") as session:
        session.data = 5
    assert await storage.get("session:custom") == 5


async def test_async_and_custom_key_functions() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()

    async def by_user(update: UpdateInfo) -> str | None:
        await asyncio.sleep(0)
        return user_key(update)

    async with Sessions(storage, key=by_user).open(CHAT) as session:
        session.data = "async"
    async with Sessions(storage, key=lambda update: f"u{update['id']}", name="d").open({"id": 3}) as session:
        session.data = "sync"
    assert await storage.get("session:1:user:7") == "async"
    assert await storage.get("d:u3") == "sync"


async def test_a_key_function_returning_a_non_str_is_refused() -> None:
    with pytest.raises(TypeError, match="non-empty str"):
        async with Sessions(MemoryStorage(), key=lambda update: 42).open(CHAT):
            pass


@pytest.mark.parametrize("update", [42, b"chat:42", {"chat_id": 42}])
async def test_what_no_built_in_key_function_understands_is_refused_clearly(update: Any) -> None:
    for key in (chat_key, user_key):
        with pytest.raises(TypeError, match=r"takes a session key \(str\), an UpdateInfo or None"):
            async with Sessions(MemoryStorage(), key=key).open(update):
                pass


async def test_key_functions_and_updates_that_are_not_the_built_in_types_still_work() -> None:
    @dataclasses.dataclass
    class ByTenant:  # a callable that is not hashable
        tenant: str

        def __call__(self, update: Any) -> str:
            return f"{self.tenant}:{update.chat_id}"

    async with Sessions(MemoryStorage(), key=ByTenant("t1")).open(CHAT) as session:
        assert session.key == "session:t1:42"
    looks_like_an_update = types.SimpleNamespace(bot_id=1, chat_id=42, business_connection_id=None)
    async with Sessions(MemoryStorage()).open(looks_like_an_update) as session:
        assert session.key == KEY


async def test_an_empty_session_key_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty str, got ''"):
        async with Sessions(MemoryStorage()).open(""):
            pass


# -- I/O rules -------------------------------------------------------------------------------


async def test_read_and_unchanged_is_one_read_and_no_write(counting: Any) -> None:
    await counting.inner.set(KEY, {"items": ["tea"], "total": 3})
    sessions = Sessions(counting, initial=cart)
    async with sessions.open(CHAT) as session:
        assert session.data["items"] == ["tea"]
        session.data = {"items": ["tea"], "total": 3}  # an equal value is no change
    assert counting.calls == {"get": 1}


async def test_changed_is_one_read_and_one_write(counting: Any) -> None:
    await counting.inner.set(KEY, {"items": [], "total": 0})
    async with Sessions(counting, initial=cart).open(CHAT) as session:
        session.data = {"items": ["tea"], "total": 3}
    assert counting.calls == {"get": 1, "set": 1}
    assert await counting.inner.get(KEY) == {"items": ["tea"], "total": 3}


async def test_in_place_mutation_of_nested_data_is_detected(counting: Any) -> None:
    await counting.inner.set(KEY, {"profile": {"tags": ["a"]}})
    async with Sessions(counting).open(CHAT) as session:
        session.data["profile"]["tags"].append("b")
    assert counting.calls == {"get": 1, "set": 1}
    assert await counting.inner.get(KEY) == {"profile": {"tags": ["a", "b"]}}


async def test_untouched_initial_value_is_never_persisted(counting: Any) -> None:
    async with Sessions(counting, initial=cart).open(CHAT) as session:
        assert session.data == cart()
    assert counting.calls == {"get": 1}
    assert await counting.inner.has(KEY) is False


async def test_changed_initial_value_is_written(counting: Any) -> None:
    async with Sessions(counting, initial=cart).open(CHAT) as session:
        session.data["total"] = 1
    assert counting.calls == {"get": 1, "set": 1}


async def test_assigning_none_deletes_the_session(counting: Any) -> None:
    await counting.inner.set(KEY, {"step": 2})
    sessions = Sessions(counting, initial=cart)
    async with sessions.open(CHAT) as session:
        session.data = None
        assert session.data == cart()  # reading again starts afresh
    assert counting.calls == {"get": 1, "delete": 1}
    assert await counting.inner.has(KEY) is False
    counting.reset()
    async with sessions.open(CHAT) as session:
        session.data = None  # nothing stored: nothing to delete
    assert counting.calls == {"get": 1}


async def test_a_body_that_raises_writes_nothing_and_reraises(counting: Any) -> None:
    await counting.inner.set(KEY, {"items": [], "total": 0})
    sessions = Sessions(counting, initial=cart)

    async def handler() -> None:
        async with sessions.open(CHAT) as session:
            session.data["items"].append("half-done")
            _ = 1 / 0

    with pytest.raises(ZeroDivisionError):
        await handler()
    assert counting.calls == {"get": 1}
    assert await counting.inner.get(KEY) == {"items": [], "total": 0}
    assert sessions.stats.discarded == 1


async def test_with_ttl_an_unchanged_session_is_touched_not_written(counting: Any) -> None:
    await counting.inner.set(KEY, {"n": 1})
    sessions = Sessions(counting, ttl=60)
    async with sessions.open(CHAT) as session:
        assert session.data == {"n": 1}
    assert counting.calls == {"get": 1, "touch": 1}
    counting.reset()
    async with sessions.open(CHAT) as session:
        session.data["n"] = 2
    assert counting.calls == {"get": 1, "set": 1}


async def test_with_ttl_sessions_expire_when_unused() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    sessions = Sessions(storage, initial=int, ttl=0.05)
    async with sessions.open(CHAT) as session:
        session.data = 3
    await asyncio.sleep(0.1)
    async with sessions.open(CHAT) as session:
        assert session.data == 0


async def test_a_value_the_codec_cannot_store_raises_and_writes_nothing(counting: Any) -> None:
    with pytest.raises(SerializationError) as raised:
        async with Sessions(counting, initial=cart).open(CHAT) as session:
            session.data["when"] = {1, 2}
    assert raised.value.key == KEY
    assert counting.calls == {"get": 1}


# -- lazy sessions ---------------------------------------------------------------------------


async def test_untouched_lazy_session_does_no_io(counting: Any) -> None:
    sessions = Sessions(counting, initial=cart, lazy=True, isolation="distributed")
    async with sessions.open(CHAT) as session:
        assert not session.loaded
    assert counting.total == 0
    assert sessions.stats.untouched == 1


async def test_lazy_session_reads_once_however_often_loaded(counting: Any) -> None:
    await counting.inner.set(KEY, {"n": 1})
    # Reads that yield, so the second load() really runs while the first is reading.
    async with Sessions(Yielding(counting), lazy=True).open(CHAT) as session:  # type: ignore[arg-type]
        results = await asyncio.gather(session.load(), session.load())
        again = await session.load()
        assert results == [{"n": 1}, {"n": 1}]
        assert again is session.data
        session.data["n"] += 1
    assert counting.calls == {"get": 1, "set": 1}


async def test_a_cancelled_first_loader_leaves_the_load_to_the_next(counting: Any) -> None:
    await counting.inner.set(KEY, {"n": 1})
    sessions = Sessions(Yielding(counting), lazy=True, lock_timeout=2)  # type: ignore[arg-type]
    async with sessions.open(CHAT) as session:
        first = asyncio.create_task(session.load())
        await asyncio.sleep(0)  # the first load() is reading
        second = asyncio.create_task(session.load())
        await asyncio.sleep(0)  # the second waits for it
        first.cancel()
        # Read again, with the guard the first let go of (bounded: a stuck waiter fails fast).
        assert await asyncio.wait_for(second, timeout=5) == {"n": 1}
        with pytest.raises(asyncio.CancelledError):
            await first
        session.data["n"] += 1
    assert counting.calls["set"] == 1
    async with sessions.open(CHAT) as session:  # the guard is free: no LockError
        assert await session.load() == {"n": 2}


async def test_a_load_left_waiting_when_the_body_ends_lets_go_of_the_key() -> None:
    # asyncio.gather does not cancel a load() when another of its tasks fails: the body ends while
    # that load still waits for the key. It must not take the key for good once it gets it.
    sessions = Sessions(MemoryStorage(), lazy=True, initial=dict, lock_timeout=2)
    release = asyncio.Event()

    async def holder() -> None:
        async with sessions.open("k") as session:
            await session.load()
            await release.wait()

    async def fail() -> None:
        raise ValueError("the handler failed")

    holding = asyncio.create_task(holder())
    await asyncio.sleep(0)

    async def body() -> None:
        async with sessions.open("k") as session:
            left.append(asyncio.ensure_future(session.load()))
            opened.append(session)
            await asyncio.gather(left[0], fail())

    left: list[asyncio.Future[Any]] = []
    opened: list[Session[Any]] = []
    with pytest.raises(ValueError, match="handler failed"):
        await body()
    release.set()
    await holding
    with pytest.raises(SessionError, match="after its 'async with' block"):
        await left[0]
    with pytest.raises(SessionError):
        _ = opened[0].data
    assert sessions.stats.untouched == 0  # it was loading, not untouched
    async with sessions.open("k") as again:  # the key is free (else LockError after 2 s)
        assert await again.load() == {}


async def test_a_read_still_running_when_the_body_ends_loads_nothing(counting: Any) -> None:
    await counting.inner.set("session:k", {"n": 1})
    sessions = Sessions(Yielding(counting), lazy=True, lock_timeout=2)  # type: ignore[arg-type]
    async with sessions.open("k") as session:
        left = asyncio.create_task(session.load())
        await asyncio.sleep(0)  # it holds the key and is reading
    with pytest.raises(SessionError, match="after its 'async with' block"):
        await left
    assert not session.loaded
    assert counting.calls["set"] == 0
    async with sessions.open("k") as again:
        assert await again.load() == {"n": 1}


async def test_cancelling_one_waiter_of_a_shared_load_leaves_the_others_waiting() -> None:
    storage: MemoryStorage[Any] = MemoryStorage()
    await storage.set("session:k", {"n": 1})
    sessions = Sessions(storage, lazy=True, lock_timeout=2)
    release = asyncio.Event()

    async def holder() -> None:
        async with sessions.open("k") as session:
            await session.load()
            await release.wait()

    holding = asyncio.create_task(holder())
    await asyncio.sleep(0)
    async with sessions.open("k") as session:
        first, second, third = (asyncio.create_task(session.load()) for _ in range(3))
        await asyncio.sleep(0.01)  # the first waits for the key, the others for the first
        second.cancel()
        release.set()
        assert await first == {"n": 1}
        assert await third == {"n": 1}
        with pytest.raises(asyncio.CancelledError):
            await second
    await holding


async def test_lazy_session_data_before_load_raises_a_clear_error() -> None:
    async with Sessions(MemoryStorage(), lazy=True).open(CHAT) as session:
        with pytest.raises(SessionNotLoadedError, match=r"await session\.load"):
            _ = session.data
        with pytest.raises(SessionNotLoadedError):
            session.data = {"blind": True}


# -- no session ------------------------------------------------------------------------------


async def test_update_without_a_chat_has_no_session_and_no_io(counting: Any) -> None:
    sessions = Sessions(counting, initial=cart, isolation="distributed")
    ran = False
    async with sessions.open(UpdateInfo(bot_id=1, user_id=7)) as session:
        ran = True
        assert session.key is None
        with pytest.raises(NoSessionError, match="key function returned None"):
            _ = session.data
        with pytest.raises(NoSessionError):
            await session.load()
    assert ran
    assert counting.total == 0
    async with sessions.open(None) as session:
        assert session.key is None


async def test_session_used_after_its_block_raises() -> None:
    async with Sessions(MemoryStorage(), initial=cart).open(CHAT) as session:
        pass
    with pytest.raises(SessionError, match="after its 'async with' block"):
        session.data = {"late": True}


def test_ttl_and_distributed_isolation_need_the_capability() -> None:
    class Plain:
        async def get(self, key: str, default: Any = None) -> Any:
            return default

    with pytest.raises(ValueError, match="touch"):
        Sessions(Plain(), ttl=10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lock"):
        Sessions(Plain(), isolation="distributed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="isolation"):
        Sessions(MemoryStorage(), isolation="global")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lock_timeout": "5"}, "lock timeout must be seconds"),
        ({"lock_timeout": -1}, "lock timeout must be seconds"),
        ({"lease": float("inf"), "isolation": "distributed"}, "lease must be positive finite"),
        ({"lease": 0}, "lease must be positive finite"),
    ],
)
def test_lock_settings_that_could_never_work_are_refused_at_construction(
    options: dict[str, Any], message: str
) -> None:
    # Else they would pass every test with one update at a time and fail once two meet.
    with pytest.raises(ValueError, match=message):
        Sessions(MemoryStorage(), **options)


def test_default_key_is_per_chat() -> None:
    assert Sessions(MemoryStorage()).key is chat_key


class DictAdapter:
    """A minimal third-party adapter: the four Storage methods, no codec (values deep-copied)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    async def get(self, key: str, default: Any = None) -> Any:
        return copy.deepcopy(self.data.get(key, default))

    async def set(self, key: str, value: Any, *, ttl: Any = None) -> None:
        self.writes += 1
        self.data[key] = copy.deepcopy(value)

    async def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    async def has(self, key: str) -> bool:
        return key in self.data


async def test_a_storage_without_codec_still_detects_changes_strictly() -> None:
    adapter = DictAdapter()
    adapter.data[KEY] = {"flags": [1], "name": "a"}
    sessions = Sessions(adapter)
    async with sessions.open(CHAT) as session:
        assert session.data["name"] == "a"  # read only
    assert adapter.writes == 0
    async with sessions.open(CHAT) as session:
        session.data["flags"][0] = True  # equal under ==, a different value
    assert adapter.writes == 1
    assert adapter.data[KEY]["flags"] == [True]
