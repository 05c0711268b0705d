"""Memory per key: botstate's MemoryStorage against a dict holding the same small dicts.

MemoryStorage keeps every value encoded (that is what isolates it), so a stored value costs its
JSON bytes instead of a live dict. Measured with tracemalloc: the growth of traced memory while
``n`` keys are written, keys included, divided by ``n``.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from _report import Check, GroupReport, render

from botstate import MemoryStorage


async def _traced(build: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    """Bytes still allocated by ``build`` once it returns (its result kept alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = await build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


async def _plain_dict(n: int) -> dict[str, Any]:
    return {f"chat:{i}": {"state": "menu", "count": i, "lang": "en"} for i in range(n)}


async def _memory_storage(n: int) -> MemoryStorage[Any]:
    storage = MemoryStorage[Any]()
    for i in range(n):
        await storage.set(f"chat:{i}", {"state": "menu", "count": i, "lang": "en"})
    return storage


async def footprint_group(ctx: Any) -> GroupReport:
    n = ctx.footprint_keys
    ctx.log(f"  {n:,} keys in a dict, then in MemoryStorage (tracemalloc)")
    dict_bytes, kept = await _traced(lambda: _plain_dict(n))
    del kept
    storage_bytes, kept = await _traced(lambda: _memory_storage(n))
    del kept
    per_dict, per_storage = dict_bytes / n, storage_bytes / n
    ratio = per_storage / per_dict
    rows = [
        ["dict of dicts (baseline)", f"{per_dict:,.0f}", "1.00x"],
        ["botstate MemoryStorage", f"{per_storage:,.0f}", f"{ratio:.2f}x"],
    ]
    title = f"Memory: {n:,} keys of small dict values, bytes per key (tracemalloc)"
    text = render(title, ["subject", "bytes/key", "ratio"], rows, ctx.markdown)
    check = Check(f"MemoryStorage bytes per key vs dict ({n:,} keys)", ratio, 2.0, at_most=True)
    return GroupReport(title, text, [check])
