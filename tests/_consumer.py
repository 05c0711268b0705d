"""One bot process for the consumers' cross-process tests: ``python _consumer.py URL MODE NAME COUNT N``.

It opens the storage, prints ``ready`` and waits for a line on stdin, so that every process starts
its burst at the same moment. ``ratelimit``: COUNT concurrent hits on key NAME of a limiter
allowing N per (long) period, then prints how many were allowed. ``fsm``: COUNT concurrent
``update_data`` calls on the conversation NAME, each adding its own key ``p<N>-<i>``, then
prints ``done``.
"""

from __future__ import annotations

import asyncio
import sys

from botstate import open_storage
from botstate.fsm import StateContext
from botstate.ratelimit import RateLimiter

LONG_PERIOD = 10 * 365 * 86400  # a window boundary cannot fall inside the burst


async def main(url: str, mode: str, name: str, count: int, n: int) -> None:
    async with open_storage(url) as storage:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if mode == "ratelimit":
            limiter = RateLimiter(storage, limit=n, period=LONG_PERIOD, sweep_every=None)
            results = await asyncio.gather(*(limiter.hit(name) for _ in range(count)))
            print(sum(result.allowed for result in results), flush=True)
            return
        context = StateContext(storage, name)
        await asyncio.gather(*(context.update_data({f"p{n}-{i}": i}) for i in range(count)))
        print("done", flush=True)


if __name__ == "__main__":
    url, mode, name, count, n = sys.argv[1:]
    asyncio.run(main(url, mode, name, int(count), int(n)))
