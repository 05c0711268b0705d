"""Tables (plain text or Markdown) and the PASS/FAIL checks of the targets.

Targets are ratios measured within one run, never absolute numbers: on a shared, noisy machine
only the comparison between subjects that ran side by side means anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from _workload import Case, Result


@dataclass
class Check:
    """One target: ``value`` compared with ``limit`` (at least, or at most with ``at_most``)."""

    label: str
    value: float | None
    limit: float
    at_most: bool = False
    why_missing: str = ""
    unit: str = "x"

    @property
    def status(self) -> str:
        if self.value is None:
            return "SKIP"
        ok = self.value <= self.limit if self.at_most else self.value >= self.limit
        return "PASS" if ok else "FAIL"

    def row(self) -> list[str]:
        if self.value is None:
            measured = "-"
        else:
            measured = (f"{self.value:.2f}" if self.unit == "x" else f"{self.value:g}") + self.unit
        target = f"{'<=' if self.at_most else '>='} {self.limit:g}{self.unit}"
        return [self.label, measured, target, self.status, self.why_missing]


@dataclass
class GroupReport:
    title: str
    text: str
    checks: list[Check]


def find(results: Sequence[Result], name: str) -> Result | None:
    return next((r for r in results if r.name == name), None)


def ratio(results: Sequence[Result], subject: str, baseline: str, case: str) -> float | None:
    """ops/s of ``subject`` over ops/s of ``baseline`` on ``case``; None when either has no number."""
    a, b = find(results, subject), find(results, baseline)
    return a.ratio(b, case) if a and b else None


def ratio_check(
    results: Sequence[Result], subject: str, case: str, baseline: str, limit: float, label: str = ""
) -> Check:
    value = ratio(results, subject, baseline, case)
    missing = ""
    if value is None:
        for name in (subject, baseline):
            r = find(results, name)
            if r is None or r.ops(case) is None:
                missing = f"{name}: {r.error if r and r.error else 'not run'}"
                break
    return Check(label or f"{subject} {case} vs {baseline}", value, limit, why_missing=missing)


def render(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool, text_last: bool = False
) -> str:
    """A table of numbers: the first column (and the last with ``text_last``) left-aligned."""
    left = {0, len(headers) - 1} if text_last else {0}
    if markdown:
        lines = [f"#### {title}", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join(":---" if i in left else "---:" for i in range(len(headers))) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([title, rule, line(headers), rule, *(line(r) for r in rows), rule])


def ops_table(title: str, results: Sequence[Result], cases: Sequence[Case], markdown: bool) -> str:
    """Median ops/s per case and, next to each, the ratio to the group's baseline (the first one),
    the median of per-repeat ratios."""
    base = next((r for r in results if r.baseline), None)
    headers = ["subject"]
    for case in cases:
        headers += [f"{case.label} ops/s", "ratio"]
    rows: list[list[str]] = []
    notes: list[str] = []
    for r in results:
        name = f"{r.name} (baseline)" if r is base else r.name
        if r.error:
            notes.append(f"{r.name}: {r.error}")
            continue
        row = [name]
        for case in cases:
            ops = r.ops(case.label)
            x = r.ratio(base, case.label) if base else None
            row.append(f"{ops:,.0f}" if ops else "-")
            row.append(f"{x:.2f}x" if x else "-")
        rows.append(row)
        note = r.note
        if r.ops_run:
            capped = ", ".join(f"{label} {ops:,}" for label, ops in r.ops_run.items())
            note = f"{note}; " if note else ""
            note += f"slow: ops capped to about a second per case ({capped})"
        if note:
            notes.append(f"{r.name}: {note}")
    text = render(title, headers, rows, markdown)
    if notes:
        bullet = "- " if markdown else "  "
        text += "\n\n" + "\n".join(bullet + n for n in notes)
    return text


def checks_table(checks: Sequence[Check], markdown: bool) -> str:
    rows = [c.row() for c in checks]
    return render(
        "Targets", ["target", "measured", "limit", "status", "note"], rows, markdown, text_last=True
    )
