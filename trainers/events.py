"""The trainer's event stream: newline-delimited JSON objects, one per event.

In the trainer process the events own stdout: :meth:`EventWriter.take_stdout` moves fd 1
to fd 2 (so whatever Python, C extensions or libraries print lands on stderr) and writes
events to a private duplicate of the real stdout. Every event carries ``event`` and
``time`` (unix seconds). See docs/stage-spec.md for the event table.
"""

import json
import math
import os
import sys
import threading
import time
from typing import Any, Protocol, TextIO

__all__ = ["EVENT_TYPES", "Events", "EventWriter", "EventLog", "jsonable"]

EVENT_TYPES = ("started", "progress", "metrics", "checkpoint", "artifact", "finished", "canceled", "failed")


class Events(Protocol):
    def emit(self, event: str, **fields: Any) -> dict[str, Any]: ...


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as None and numpy/torch scalars as Python numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _make(event: str, fields: dict[str, Any]) -> dict[str, Any]:
    if event not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event!r}")
    return jsonable({"event": event, "time": time.time(), **fields})


class EventWriter:
    """Writes one JSON object per line to a text stream, flushing after each event."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def take_stdout(cls) -> "EventWriter":
        """Keep the real stdout for events only and send everything else written to fd 1 to stderr."""
        sys.stdout.flush()
        events_fd = os.dup(1)
        os.dup2(2, 1)
        stream = os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)
        # sys.stdout still writes to fd 1, which is now stderr; nothing else can reach the events fd.
        return cls(stream)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = _make(event, fields)
        line = json.dumps(record, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
        return record


class EventLog:
    """Collects events in memory (for running a stage inside another Python process, and tests)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = _make(event, fields)
        json.dumps(record, allow_nan=False)  # the same contract as the stream
        self.events.append(record)
        return record

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]
