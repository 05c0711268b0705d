"""Sessions: placeholder until botstate.sessions exists."""

from __future__ import annotations

from typing import Any

from _report import GroupReport


async def sessions_group(ctx: Any) -> GroupReport:
    return GroupReport("Sessions", "Sessions\n  skipped: botstate.sessions does not exist yet", [])
