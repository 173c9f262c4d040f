"""Roles, removal and leaving: a team always keeps at least one owner, also under concurrent demotions."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from refinery.teams.memberships import membership_leave, membership_remove, membership_role_change
from refinery.teams.models import ApiToken, Membership
from refinery.teams.services import TeamError, api_token_create, team_create
from tests.factories import MembershipFactory, UserFactory

Role = Membership.Role


@pytest.fixture
def owner(db):
    return UserFactory(username="olga")


@pytest.fixture
def team(owner):
    return team_create(name="Lab", owner=owner)


def member(team, role=Role.MEMBER, username=None):
    return MembershipFactory(team=team, role=role, **({"user__username": username} if username else {}))


def test_team_create_makes_the_creator_owner_and_refuses_a_taken_name(owner, team):
    assert Membership.objects.get(team=team, user=owner).role == Role.OWNER
    assert team.created_by == owner
    with pytest.raises(TeamError, match="already exists"):
        team_create(name="lab", owner=UserFactory())
    with pytest.raises(TeamError, match="needs a name"):
        team_create(name="   ", owner=owner)


def test_owner_changes_roles(owner, team):
    m = member(team)
    assert membership_role_change(team=team, actor=owner, membership=m, role=Role.VIEWER).role == Role.VIEWER
    m.refresh_from_db()
    assert m.role == Role.VIEWER
    with pytest.raises(TeamError, match="unknown role"):
        membership_role_change(team=team, actor=owner, membership=m, role="admin")


def test_the_last_owner_cannot_be_demoted_removed_or_leave(owner, team):
    mine = Membership.objects.get(team=team, user=owner)
    with pytest.raises(TeamError, match="at least one owner"):
        membership_role_change(team=team, actor=owner, membership=mine, role=Role.MEMBER)
    with pytest.raises(TeamError, match="last owner"):
        membership_leave(team=team, user=owner)
    second = member(team, Role.OWNER)
    with pytest.raises(TeamError, match="Leave team"):
        membership_remove(team=team, actor=owner, membership=mine)
    # With a second owner, one may go.
    membership_role_change(team=team, actor=second.user, membership=mine, role=Role.MEMBER)
    with pytest.raises(TeamError, match="at least one owner"):
        membership_role_change(team=team, actor=second.user, membership=second, role=Role.VIEWER)
    assert Membership.objects.filter(team=team, role=Role.OWNER).count() == 1


def test_only_owners_change_members(owner, team):
    plain, viewer = member(team), member(team, Role.VIEWER)
    for actor in (plain.user, viewer.user):
        with pytest.raises(TeamError, match="only an owner"):
            membership_role_change(team=team, actor=actor, membership=viewer, role=Role.OWNER)
        with pytest.raises(TeamError, match="only an owner"):
            membership_remove(team=team, actor=actor, membership=viewer)
    assert Membership.objects.get(pk=viewer.pk).role == Role.VIEWER


def test_another_teams_membership_is_refused(owner, team):
    other = team_create(name="Other", owner=UserFactory())
    theirs = member(other)
    with pytest.raises(TeamError, match="not a member of this team"):
        membership_role_change(team=team, actor=owner, membership=theirs, role=Role.VIEWER)
    with pytest.raises(TeamError, match="not a member of this team"):
        membership_remove(team=team, actor=owner, membership=theirs)
    assert Membership.objects.get(pk=theirs.pk).role == Role.MEMBER


def test_removing_a_member_revokes_their_tokens_for_that_team_only(owner, team):
    m = member(team)
    other = team_create(name="Other", owner=m.user)
    here, _ = api_token_create(user=m.user, team=team)
    there, _ = api_token_create(user=m.user, team=other)
    membership_remove(team=team, actor=owner, membership=m)
    assert not Membership.objects.filter(pk=m.pk).exists()
    assert ApiToken.objects.get(pk=here.pk).revoked_at is not None
    assert ApiToken.objects.get(pk=there.pk).revoked_at is None


def test_a_member_leaves(owner, team):
    m = member(team)
    membership_leave(team=team, user=m.user)
    assert not Membership.objects.filter(pk=m.pk).exists()
    with pytest.raises(TeamError, match="not a member"):
        membership_leave(team=team, user=m.user)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("second_action", ["demote", "remove"])
def test_two_concurrent_owner_demotions_cannot_both_succeed(second_action):
    """Owner A demotes owner B inside a transaction that has not committed yet; meanwhile owner B demotes
    (or removes) owner A. Without the row locks, B would count two owners and succeed: no owner left.
    With them, B waits for A's commit, then sees one owner and is refused."""
    a, b = UserFactory(username="anna"), UserFactory(username="bert")
    team = team_create(name="Race", owner=a)
    mb = Membership.objects.create(team=team, user=b, role=Role.OWNER)
    ma = Membership.objects.get(team=team, user=a)
    first_done, outcome = threading.Event(), {}

    def first():
        try:
            with transaction.atomic():
                membership_role_change(team=team, actor=a, membership=mb, role=Role.MEMBER)
                first_done.set()
                time.sleep(1.0)  # hold the locks while the second request runs
                outcome["first_committed_at"] = time.monotonic()
        finally:
            connection.close()

    def second():
        try:
            first_done.wait(10)
            try:
                if second_action == "demote":
                    membership_role_change(team=team, actor=b, membership=ma, role=Role.VIEWER)
                else:
                    membership_remove(team=team, actor=b, membership=ma)
                outcome["second"] = "succeeded"
            except TeamError as exc:
                outcome["second"] = str(exc)
            outcome["second_finished_at"] = time.monotonic()
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcome["second_finished_at"] >= outcome["first_committed_at"]  # it waited for the lock
    # B is no longer an owner once A's demotion commits, so B's request is refused (as a non-owner, or as the
    # last owner's demotion): either way nothing changes and A stays owner.
    assert outcome["second"] != "succeeded"
    assert list(Membership.objects.filter(team=team, role=Role.OWNER).values_list("user__username", flat=True)) == [
        "anna"
    ]


@pytest.mark.django_db(transaction=True)
def test_concurrent_self_demotions_of_the_last_two_owners_leave_one_owner():
    """Each of two owners demotes themself at the same time (the common race): exactly one succeeds."""
    a, b = UserFactory(username="anna"), UserFactory(username="bert")
    team = team_create(name="Race", owner=a)
    Membership.objects.create(team=team, user=b, role=Role.OWNER)
    barrier, results = threading.Barrier(2), []

    def demote(user):
        try:
            barrier.wait(10)
            try:
                with transaction.atomic():
                    mine = Membership.objects.get(team=team, user=user)
                    membership_role_change(team=team, actor=user, membership=mine, role=Role.MEMBER)
                    time.sleep(0.5)
                results.append("ok")
            except TeamError as exc:
                results.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=(u,)) for u in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count("ok") == 1, results
    assert Membership.objects.filter(team=team, role=Role.OWNER).count() == 1
