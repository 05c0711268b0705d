"""One Redis connection shared by every caller, with request coalescing.

redis-py spends far more client CPU per command (connection checkout, health checks, retry
wrappers, response callbacks) than the server spends answering it, so a bot with many concurrent
handlers is limited by the client, not by Redis. :class:`Lane` sends commands on a connection of
its own and never has more than one round trip in flight:

- when the lane is idle, a command goes straight out: a lone request pays nothing extra;
- while a round trip is in flight, further commands queue up; when it returns, everything queued
  is written as ONE pipelined round trip and each reply is handed to its caller.

Replies come back in the order commands were queued, so a ``set`` followed by a ``get`` of the
same key reads its own write. A server error fails only the command it answers; a lost connection
or a timeout fails every command of that round trip. A cancelled caller leaves the others alone:
queued work runs in a task of its own and simply drops a reply nobody waits for. Each command is
packed by its caller before it is queued, so one that cannot be encoded fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["Command", "Lane"]

Command = tuple[Any, ...]
"""One Redis command as its arguments: ``("SET", key, value, "PX", 1500)``."""

_hiredis_pack: Callable[[Command], bytes] | None
try:  # hiredis packs a command in C, several times faster than redis-py's Python packer
    import hiredis
except ImportError:  # pragma: no cover - hiredis is optional
    _hiredis_pack = None
else:
    _hiredis_pack = hiredis.pack_command


# Commands whose second run leaves the same state and answers alike: only a batch of these may
# be resent after a connection died without a reply (the server may have run it all the same).
_SAFE_TO_RESEND = frozenset({b"GET", b"MGET", b"EXISTS", b"PTTL", b"PING", b"SCAN", b"SET", b"MSET"})


_CONDITIONAL_SET = frozenset({b"NX", b"XX", b"GET"})


def _word(arg: Any) -> bytes:
    return (arg if isinstance(arg, bytes) else str(arg).encode()).upper()


def _safe_to_resend(args: Command) -> bool:
    name = _word(args[0])
    if name == b"SET":  # SET ... NX answers differently the second time
        return not any(_word(arg) in _CONDITIONAL_SET for arg in args[3:])
    return name in _SAFE_TO_RESEND


class _Queued:
    """A packed command waiting for the next round trip, and the future its caller awaits."""

    __slots__ = ("future", "packed", "resendable")

    def __init__(self, packed: bytes, future: asyncio.Future[Any], resendable: bool) -> None:
        self.packed = packed
        self.future = future
        self.resendable = resendable


class Lane:
    """Serialises round trips on one connection and coalesces whatever queues up meanwhile.

    ``make_connection`` builds the (not yet connected) connection; it connects on first use and
    again after a failure. ``timeout`` bounds a whole round trip, connecting included.
    """

    def __init__(self, make_connection: Callable[[], AbstractConnection], timeout: float | None) -> None:
        self._make_connection = make_connection
        self._conn: AbstractConnection | None = None
        self._timeout = timeout
        self._busy = False
        self._queue: list[_Queued] = []
        self._drainer: asyncio.Task[None] | None = None

    def _connection(self) -> AbstractConnection:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._make_connection()
        return conn

    def _pack(self, args: Command) -> bytes:
        if _hiredis_pack is not None:
            return _hiredis_pack(args)
        return b"".join(self._connection().pack_command(*args))  # pragma: no cover

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply; a server error reply is raised."""
        packed = self._pack(args)
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append(_Queued(packed, future, _safe_to_resend(args)))
            return await future
        self._busy = True
        try:
            reply = (await self._round_trip(packed, 1, _safe_to_resend(args)))[0]
        finally:
            if self._queue:
                self._drainer = asyncio.get_running_loop().create_task(self._drain(), name="botstate-redis")
            else:
                self._busy = False
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _drain(self) -> None:
        """Flush the queue, one round trip per batch, until nothing is waiting."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = await self._round_trip(
                        b"".join(item.packed for item in batch),
                        len(batch),
                        all(item.resendable for item in batch),
                    )
                except Exception as exc:
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                except BaseException:  # the lane itself is being torn down
                    self._queue[:0] = batch
                    raise
                for item, reply in zip(batch, replies, strict=True):
                    if not item.future.done():  # the caller may have been cancelled meanwhile
                        if isinstance(reply, ResponseError):
                            item.future.set_exception(reply)
                        else:
                            item.future.set_result(reply)
        finally:
            for item in self._queue:  # only when cancelled: nobody is left waiting forever
                if not item.future.done():
                    item.future.set_exception(RedisConnectionError("the storage was closed mid-request"))
            self._queue = []
            self._busy = False
            self._drainer = None

    async def _round_trip(self, packed: bytes, count: int, resendable: bool) -> list[Any]:
        conn = self._connection()
        resend = resendable and conn.is_connected
        if self._timeout is None:
            return await self._exchange(conn, packed, count, resend)
        async with asyncio.timeout(self._timeout):
            return await self._exchange(conn, packed, count, resend)

    async def _exchange(self, conn: AbstractConnection, packed: bytes, count: int, resend: bool) -> list[Any]:
        replies: list[Any] = []
        try:
            await conn.send_packed_command(packed, check_health=False)
            for _ in range(count):
                replies.append(await self._read(conn))
        except RedisConnectionError:
            # A connection that sat idle may have died with a server restart: resend once on a
            # fresh one, but only commands that are safe to run twice: the server may have run
            # the batch before the connection dropped (a restart, a failover, an output-buffer
            # limit), and an increment or a script must not be applied twice. A failure on a
            # fresh connection, or after a reply arrived, is reported as it is.
            if not resend or replies:
                raise
            await conn.send_packed_command(packed, check_health=False)
            for _ in range(count):
                replies.append(await self._read(conn))
        return replies

    @staticmethod
    async def _read(conn: AbstractConnection) -> Any:
        try:
            return await conn.read_response(disable_decoding=True)
        except ResponseError as exc:  # the server answered with an error: the stream is intact
            return exc

    async def close(self) -> None:
        """Let queued commands finish, then disconnect. The lane reconnects if used again."""
        drainer = self._drainer
        if drainer is not None:
            try:
                await asyncio.wait_for(asyncio.shield(drainer), self._timeout)
            except (Exception, asyncio.CancelledError):
                drainer.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()
