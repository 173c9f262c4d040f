"""/api/v1/team: members, invitations, tokens and the audit log through the API."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from refinery.teams.models import ApiToken, AuditEvent, Invitation, Membership
from refinery.teams.services import api_token_create, membership_add, user_create

Role = Membership.Role


class Api:
    def __init__(self, key):
        self.client, self.headers = Client(), {"Authorization": f"Bearer {key}"}

    def __call__(self, method, path, body=None):
        kwargs = {"headers": self.headers}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return getattr(self.client, method.lower())(f"/api/v1/team{path}", **kwargs)


@pytest.fixture
def people(db):
    owner = user_create(username="olga", password="pw-olga-12345", team_name="Lab")
    team = owner.teams.get()
    member = user_create(username="mia", password="pw-mia-12345")
    viewer = user_create(username="vic", password="pw-vic-12345")
    membership_add(team=team, user=member, role=Role.MEMBER)
    membership_add(team=team, user=viewer, role=Role.VIEWER)
    outsider = user_create(username="eve", password="pw-eve-12345", team_name="Elsewhere")

    def api(user, team_=team, scope="write"):
        return Api(api_token_create(user=user, team=team_, scope=scope)[1])

    return {"team": team, "owner": owner, "member": member, "viewer": viewer, "outsider": outsider, "api": api}


def test_the_team_routes_are_in_the_openapi_schema(client, db):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    for path in (
        "/api/v1/team/members",
        "/api/v1/team/members/{user_id}",
        "/api/v1/team/invitations",
        "/api/v1/team/invitations/{invitation_id}",
        "/api/v1/team/tokens",
        "/api/v1/team/tokens/{token_id}",
        "/api/v1/team/audit",
        "/api/v1/team/leave",
    ):
        assert path in paths, path


def test_members_list_is_the_tokens_team_only(people):
    body = people["api"](people["viewer"])("GET", "/members").json()
    assert {(m["username"], m["role"]) for m in body} == {("olga", "owner"), ("mia", "member"), ("vic", "viewer")}


def test_owner_changes_roles_and_removes_others_cannot(people):
    owner, member, viewer = (people["api"](people[w]) for w in ("owner", "member", "viewer"))
    vic = people["viewer"].pk
    assert member("PATCH", f"/members/{vic}", {"role": "owner"}).status_code == 403
    assert viewer("PATCH", f"/members/{vic}", {"role": "owner"}).status_code == 403
    response = owner("PATCH", f"/members/{vic}", {"role": "member"})
    assert response.status_code == 200 and response.json()["role"] == "member"
    assert owner("PATCH", f"/members/{vic}", {"role": "admin"}).status_code == 422
    assert owner("PATCH", f"/members/{people['outsider'].pk}", {"role": "viewer"}).status_code == 404
    response = owner("PATCH", f"/members/{people['owner'].pk}", {"role": "viewer"})
    assert response.status_code == 400 and "at least one owner" in response.json()["detail"]
    assert member("DELETE", f"/members/{vic}").status_code == 403
    assert owner("DELETE", f"/members/{people['outsider'].pk}").status_code == 404
    assert owner("DELETE", f"/members/{vic}").status_code == 204
    assert not Membership.objects.filter(team=people["team"], user=people["viewer"]).exists()


def test_leave(people):
    member = people["api"](people["member"])
    assert member("POST", "/leave").status_code == 204
    assert member("GET", "/members").status_code == 401  # no longer a member: the token stops working
    response = people["api"](people["owner"])("POST", "/leave")
    assert response.status_code == 400 and "last owner" in response.json()["detail"]


def test_invitations_create_list_revoke(people):
    owner = people["api"](people["owner"])
    response = owner("POST", "/invitations", {"role": "viewer", "email": "zoe@example.com", "days": 3})
    assert response.status_code == 201, response.content
    created = response.json()
    key = created["url"].rstrip("/").rsplit("/", 1)[1]
    assert created["url"].startswith("http://testserver/teams/join/rfi_")
    assert Invitation.objects.get(pk=created["id"]).key_hash == Invitation.hash_key(key)
    listed = owner("GET", "/invitations").json()
    assert [i["state"] for i in listed] == ["pending"] and "url" not in listed[0]
    assert owner("POST", "/invitations", {"role": "member", "days": 400}).status_code == 400
    assert people["api"](people["member"])("GET", "/invitations").status_code == 403
    assert people["api"](people["member"])("POST", "/invitations", {"role": "owner"}).status_code == 403
    foreign = people["api"](people["outsider"], people["outsider"].teams.get())
    assert foreign("DELETE", f"/invitations/{created['id']}").status_code == 404
    response = owner("DELETE", f"/invitations/{created['id']}")
    assert response.status_code == 200 and response.json()["state"] == "revoked"
    assert owner("DELETE", f"/invitations/{created['id']}").status_code == 400


def test_tokens_create_list_revoke(people):
    member = people["api"](people["member"])
    response = member("POST", "/tokens", {"name": "ci", "scope": "read", "expires_days": 30})
    assert response.status_code == 201
    created = response.json()
    assert created["key"].startswith("rfy_") and created["scope"] == "read" and created["expires_at"]
    ci = Api(created["key"])
    assert ci("GET", "/members").status_code == 200
    assert ci("POST", "/tokens", {"name": "escalate", "scope": "write"}).status_code == 403
    listed = member("GET", "/tokens").json()
    assert {t["name"] for t in listed} == {"cli", "ci"} and all("key" not in t for t in listed)
    assert any(t["last_used_at"] for t in listed if t["name"] == "ci")
    assert member("GET", "/tokens?everyone=true").status_code == 403
    assert member("POST", "/tokens", {"name": "bad", "expires_days": 12}).status_code == 400
    owner = people["api"](people["owner"])
    assert {t["user"] for t in owner("GET", "/tokens?everyone=true").json()} == {"olga", "mia"}
    viewer_token, _ = api_token_create(user=people["viewer"], team=people["team"], scope="read")
    assert member("DELETE", f"/tokens/{viewer_token.pk}").status_code == 404
    assert owner("DELETE", f"/tokens/{viewer_token.pk}").status_code == 200
    foreign, _ = api_token_create(user=people["outsider"])
    assert owner("DELETE", f"/tokens/{foreign.pk}").status_code == 404
    assert ApiToken.objects.get(pk=foreign.pk).revoked_at is None
    response = member("DELETE", f"/tokens/{created['id']}")
    assert response.status_code == 200 and response.json()["active"] is False
    assert ci("GET", "/members").status_code == 401


def test_audit_for_owners(people):
    owner = people["api"](people["owner"])
    owner("PATCH", f"/members/{people['viewer'].pk}", {"role": "member"})
    body = owner("GET", "/audit?action=member.role_changed").json()
    assert body["count"] == 1
    event = body["events"][0]
    assert event["user"] == "olga" and event["target"] == "vic" and event["label"] == "Role changed"
    assert event["text"] == "role: member · previous: viewer"
    everything = owner("GET", "/audit?limit=2").json()
    assert (
        everything["count"] == AuditEvent.objects.filter(team=people["team"]).count() and len(everything["events"]) == 2
    )
    assert everything["events"][0]["id"] > everything["events"][1]["id"]  # newest first
    for who in ("member", "viewer"):
        assert people["api"](people[who])("GET", "/audit").status_code == 403
    foreign = people["api"](people["outsider"], people["outsider"].teams.get())
    assert all(e["target"] != "vic" for e in foreign("GET", "/audit").json()["events"])
