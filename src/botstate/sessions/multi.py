"""Several named sessions per update, each with its own storage, initial value, key and laziness.

``settings`` per user and ``cart`` per chat, say. Every part follows the same I/O rules as a single
session. Eager parts take their guards one after another in the order the parts were declared (so
two updates can never each hold a lock the other waits for) and are then read concurrently.
Lazy parts are loaded after them, when the body asks; ``load("a", "b")`` takes them in declaration
order too. Writes are per part: when one part's write fails the others' still happen, and the first
error is raised after every part has been closed.

Configurations that cannot work are refused at construction: one ``Sessions`` object used for two
parts would wait for its own lock, and two parts writing the same keys of one storage would
overwrite each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator, Mapping
from types import TracebackType
from typing import Any

from ..errors import ConfigError
from ..wrappers._base import underlying
from .session import _NEW, _RESOLVE, Session, SessionError, Sessions

__all__ = ["MultiSession", "MultiSessions"]


async def _all(awaitables: list[Awaitable[None]]) -> None:
    """Run every step to its end, then raise the first failure (no step is left running)."""
    if len(awaitables) == 1:
        await awaitables[0]
        return
    for result in await asyncio.gather(*awaitables, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


def _where(part: Sessions[Any]) -> tuple[int, str, Any]:
    """The storage underneath ``part``, the key prefix its sessions get there and its key function.

    Parts differing only in their key function (settings per user, a cart per chat) may share a
    name: ``user_key`` and ``chat_key`` never give the same key. Key functions that do agree for
    an update are caught when it opens (``MultiSession._refuse_shared_keys``).
    """
    storage, prefix = underlying(part.storage)
    return id(storage), prefix + part.prefix, part.key


class MultiSessions:
    """Named :class:`Sessions` opened together: ``MultiSessions(settings=..., cart=...)``."""

    def __init__(self, parts: Mapping[str, Sessions[Any]] | None = None, /, **named: Sessions[Any]) -> None:
        self.parts: dict[str, Sessions[Any]] = {**(parts or {}), **named}
        if not self.parts:
            raise ValueError("MultiSessions needs at least one named Sessions")
        seen: dict[int, str] = {}
        places: dict[tuple[int, str, Any], str] = {}
        for name, part in self.parts.items():
            if id(part) in seen:
                raise ConfigError(
                    f"parts {seen[id(part)]!r} and {name!r} are the same Sessions object: each part "
                    "needs its own (sharing one would wait for its own lock)"
                )
            seen[id(part)] = name
            place = _where(part)
            if place in places:
                raise ConfigError(
                    f"parts {places[place]!r} and {name!r} store under the same keys of one storage "
                    f"({part.backend}, prefix {part.prefix!r}, the same key function): give them "
                    "different names"
                )
            places[place] = name

    def open(self, update: Any) -> MultiSession:
        """Every part's session for ``update``; use with ``async with``."""
        return MultiSession(self, update)

    def __repr__(self) -> str:
        return f"MultiSessions({', '.join(self.parts)})"


class MultiSession:
    """The sessions of one update, by name: ``multi["cart"].data`` or ``multi.cart.data``."""

    __slots__ = ("_sessions",)

    def __init__(self, multi: MultiSessions, update: Any) -> None:
        self._sessions: dict[str, Session[Any]] = {
            name: part.open(update) for name, part in multi.parts.items()
        }

    def __getitem__(self, name: str) -> Session[Any]:
        return self._sessions[name]

    def __getattr__(self, name: str) -> Session[Any]:
        try:
            return self._sessions[name]
        except KeyError:
            raise AttributeError(f"no session part named {name!r}; parts: {list(self._sessions)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    async def load(self, *names: str) -> None:
        """Load lazy parts in declaration order, whatever order ``names`` come in: every update then
        takes their locks in one order, so two never wait for each other.

        Without names, every lazy part this update has (a part whose key function returned None,
        a channel post's per-user part say, is skipped); a part named explicitly must exist.
        """
        unknown = [name for name in names if name not in self._sessions]
        if unknown:
            raise KeyError(f"no session parts named {unknown}; parts: {list(self._sessions)}")
        for name, session in self._sessions.items():
            if name in names or (not names and session.key is not None):
                await session.load()

    async def __aenter__(self) -> MultiSession:
        sessions = list(self._sessions.values())
        if any(session._state != _NEW for session in sessions):  # before closing anything below
            raise SessionError("a multi-session can be entered only once; call open() again")
        eager: list[tuple[Session[Any], str]] = []
        try:
            for session in sessions:
                key = session._start()
                if key is _RESOLVE:
                    key = await session._sessions.resolve(session._update)
                if session._opened(key):
                    eager.append((session, key))
            self._refuse_shared_keys()
            for session, key in eager:
                await session._lock(key)
            if eager:
                await _all([session._read(key, lock=False) for session, key in eager])
        except BaseException as exc:
            await _all([session.__aexit__(type(exc), exc, None) for session in sessions])
            raise
        return self

    def _refuse_shared_keys(self) -> None:
        """Two parts that share a storage and a name can still map one update to the same stored
        key (two key functions agreeing): they would overwrite each other, so that is refused."""
        owners: dict[tuple[int, str], str] = {}
        for name, session in self._sessions.items():
            if session.key is None:
                continue
            storage, prefix = underlying(session._sessions.storage)
            where = (id(storage), prefix + session.key)  # session.key holds the part's own prefix
            if where in owners:
                raise ConfigError(
                    f"parts {owners[where]!r} and {name!r} map this update to the same stored key "
                    f"{session.key!r}: give them different names"
                )
            owners[where] = name

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await _all([session.__aexit__(exc_type, exc, tb) for session in self._sessions.values()])
