"""The trainer's event stream: newline-delimited JSON objects, one per event.

In the trainer process the events own stdout: :meth:`EventWriter.take_stdout` moves fd 1
to fd 2 (so whatever Python, C extensions or libraries print lands on stderr) and writes
events to a private duplicate of the real stdout. Every event carries ``event`` and
``time`` (unix seconds). See docs/stage-spec.md for the event table.

The event types are the classes below, one per ``event`` value; :func:`decode` turns one
line of the stream into one of them (the supervisor reads the stream only through it).
"""

import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TextIO

__all__ = [
    "EVENT_TYPES",
    "Event",
    "Started",
    "Progress",
    "Metrics",
    "Checkpoint",
    "Artifact",
    "Finished",
    "Canceled",
    "Failed",
    "TERMINAL_EVENTS",
    "BadEvent",
    "decode",
    "Events",
    "EventWriter",
    "EventLog",
    "jsonable",
]


class BadEvent(ValueError):
    """A line of the event stream that is not an event (not JSON, no known ``event``, a field of the wrong type)."""


def _int(record: dict[str, Any], key: str) -> int | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadEvent(f"{record.get('event')}.{key}: not a number: {value!r}")
    return int(value)


def _float(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadEvent(f"{record.get('event')}.{key}: not a number: {value!r}")
    return float(value)


def _str(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value)


def _dict(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEvent(f"{record.get('event')}.{key}: not an object: {value!r}")
    return value


@dataclass(frozen=True)
class Event:
    """One event of the stream. ``time`` is when the trainer sent it (unix seconds), None when absent."""

    name: ClassVar[str] = ""
    time: float | None = None

    @classmethod
    def _fields(cls, record: dict[str, Any]) -> dict[str, Any]:
        return {}


@dataclass(frozen=True)
class Started(Event):
    """Training begins (once the model is loaded); ``step`` is the checkpoint's when resuming."""

    name: ClassVar[str] = "started"
    step: int = 0
    total_steps: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    resumed_from: str | None = None

    @classmethod
    def _fields(cls, record):
        resumed = record.get("resumed_from")
        return {
            "step": _int(record, "step") or 0,
            "total_steps": _int(record, "total_steps"),
            "trainable_params": _int(record, "trainable_params"),
            "total_params": _int(record, "total_params"),
            "resumed_from": str(resumed) if resumed else None,
        }


@dataclass(frozen=True)
class Progress(Event):
    """Where training is; a field the trainer left out (None) leaves the last known value."""

    name: ClassVar[str] = "progress"
    step: int | None = None
    total_steps: int | None = None
    epoch: float | None = None

    @classmethod
    def _fields(cls, record):
        return {
            "step": _int(record, "step"),
            "total_steps": _int(record, "total_steps"),
            "epoch": _float(record, "epoch"),
        }


@dataclass(frozen=True)
class Metrics(Event):
    """The values logged at one step. ``metrics`` holds the finite numbers only: a NaN or infinite value
    (sent as null) and anything that is not a number are left out."""

    name: ClassVar[str] = "metrics"
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def _fields(cls, record):
        values = {
            str(key): float(value)
            for key, value in _dict(record, "metrics").items()
            if not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        }
        return {"step": _int(record, "step") or 0, "metrics": values}


@dataclass(frozen=True)
class Checkpoint(Event):
    """A complete checkpoint was written."""

    name: ClassVar[str] = "checkpoint"
    step: int = 0
    path: str = ""

    @classmethod
    def _fields(cls, record):
        return {"step": _int(record, "step") or 0, "path": _str(record, "path")}


@dataclass(frozen=True)
class Artifact(Event):
    """An output was saved (``model``, ``adapter``, ``report``, ``quantized``)."""

    name: ClassVar[str] = "artifact"
    artifact: str = ""  # the event's ``name`` field
    path: str = ""

    @classmethod
    def _fields(cls, record):
        return {"artifact": _str(record, "name"), "path": _str(record, "path")}


@dataclass(frozen=True)
class Finished(Event):
    """The stage succeeded: its ``outputs`` (kind, path, extra) and ``summary`` (final metrics)."""

    name: ClassVar[str] = "finished"
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _fields(cls, record):
        return {"outputs": _dict(record, "outputs"), "summary": _dict(record, "summary")}


@dataclass(frozen=True)
class Canceled(Event):
    """The trainer stopped on SIGTERM at ``step``."""

    name: ClassVar[str] = "canceled"
    step: int = 0

    @classmethod
    def _fields(cls, record):
        return {"step": _int(record, "step") or 0}


@dataclass(frozen=True)
class Failed(Event):
    """The stage failed: ``error`` (one line) and its ``traceback``."""

    name: ClassVar[str] = "failed"
    error: str = ""
    traceback: str = ""

    @classmethod
    def _fields(cls, record):
        return {"error": _str(record, "error"), "traceback": _str(record, "traceback")}


_CLASSES: dict[str, type[Event]] = {
    cls.name: cls for cls in (Started, Progress, Metrics, Checkpoint, Artifact, Finished, Canceled, Failed)
}
EVENT_TYPES = tuple(_CLASSES)
TERMINAL_EVENTS = (Finished, Canceled, Failed)  # one of these is the last event of a stage


def decode(line: str | bytes) -> Event:
    """One line of the stream as its event; :class:`BadEvent` when it is not one."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise BadEvent(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise BadEvent("not a JSON object")
    cls = _CLASSES.get(record.get("event"))  # type: ignore[arg-type]
    if cls is None:
        raise BadEvent(f"unknown event {record.get('event')!r}")
    return cls(time=_float(record, "time"), **cls._fields(record))


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
