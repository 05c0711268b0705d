"""What the tests need from the machine, and how a missing piece is reported.

Locally a missing client library or server skips the tests that need it, with the reason. Under
``CI=true`` it fails the run instead: a CI job that silently skips a backend would pass while
testing nothing of it.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from types import ModuleType, TracebackType
from typing import NoReturn, Self, TypeVar

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail under ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    """Import ``name`` (a client library, mypy), or skip - fail under ``CI=true`` - without it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} is not installed ({exc})")


class Throwaway:
    """A server a test started for itself: ``with`` it, and it is destroyed however the test ends."""

    def start(self) -> None:
        raise NotImplementedError

    def destroy(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.destroy()


T = TypeVar("T", bound=Throwaway)


def started_or_skip(what: str, make: Callable[[], T], binaries: Sequence[str]) -> T:
    """``make()``, started; or skip saying why (fail under ``CI=true``). Destroyed if it fails to start."""
    try:
        missing = [name for name in binaries if shutil.which(name) is None]
        if missing:
            raise RuntimeError(f"not on PATH: {missing}")
        server = make()
        try:
            server.start()
        except BaseException:
            server.destroy()
            raise
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot run a throwaway {what}: {exc}")
    return server
