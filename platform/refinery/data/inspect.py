"""What a dataset looks like: running column statistics and a display preview.

Both work one row at a time and keep a bounded amount of state, so a file of
any size is summarised in constant memory. Pure Python, no Django.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

PREVIEW_ROWS = 20
PREVIEW_TEXT_CHARS = 200  # longer strings are cut and end with an ellipsis
PREVIEW_ITEMS = 20  # of a list or an object
PREVIEW_DEPTH = 4  # deeper nesting is shown as an ellipsis
MAX_COLUMNS = 200  # columns beyond this are not tracked (a JSONL row may bring any keys)
MAX_ROLES = 16  # distinct roles counted per column; the rest are counted as "(other)"

ELLIPSIS = "…"


@dataclass
class RunningSummary:
    """Minimum, mean and maximum of a stream of integers."""

    count: int = 0
    total: int = 0
    min: int | None = None
    max: int | None = None

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def to_dict(self) -> dict[str, Any]:
        mean = round(self.total / self.count, 2) if self.count else None
        return {"min": self.min, "mean": mean, "max": self.max}


@dataclass
class ColumnStats:
    """Running statistics of one column.

    Every column counts its non-null values; string values add their length in
    characters; conversations (lists of turns with a role) add their number of
    turns and the count of each role.
    """

    non_null: int = 0
    length: RunningSummary = field(default_factory=RunningSummary)
    turns: RunningSummary = field(default_factory=RunningSummary)
    roles: Counter[str] = field(default_factory=Counter)

    def observe(self, value: Any) -> None:
        if value is None:
            return
        self.non_null += 1
        if isinstance(value, str):
            self.length.add(len(value))
        elif _is_conversation(value):
            self.turns.add(len(value))
            for turn in value:
                self._count_role(turn["role"])

    def _count_role(self, role: str) -> None:
        if role not in self.roles and len(self.roles) >= MAX_ROLES:
            role = "(other)"
        self.roles[role] += 1

    def to_dict(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"non_null": self.non_null}
        if self.length.count:
            stats["length"] = self.length.to_dict()
        if self.turns.count:
            stats["turns"] = self.turns.to_dict()
            stats["roles"] = dict(self.roles)
        return stats


class DatasetStats:
    """Per-column statistics over a stream of rows, columns in first-seen order."""

    def __init__(self) -> None:
        self._columns: dict[str, ColumnStats] = {}

    @property
    def columns(self) -> list[str]:
        return list(self._columns)

    def observe(self, row: Mapping[str, Any]) -> None:
        for name, value in row.items():
            column = self._columns.get(name)
            if column is None:
                if len(self._columns) >= MAX_COLUMNS:
                    continue
                column = self._columns[name] = ColumnStats()
            column.observe(value)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: column.to_dict() for name, column in self._columns.items()}


def preview_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of a row for display, with long values cut short."""
    return {str(name): preview_value(value) for name, value in islice(row.items(), MAX_COLUMNS)}


def preview_value(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, bounded version of `value` for display."""
    if isinstance(value, str):
        return truncate(value)
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (Mapping, list, tuple)) and depth >= PREVIEW_DEPTH:
        return ELLIPSIS
    if isinstance(value, Mapping):
        shown = {str(key): preview_value(item, depth + 1) for key, item in islice(value.items(), PREVIEW_ITEMS)}
        if len(value) > PREVIEW_ITEMS:
            shown[ELLIPSIS] = f"{len(value) - PREVIEW_ITEMS} more"
        return shown
    if isinstance(value, (list, tuple)):
        shown_items = [preview_value(item, depth + 1) for item in value[:PREVIEW_ITEMS]]
        if len(value) > PREVIEW_ITEMS:
            shown_items.append(f"{ELLIPSIS} {len(value) - PREVIEW_ITEMS} more")
        return shown_items
    return truncate(str(value))  # bytes, dates, decimals from Parquet


def truncate(text: str, limit: int = PREVIEW_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + ELLIPSIS


def _is_conversation(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(turn, Mapping) and isinstance(turn.get("role"), str) for turn in value)
    )
