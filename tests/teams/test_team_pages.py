"""Team settings pages as an owner, a member, a viewer and an outsider (another team's owner)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from refinery.teams.invitations import invitation_create
from refinery.teams.models import ApiToken, AuditEvent, Invitation, Membership, Team
from refinery.teams.services import api_token_create, audit, membership_add, user_create

Role = Membership.Role


@pytest.fixture
def people(db):
    owner = user_create(username="olga", password="pw-olga-12345", team_name="Lab")
    team = owner.teams.get()
    member = user_create(username="mia", password="pw-mia-12345")
    viewer = user_create(username="vic", password="pw-vic-12345")
    membership_add(team=team, user=member, role=Role.MEMBER)
    membership_add(team=team, user=viewer, role=Role.VIEWER)
    outsider = user_create(username="eve", password="pw-eve-12345", team_name="Elsewhere")
    return {"team": team, "owner": owner, "member": member, "viewer": viewer, "outsider": outsider}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def m(team, user) -> Membership:
    return Membership.objects.get(team=team, user=user)


def test_anonymous_is_sent_to_sign_in(db):
    for url in ("/teams/", "/teams/tokens/", "/teams/1/members/", "/teams/1/audit/"):
        response = Client().get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], url


def test_teams_page_lists_my_teams_and_creates_one(people):
    client = client_for(people["member"])
    page = client.get("/teams/").content.decode()
    assert "Lab" in page and "Elsewhere" not in page
    response = client.post("/teams/new/", {"name": "Mia's lab"})
    team = Team.objects.get(name="Mia's lab")
    assert response.status_code == 302 and response["Location"] == f"/teams/{team.pk}/members/"
    assert m(team, people["member"]).role == Role.OWNER
    response = client.post("/teams/new/", {"name": "lab"})
    assert response.status_code == 400 and "already exists" in response.content.decode()


def test_a_user_without_a_team_can_create_one(db):
    lone = user_create(username="lone", password="pw-lone-12345")
    client = client_for(lone)
    assert client.get("/runs/").status_code == 403  # no team yet: the no-team page links here
    assert "Create a team" in client.get("/runs/").content.decode()
    assert client.get("/teams/").status_code == 200
    client.post("/teams/new/", {"name": "Solo"})
    assert client.get("/runs/").status_code == 200


@pytest.mark.parametrize(
    ("who", "status", "selects"),
    [("owner", 200, True), ("member", 200, False), ("viewer", 200, False), ("outsider", 404, False)],
)
def test_members_page(people, who, status, selects):
    response = client_for(people[who]).get(f"/teams/{people['team'].pk}/members/")
    assert response.status_code == status
    if status == 200:
        html = response.content.decode()
        assert "mia" in html and "vic" in html
        assert ('name="role"' in html) is selects
        assert ("Create invitation link" in html) is selects


@pytest.mark.parametrize(("who", "status"), [("owner", 200), ("member", 403), ("viewer", 403), ("outsider", 404)])
def test_role_change_inline(people, who, status):
    team, target = people["team"], m(people["team"], people["member"])
    response = client_for(people[who]).post(
        f"/teams/{team.pk}/members/{target.pk}/role/", {"role": "viewer"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == status
    target.refresh_from_db()
    assert target.role == (Role.VIEWER if status == 200 else Role.MEMBER)
    if status == 200:
        html = response.content.decode()
        assert html.strip().startswith(f'<tr id="member-{target.pk}"') and "Saved" in html


def test_demoting_the_last_owner_shows_why_in_the_row(people):
    team, mine = people["team"], m(people["team"], people["owner"])
    response = client_for(people["owner"]).post(
        f"/teams/{team.pk}/members/{mine.pk}/role/", {"role": "member"}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 400 and "at least one owner" in response.content.decode()
    mine.refresh_from_db()
    assert mine.role == Role.OWNER


def test_another_teams_member_is_404_even_for_an_owner(people):
    team, theirs = people["team"], m(Team.objects.get(name="Elsewhere"), people["outsider"])
    client = client_for(people["owner"])
    assert client.post(f"/teams/{team.pk}/members/{theirs.pk}/role/", {"role": "viewer"}).status_code == 404
    assert client.post(f"/teams/{team.pk}/members/{theirs.pk}/remove/").status_code == 404
    assert m(Team.objects.get(name="Elsewhere"), people["outsider"]).role == Role.OWNER


@pytest.mark.parametrize(("who", "status"), [("owner", 302), ("member", 403), ("viewer", 403), ("outsider", 404)])
def test_remove_member(people, who, status):
    team, target = people["team"], m(people["team"], people["viewer"])
    _, key = api_token_create(user=people["viewer"], team=team, scope="read")
    response = client_for(people[who]).post(f"/teams/{team.pk}/members/{target.pk}/remove/")
    assert response.status_code == status
    assert Membership.objects.filter(pk=target.pk).exists() is (status != 302)
    if status == 302:
        assert Client().get("/api/v1/runs", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_member_leaves_and_last_owner_cannot(people):
    team = people["team"]
    response = client_for(people["member"]).post(f"/teams/{team.pk}/leave/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and response["HX-Redirect"] == "/teams/"
    assert not Membership.objects.filter(team=team, user=people["member"]).exists()
    client = client_for(people["owner"])
    response = client.post(f"/teams/{team.pk}/leave/", follow=True)
    assert "last owner" in response.content.decode()
    assert m(team, people["owner"]).role == Role.OWNER


def test_invitation_link_is_shown_once(people):
    team = people["team"]
    client = client_for(people["owner"])
    response = client.post(
        f"/teams/{team.pk}/invitations/new/",
        {"role": "viewer", "email": "zoe@example.com"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.strip().startswith('<div class="grid-2" id="invite-card"')
    key = html.split("/teams/join/")[1].split("/")[0]
    invitation = Invitation.objects.get()
    assert invitation.key_hash == Invitation.hash_key(key) and invitation.role == "viewer"
    page = client.get(f"/teams/{team.pk}/members/").content.decode()
    assert "zoe@example.com" in page and key not in page
    for who in ("member", "viewer"):
        assert client_for(people[who]).post(f"/teams/{team.pk}/invitations/new/", {"role": "owner"}).status_code == 403
    assert (
        client_for(people["outsider"]).post(f"/teams/{team.pk}/invitations/new/", {"role": "owner"}).status_code == 404
    )
    assert Invitation.objects.count() == 1


def test_invitation_revoke(people):
    team = people["team"]
    invitation, key = invitation_create(team=team, actor=people["owner"], role=Role.MEMBER)
    url = f"/teams/{team.pk}/invitations/{invitation.pk}/revoke/"
    assert client_for(people["member"]).post(url).status_code == 403
    assert client_for(people["outsider"]).post(url).status_code == 404
    assert client_for(people["owner"]).post(url).status_code == 302
    response = Client().get(f"/teams/join/{key}/")
    assert response.status_code == 410 and "revoked" in response.content.decode()


def test_sign_up_through_an_invitation(people):
    team = people["team"]
    _, key = invitation_create(team=team, actor=people["owner"], role=Role.VIEWER)
    client = Client()
    page = client.get(f"/teams/join/{key}/")
    assert page.status_code == 200 and "Join Lab" in page.content.decode()
    weak = client.post(f"/teams/join/{key}/", {"username": "zoe", "password1": "short", "password2": "short"})
    assert weak.status_code == 400 and "too short" in weak.content.decode()
    taken = client.post(
        f"/teams/join/{key}/", {"username": "mia", "password1": "pw-zoe-12345", "password2": "pw-zoe-12345"}
    )
    assert taken.status_code == 400 and "already exists" in taken.content.decode()
    response = client.post(
        f"/teams/join/{key}/", {"username": "zoe", "password1": "pw-zoe-12345", "password2": "pw-zoe-12345"}
    )
    assert response.status_code == 302 and response["Location"] == f"/teams/{team.pk}/members/"
    assert Membership.objects.get(team=team, user__username="zoe").role == Role.VIEWER
    assert client.get("/runs/").status_code == 200  # signed in, in the team
    used = Client().get(f"/teams/join/{key}/")
    assert used.status_code == 410 and "already been used" in used.content.decode()


def test_signed_in_user_accepts_and_bad_links_get_clear_pages(people):
    team = people["team"]
    _, key = invitation_create(team=team, actor=people["owner"], role=Role.MEMBER)
    client = client_for(people["outsider"])
    assert "Signed in as eve" in client.get(f"/teams/join/{key}/").content.decode()
    assert client.post(f"/teams/join/{key}/").status_code == 302
    assert m(team, people["outsider"]).role == Role.MEMBER
    expired, key2 = invitation_create(team=team, actor=people["owner"], role=Role.OWNER)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    response = client_for(people["viewer"]).post(f"/teams/join/{key2}/")
    assert response.status_code == 410 and "expired" in response.content.decode()
    assert m(team, people["viewer"]).role == Role.VIEWER
    response = Client().get("/teams/join/rfi_not-a-real-key/")
    assert response.status_code == 404 and "not valid" in response.content.decode()


def test_tokens_page_creates_shows_once_and_revokes(people):
    team = people["team"]
    client = client_for(people["member"])
    response = client.post("/teams/tokens/new/", {"name": "laptop", "scope": "read", "expires_days": "30"})
    assert response.status_code == 200
    html = response.content.decode()
    key = html.split('value="rfy_')[1].split('"')[0]
    token = ApiToken.objects.get(key_hash=ApiToken.hash_key("rfy_" + key))
    assert token.scope == "read" and token.team == team and token.expires_at is not None
    assert "rfy_" + key not in client.get("/teams/tokens/").content.decode()
    assert client.post("/teams/tokens/new/", {"name": "x", "scope": "read", "expires_days": "7"}).status_code == 400
    # Another member's token: 404 for a member, revocable by an owner; never another team's.
    theirs, _ = api_token_create(user=people["viewer"], team=team, scope="read")
    assert client.post(f"/teams/tokens/{theirs.pk}/revoke/").status_code == 404
    owner_page = client_for(people["owner"]).get("/teams/tokens/").content.decode()
    assert "Other members' tokens" in owner_page and theirs.key_prefix in owner_page
    assert client_for(people["owner"]).post(f"/teams/tokens/{theirs.pk}/revoke/").status_code == 302
    assert ApiToken.objects.get(pk=theirs.pk).revoked_at is not None
    foreign, _ = api_token_create(user=people["outsider"])
    assert client_for(people["owner"]).post(f"/teams/tokens/{foreign.pk}/revoke/").status_code == 404
    assert client.post(f"/teams/tokens/{token.pk}/revoke/").status_code == 302
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


def test_a_viewer_creates_read_tokens_only(people):
    client = client_for(people["viewer"])
    response = client.post("/teams/tokens/new/", {"name": "w", "scope": "write", "expires_days": "30"})
    assert response.status_code == 400 and "read-only tokens only" in response.content.decode()
    assert client.post("/teams/tokens/new/", {"name": "r", "scope": "read", "expires_days": "30"}).status_code == 200


@pytest.mark.parametrize(("who", "status"), [("owner", 200), ("member", 404), ("viewer", 404), ("outsider", 404)])
def test_audit_page_is_for_owners(people, who, status):
    assert client_for(people[who]).get(f"/teams/{people['team'].pk}/audit/").status_code == status


def test_audit_page_filters_and_pages(people, settings):
    settings.REFINERY_AUDIT_PAGE_SIZE = 5
    team = people["team"]
    client = client_for(people["owner"])
    AuditEvent.objects.all().delete()  # the sign-ups, team creations and this sign-in
    for i in range(7):
        audit(team=team, user=people["member"], action="pipeline.created", target=f"p{i}")
    audit(team=team, user=people["owner"], action="member.role_changed", target="vic", role="viewer", previous="member")
    audit(team=Team.objects.get(name="Elsewhere"), user=people["outsider"], action="pipeline.created", target="theirs")

    def cells(html):
        return [
            c.split("</td>")[0]
            for c in html.split("<td>")[1:]
            if c.split("</td>")[0] in ("vic", "theirs", *(f"p{i}" for i in range(7)))
        ]

    html = client.get(f"/teams/{team.pk}/audit/").content.decode()
    assert "8 events" in html and "Page 1 of 2" in html
    assert cells(html) == ["vic", "p6", "p5", "p4", "p3"]  # newest first, only this team's
    assert "role: viewer · previous: member" in html and "Role changed" in html
    html = client.get(f"/teams/{team.pk}/audit/?action=pipeline.created&page=2").content.decode()
    assert "7 events" in html and cells(html) == ["p1", "p0"]
    html = client.get(f"/teams/{team.pk}/audit/?user={people['owner'].pk}").content.decode()
    assert "1 event" in html and cells(html) == ["vic"]


def test_writes_need_post_and_csrf(people):
    team = people["team"]
    client = client_for(people["owner"])
    target = m(team, people["member"])
    assert client.get(f"/teams/{team.pk}/members/{target.pk}/remove/").status_code == 405
    assert client.get("/teams/tokens/new/").status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(people["owner"])
    assert strict.post(f"/teams/{team.pk}/members/{target.pk}/remove/").status_code == 403
    assert strict.post("/teams/new/", {"name": "CSRF"}).status_code == 403
    assert Membership.objects.filter(pk=target.pk).exists() and not Team.objects.filter(name="CSRF").exists()
