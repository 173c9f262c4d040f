"""Issue 11, hole 5 (second half): hub tokens are per-team secrets, encrypted at rest, write-only, owners only,
and reach a trainer only for a stage of their own team that loads its hub base model."""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import sys

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connection
from django.test import Client

from jobs.tasks import run_stage
from refinery.runs.models import Status
from refinery.runs.services import run_create
from refinery.teams.checks import secrets_key_check
from refinery.teams.models import AuditEvent, Membership, TeamSecret
from refinery.teams.services import api_token_create, membership_add, user_create
from refinery.teams.team_secrets import (
    TeamSecretError,
    secrets_cipher,
    team_secret_reveal,
    team_secret_set,
    team_secrets_rotate,
)
from refinery.tracking.client import artifacts_download, tracking_client

TOKEN = "hf_AlphaTeamSecretToken0123456789wxyz"
OTHER = "hf_BetaTeamSecretToken98765432100000"


@pytest.fixture
def alice(db):
    return user_create(username="alice", password="pw-alice-123", team_name="Alpha")


@pytest.fixture
def team(alice):
    return alice.teams.get()


@pytest.fixture
def bob(db):
    return user_create(username="bob", password="pw-bob-123", team_name="Beta")


@pytest.fixture
def member(team):
    user = user_create(username="mia", password="pw-mia-123")
    membership_add(team=team, user=user, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def viewer(team):
    user = user_create(username="victor", password="pw-victor-123")
    membership_add(team=team, user=user, role=Membership.Role.VIEWER)
    return user


def login(username: str) -> Client:
    client = Client()
    assert client.login(username=username, password=f"pw-{username}-123")
    return client


def api_client(user, team=None):
    _, key = api_token_create(user=user, team=team)
    return Client(headers={"Authorization": f"Bearer {key}"})


def visible(response) -> str:
    """The page's text as a reader sees it: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def put(client, name, value):
    return client.put(f"/api/v1/team/secrets/{name}", json.dumps({"value": value}), content_type="application/json")


# --- storage -------------------------------------------------------------------------------------


def test_the_value_is_stored_encrypted_and_decrypts(team, alice):
    secret = team_secret_set(team=team, user=alice, name="hf_token", value=f"  {TOKEN}\n")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM teams_teamsecret")
        row = " ".join(str(v) for v in cursor.fetchone())
    assert TOKEN not in row and TOKEN[3:-4] not in row  # the plaintext is nowhere in the row
    assert secret.ciphertext != TOKEN and secret.last4 == "wxyz"
    assert secrets_cipher().decrypt(secret.ciphertext.encode()).decode() == TOKEN
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN
    # Fernet: a fresh IV every time, so equal values never give equal ciphertexts.
    again = team_secret_set(team=team, user=alice, name="hf_token", value=TOKEN)
    assert again.pk == secret.pk and again.ciphertext != secret.ciphertext and TeamSecret.objects.count() == 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("hf_token", "short", "12 to 512 characters"),
        ("hf_token", "hf_has a space inside it", "no spaces"),
        ("hf_token", "hf_" + "x" * 600, "12 to 512 characters"),
        ("aws_key", TOKEN, "unknown secret 'aws_key'"),
    ],
)
def test_bad_values_are_refused_and_nothing_is_stored(team, alice, name, value, message):
    with pytest.raises(TeamSecretError, match=message) as caught:
        team_secret_set(team=team, user=alice, name=name, value=value)
    assert value not in str(caught.value)
    assert not TeamSecret.objects.exists() and not AuditEvent.objects.filter(action__startswith="secret.").exists()


def test_keys_rotate(team, alice, settings):
    settings.REFINERY_SECRETS_KEY, settings.REFINERY_SECRETS_OLD_KEYS = "first-key-" + "a" * 30, []
    team_secret_set(team=team, user=alice, name="hf_token", value=TOKEN)
    settings.REFINERY_SECRETS_KEY = "second-key-" + "b" * 30
    with pytest.raises(TeamSecretError, match="cannot be decrypted with REFINERY_SECRETS_KEY"):
        team_secret_reveal(team=team, name="hf_token")  # the old key is gone: a clear error, no garbage
    settings.REFINERY_SECRETS_OLD_KEYS = ["first-key-" + "a" * 30]
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN  # the old key still decrypts
    out = io.StringIO()
    call_command("rotate_team_secrets", stdout=out)
    assert "re-encrypted 1 team secret(s)" in out.getvalue()
    settings.REFINERY_SECRETS_OLD_KEYS = []
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN  # re-encrypted under the new key
    settings.REFINERY_SECRETS_KEY = "third-key-" + "d" * 30  # a rotation that cannot decrypt changes nothing
    with pytest.raises(TeamSecretError, match="nothing was rotated"):
        team_secrets_rotate()


def test_without_a_secrets_key_development_derives_one_and_production_refuses_to_start(team, alice, settings):
    settings.REFINERY_SECRETS_KEY = ""
    settings.REFINERY_REQUIRE_SECRETS_KEY = False  # development and the embedded `make run`
    team_secret_set(team=team, user=alice, name="hf_token", value=TOKEN)  # derived from DJANGO_SECRET_KEY
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN
    assert secrets_key_check() == []
    settings.REFINERY_REQUIRE_SECRETS_KEY = True  # what settings.production sets
    errors = [e for e in run_checks(tags=["security"]) if e.id == "teams.E001"]
    assert len(errors) == 1 and "REFINERY_SECRETS_KEY is not set" in errors[0].msg
    settings.REFINERY_SECRETS_KEY = "a-real-key-" + "c" * 30
    assert [e for e in run_checks(tags=["security"]) if e.id == "teams.E001"] == []


# --- the page ------------------------------------------------------------------------------------


def test_owner_sets_replaces_and_deletes_without_ever_seeing_the_value(team, alice):
    client = login("alice")
    page = client.get("/teams/secrets/")
    assert page.status_code == 200 and "not set" in page.content.decode()
    assert 'href="/teams/secrets/"' in page.content.decode()  # the sidebar links it for owners

    response = client.post("/teams/secrets/", {"name": "hf_token", "value": TOKEN}, follow=True)
    text = visible(response)
    assert response.status_code == 200
    assert re.search(r"Set on \d+ \w+ \d{4}, \d\d:\d\d by alice , ends with …wxyz", text), text
    assert TOKEN not in response.content.decode() and TOKEN[:-4] not in response.content.decode()
    assert AuditEvent.objects.filter(team=team, action="secret.set", target="hf_token").count() == 1

    response = client.post("/teams/secrets/", {"name": "hf_token", "value": OTHER}, follow=True)  # replace
    text = visible(response)
    assert "ends with …0000" in text and OTHER not in response.content.decode() and TOKEN not in text
    assert team_secret_reveal(team=team, name="hf_token") == OTHER

    bad = client.post("/teams/secrets/", {"name": "hf_token", "value": "hf_not a token at all"})
    assert bad.status_code == 400 and "no spaces" in html.unescape(bad.content.decode())
    assert "hf_not a token at all" not in html.unescape(bad.content.decode())  # not echoed back either
    assert team_secret_reveal(team=team, name="hf_token") == OTHER

    response = client.post("/teams/secrets/hf_token/delete/", follow=True)
    assert response.status_code == 200 and "not set" in response.content.decode()
    assert not TeamSecret.objects.exists()
    assert AuditEvent.objects.filter(team=team, action="secret.deleted", target="hf_token").count() == 1
    for event in AuditEvent.objects.filter(team=team):
        assert TOKEN not in json.dumps(event.detail) and OTHER not in json.dumps(event.detail)


def test_members_viewers_and_strangers_cannot_reach_the_page(team, alice, member, viewer):
    team_secret_set(team=team, user=alice, name="hf_token", value=TOKEN)
    for username in ("mia", "victor"):
        client = login(username)
        assert client.get("/teams/secrets/").status_code == 404
        assert client.post("/teams/secrets/", {"name": "hf_token", "value": OTHER}).status_code == 404
        assert client.post("/teams/secrets/hf_token/delete/").status_code == 404
        assert 'href="/teams/secrets/"' not in client.get("/runs/").content.decode()  # no link either
    anonymous = Client().get("/teams/secrets/")
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN  # untouched


def test_another_team_cannot_read_or_change_it(team, alice, bob):
    team_secret_set(team=team, user=alice, name="hf_token", value=TOKEN)
    client = login("bob")  # the owner of Beta: his page is Beta's
    page = html.unescape(client.get("/teams/secrets/").content.decode())
    assert "not set" in page and "wxyz" not in page and TOKEN not in page
    assert client.post("/teams/secrets/hf_token/delete/").status_code == 302  # deletes Beta's (none)
    api = api_client(bob)
    assert [s["set"] for s in api.get("/api/v1/team/secrets").json()] == [False]
    assert api.delete("/api/v1/team/secrets/hf_token").status_code == 404
    assert put(api, "hf_token", OTHER).status_code == 200  # Beta's own token
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN
    assert team_secret_reveal(team=bob.teams.get(), name="hf_token") == OTHER
    # Switching the session to a team he is not in is refused.
    assert client.post("/teams/switch/", {"team": team.pk}).status_code == 404


# --- the API -------------------------------------------------------------------------------------


def test_the_api_is_write_only_and_for_owners(team, alice, member, viewer):
    api = api_client(alice, team)
    response = put(api, "hf_token", TOKEN)
    assert response.status_code == 200, response.content
    assert TOKEN not in response.content.decode()
    assert response.json()["ends_with"] == "wxyz" and response.json()["updated_by"] == "alice"
    listed = api.get("/api/v1/team/secrets")
    assert listed.status_code == 200 and TOKEN not in listed.content.decode()
    assert listed.json() == [{**response.json()}]
    assert put(api, "hf_token", "bad value").status_code == 400
    assert put(api, "nope", TOKEN).status_code == 404

    for user in (member, viewer):
        other = api_client(user, team)
        assert other.get("/api/v1/team/secrets").status_code == 403
        assert put(other, "hf_token", OTHER).status_code == 403
        assert other.delete("/api/v1/team/secrets/hf_token").status_code == 403
    assert team_secret_reveal(team=team, name="hf_token") == TOKEN

    assert api.delete("/api/v1/team/secrets/hf_token").status_code == 204
    assert api.delete("/api/v1/team/secrets/hf_token").status_code == 404
    events = AuditEvent.objects.filter(team=team, action__startswith="secret.").order_by("created_at")
    assert [e.action for e in events] == ["secret.set", "secret.deleted"]
    schema = api.get("/api/v1/openapi.json").json()
    assert "/api/v1/team/secrets/{name}" in schema["paths"]


# --- the worker: HF_TOKEN only for the team's own hub-model stages -----------------------------------

FAKE_TRAINER = f"""#!{sys.executable}
import hashlib, os, sys
token = os.environ.get("HF_TOKEN")
print("hf-token:", hashlib.sha256(token.encode()).hexdigest() if token else "none", file=sys.stderr)
sys.exit(1)
"""


def _hub_pipeline(demo_pipeline, *, hub: bool = True, team=None):
    pipeline = demo_pipeline({"name": "sft", "method": "sft"})
    if hub:
        base = pipeline.base_model
        base.source, base.name_or_path, base.revision = "hub", "acme/gated-7b", "main"
        base.save()
    return pipeline


def _token_seen(pipeline) -> str:
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()
    assert run_stage(stage.pk) == Status.FAILED  # the fake trainer reports and exits
    stage.refresh_from_db()
    line = [ln for ln in stage.log_tail.splitlines() if ln.startswith("hf-token:")]
    assert line, stage.log_tail
    return line[-1].split(": ", 1)[1]


@pytest.mark.django_db(transaction=True)
def test_the_trainer_gets_its_own_teams_token_only_for_hub_stages(
    demo_pipeline, sent_stages, mlflow_server, settings, tmp_path, monkeypatch
):
    script = tmp_path / "fake-trainer"
    script.write_text(FAKE_TRAINER)
    script.chmod(0o755)
    settings.REFINERY_TRAINER_PYTHON = str(script)
    monkeypatch.setenv("HF_TOKEN", "hf_worker_level_token_must_not_pass")

    alpha = _hub_pipeline(demo_pipeline)
    team_secret_set(team=alpha.team, user=alpha.created_by, name="hf_token", value=TOKEN)
    assert _token_seen(alpha) == hashlib.sha256(TOKEN.encode()).hexdigest()

    beta = _hub_pipeline(demo_pipeline)  # another team, same hub model, no token of its own
    assert _token_seen(beta) == "none"

    local = _hub_pipeline(demo_pipeline, hub=False)  # a local base model needs no token
    team_secret_set(team=local.team, user=local.created_by, name="hf_token", value=OTHER)
    assert _token_seen(local) == "none"

    # The token is in no spec.json, MLflow param or tag of the stage that used it.
    stage = alpha.runs.get().stages.get()
    spec_dir = artifacts_download(mlflow_run_id=stage.mlflow_run_id, artifact_path="spec.json", dst=tmp_path / "a")
    mlrun = tracking_client().get_run(stage.mlflow_run_id)
    texts = [
        spec_dir.read_text() if spec_dir.is_file() else "".join(p.read_text() for p in spec_dir.rglob("*")),
        json.dumps(mlrun.data.params),
        json.dumps(mlrun.data.tags),
        stage.log_tail,
        stage.error,
    ]
    assert not [t for t in texts if TOKEN in t]
