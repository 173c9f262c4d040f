"""Notes and tags on a run: anyone who may write in the team adds them (htmx swaps the panel), viewers only read,
other teams see nothing; notes are searchable and tags filter the runs list."""

from __future__ import annotations

import re

import pytest
from django.template.loader import render_to_string
from django.test import Client

from refinery.runs.models import Run, RunNote, RunTag
from refinery.runs.services.annotations import AnnotationError, run_tag_add, tag_normalize
from refinery.teams.models import AuditEvent, Membership
from refinery.teams.services import membership_add, user_create
from tests.factories import PipelineFactory

HX = {"HX-Request": "true", "HX-Target": "run-annotations"}


@pytest.fixture
def run(team, alice):
    pipeline = PipelineFactory(team=team, name="adder")
    return Run.objects.create(
        team=team, pipeline=pipeline, number=7, name="adder", snapshot={}, seed=1, code_version="test", created_by=alice
    )


@pytest.fixture
def carol(team):
    """A member (not an owner) of alice's team."""
    user = user_create(username="carol", password="pw-carol-123")
    membership_add(team=team, user=user, role=Membership.Role.MEMBER)
    return user


def _client(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=f"pw-{username}-123")
    return client


def _panel(client, run) -> str:
    response = client.get(f"/runs/{run.number}/annotations/", headers=HX)
    assert response.status_code == 200
    return response.content.decode()


def test_a_member_adds_a_note_and_the_panel_shows_it(browser_client, run, alice):
    response = browser_client.post(
        f"/runs/{run.number}/notes/", {"body": "  Loss plateaued at step 300.\nTry a higher LR.  "}, headers=HX
    )
    assert response.status_code == 200
    html = response.content.decode()
    note = RunNote.objects.get()
    assert (note.run, note.author, note.body) == (run, alice, "Loss plateaued at step 300.\nTry a higher LR.")
    assert f'data-testid="note-{note.pk}"' in html and "Loss plateaued at step 300.<br>Try a higher LR." in html
    assert "1 note" in html and 'data-testid="add-note"' in html
    assert 'id="run-annotations"' not in html  # the contents only: htmx swaps them into the section


def test_an_empty_or_oversized_note_is_refused_with_the_text_kept(browser_client, run):
    response = browser_client.post(f"/runs/{run.number}/notes/", {"body": "   "}, headers=HX)
    assert response.status_code == 400 and "a note cannot be empty" in response.content.decode()
    long = "x" * (RunNote.MAX_LENGTH + 1)
    response = browser_client.post(f"/runs/{run.number}/notes/", {"body": long}, headers=HX)
    html = response.content.decode()
    assert response.status_code == 400 and "at most 5000 characters" in html and long in html
    assert not RunNote.objects.exists()


def test_tags_are_normalized_added_once_and_removed(browser_client, run, alice):
    html = browser_client.post(f"/runs/{run.number}/tags/", {"name": " Paper V2 "}, headers=HX).content.decode()
    assert list(RunTag.objects.values_list("name", "team_id", "created_by_id")) == [("paper-v2", run.team_id, alice.pk)]
    assert 'data-tag="paper-v2"' in html and 'href="/runs/?tag=paper-v2"' in html
    browser_client.post(f"/runs/{run.number}/tags/", {"name": "paper-v2"}, headers=HX)
    assert RunTag.objects.count() == 1
    bad = browser_client.post(f"/runs/{run.number}/tags/", {"name": "no/slashes"}, headers=HX)
    assert bad.status_code == 400 and "letters, digits" in bad.content.decode()
    assert 'value="no/slashes"' in bad.content.decode()
    response = browser_client.post(f"/runs/{run.number}/tags/remove/", {"name": "paper-v2"}, headers=HX)
    assert response.status_code == 200 and "No tags yet." in response.content.decode()
    assert not RunTag.objects.exists()
    assert AuditEvent.objects.filter(action="run.tag_removed", target=f"run #{run.number}").exists()


def test_tag_names(run, alice):
    assert tag_normalize("Best  Run") == "best-run"
    for bad in ("", "   ", "-leading", "a" * 41, "émoji✨", "a,b"):
        with pytest.raises(AnnotationError):
            tag_normalize(bad)
    assert run_tag_add(run=run, user=alice, name="v1.2:rc+1").name == "v1.2:rc+1"


def test_viewers_read_but_cannot_write(run, alice, viewer):
    RunNote.objects.create(run=run, author=alice, body="visible to everyone in the team")
    RunTag.objects.create(team=run.team, run=run, name="baseline")
    client = _client("victor")
    html = _panel(client, run)
    assert "visible to everyone in the team" in html and 'data-tag="baseline"' in html
    assert 'data-testid="read-only"' in html
    assert "<form" not in html and "Delete" not in html
    note = RunNote.objects.get()
    for url, data in [
        (f"/runs/{run.number}/notes/", {"body": "sneaky"}),
        (f"/runs/{run.number}/tags/", {"name": "x"}),
        (f"/runs/{run.number}/tags/remove/", {"name": "baseline"}),
        (f"/runs/{run.number}/notes/{note.pk}/delete/", {}),
    ]:
        assert client.post(url, data, headers=HX).status_code == 403, url
    assert RunNote.objects.count() == 1 and list(RunTag.objects.values_list("name", flat=True)) == ["baseline"]


def test_notes_are_deleted_by_their_author_or_an_owner_only(browser_client, run, alice, carol):
    mine = RunNote.objects.create(run=run, author=carol, body="carol's note")
    owners = RunNote.objects.create(run=run, author=alice, body="alice's note")
    client = _client("carol")
    html = _panel(client, run)
    assert f'data-testid="delete-note-{mine.pk}"' in html and f'data-testid="delete-note-{owners.pk}"' not in html
    response = client.post(f"/runs/{run.number}/notes/{owners.pk}/delete/", headers=HX)
    assert response.status_code == 400 and "only its author or a team owner" in response.content.decode()
    assert client.post(f"/runs/{run.number}/notes/{mine.pk}/delete/", headers=HX).status_code == 200
    # alice owns the team: she may delete anyone's note (and it is audited).
    assert browser_client.post(f"/runs/{run.number}/notes/{owners.pk}/delete/", headers=HX).status_code == 200
    assert not RunNote.objects.exists()
    assert AuditEvent.objects.filter(action="run.note_deleted").count() == 2
    assert browser_client.post(f"/runs/{run.number}/notes/{owners.pk}/delete/", headers=HX).status_code == 404


def test_another_team_cannot_see_or_touch_a_run(run, alice, bob):
    note = RunNote.objects.create(run=run, author=alice, body="private")
    client = _client("bob")
    assert client.get(f"/runs/{run.number}/annotations/", headers=HX).status_code == 404
    assert client.post(f"/runs/{run.number}/notes/", {"body": "hi"}, headers=HX).status_code == 404
    assert client.post(f"/runs/{run.number}/tags/", {"name": "hi"}, headers=HX).status_code == 404
    assert client.post(f"/runs/{run.number}/notes/{note.pk}/delete/", headers=HX).status_code == 404
    assert RunNote.objects.count() == 1 and not RunTag.objects.exists()


def test_a_note_of_another_run_is_not_reachable_through_this_one(browser_client, run, alice, team):
    other = Run.objects.create(
        team=team,
        pipeline=run.pipeline,
        number=8,
        name="other",
        snapshot={},
        seed=1,
        code_version="test",
        created_by=alice,
    )
    note = RunNote.objects.create(run=other, author=alice, body="on run 8")
    assert browser_client.post(f"/runs/{run.number}/notes/{note.pk}/delete/", headers=HX).status_code == 404
    assert RunNote.objects.filter(pk=note.pk).exists()


def test_the_include_is_a_self_contained_htmx_panel(run, rf, alice):
    request = rf.get(f"/runs/{run.number}/")
    request.user = alice
    html = render_to_string("runs/_annotations.html", {"run": run}, request=request)
    section = re.search(r"<section [^>]*>", html)[0]
    assert 'id="run-annotations"' in section and 'hx-preserve="true"' in section
    assert f'hx-get="/runs/{run.number}/annotations/"' in section and 'hx-trigger="load"' in section
    assert "<form" not in html  # the forms come with the contents, for the user who loads them


def test_a_plain_form_post_goes_back_to_the_run_page(browser_client, run):
    response = browser_client.post(f"/runs/{run.number}/notes/", {"body": "no javascript"})
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.number}/"
    assert RunNote.objects.get().body == "no javascript"


def test_notes_and_tags_show_in_the_runs_list(browser_client, run, alice):
    browser_client.post(f"/runs/{run.number}/notes/", {"body": "Tokenizer mismatch fixed here"}, headers=HX)
    browser_client.post(f"/runs/{run.number}/tags/", {"name": "golden"}, headers=HX)
    html = browser_client.get("/runs/?q=tokenizer").content.decode()
    row = html.split(f'data-testid="run-{run.number}"')[1].split("</tr>")[0]
    assert 'data-tag="golden"' in row and 'title="1 note"' in row
    assert f'data-testid="run-{run.number}"' in browser_client.get("/runs/?tag=golden").content.decode()
    assert '<option value="golden">golden</option>' in html  # the tag filter offers the team's tags
    assert f'data-testid="run-{run.number}"' not in browser_client.get("/runs/?q=mismatched+vocab").content.decode()
