"""The kinds of notification events: one list, read by the models, forms, API and docs."""

from __future__ import annotations

from django.db import models


class EventKind(models.TextChoices):
    RUN_FAILED = "run.failed", "Run failed"
    RUN_SUCCEEDED = "run.succeeded", "Run succeeded (opt-in)"
    GATE_PROMOTED = "gate.promoted", "Gate promoted a candidate"
    GATE_REJECTED = "gate.rejected", "Gate kept the champion"
    GATE_AWAITING_APPROVAL = "gate.awaiting_approval", "Candidate awaits approval"
    SCHEDULE_PAUSED = "schedule.paused", "Schedule paused after failures"
    TEST = "test", "Test event"  # "Send test event": to one endpoint only, never subscribed to


SUBSCRIBABLE = tuple(k for k in EventKind.values if k != EventKind.TEST)
# What a new endpoint subscribes to when the creator does not say: everything except the opt-in kinds.
DEFAULT_KINDS = tuple(k for k in SUBSCRIBABLE if k != EventKind.RUN_SUCCEEDED)
