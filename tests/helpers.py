"""Plain helpers for tests (no fixtures): waiting for a condition, reading a log's tail."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.2,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Call `condition` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text}")
        time.sleep(interval)


def read_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def loss_fell(values: list[float], *, by: float = 0.05) -> bool:
    """The loss went down: the mean of the last quarter is at least `by` (5%) below the first quarter's."""
    if len(values) < 4:
        return False
    q = len(values) // 4
    return sum(values[-q:]) / q < (1 - by) * sum(values[:q]) / q
