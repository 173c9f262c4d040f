"""Invitations: hashed key, expiry, single use, revocation, owners only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from refinery.teams.invitations import invitation_accept, invitation_create, invitation_get_by_key, invitation_revoke
from refinery.teams.models import Invitation, Membership
from refinery.teams.services import TeamError, team_create
from tests.factories import MembershipFactory, UserFactory

Role = Membership.Role


@pytest.fixture
def owner(db):
    return UserFactory(username="olga")


@pytest.fixture
def team(owner):
    return team_create(name="Lab", owner=owner)


def test_only_the_hash_is_stored_and_the_key_finds_the_invitation(owner, team, settings):
    settings.REFINERY_INVITATION_DAYS = 7
    invitation, key = invitation_create(team=team, actor=owner, role=Role.VIEWER, email="new@example.com")
    row = Invitation.objects.get(pk=invitation.pk)
    assert key.startswith("rfi_") and key not in row.key_hash and row.key_hash == Invitation.hash_key(key)
    assert timedelta(days=6, hours=23) < row.expires_at - timezone.now() <= timedelta(days=7)
    assert invitation_get_by_key(key=key) == row
    assert invitation_get_by_key(key=key + "x") is None
    assert row.state == Invitation.State.PENDING


def test_accepting_adds_the_role_once(owner, team):
    invitation, _ = invitation_create(team=team, actor=owner, role=Role.VIEWER)
    newcomer, latecomer = UserFactory(), UserFactory()
    membership = invitation_accept(invitation=invitation, user=newcomer)
    assert membership.role == Role.VIEWER and membership.team == team
    invitation.refresh_from_db()
    assert invitation.accepted_by == newcomer and invitation.state == Invitation.State.ACCEPTED
    with pytest.raises(TeamError, match="already been used"):
        invitation_accept(invitation=invitation, user=latecomer)
    assert not Membership.objects.filter(team=team, user=latecomer).exists()


def test_expired_and_revoked_invitations_are_refused(owner, team):
    expired, _ = invitation_create(team=team, actor=owner, role=Role.OWNER)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired.refresh_from_db()
    revoked, _ = invitation_create(team=team, actor=owner, role=Role.OWNER)
    invitation_revoke(team=team, actor=owner, invitation=revoked)
    user = UserFactory()
    with pytest.raises(TeamError, match="expired"):
        invitation_accept(invitation=expired, user=user)
    with pytest.raises(TeamError, match="revoked"):
        invitation_accept(invitation=revoked, user=user)
    with pytest.raises(TeamError, match="already revoked"):
        invitation_revoke(team=team, actor=owner, invitation=revoked)
    assert not Membership.objects.filter(team=team, user=user).exists()


def test_an_existing_member_keeps_their_role_and_the_link_stays_unused(owner, team):
    viewer = MembershipFactory(team=team, role=Role.VIEWER)
    invitation, _ = invitation_create(team=team, actor=owner, role=Role.OWNER)
    with pytest.raises(TeamError, match="already a member"):
        invitation_accept(invitation=invitation, user=viewer.user)
    assert Membership.objects.get(pk=viewer.pk).role == Role.VIEWER
    assert Invitation.objects.get(pk=invitation.pk).state == Invitation.State.PENDING


def test_only_owners_invite_and_revoke_and_only_in_their_team(owner, team):
    plain = MembershipFactory(team=team, role=Role.MEMBER)
    with pytest.raises(TeamError, match="only an owner"):
        invitation_create(team=team, actor=plain.user, role=Role.OWNER)
    invitation, _ = invitation_create(team=team, actor=owner, role=Role.MEMBER)
    with pytest.raises(TeamError, match="only an owner"):
        invitation_revoke(team=team, actor=plain.user, invitation=invitation)
    other = team_create(name="Other", owner=UserFactory())
    with pytest.raises(TeamError, match="not one of this team's"):
        invitation_revoke(team=other, actor=other.memberships.get().user, invitation=invitation)
    assert Invitation.objects.get(pk=invitation.pk).state == Invitation.State.PENDING
    with pytest.raises(TeamError, match="unknown role"):
        invitation_create(team=team, actor=owner, role="admin")
