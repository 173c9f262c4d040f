"""/api/v1/team/secrets: the team's secrets (its hub token), owners only and write-only.

GET lists names and metadata (who set it, when, last four characters); PUT sets or replaces a value;
DELETE removes it. No route ever returns a value."""

from __future__ import annotations

from datetime import datetime

from ninja import Router, Schema

from refinery.api.schemas import ErrorOut
from refinery.teams.models import Membership, TeamSecret
from refinery.teams.selectors import membership_get
from refinery.teams.team_secrets import TeamSecretError, team_secret_delete, team_secret_list, team_secret_set

router = Router(tags=["team secrets"])
OWNERS_ONLY = {"detail": "only an owner of this team can manage its secrets"}


class SecretIn(Schema):
    value: str


class SecretOut(Schema):
    name: str
    label: str
    set: bool
    ends_with: str | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None


def _owner(request) -> bool:
    membership = membership_get(team=request.team, user=request.user)
    return membership is not None and membership.role == Membership.Role.OWNER


def _out(name: str, secret: TeamSecret | None) -> dict:
    out = {"name": name, "label": TeamSecret.Name(name).label, "set": secret is not None}
    if secret is not None:
        out.update(
            ends_with=secret.last4,
            created_at=secret.created_at,
            updated_at=secret.updated_at,
            created_by=getattr(secret.created_by, "username", None),
            updated_by=getattr(secret.updated_by, "username", None),
        )
    return out


def _unknown(name: str) -> dict:
    return {"detail": f"unknown secret {name!r} (known: {', '.join(TeamSecret.Name.values)})"}


@router.get("", response={200: list[SecretOut], 403: ErrorOut})
def list_secrets(request):
    """Every secret the team can hold, with whether it is set and its metadata; never a value."""
    if not _owner(request):
        return 403, OWNERS_ONLY
    stored = {s.name: s for s in team_secret_list(team=request.team)}
    return 200, [_out(name, stored.get(name)) for name in TeamSecret.Name.values]


@router.put("/{name}", response={200: SecretOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut})
def put_secret(request, name: str, payload: SecretIn):
    """Set or replace the secret (`hf_token`: the team's Hugging Face hub token). The value is not returned."""
    if not _owner(request):
        return 403, OWNERS_ONLY
    if name not in TeamSecret.Name.values:
        return 404, _unknown(name)
    try:
        secret = team_secret_set(team=request.team, user=request.user, name=name, value=payload.value)
    except TeamSecretError as exc:
        return 400, {"detail": str(exc)}
    return 200, _out(name, secret)


@router.delete("/{name}", response={204: None, 403: ErrorOut, 404: ErrorOut})
def delete_secret(request, name: str):
    if not _owner(request):
        return 403, OWNERS_ONLY
    if name not in TeamSecret.Name.values:
        return 404, _unknown(name)
    if not team_secret_delete(team=request.team, user=request.user, name=name):
        return 404, {"detail": f"this team has no {name}"}
    return 204, None
