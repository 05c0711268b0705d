"""``botstate demo``: a simulated bot that shows what sessions do, and checks that nothing was lost.

Thousands of updates from hundreds of chats go through ``MultiSessions`` (a counter per chat, a
lazy profile per user) with many handled at once, bursts of one chat included. Afterwards every
counter is read back and compared with what the simulation sent, on top of what earlier runs left
in the storage: a second run shows the state survived. Any mismatch makes the exit code 1.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from .sessions import MultiSessions, Sessions, SessionStats, UpdateInfo, chat_key, user_key
from .urls import open_storage

__all__ = ["DemoOptions", "run_demo"]

BOT_ID = 1
LEDGER = "demo:ledger"
"""What earlier runs acknowledged: the totals the stored counters must add up to."""


@dataclass(frozen=True)
class DemoOptions:
    url: str
    updates: int = 20000
    chats: int = 500
    concurrency: int = 64
    isolation: str = "local"
    reset: bool = False
    progress: bool = False
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Update:
    kind: str  # "message", "stats" (reads, changes nothing) or "inline" (no chat)
    info: UpdateInfo
    profile: bool = False  # a message that also updates the sender's lazy profile


def simulate(options: DemoOptions, users: int) -> tuple[list[Update], Counter[int], Counter[int]]:
    """The updates, plus how many messages each chat and profile updates each user should get."""
    rng = random.Random(options.seed)
    updates: list[Update] = []
    messages: Counter[int] = Counter()
    profiles: Counter[int] = Counter()
    while len(updates) < options.updates:
        chat = rng.randint(1, options.chats)
        for _ in range(min(rng.choice((1, 1, 2, 3, 6)), options.updates - len(updates))):  # bursts
            user = rng.randint(1, users)
            roll = rng.random()
            if roll < 0.08:
                updates.append(Update("inline", UpdateInfo(bot_id=BOT_ID, user_id=user)))
            elif roll < 0.28:
                updates.append(Update("stats", UpdateInfo(bot_id=BOT_ID, chat_id=chat, user_id=user)))
            else:
                profile = rng.random() < 0.25
                updates.append(Update("message", UpdateInfo(BOT_ID, chat, user), profile))
                messages[chat] += 1
                profiles[user] += profile
    return updates, messages, profiles


class Bot:
    """The simulated bot: its sessions and its handler."""

    def __init__(self, storage: Any, isolation: Any) -> None:
        self.chats: Sessions[dict[str, int]] = Sessions(
            storage, name="demo-chat", key=chat_key, initial=lambda: {"messages": 0}, isolation=isolation
        )
        self.users: Sessions[dict[str, int]] = Sessions(
            storage,
            name="demo-user",
            key=user_key,
            initial=lambda: {"messages": 0},
            lazy=True,
            isolation=isolation,
        )
        self.sessions = MultiSessions(chat=self.chats, user=self.users)
        self.in_flight: Counter[Any] = Counter()
        self.overlapping = 0  # updates that arrived while another one of their chat was running

    async def handle(self, update: Update) -> None:
        chat_id = update.info.chat_id
        if self.in_flight[chat_id] and chat_id is not None:
            self.overlapping += 1
        self.in_flight[chat_id] += 1
        try:
            async with self.sessions.open(update.info) as session:
                if update.kind == "message":
                    counters = session.chat.data
                    await asyncio.sleep(0)  # a real handler awaits the Bot API here
                    counters["messages"] += 1
                    if update.profile:
                        profile = await session.user.load()
                        profile["messages"] += 1
                elif update.kind == "stats":
                    _ = session.chat.data["messages"]  # read, changed nothing: not written
        finally:
            self.in_flight[chat_id] -= 1


class Progress:
    """A one-line bar on stderr; nothing at all when disabled."""

    def __init__(self, total: int, enabled: bool, out: TextIO = sys.stderr) -> None:
        self.total, self.enabled, self.out = total, enabled, out
        self.done = 0
        self.step = max(1, total // 100)

    def advance(self) -> None:
        self.done += 1
        if self.enabled and (self.done % self.step == 0 or self.done == self.total):
            filled = 30 * self.done // self.total
            self.out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done:,}/{self.total:,}")
            if self.done == self.total:
                self.out.write("\n")
            self.out.flush()


def storage_keys(sessions: Sessions[Any], ids: range) -> list[str]:
    """Where the sessions of chats (or users) ``ids`` are stored, by the sessions' own key function."""
    return [sessions.storage_key(sessions.key(UpdateInfo(BOT_ID, i, i))) for i in ids]  # type: ignore[arg-type]


async def read_counters(sessions: Sessions[Any], ids: range) -> dict[int, int]:
    """Every stored counter of ``ids`` (0 when nothing is stored), read straight from the storage."""
    keys = storage_keys(sessions, ids)
    get_many = getattr(sessions.storage, "get_many", None)
    values = await get_many(keys) if get_many else [await sessions.storage.get(key) for key in keys]
    return {i: (value or {}).get("messages", 0) for i, value in zip(ids, values, strict=True)}


async def reset(bot: Bot, ledger: dict[str, int]) -> None:
    """Forget the demo's own keys only: the storage may hold a real bot's data as well."""
    storage = bot.chats.storage
    keys = [LEDGER]
    if callable(getattr(storage, "keys", None)):
        keys += [key async for key in storage.keys("demo-*")]  # type: ignore[attr-defined]
    else:
        keys += storage_keys(bot.chats, range(1, ledger.get("chats", 0) + 1))
        keys += storage_keys(bot.users, range(1, ledger.get("users", 0) + 1))
    for key in keys:
        await storage.delete(key)


def check(out: TextIO, ok: bool, message: str) -> bool:
    print(f"  {'ok  ' if ok else 'FAIL'} {message}", file=out)
    return ok


def io_lines(parts: dict[str, SessionStats]) -> list[str]:
    """Per part: the calls made, and the calls a read-and-write-back-everything layer would make."""
    lines, naive, made = [], 0, 0
    for name, stats in parts.items():
        keyed = stats.opened - stats.without_key
        calls = stats.reads + stats.writes + stats.touches + stats.deletes
        naive, made = naive + 2 * keyed, made + calls
        saved = {
            "never loaded (lazy)": stats.untouched,
            "read but unchanged, not written": stats.unchanged,
            "new and untouched, not stored": stats.initial_not_saved,
        }
        lines.append(
            f"  {name}: {keyed:,} sessions -> {stats.reads:,} reads, {stats.writes:,} writes; "
            + ", ".join(f"{count:,} {what}" for what, count in saved.items() if count)
        )
    share = 100 * (1 - made / naive) if naive else 0.0
    lines.append(
        f"  {made:,} reads and writes instead of {naive:,} (read + write every session): {share:.0f}% saved"
    )
    return lines


async def check_earlier_runs(out: TextIO, ledger: dict[str, Any], messages: int, profiles: int) -> bool:
    """Do the stored counters add up to what earlier runs acknowledged?"""
    if not ledger:
        print("no earlier run found: starting from empty sessions", file=out)
        return True
    print(f"state left by {ledger['runs']} earlier run(s):", file=out)
    if not ledger.get("complete", True):
        print("  the last run did not finish (interrupted?): its partial state is taken as it is", file=out)
        return True
    ok = check(
        out,
        messages == ledger["messages"],
        f"{messages:,} messages stored, {ledger['messages']:,} acknowledged",
    )
    return ok & check(
        out,
        profiles == ledger["profiles"],
        f"{profiles:,} profile updates stored, {ledger['profiles']:,} acknowledged",
    )


async def run_updates(bot: Bot, updates: list[Update], options: DemoOptions, out: TextIO) -> None:
    """Handle every update, ``concurrency`` at a time, and report the speed."""
    progress = Progress(len(updates), options.progress)
    pending: Iterator[Update] = iter(updates)

    async def worker() -> None:
        for update in pending:
            await bot.handle(update)
            progress.advance()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(options.concurrency)))
    elapsed = time.perf_counter() - started
    rate = len(updates) / elapsed if elapsed else float("inf")
    print(f"done in {elapsed:.2f} s: {rate:,.0f} updates/s", file=out)
    print(f"  {bot.overlapping:,} updates arrived while another update of their chat was running", file=out)
    print("session I/O:", file=out)
    for line in io_lines({"chats": bot.chats.stats, "user profiles": bot.users.stats}):
        print(line, file=out)
    print(f"  updates without a chat: {bot.chats.stats.without_key:,} (no chat session, no I/O)", file=out)


def check_counters(
    out: TextIO, what: str, before: dict[int, int], after: dict[int, int], sent: Counter[int]
) -> bool:
    """Every counter must be what it was plus what this run sent: a lost update shows here."""
    wrong = [i for i in after if after[i] != before[i] + sent[i]]
    message = f"{len(after):,} {what} = earlier + this run's"
    if wrong:
        first = wrong[0]
        message += (
            f" ({len(wrong):,} wrong, e.g. #{first}: {after[first]:,} != {before[first] + sent[first]:,})"
        )
    return check(out, not wrong, message)


def chat_table(before: dict[int, int], after: dict[int, int], sent: Counter[int], rows: int = 5) -> list[str]:
    """A few chats side by side: any that are wrong first, then the busiest of this run."""
    wrong = [i for i in after if after[i] != before[i] + sent[i]]
    busiest = [i for i, _ in sent.most_common() if i not in wrong and i in after]
    shown = (wrong + busiest)[:rows]
    lines = [f"  {'chat':>6} {'earlier':>8} {'sent':>6} {'expected':>9} {'stored':>7}"]
    for i in shown:
        expected = before[i] + sent[i]
        mark = "" if after[i] == expected else "  <- lost updates"
        lines.append(f"  {i:>6} {before[i]:>8,} {sent[i]:>6,} {expected:>9,} {after[i]:>7,}{mark}")
    return lines


async def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    """Run the simulation and the checks; returns the exit code (0: every check passed)."""
    users = max(1, options.chats * 3)
    print(f"botstate demo: {options.url} (isolation={options.isolation})", file=out)
    async with open_storage(options.url) as storage:
        ledger: dict[str, Any] = await storage.get(LEDGER) or {}
        bot = Bot(storage, options.isolation)
        if options.reset:
            await reset(bot, ledger)
            ledger = {}
            print("reset: the demo's earlier state was deleted", file=out)
        chat_ids = range(1, max(ledger.get("chats", 0), options.chats) + 1)
        user_ids = range(1, max(ledger.get("users", 0), users) + 1)
        before_chats = await read_counters(bot.chats, chat_ids)
        before_users = await read_counters(bot.users, user_ids)
        carried = sum(before_chats.values())
        ok = await check_earlier_runs(out, ledger, carried, sum(before_users.values()))
        runs = ledger.get("runs", 0) + 1
        # Which chats and users exist from now on, even if this run is interrupted: a later run
        # must read them all to check what it finds against what complete runs acknowledged.
        started = {"runs": runs, "complete": False, "chats": len(chat_ids), "users": len(user_ids)}
        await storage.set(LEDGER, {**ledger, **started})

        updates, messages, profiles = simulate(options, users)
        print(
            f"simulating {len(updates):,} updates from {options.chats:,} chats and {users:,} users, "
            f"{options.concurrency} at a time...",
            file=out,
        )
        out.flush()
        await run_updates(bot, updates, options, out)

        after_chats = await read_counters(bot.chats, chat_ids)
        after_users = await read_counters(bot.users, user_ids)
        print(f"per chat ({min(5, len(after_chats))} of {len(after_chats):,}):", file=out)
        for line in chat_table(before_chats, after_chats, messages):
            print(line, file=out)
        print("checks:", file=out)
        ok &= check_counters(out, "chat counters", before_chats, after_chats, messages)
        ok &= check_counters(out, "user profiles", before_users, after_users, profiles)
        total, new = sum(after_chats.values()), sum(messages.values())
        ok &= check(
            out, total == carried + new, f"{total:,} messages = {carried:,} carried over + {new:,} new"
        )
        summary = {"messages": total, "profiles": sum(after_users.values())}
        summary |= {"chats": len(chat_ids), "users": len(user_ids), "runs": runs, "complete": True}
        await storage.set(LEDGER, summary)
        if ok:
            print(f"state saved ({runs} run(s) so far): run again to see it carried over", file=out)
        else:
            print("some checks FAILED", file=out)
    return 0 if ok else 1
