"""Issue 11's team administration in a real browser: an owner invites a second person, who signs up through
the link and joins with the invitation's role; the owner changes a role inline, creates an API token (shown
once) and reads the audit log."""

from __future__ import annotations

import pytest

from refinery.teams.models import Membership
from refinery.teams.services import membership_add, user_create

from .conftest import SCREENSHOTS
from .test_golden_path import login

pytestmark = [pytest.mark.browser]


def guest_shot_page(p, name):
    p.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_invite_accept_roles_tokens_and_audit(page, browser, screenshot, live_server, transactional_db):
    owner = user_create(username="ada", password="pw-ada-12345", team_name="Lab")
    team = owner.teams.get()
    membership_add(team=team, user=user_create(username="mia", password="pw-mia-12345"))
    login(page, live_server)

    # The sidebar's Team entry: your teams and the create form.
    page.click("nav.nav a:has-text('Team')")
    page.wait_for_url(f"{live_server.url}/teams/")
    assert "Lab" in page.inner_text("[data-testid=team-list]")
    screenshot("60-teams")

    # Members: invite a viewer; the link is shown once, in the swapped-in card.
    page.goto(f"{live_server.url}/teams/{team.pk}/members/")
    page.select_option("[data-testid=invite-form] select[name=role]", "viewer")
    page.fill("[data-testid=invite-form] input[name=email]", "zoe@example.com")
    page.click("[data-testid=invite-form] button[type=submit]")
    link = page.input_value("[data-testid=invite-link]")
    assert "/teams/join/rfi_" in link
    assert "zoe@example.com" in page.inner_text("[data-testid=invitations]")  # the list is swapped in too
    screenshot("61-members-invite-link")

    # Inline role change (htmx): mia becomes a viewer; demoting the last owner is refused in the row.
    page.select_option("[data-testid=role-mia]", "viewer")
    page.wait_for_selector("tr[data-user=mia] .text-success")
    assert Membership.objects.get(team=team, user__username="mia").role == "viewer"
    page.select_option("[data-testid=role-ada]", "member")
    page.wait_for_selector("tr[data-user=ada] [data-testid=row-error]")
    assert "at least one owner" in page.inner_text("tr[data-user=ada]")
    assert Membership.objects.get(team=team, user=owner).role == "owner"
    screenshot("62-members-roles")

    # The invitee, in another browser session: the weak password is refused, then the account is made.
    guest = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    guest.set_default_timeout(20_000)

    def guest_shot(name):
        guest_shot_page(guest, name)

    try:
        guest.goto(link)
        assert "Join Lab" in guest.inner_text("[data-testid=invitation]")
        guest_shot("63-invitation")
        guest.fill("input[name=username]", "zoe")
        guest.fill("input[name=password1]", "short")
        guest.fill("input[name=password2]", "short")
        guest.click("[data-testid=sign-up] button[type=submit]")
        assert "too short" in guest.inner_text("[data-testid=sign-up]")
        guest.fill("input[name=password1]", "pw-zoe-12345")
        guest.fill("input[name=password2]", "pw-zoe-12345")
        guest.click("[data-testid=sign-up] button[type=submit]")
        guest.wait_for_url(f"{live_server.url}/teams/{team.pk}/members/")
        assert "you joined as viewer" in guest.inner_text(".flashes")
        assert Membership.objects.get(team=team, user__username="zoe").role == "viewer"
        assert guest.locator("[data-testid=role-zoe]").count() == 0  # a viewer gets no role selects
        guest_shot("64-joined")
        # A viewer has no audit log.
        assert guest.goto(f"{live_server.url}/teams/{team.pk}/audit/").status == 404
        # The link worked once.
        guest.context.clear_cookies()
        guest.goto(link)
        assert "already been used" in guest.inner_text("[data-testid=invitation-problem]")
        guest_shot("65-invitation-used")
    finally:
        guest.context.close()

    # Someone with an account elsewhere: the link sends them through sign-in and back, then they accept.
    user_create(username="sam", password="pw-sam-12345", team_name="Elsewhere")
    page.goto(f"{live_server.url}/teams/{team.pk}/members/")
    page.select_option("[data-testid=invite-form] select[name=role]", "member")
    page.click("[data-testid=invite-form] button[type=submit]")
    second_link = page.input_value("[data-testid=invite-link]")
    guest = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    try:
        guest.goto(second_link)
        guest.click("[data-testid=sign-in]")
        guest.fill("input[name=username]", "sam")
        guest.fill("input[name=password]", "pw-sam-12345")
        guest.click("button[type=submit]")
        guest.wait_for_url(second_link)
        assert "Signed in as sam" in guest.inner_text("[data-testid=invitation]")
        guest_shot_page(guest, "69-invitation-signed-in")
        guest.click("[data-testid=accept]")
        guest.wait_for_url(f"{live_server.url}/teams/{team.pk}/members/")
        assert Membership.objects.get(team=team, user__username="sam").role == "member"
    finally:
        guest.context.close()

    # API token: created read-only, shown once.
    page.goto(f"{live_server.url}/teams/tokens/")
    page.fill("[data-testid=token-form] input[name=name]", "laptop")
    page.select_option("[data-testid=token-form] select[name=expires_days]", "30")
    page.click("[data-testid=token-form] button[type=submit]")
    assert page.input_value("[data-testid=token-key]").startswith("rfy_")
    assert "laptop" in page.inner_text("[data-testid=my-tokens]")
    screenshot("66-tokens")

    # The audit log: the invitation's acceptance and the role change, filterable by action.
    page.goto(f"{live_server.url}/teams/{team.pk}/audit/")
    table = page.inner_text("[data-testid=audit-table]")
    assert "Invitation accepted" in table and "Role changed" in table and "API token created" in table
    screenshot("67-audit")
    page.select_option("#audit-action", "member.role_changed")
    page.wait_for_url("**/audit/?action=member.role_changed*")
    assert page.locator("[data-testid=audit-table] tbody tr").count() == 1
    screenshot("68-audit-filtered")
