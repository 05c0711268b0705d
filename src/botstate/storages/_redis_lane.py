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
queued work runs in a task of its own and simply drops a reply nobody waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["Command", "Lane"]

Command = tuple[Any, ...]
"""One Redis command as its arguments: ``("SET", key, value, "PX", 1500)``."""


class _Queued:
    """Commands waiting for the next round trip, and the future their caller awaits."""

    __slots__ = ("commands", "future", "group")

    def __init__(self, commands: Sequence[Command], group: bool, future: asyncio.Future[Any]) -> None:
        self.commands = commands
        self.group = group  # True: the caller wants every reply as a list, errors in place
        self.future = future


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

    async def call(self, *args: Any) -> Any:
        """Send one command and return its reply; a server error reply is raised."""
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append(_Queued((args,), False, future))
            return await future
        self._busy = True
        try:
            reply = (await self._round_trip((args,)))[0]
        finally:
            self._release()
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def call_many(self, commands: Sequence[Command]) -> list[Any]:
        """Send several commands back to back in one round trip.

        Replies come back as a list, a server error as a ``ResponseError`` in its place, so a
        ``MULTI``/``EXEC`` group or an ``MGET`` plus its neighbours stays together.
        """
        if self._busy:
            future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
            self._queue.append(_Queued(commands, True, future))
            return await future
        self._busy = True
        try:
            return await self._round_trip(commands)
        finally:
            self._release()

    def _release(self) -> None:
        if self._queue:
            self._drainer = asyncio.get_running_loop().create_task(self._drain(), name="botstate-redis-lane")
        else:
            self._busy = False

    async def _drain(self) -> None:
        """Flush the queue, one round trip per batch, until nothing is waiting."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                commands = [command for item in batch for command in item.commands]
                try:
                    replies = await self._round_trip(commands)
                except Exception as exc:
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                except BaseException:  # the lane itself is being torn down
                    self._queue[:0] = batch
                    raise
                start = 0
                for item in batch:
                    end = start + len(item.commands)
                    future = item.future
                    if not future.done():
                        if item.group:
                            future.set_result(replies[start:end])
                        elif isinstance(replies[start], ResponseError):
                            future.set_exception(replies[start])
                        else:
                            future.set_result(replies[start])
                    start = end
        finally:
            for item in self._queue:  # only when cancelled: nobody is left waiting forever
                if not item.future.done():
                    item.future.set_exception(RedisConnectionError("the storage was closed mid-request"))
            self._queue = []
            self._busy = False
            self._drainer = None

    async def _round_trip(self, commands: Sequence[Command]) -> list[Any]:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._make_connection()
        reused = conn.is_connected
        if self._timeout is None:
            return await self._exchange(conn, commands, reused)
        async with asyncio.timeout(self._timeout):
            return await self._exchange(conn, commands, reused)

    async def _exchange(
        self, conn: AbstractConnection, commands: Sequence[Command], reused: bool
    ) -> list[Any]:
        packed = conn.pack_command(*commands[0]) if len(commands) == 1 else conn.pack_commands(commands)
        replies: list[Any] = []
        try:
            await conn.send_packed_command(packed, check_health=False)
            for _ in commands:
                replies.append(await self._read(conn))
        except RedisConnectionError:
            # A connection that sat idle may have died with a server restart: such a connection
            # never delivered anything, so resend once on a fresh one. A failure on a fresh
            # connection, or after a reply arrived, is reported as it is.
            if not reused or replies:
                raise
            replies = []
            await conn.send_packed_command(packed, check_health=False)
            for _ in commands:
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
