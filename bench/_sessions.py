"""Sessions: what ``open -> modify -> close`` costs over the raw ``get`` + ``set`` it replaces.

Each subject's timed operation is one whole update on one key: the raw pair reads the chat's dict,
bumps a counter and writes it back; the session does the same through ``Sessions`` with its
defaults (eager, local isolation). Both run on separate but identical storages of the same backend,
side by side in the same run, and so does the raw pair inside an empty ``async with``: what that
shape of API costs by itself. Backend calls are counted by a subclass that takes the same path as
the timed storages, so the I/O rules (an untouched lazy session reads nothing and writes nothing)
are checked, not assumed.
"""

from __future__ import annotations

import dataclasses
import inspect
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from _report import Check, GroupReport, find, render
from _workload import Bound, Case, Result, Skip, Subject, Workload, has_module, measure

from botstate import MemoryStorage

SESSION_REPEATS = 7  # the least repeats of this group, except in a smoke run (one repeat)
UPDATE = Case("get", 1)  # each "get" of these subjects is one whole update, sequentially
Opener = Callable[..., AbstractAsyncContextManager[Any]]


def _sessions_module() -> Any:
    if not has_module("botstate.sessions"):
        raise Skip("botstate.sessions does not exist yet")
    import botstate.sessions

    return botstate.sessions


def backends(directory: Path) -> dict[str, Opener]:
    """Storage openers by backend name; each call opens a fresh storage of that backend.

    ``opener(label, counted=True)`` opens one whose backend calls are counted (see ``counting``).
    """

    def memory(label: str, counted: bool = False) -> Any:
        return counting(MemoryStorage)() if counted else MemoryStorage[Any]()

    found: dict[str, Opener] = {"MemoryStorage": memory}
    if has_module("botstate.storages.sqlite"):
        from botstate import SQLiteStorage

        def sqlite(label: str, counted: bool = False) -> Any:
            cls = counting(SQLiteStorage) if counted else SQLiteStorage[Any]
            return cls(str(directory / f"sessions-{label}.db"))

        found["SQLiteStorage"] = sqlite
    return found


# What a session may call: the public methods and the encoded access of the built-in backends.
_COUNTED = ("get", "set", "delete", "has", "touch", "get_many", "set_many", "compare_and_set",
            "_get_encoded", "_set_encoded", "_peek_encoded", "_put_encoded")  # fmt: skip


def counting(cls: type) -> Any:
    """A subclass of ``cls`` counting calls of the methods a session may make.

    Every counted method is overridden in the same class, so sessions take the same path (the
    encoded access, plain or awaited) as on ``cls`` itself: the counts are those of the timed path.
    """
    calls: Counter[str] = Counter()

    def wrap(name: str, method: Any) -> Any:
        if inspect.iscoroutinefunction(method):

            async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                calls[name] += 1
                return await method(self, *args, **kwargs)

            return counted_async

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return method(self, *args, **kwargs)

        return counted

    namespace = {name: wrap(name, getattr(cls, name)) for name in _COUNTED if hasattr(cls, name)}
    return type(f"Counting{cls.__name__}", (cls,), {**namespace, "calls": calls})


@asynccontextmanager
async def raw_pair(w: Workload, opener: Opener) -> AsyncIterator[Bound]:
    async with opener("raw") as storage:
        get, put = storage.get, storage.set

        async def update(key: str) -> Any:
            value = await get(key)
            value["count"] += 1
            await put(key, value)
            return value

        yield Bound(update, put)


class _Nothing:
    """What ``async with sessions.open(key) as session`` costs by itself: an object made per
    update, whose enter and exit do nothing."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    async def __aenter__(self) -> _Nothing:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


@asynccontextmanager
async def floor_pair(w: Workload, opener: Opener) -> AsyncIterator[Bound]:
    """The raw pair inside an empty ``async with``: the raw work plus what that API shape costs."""
    async with opener("floor") as storage:
        get, put = storage.get, storage.set

        async def update(key: str) -> Any:
            async with _Nothing(key):
                value = await get(key)
                value["count"] += 1
                await put(key, value)
            return value

        yield Bound(update, put)


@asynccontextmanager
async def session_update(w: Workload, opener: Opener, lazy_untouched: bool) -> AsyncIterator[Bound]:
    sessions_module = _sessions_module()
    label = "lazy" if lazy_untouched else "session"
    async with opener(label) as storage:
        sessions = sessions_module.Sessions(storage, lazy=lazy_untouched)
        open_session = sessions.open

        async def update(key: str) -> bool:
            async with open_session(key) as session:
                session.data["count"] += 1
            return True

        async def untouched(key: str) -> bool:
            async with open_session(key):
                pass
            return True

        async def put(key: str, value: Any) -> None:
            await storage.set(sessions.storage_key(key), value)

        yield Bound(untouched if lazy_untouched else update, put)


async def calls_per_update(opener: Opener, updates: int = 100) -> dict[str, float]:
    """Backend calls per update for a modified, a read-only and an untouched lazy session."""
    sessions_module = _sessions_module()
    from botstate.sessions.session import has_encoded_access, has_sync_access

    keys = [f"chat:{i}" for i in range(updates)]
    counts: dict[str, float] = {}
    async with opener("calls", counted=True) as storage, opener("plain") as plain:
        path = has_encoded_access(storage), has_sync_access(storage)
        assert path == (has_encoded_access(plain), has_sync_access(plain)), "counting changed the path"
        for label, lazy in (("modified", False), ("read only", False), ("untouched lazy", True)):
            sessions = sessions_module.Sessions(storage, lazy=lazy, name=label.replace(" ", "-"))
            for i, key in enumerate(keys):
                await storage.set(sessions.storage_key(key), {"state": "menu", "count": i, "lang": "en"})
            storage.calls.clear()
            for key in keys:
                async with sessions.open(key) as session:
                    if label == "modified":
                        session.data["count"] += 1
                    elif label == "read only":
                        assert session.data["lang"] == "en"
            counts[label] = sum(storage.calls.values()) / updates
    return counts


async def sessions_group(ctx: Any) -> GroupReport:
    # Its samples are short (a few thousand updates), so a burst of load elsewhere moves one
    # sample's ratio a lot: a median of at least seven keeps such a burst out of the result.
    repeats = (
        ctx.workload.repeats if ctx.workload.repeats == 1 else max(ctx.workload.repeats, SESSION_REPEATS)
    )
    w = dataclasses.replace(ctx.workload, ops=ctx.session_updates, repeats=repeats)
    title = w.title("Sessions, sequential updates", unit="updates/s")
    try:
        _sessions_module()
    except Skip as exc:
        checks = [
            Check("session update vs raw get + set (time)", None, 1.3, at_most=True, why_missing=str(exc)),
            Check("backend calls of an untouched lazy session", None, 0, True, str(exc), unit=""),
        ]
        return GroupReport(title, f"{title}\n  skipped: {exc}", checks)
    rows: list[list[str]] = []
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="botstate-bench-") as tmp:
        openers = backends(Path(tmp))
        subjects: list[Subject] = []
        for backend, opener in openers.items():
            subjects += [
                Subject(f"{backend} raw", lambda w, o=opener: raw_pair(w, o), baseline=True),
                Subject(f"{backend} floor", lambda w, o=opener: floor_pair(w, o)),
                Subject(f"{backend} session", lambda w, o=opener: session_update(w, o, False)),
                Subject(f"{backend} lazy", lambda w, o=opener: session_update(w, o, True)),
            ]
        results = await measure(subjects, w, ctx.log, cases=[UPDATE])
        for backend, opener in openers.items():
            calls = await calls_per_update(opener)
            raw, floor, session, lazy = (
                find(results, f"{backend} {kind}") for kind in ("raw", "floor", "session", "lazy")
            )
            overhead = raw.ratio(session, UPDATE.label) if raw and session else None  # time per update
            least = raw.ratio(floor, UPDATE.label) if raw and floor else None
            rows.append(
                [
                    f"botstate {backend}",
                    _fmt(raw),
                    _fmt(session),
                    f"{overhead:.2f}x" if overhead else "-",
                    f"{least:.2f}x" if least else "-",
                    _fmt(lazy),
                    " / ".join(f"{calls[k]:g}" for k in ("modified", "read only", "untouched lazy")),
                ]
            )
            checks.append(
                Check(f"session update vs raw get + set on {backend} (time)", overhead, 1.3, at_most=True)
            )
            checks.append(
                Check(
                    f"backend calls of an untouched lazy session on {backend}",
                    calls["untouched lazy"],
                    0,
                    True,
                    unit="",
                )
            )
    headers = [
        "backend",
        "raw get + set",
        "session",
        "overhead",
        "empty async with",
        "untouched lazy",
        "calls: modified / read / lazy",
    ]
    text = render(title, headers, rows, ctx.markdown)
    errors = [f"{r.name}: {r.error}" for r in results if r.error]
    if errors:
        text += "\n\n" + "\n".join(("- " if ctx.markdown else "  ") + e for e in errors)
    return GroupReport(title, text, checks)


def _fmt(result: Result | None) -> str:
    rate = result.ops(UPDATE.label) if result else None
    return f"{rate:,.0f}" if rate else "-"
