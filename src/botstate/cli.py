"""The ``botstate`` console script. ``botstate demo`` runs a simulated bot on a real storage."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from urllib.parse import quote

from . import __version__
from .errors import BotstateError

__all__ = ["main"]


DEFAULT_PATH = "botstate-demo.db"


def _sqlite_url(path: str) -> str:
    """The URL of the SQLite file ``path``, quoted: a ``%`` or ``?`` in a file name is a name."""
    return f"sqlite:///{quote(path)}"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="botstate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"botstate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="simulate a bot: thousands of updates through sessions, then check every counter",
        description="Simulate a bot: updates from many chats (some at once for the same chat) go "
        "through sessions; every counter is then checked against what was sent, on top of what "
        "earlier runs left. Run it twice to see the state survive. Exit code 1 if a check fails.",
    )
    demo.add_argument("--storage", metavar="URL", help="any storage URL (default: sqlite:///PATH)")
    demo.add_argument("--path", help=f"SQLite file, without --storage (default: {DEFAULT_PATH})")
    demo.add_argument("--updates", type=_positive, default=20000, help="updates to simulate (%(default)s)")
    demo.add_argument("--chats", type=_positive, default=500, help="distinct chats (%(default)s)")
    demo.add_argument("--concurrency", type=_positive, default=64, help="updates in flight (%(default)s)")
    demo.add_argument(
        "--isolation",
        choices=("local", "distributed", "none"),
        default="local",
        help="session isolation (%(default)s); 'none' shows concurrent updates losing changes",
    )
    demo.add_argument("--reset", action="store_true", help="delete the demo's earlier state first")
    demo.add_argument("--progress", action="store_true", help="progress bar even when stderr is no TTY")
    demo.add_argument("--seed", type=int, help="random seed, for a repeatable run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.storage and args.path:
        parser.error("--path is the SQLite file of the default storage: give --storage or --path")
    from ._demo import DemoOptions, run_demo

    options = DemoOptions(
        url=args.storage or _sqlite_url(args.path or DEFAULT_PATH),
        updates=args.updates,
        chats=args.chats,
        concurrency=args.concurrency,
        isolation=args.isolation,
        reset=args.reset,
        progress=args.progress or sys.stderr.isatty(),
        seed=args.seed,
    )
    try:
        return asyncio.run(run_demo(options))
    except BotstateError as exc:
        print(f"botstate demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("botstate demo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
