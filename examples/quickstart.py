"""Bot state in SQLite that survives a restart: run ``python examples/quickstart.py [db]`` twice."""

from __future__ import annotations

import asyncio
import sys

from botstate import SQLiteStorage


async def main(path: str) -> None:
    async with SQLiteStorage(path) as storage:
        run = await storage.increment("runs")
        print(f"run #{run} on {path}")
        for chat_id in (101, 202, 303):
            key = f"chat:{chat_id}"
            state = await storage.get(key, {"messages": 0, "lang": "en"})
            state["messages"] += chat_id // 101  # each chat sends a different number of messages
            await storage.set(key, state)
            print(f"  {key}: {state}")
        await storage.set("last-run", {"run": run}, ttl=3600)  # expires in an hour
        expected = {f"chat:{c}": run * (c // 101) for c in (101, 202, 303)}
        actual = {key: value["messages"] async for key, value in storage.entries("chat:*")}
        assert actual == expected, (actual, expected)
        print("state survived every restart so far" if run > 1 else "run me again to see it survive")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "quickstart.db"))
