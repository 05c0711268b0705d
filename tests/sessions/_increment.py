"""One bot process for the cross-process tests: ``python _increment.py URL NAME MODE COUNT LEASE``.

``increment``: COUNT concurrent updates each add 1 to one session (yielding between read and
write, so an unguarded session would lose updates). ``hold``: take the session, report, and
wait to be killed while holding it.
"""

from __future__ import annotations

import asyncio
import sys

from botstate import open_storage
from botstate.sessions import Sessions


async def main(url: str, name: str, mode: str, count: int, lease: float) -> None:
    async with open_storage(url) as storage:
        sessions = Sessions(storage, initial=int, name=name, isolation="distributed", lease=lease)

        async def increment() -> None:
            async with sessions.open("counter") as session:
                value = session.data
                await asyncio.sleep(0)
                session.data = value + 1

        if mode == "increment":
            await asyncio.gather(*(increment() for _ in range(count)))
            print("done", flush=True)
            return
        async with sessions.open("counter") as session:
            session.data = -1000  # never saved: the process is killed inside the body
            print("holding", flush=True)
            await asyncio.sleep(3600)


if __name__ == "__main__":
    url, name, mode, count, lease = sys.argv[1:]
    asyncio.run(main(url, name, mode, int(count), float(lease)))
