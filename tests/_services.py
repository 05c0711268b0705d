"""What the tests need from the machine, and how a missing piece is reported.

Locally a missing client library or server skips the tests that need it, with the reason. Under
``CI=true`` it fails the run instead: a CI job that silently skips a backend would pass while
testing nothing of it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType, TracebackType
from typing import NoReturn, Self

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

    def destroy(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.destroy()
