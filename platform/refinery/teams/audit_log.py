"""The team's audit log: what is recorded (labels for each action), how it reads, and who may see it."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from refinery.teams.models import AuditEvent, Team

# Every action the platform records, with the label the audit page shows. Keep in step with audit(...) calls.
ACTION_LABELS = {
    "auth.login": "Signed in",
    "auth.login_failed": "Failed sign-in",
    "team.created": "Team created",
    "invitation.created": "Invitation created",
    "invitation.accepted": "Invitation accepted",
    "invitation.revoked": "Invitation revoked",
    "member.role_changed": "Role changed",
    "member.removed": "Member removed",
    "member.left": "Member left",
    "token.created": "API token created",
    "token.revoked": "API token revoked",
    "dataset.version_created": "Dataset uploaded",
    "dataset.deleted": "Dataset deleted",
    "base_model.created": "Base model registered",
    "pipeline.created": "Pipeline created",
    "pipeline.updated": "Pipeline edited",
    "sweep.created": "Sweep started",
    "run.started": "Run started",
    "run.rerun": "Run re-run",
    "run.canceled": "Run canceled",
    "run.note_deleted": "Run note deleted",
    "run.tag_removed": "Run tag removed",
    "registry.promoted": "Model promoted",
    "registry.alias_set": "Alias moved",
    "registry.alias_removed": "Alias removed",
    "registry.alias_rolled_back": "Alias rolled back",
}


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action) or action.replace(".", " ").replace("_", " ").capitalize()


def detail_text(detail: dict) -> str:
    """`{"role": "viewer", "previous": "member"}` -> "role: viewer · previous: member" (empty values left out)."""
    if not isinstance(detail, dict):
        return str(detail)
    parts = []
    for key, value in detail.items():
        if value in (None, "", [], {}):
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        parts.append(f"{key.replace('_', ' ')}: {value}")
    return " · ".join(parts)


def audit_event_list(*, team: Team, action: str | None = None, user_id: int | None = None) -> QuerySet[AuditEvent]:
    """The team's audit events, newest first, optionally one action or one user's."""
    events = AuditEvent.objects.filter(team=team).select_related("user").order_by("-created_at", "-pk")
    if action:
        events = events.filter(action=action)
    if user_id:
        events = events.filter(user_id=user_id)
    return events


def audit_filter_choices(*, team: Team) -> tuple[list[tuple[str, str]], list]:
    """The actions and users that occur in the team's log (for the filter selects)."""
    actions = sorted(set(AuditEvent.objects.filter(team=team).values_list("action", flat=True)))
    user_ids = AuditEvent.objects.filter(team=team, user__isnull=False).values("user_id").distinct()
    users = get_user_model().objects.filter(pk__in=user_ids).order_by("username")
    return [(a, action_label(a)) for a in actions], list(users)
