"""The trainer's event stream, read: each stdout line decoded (trainers.events.decode, the one place)
into the state the heartbeat and the outcome read. What the events cause elsewhere (metric points,
parameter counts on the row, log lines) is the supervisor's, which gets every event after the state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from trainers.events import (
    TERMINAL_EVENTS,
    BadEvent,
    Canceled,
    Event,
    Failed,
    Finished,
    Metrics,
    Progress,
    Started,
    decode,
)


@dataclass
class TrainerState:
    """What the events said so far; written by the event reader, read by the heartbeat and the outcome."""

    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    started: Started | None = None
    terminal: Finished | Failed | Canceled | None = None  # the last event of a stage, once sent
    bad_lines: int = 0
    last_event_at: float = field(default_factory=time.monotonic)  # for hang detection
    lock: threading.Lock = field(default_factory=threading.Lock)

    def progress(self) -> tuple[int, int | None, float | None]:
        with self.lock:
            return self.step, self.total_steps, self.epoch

    def apply(self, event: Event) -> None:
        with self.lock:
            if isinstance(event, Metrics):
                self.step = max(self.step, event.step)
            elif isinstance(event, Progress):
                self.step = event.step or self.step
                self.total_steps = event.total_steps or self.total_steps
                if event.epoch is not None:
                    self.epoch = event.epoch
            elif isinstance(event, Started):
                self.started = event
                self.total_steps = event.total_steps or self.total_steps
                self.step = event.step
            elif isinstance(event, TERMINAL_EVENTS):
                self.terminal = event


def read_events(
    lines: Iterable[bytes],
    state: TrainerState,
    *,
    on_event: Callable[[Event], None],
    on_bad_line: Callable[[str], None],
) -> None:
    """Read the stream to its end: every line counts as a sign of life; an event updates `state`, then
    goes to `on_event`; a line that is not an event goes to `on_bad_line`."""
    for raw in lines:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        with state.lock:
            state.last_event_at = time.monotonic()
        try:
            event = decode(line)
        except BadEvent:
            with state.lock:
                state.bad_lines += 1
            on_bad_line(line)
            continue
        state.apply(event)
        on_event(event)
