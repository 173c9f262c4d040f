"""Failpoints: named places in the trainer where a fault can be injected, for the fault-injection
suite (tests/chaos, docs/reliability.md). Off unless ``REFINERY_FAILPOINTS`` is set.

``REFINERY_FAILPOINTS="checkpoint.staged@10:kill;step.end@7:sleep=30"`` arms two points:

- ``name`` is a place the code calls :func:`failpoint` with (``checkpoint.staged``: the checkpoint
  is written to its temporary directory, not yet renamed; ``checkpoint.renamed``: renamed, no
  completion marker yet; ``step.end``: an optimizer step ended);
- ``@N`` (optional) fires only at step N;
- the action is ``kill`` (SIGKILL this process: no handler, no cleanup, like the OOM killer or a
  lost host) or ``sleep=S`` (hang for S seconds, so a test can kill it from outside mid-operation).

Each armed point fires once per checkpoint directory (a marker file there records it), so the
attempt that resumes after the fault runs clean, as the real retry would.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "REFINERY_FAILPOINTS"


def _armed() -> dict[str, tuple[int | None, str, float]]:
    points: dict[str, tuple[int | None, str, float]] = {}
    for entry in filter(None, (e.strip() for e in os.environ.get(ENV, "").split(";"))):
        where, _, action = entry.partition(":")
        name, _, step = where.partition("@")
        verb, _, arg = action.partition("=")
        if verb not in ("kill", "sleep"):
            raise ValueError(f"{ENV}: unknown action {action!r} in {entry!r} (use kill or sleep=S)")
        points[name.strip()] = (int(step) if step else None, verb, float(arg or 0))
    return points


def failpoint(name: str, *, step: int | None = None, state_dir: str | None = None) -> None:
    """Fire the fault armed at ``name`` (and ``step``), if any. ``state_dir`` remembers that it fired."""
    if not os.environ.get(ENV):
        return
    armed = _armed().get(name)
    if armed is None:
        return
    at_step, verb, arg = armed
    if at_step is not None and at_step != step:
        return
    if state_dir is not None:
        marker = os.path.join(state_dir, f".failpoint-{name}-{at_step}")
        if os.path.exists(marker):
            return
        os.makedirs(state_dir, exist_ok=True)
        with open(marker, "w", encoding="utf-8") as fh:
            fh.write(f"{verb} at step {step}\n")
    if verb == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(arg)
