"""The chat-bot workload and the timing loop every subject goes through.

A subject is anything with an async ``get(key)`` and ``set(key, value)``: a botstate backend, a
peer library or a raw client. Every subject of a group is opened at once and measured in turns,
repeat after repeat, so slow drift of a shared, noisy machine spreads over all of them instead of
biasing whichever ran last; the median of the repeats is reported.

The timed loop is the same for everyone and calls the subject's bound methods directly (no
wrapper coroutine in between), so a ratio compares storages, not adapters.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.util
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

GetFn = Callable[[Any], Awaitable[Any]]
SetFn = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Workload:
    """``ops`` operations over ``keys`` keys of small dicts, sequential and ``concurrency``-wide."""

    ops: int = 20_000
    keys: int = 1_000
    concurrency: int = 50
    repeats: int = 3
    case_seconds: float = 1.0
    min_seconds: float = 0.1

    def title(self, group: str, unit: str = "ops/s") -> str:
        return f"{group}: {self.ops:,} ops over {self.keys:,} keys, {unit} (median of {self.repeats})"

    def key_names(self) -> list[str]:
        return [f"chat:{i}" for i in range(self.keys)]

    def value(self, n: int) -> dict[str, Any]:
        """The value a chat bot keeps per chat: small, str-keyed, JSON-friendly."""
        return {"state": "menu", "count": n, "lang": "en"}

    @property
    def cases(self) -> list[Case]:
        return [
            Case("get", 1),
            Case("set", 1),
            Case("get", self.concurrency),
            Case("set", self.concurrency),
        ]


@dataclass(frozen=True)
class Case:
    op: str  # "get" or "set"
    width: int  # coroutines running at once; 1 is sequential

    @property
    def label(self) -> str:
        return f"{self.op} {'seq' if self.width == 1 else f'x{self.width}'}"


@dataclass
class Bound:
    """An opened subject: its operations and, optionally, its own key objects (aiogram's StorageKey)."""

    get: GetFn
    set: SetFn
    keys: Sequence[Any] | None = None
    max_width: int | None = None  # 1: the subject cannot run operations concurrently


Factory = Callable[[Workload], AbstractAsyncContextManager[Bound]]


@dataclass
class Subject:
    name: str
    factory: Factory
    baseline: bool = False
    note: str = ""


@dataclass
class Result:
    """Median ops/s per case label; ``error`` says why a subject has none."""

    name: str
    baseline: bool = False
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    ops_run: dict[str, int] = field(default_factory=dict)  # cases capped below the asked ops
    error: str | None = None

    def ops(self, label: str) -> float | None:
        values = self.samples.get(label)
        return statistics.median(values) if values else None

    def ratio(self, other: Result, label: str) -> float | None:
        """Median of the per-repeat ratios to ``other``: each pairs samples taken moments apart,
        so a burst of load elsewhere on the machine hits both sides of most pairs alike."""
        mine, theirs = self.samples.get(label), other.samples.get(label)
        if not mine or not theirs:
            return None
        if len(mine) != len(theirs):  # one side failed midway: fall back to the medians
            return statistics.median(mine) / statistics.median(theirs)
        return statistics.median([a / b for a, b in zip(mine, theirs, strict=True)])


class Skip(Exception):
    """Raised by a factory when its subject cannot run here (package or server missing)."""


Parts = list[tuple[list[Any], list[Any]]]


def _parts(bound: Bound, case: Case, workload: Workload, ops: int) -> Parts:
    """The keys (and values) each of the case's coroutines goes through, built before timing."""
    keys = bound.keys if bound.keys is not None else workload.key_names()
    sequence = [keys[i % len(keys)] for i in range(ops)]
    values = [workload.value(i) for i in range(ops)] if case.op == "set" else [None] * ops
    w = case.width
    return [(sequence[j::w], values[j::w]) for j in range(w)]


async def _timed(bound: Bound, case: Case, parts: Parts, rounds: int = 1) -> float:
    """Run the case ``rounds`` times over ``parts``; returns ops/s."""
    if case.op == "get":
        get = bound.get

        async def run(keys: list[Any], _values: list[Any]) -> None:
            for key in keys:
                await get(key)
    else:
        put = bound.set

        async def run(keys: list[Any], values: list[Any]) -> None:
            for key, value in zip(keys, values, strict=True):
                await put(key, value)

    ops = sum(len(keys) for keys, _ in parts)
    gc.collect()
    start = time.perf_counter()
    for _ in range(rounds):
        if len(parts) == 1:
            await run(*parts[0])
        else:
            await asyncio.gather(*(run(*part) for part in parts))
    return ops * rounds / (time.perf_counter() - start)


@dataclass
class _Plan:
    case: Case
    parts: Parts
    ops: int
    rounds: int


async def _plan(bound: Bound, case: Case, workload: Workload) -> _Plan:
    """Warm the case up, then size it: slow subjects run fewer ops, fast ones several rounds.

    A case takes about ``case_seconds`` at most (so a full run stays within minutes even with
    slow peers) and ``min_seconds`` at least (so a sample of a fast in-memory store is not a few
    milliseconds of timer noise). Rates stay comparable: the keys and values cycle the same way.
    """
    width = case.width
    warm_ops = max(width, min(workload.ops, 300) // width * width)
    warm = _parts(bound, case, workload, warm_ops)
    await _timed(bound, case, warm)  # the first run pays for connections, caches, statements
    rate = await _timed(bound, case, warm)
    seconds = workload.ops / rate
    ops, rounds = workload.ops, 1
    if seconds > workload.case_seconds:
        ops = max(warm_ops, int(rate * workload.case_seconds) // width * width)
    elif seconds < workload.min_seconds:
        rounds = min(1_000, math.ceil(workload.min_seconds / seconds))
    return _Plan(case, _parts(bound, case, workload, ops), ops, rounds)


async def _prefill(bound: Bound, workload: Workload) -> None:
    """Write every key once so reads hit, then check that they do."""
    keys = bound.keys if bound.keys is not None else workload.key_names()
    for i, key in enumerate(keys):
        await bound.set(key, workload.value(i))
    if not await bound.get(keys[0]):
        raise RuntimeError("a key just written reads back empty")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


async def measure(
    subjects: Sequence[Subject],
    workload: Workload,
    log: Callable[[str], None],
    cases: Sequence[Case] | None = None,
) -> list[Result]:
    """Open every subject, prefill it, then run the cases (default: the workload's four) on all
    subjects ``repeats`` times."""
    results = [Result(s.name, s.baseline, s.note) for s in subjects]
    async with AsyncExitStack() as stack:
        live: list[tuple[Result, Bound]] = []
        for subject, result in zip(subjects, results, strict=True):
            try:
                bound = await stack.enter_async_context(subject.factory(workload))
                await _prefill(bound, workload)
            except Skip as exc:
                result.error = f"skipped: {exc}"
            except Exception as exc:
                result.error = f"failed to open: {_describe(exc)}"
            else:
                live.append((result, bound))
            if result.error:
                log(f"  {subject.name}: {result.error}")
        gc.collect()
        gc.freeze()  # what is loaded by now (peers' modules, prefilled data) is never scanned again
        plans: dict[str, list[_Plan]] = {}
        for result, bound in live:
            todo = [
                c for c in cases or workload.cases if bound.max_width is None or c.width <= bound.max_width
            ]
            try:
                plans[result.name] = [await _plan(bound, case, workload) for case in todo]
            except Exception as exc:
                result.error = f"failed warming up: {_describe(exc)}"
                log(f"  {result.name}: {result.error}")
                continue
            result.ops_run = {p.case.label: p.ops for p in plans[result.name] if p.ops < workload.ops}
        for repeat in range(workload.repeats):
            log(f"  repeat {repeat + 1}/{workload.repeats}")
            # Case by case, every subject in turn: the samples a ratio pairs up run seconds apart.
            for case in cases or workload.cases:
                for result, bound in live:
                    plan = next((p for p in plans.get(result.name, ()) if p.case == case), None)
                    if plan is None or result.error:
                        continue
                    try:
                        rate = await _timed(bound, case, plan.parts, plan.rounds)
                    except Exception as exc:
                        result.error = f"failed on {case.label}: {_describe(exc)}"
                        log(f"  {result.name}: {result.error}")
                        continue
                    result.samples.setdefault(case.label, []).append(rate)
        gc.unfreeze()
    return results


def need(module: str, requirement: str) -> Any:
    """Import a peer's module or skip its subject, saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"{exc.name or module} is not installed (pip install '{requirement}')") from exc


def has_module(name: str) -> bool:
    """Whether a botstate module exists yet, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
