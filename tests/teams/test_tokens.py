"""API tokens: expiry and revocation give 401, a read token gets 403 on every write, the UI's rules."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from refinery.api.views import api
from refinery.teams.models import ApiToken, Membership
from refinery.teams.services import TeamError, api_token_create, team_create
from refinery.teams.tokens import api_token_get_for, api_token_list, api_token_revoke, expiry_from_days
from tests.factories import MembershipFactory, UserFactory

Role = Membership.Role


@pytest.fixture
def owner(db):
    return UserFactory(username="olga")


@pytest.fixture
def team(owner):
    return team_create(name="Lab", owner=owner)


def call(key, method, path, body=None):
    client = Client()
    kwargs = {"headers": {"Authorization": f"Bearer {key}"}}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method.lower())(path, **kwargs)


def test_expired_and_revoked_tokens_get_401(owner, team):
    _, live = api_token_create(user=owner, team=team, expires_at=timezone.now() + timedelta(days=1))
    assert call(live, "GET", "/api/v1/runs").status_code == 200
    token, key = api_token_create(user=owner, team=team, expires_at=timezone.now() + timedelta(days=1))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert call(key, "GET", "/api/v1/runs").status_code == 401
    token, key = api_token_create(user=owner, team=team)
    api_token_revoke(token=token, actor=owner)
    assert call(key, "GET", "/api/v1/runs").status_code == 401


def _write_operations():
    """Every (method, path) of /api/v1 that is not GET/HEAD/OPTIONS, with placeholder ids."""
    schema = api.get_openapi_schema()
    for path, item in schema["paths"].items():
        for method in item:
            if method.upper() not in ("GET", "HEAD", "OPTIONS"):
                yield method.upper(), re.sub(r"\{\w+\}", "1", path)


def test_a_read_token_gets_403_on_every_write_route_and_changes_nothing(owner, team):
    _, key = api_token_create(user=owner, team=team, scope=ApiToken.Scope.READ)
    operations = sorted(set(_write_operations()))
    assert len(operations) >= 10 and ("POST", "/api/v1/team/tokens") in operations
    assert {
        ("POST", "/api/v1/registered-models/promote"),
        ("PUT", "/api/v1/registered-models/1/aliases/1"),
        ("DELETE", "/api/v1/registered-models/1/aliases/1"),
        ("POST", "/api/v1/registered-models/1/aliases/1/rollback"),
        ("DELETE", "/api/v1/schedules/1"),
    } <= set(operations)
    tokens_before = ApiToken.objects.count()
    for method, path in operations:
        response = call(key, method, path, body={})
        assert response.status_code == 403, (method, path, response.content)
        assert "read-only" in response.json()["detail"]
    assert ApiToken.objects.count() == tokens_before
    assert call(key, "GET", "/api/v1/team/members").status_code == 200


def test_a_write_token_of_a_viewer_is_still_read_only(owner, team):
    viewer = MembershipFactory(team=team, role=Role.VIEWER).user
    _, key = api_token_create(user=viewer, team=team, scope=ApiToken.Scope.WRITE)
    response = call(key, "POST", "/api/v1/pipelines", body={"name": "x", "base_model_id": 1, "spec": {"stages": []}})
    assert response.status_code == 403


def test_token_create_checks_scope_and_expiry(owner, team, settings):
    with pytest.raises(ValueError, match="scope"):
        api_token_create(user=owner, team=team, scope="admin")
    with pytest.raises(ValueError, match="future"):
        api_token_create(user=owner, team=team, expires_at=timezone.now() - timedelta(days=1))
    settings.REFINERY_API_TOKEN_MAX_DAYS = 0
    assert expiry_from_days(0) is None
    with pytest.raises(TeamError, match="choose an expiry"):
        expiry_from_days(7)
    settings.REFINERY_API_TOKEN_MAX_DAYS = 90
    with pytest.raises(TeamError, match="choose an expiry of 30, 90 days"):
        expiry_from_days(0)


def test_members_manage_their_own_tokens_owners_all_of_the_team(owner, team):
    mia = MembershipFactory(team=team, role=Role.MEMBER).user
    ned = MembershipFactory(team=team, role=Role.MEMBER).user
    mias, _ = api_token_create(user=mia, team=team)
    neds, _ = api_token_create(user=ned, team=team)
    outsider_team = team_create(name="Other", owner=UserFactory())
    foreign, _ = api_token_create(user=outsider_team.memberships.get().user, team=outsider_team)
    assert list(api_token_list(team=team, user=mia)) == [mias]
    assert set(api_token_list(team=team, user=owner, everyone=True)) == {mias, neds}
    with pytest.raises(ApiToken.DoesNotExist):
        api_token_get_for(team=team, user=mia, pk=neds.pk)
    with pytest.raises(ApiToken.DoesNotExist):
        api_token_get_for(team=team, user=owner, pk=foreign.pk)
    with pytest.raises(TeamError, match="only the token's owner"):
        api_token_revoke(token=neds, actor=mia)
    assert api_token_revoke(token=api_token_get_for(team=team, user=owner, pk=neds.pk), actor=owner).revoked_at


def test_api_token_command_takes_scope_and_expiry(owner, team, capsys):
    call_command("api_token", "olga", "--scope", "read", "--expires", "30")
    key = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(key))
    assert token.scope == "read" and timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert call(key, "GET", "/api/v1/runs").status_code == 200
    assert call(key, "POST", "/api/v1/team/tokens", body={}).status_code == 403
    call_command("api_token", "olga")
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key(capsys.readouterr().out.strip()))
    assert token.scope == "write" and token.expires_at is None
