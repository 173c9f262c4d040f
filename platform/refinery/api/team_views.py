"""/api/v1/team: the token's team: members and roles, invitations, API tokens, the audit log.

Reading the member list and managing one's own tokens is open to every member; changing members,
invitations, other people's tokens and the audit log are for owners (403 otherwise). Every lookup is
inside the token's team, so another team's member, invitation or token answers 404."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from django.urls import reverse
from ninja import Router, Schema
from ninja.errors import HttpError

from refinery.api.schemas import ErrorOut
from refinery.teams.audit_log import action_label, audit_event_list, detail_text
from refinery.teams.invitations import invitation_create, invitation_get_by_pk, invitation_list, invitation_revoke
from refinery.teams.memberships import (
    is_owner,
    membership_leave,
    membership_list,
    membership_remove,
    membership_role_change,
)
from refinery.teams.models import ApiToken, Invitation, Membership
from refinery.teams.services import TeamError, api_token_create
from refinery.teams.tokens import api_token_get_for, api_token_list, api_token_revoke, expiry_from_days

router = Router(tags=["team"])

RoleName = Literal["owner", "member", "viewer"]


class MemberOut(Schema):
    user_id: int
    username: str
    email: str
    role: str
    joined_at: datetime


class RoleIn(Schema):
    role: RoleName


class InvitationIn(Schema):
    role: RoleName = "member"
    email: str = ""
    days: int | None = None


class InvitationOut(Schema):
    id: int
    role: str
    email: str
    state: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    accepted_by: str | None
    accepted_at: datetime | None
    revoked_at: datetime | None


class InvitationCreatedOut(InvitationOut):
    url: str


class TokenIn(Schema):
    name: str = "cli"
    scope: Literal["read", "write"] = "read"
    expires_days: int = 90


class TokenOut(Schema):
    id: int
    name: str
    user: str
    prefix: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    active: bool


class TokenCreatedOut(TokenOut):
    key: str


class AuditEventOut(Schema):
    id: int
    created_at: datetime
    user: str | None
    action: str
    label: str
    target: str
    detail: dict
    text: str


class AuditPageOut(Schema):
    count: int
    offset: int
    limit: int
    events: list[AuditEventOut]


def _owner_only(request, what: str) -> None:
    if not is_owner(team=request.team, user=request.user):
        raise HttpError(403, f"only owners of this team can {what}")


def _member_out(m: Membership) -> dict:
    return {
        "user_id": m.user_id,
        "username": m.user.get_username(),
        "email": m.user.email,
        "role": m.role,
        "joined_at": m.created_at,
    }


def _invitation_out(i: Invitation) -> dict:
    return {
        "id": i.pk,
        "role": i.role,
        "email": i.email,
        "state": i.state,
        "created_by": i.created_by.get_username() if i.created_by else None,
        "created_at": i.created_at,
        "expires_at": i.expires_at,
        "accepted_by": i.accepted_by.get_username() if i.accepted_by else None,
        "accepted_at": i.accepted_at,
        "revoked_at": i.revoked_at,
    }


def _token_out(t: ApiToken) -> dict:
    return {
        "id": t.pk,
        "name": t.name,
        "user": t.user.get_username(),
        "prefix": t.key_prefix,
        "scope": t.scope,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
        "revoked_at": t.revoked_at,
        "active": t.is_active,
    }


def _membership_or_404(request, user_id: int) -> Membership:
    membership = membership_list(team=request.team).filter(user_id=user_id).first()
    if membership is None:
        raise HttpError(404, f"user #{user_id} is not a member of this team")
    return membership


@router.get("/members", response=list[MemberOut])
def list_members(request):
    return [_member_out(m) for m in membership_list(team=request.team)]


@router.patch("/members/{int:user_id}", response={200: MemberOut, 400: ErrorOut, 404: ErrorOut})
def change_role(request, user_id: int, payload: RoleIn):
    """Give a member another role. The team's last owner cannot be demoted."""
    _owner_only(request, "change roles")
    membership = _membership_or_404(request, user_id)
    try:
        membership = membership_role_change(
            team=request.team, actor=request.user, membership=membership, role=payload.role
        )
    except TeamError as exc:
        return 400, {"detail": str(exc)}
    return 200, _member_out(membership)


@router.delete("/members/{int:user_id}", response={204: None, 400: ErrorOut, 404: ErrorOut})
def remove_member(request, user_id: int):
    """Remove a member (their tokens for this team are revoked). The last owner stays."""
    _owner_only(request, "remove members")
    membership = _membership_or_404(request, user_id)
    try:
        membership_remove(team=request.team, actor=request.user, membership=membership)
    except TeamError as exc:
        return 400, {"detail": str(exc)}
    return 204, None


@router.post("/leave", response={204: None, 400: ErrorOut})
def leave_team(request):
    """Leave the token's team (refused for its last owner). The token stops working."""
    try:
        membership_leave(team=request.team, user=request.user)
    except TeamError as exc:
        return 400, {"detail": str(exc)}
    return 204, None


@router.get("/invitations", response=list[InvitationOut])
def list_invitations(request):
    _owner_only(request, "see invitations")
    return [_invitation_out(i) for i in invitation_list(team=request.team)]


@router.post("/invitations", response={201: InvitationCreatedOut, 400: ErrorOut})
def create_invitation(request, payload: InvitationIn):
    """An expiring, single-use invitation link. The link is in this answer only; only its hash is stored."""
    _owner_only(request, "invite people")
    try:
        invitation, key = invitation_create(
            team=request.team, actor=request.user, role=payload.role, email=payload.email, days=payload.days
        )
    except TeamError as exc:
        return 400, {"detail": str(exc)}
    url = request.build_absolute_uri(reverse("teams:invitation", args=[key]))
    return 201, {**_invitation_out(invitation), "url": url}


@router.delete("/invitations/{int:invitation_id}", response={200: InvitationOut, 400: ErrorOut, 404: ErrorOut})
def revoke_invitation(request, invitation_id: int):
    _owner_only(request, "revoke invitations")
    try:
        invitation = invitation_get_by_pk(team=request.team, pk=invitation_id)
    except Invitation.DoesNotExist:
        return 404, {"detail": f"invitation #{invitation_id} not found in this team"}
    try:
        invitation = invitation_revoke(team=request.team, actor=request.user, invitation=invitation)
    except TeamError as exc:
        return 400, {"detail": str(exc)}
    return 200, _invitation_out(invitation)


@router.get("/tokens", response=list[TokenOut])
def list_tokens(request, everyone: bool = False):
    """Your tokens in this team; `everyone=true` (owners): every member's."""
    if everyone:
        _owner_only(request, "see everyone's tokens")
    return [_token_out(t) for t in api_token_list(team=request.team, user=request.user, everyone=everyone)]


@router.post("/tokens", response={201: TokenCreatedOut, 400: ErrorOut})
def create_token(request, payload: TokenIn):
    """A new token for you in this team. `key` is in this answer only. `expires_days`: 30, 90, 365 or 0 (never)."""
    try:
        expires_at = expiry_from_days(payload.expires_days)
        token, key = api_token_create(
            user=request.user, team=request.team, name=payload.name, scope=payload.scope, expires_at=expires_at
        )
    except (TeamError, ValueError) as exc:
        return 400, {"detail": str(exc)}
    return 201, {**_token_out(token), "key": key}


@router.delete("/tokens/{int:token_id}", response={200: TokenOut, 400: ErrorOut, 404: ErrorOut})
def revoke_token(request, token_id: int):
    """Revoke one of your tokens (owners: any token of the team)."""
    try:
        token = api_token_get_for(team=request.team, user=request.user, pk=token_id)
    except ApiToken.DoesNotExist:
        return 404, {"detail": f"token #{token_id} not found"}
    try:
        token = api_token_revoke(token=token, actor=request.user)
    except TeamError as exc:
        return 400, {"detail": str(exc)}
    return 200, _token_out(token)


@router.get("/audit", response=AuditPageOut)
def list_audit(request, action: str | None = None, user_id: int | None = None, limit: int = 50, offset: int = 0):
    """The team's audit log, newest first (owners)."""
    _owner_only(request, "read the audit log")
    limit, offset = max(1, min(limit, 500)), max(0, offset)
    events = audit_event_list(team=request.team, action=action or None, user_id=user_id)
    page = list(events[offset : offset + limit])
    return {
        "count": events.count(),
        "offset": offset,
        "limit": limit,
        "events": [
            {
                "id": e.pk,
                "created_at": e.created_at,
                "user": e.user.get_username() if e.user else None,
                "action": e.action,
                "label": action_label(e.action),
                "target": e.target,
                "detail": e.detail,
                "text": detail_text(e.detail),
            }
            for e in page
        ],
    }
