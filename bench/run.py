"""botstate benchmarks: every backend against raw clients and peer libraries, in one run.

    python bench/run.py                      # everything available here (a few minutes)
    python bench/run.py --quick              # smoke run: few ops, one repeat
    python bench/run.py --groups memory,disk --only sqlite --ops 5000 --repeats 5
    python bench/run.py --markdown           # tables ready to paste into the README

Runs with any interpreter that has botstate and the peers installed (``pip install -e '.[bench]'``).
A subject whose package, server or botstate module is missing is skipped with the reason. Ratios
are computed between subjects measured side by side in this run; absolute numbers depend on the
machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import botstate
except ImportError:  # a checkout without an installed botstate: use the sources next door
    sys.path.insert(1, str(HERE.parent / "src"))
    import botstate

from _embedded import disk_group, memory_group  # noqa: E402 (needs the path set up above)
from _footprint import footprint_group  # noqa: E402 (needs the path set up above)
from _report import Check, GroupReport, checks_table  # noqa: E402 (needs the path set up above)
from _servers import postgres_group, redis_group  # noqa: E402 (needs the path set up above)
from _sessions import sessions_group  # noqa: E402 (needs the path set up above)
from _workload import Subject, Workload  # noqa: E402 (needs the path set up above)

GROUPS: dict[str, Callable[[Context], Awaitable[GroupReport]]] = {
    "memory": memory_group,
    "disk": disk_group,
    "redis": redis_group,
    "postgres": postgres_group,
    "sessions": sessions_group,
    "footprint": footprint_group,
}


@dataclass
class Context:
    """What a group needs from the command line."""

    workload: Workload
    markdown: bool
    only: list[str]
    redis_url: str
    postgres_dsn: str
    footprint_keys: int
    session_updates: int

    def pick(self, subjects: Sequence[Subject]) -> list[Subject]:
        """Baselines always run (ratios need them); others only if ``--only`` names them."""
        if not self.only:
            return list(subjects)
        return [s for s in subjects if s.baseline or any(o in s.name.lower() for o in self.only)]

    def log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--groups",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run (default: all of {', '.join(GROUPS)})",
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated substrings of subject names to run besides the baselines (e.g. botstate,aiogram)",
    )
    p.add_argument("--ops", type=int, default=20_000, help="operations per case (default 20000)")
    p.add_argument("--keys", type=int, default=1_000, help="distinct keys (default 1000)")
    p.add_argument(
        "--concurrency", type=int, default=50, help="coroutines in the concurrent cases (default 50)"
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="repeats per case; the median is reported (default 3)"
    )
    p.add_argument(
        "--case-seconds",
        type=float,
        default=1.0,
        help="cap on one case of one subject: slower subjects run fewer ops (default 1.0)",
    )
    p.add_argument(
        "--footprint-keys", type=int, default=100_000, help="keys in the memory footprint (default 100000)"
    )
    p.add_argument(
        "--session-updates", type=int, default=5_000, help="updates per session case (default 5000)"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 2000 ops, 1 repeat, 10000 footprint keys")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.add_argument("--check", action="store_true", help="exit with status 1 when a target fails")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("BOTSTATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        help="Redis to use; a unique key prefix is cleaned up afterwards (default db 15 on loopback)",
    )
    p.add_argument(
        "--postgres-dsn",
        default=os.environ.get("BOTSTATE_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL to use; uniquely named tables are dropped afterwards",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.ops, args.repeats, args.case_seconds = min(args.ops, 2_000), 1, min(args.case_seconds, 0.3)
        args.footprint_keys = min(args.footprint_keys, 10_000)
        args.session_updates = min(args.session_updates, 1_000)
    unknown = set(args.groups.split(",")) - set(GROUPS)
    if unknown:
        p.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    if (
        args.case_seconds <= 0
        or min(args.ops, args.keys, args.concurrency, args.repeats, args.footprint_keys, args.session_updates)
        < 1
    ):
        p.error("counts must be positive")
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("pyrogram").setLevel(logging.ERROR)  # kurigram's import warns about TgCrypto
    warnings.filterwarnings("ignore", message="A configured store is unstable")  # py-key-value-aio
    ctx = Context(
        workload=Workload(args.ops, args.keys, args.concurrency, args.repeats, args.case_seconds),
        markdown=args.markdown,
        only=[o.strip().lower() for o in args.only.split(",") if o.strip()],
        redis_url=args.redis_url,
        postgres_dsn=args.postgres_dsn,
        footprint_keys=args.footprint_keys,
        session_updates=args.session_updates,
    )
    header = (
        f"botstate {botstate.__version__}, Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(f"_{header}_" if ctx.markdown else header)
    checks: list[Check] = []
    for name in [g for g in GROUPS if g in args.groups.split(",")]:
        ctx.log(f"[{name}]")
        started = time.perf_counter()
        try:
            report = await GROUPS[name](ctx)
        except Exception as exc:  # a backend mid-rewrite must not cost the other groups' numbers
            ctx.log(f"  {name} failed: {type(exc).__name__}: {exc}")
            report = GroupReport(name, f"{name}\n  failed: {type(exc).__name__}: {exc}", [])
        ctx.log(f"  {name} took {time.perf_counter() - started:.0f} s")
        print()
        print(report.text, flush=True)
        checks += report.checks
    print()
    print(checks_table(checks, ctx.markdown))
    failed = [c for c in checks if c.status == "FAIL"]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
