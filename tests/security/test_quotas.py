"""Per-team quotas: queued runs (run, re-run, run with latest data, sweeps), dataset storage, the wall-clock
budget per stage, the operator's command and admin, the read-only quota page. Each test first does what a
team over its limit would do, and checks it is refused with a message naming the limit."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from datetime import UTC

import pytest
from django.core.management import CommandError, call_command

from refinery.core.units import format_bytes, format_duration
from refinery.data.models import DatasetVersion
from refinery.data.services import DatasetUploadError, dataset_version_create
from refinery.runs.models import Run, StageRun, Status
from refinery.runs.services import RunError, run_cancel, run_create, run_rerun
from refinery.sweeps.models import Sweep
from refinery.sweeps.services import SweepError, sweep_create
from refinery.teams.models import TeamQuota
from refinery.teams.quotas import (
    parse_duration,
    parse_size,
    stage_budget_exceeded,
    team_limits,
    team_quota_set,
)
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory
from tests.fixtures import ROWS

GiB = 1024**3


def _pipeline(team, user):
    version = DatasetVersionFactory(dataset__team=team)
    return PipelineFactory(
        team=team,
        base_model=BaseModelFactory(team=team),
        created_by=user,
        seed=3,
        stages=[
            {
                "name": "a",
                "method": "sft",
                "config": {"max_steps": 2},
                "adapter": {"type": "none"},
                "dataset_id": version.dataset_id,
                "input": "base",
            }
        ],
    )


@pytest.fixture
def pipeline(team, alice, sent_stages):
    return _pipeline(team, alice)


# --- queued runs --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_over_the_queued_runs_limit_is_refused_naming_the_limit(team, alice, pipeline, api):
    team_quota_set(team=team, queued_runs=2)
    first = run_create(pipeline=pipeline, user=alice)
    run_create(pipeline=pipeline, user=alice)
    message = (
        f"team {team.name!r} already has 2 queued or running runs (its limit is 2): wait for one to "
        "finish or cancel one"
    )

    with pytest.raises(RunError) as refused:
        run_create(pipeline=pipeline, user=alice)
    assert str(refused.value) == message
    with pytest.raises(RunError, match="its limit is 2"):
        run_rerun(run=first, user=alice)
    with pytest.raises(RunError, match="its limit is 2"):
        run_rerun(run=first, user=alice, latest_data=True)
    response = api.post(f"/api/v1/pipelines/{pipeline.pk}/runs")
    assert response.status_code == 400 and response.json()["detail"] == message
    response = api.post(f"/api/v1/runs/{first.number}/rerun", {"latest_data": True})
    assert response.status_code == 400 and "its limit is 2" in response.json()["detail"]
    assert Run.objects.filter(team=team).count() == 2  # nothing half-written

    run_cancel(run=first, user=alice)  # a finished run no longer counts
    assert run_rerun(run=first, user=alice).status == Status.QUEUED


@pytest.mark.django_db
def test_the_web_run_button_shows_the_limit(team, alice, pipeline, browser_client):
    team_quota_set(team=team, queued_runs=0)
    response = browser_client.post(f"/pipelines/{pipeline.pk}/run/", follow=True)
    assert "already has 0 queued or running runs (its limit is 0)" in response.content.decode()
    assert not Run.objects.filter(team=team).exists()


@pytest.mark.django_db
def test_a_20_run_sweep_against_a_limit_of_10_is_refused_whole(team, alice, pipeline, browser_client):
    team_quota_set(team=team, queued_runs=10)
    run_create(pipeline=pipeline, user=alice)
    values = [f"{i}e-5" for i in range(1, 21)]
    with pytest.raises(SweepError) as refused:
        sweep_create(
            pipeline=pipeline,
            user=alice,
            name="lr",
            mode="grid",
            metric="a/train/loss",
            goal="min",
            parameters=[{"path": "a.config.learning_rate", "values": values}],
        )
    assert refused.value.errors == {
        "runs": (
            f"these 20 runs would give team {team.name!r} 21 queued or running runs (1 already), over its limit of "
            "10: nothing was queued; wait for runs to finish, cancel some, or queue at most 9"
        )
    }
    assert Run.objects.filter(team=team).count() == 1 and not Sweep.objects.exists()

    form = {
        "pipeline": pipeline.pk,
        "name": "lr",
        "mode": "grid",
        "samples": "8",
        "seed": "",
        "goal": "min",
        "metric": "a/train/loss",
        "params-0-path": "a.config.learning_rate",
        "params-0-values": ", ".join(values),
        "params-1-path": "",
    }
    html = browser_client.post("/sweeps/new/", form).content.decode()
    assert "these 20 runs would give team" in html and "over its limit of" in html
    assert Run.objects.filter(team=team).count() == 1 and not Sweep.objects.exists()

    nine = sweep_create(
        pipeline=pipeline,
        user=alice,
        name="lr9",
        mode="grid",
        metric="a/train/loss",
        goal="min",
        parameters=[{"path": "a.config.learning_rate", "values": values[:9]}],
    )
    assert nine.trials.count() == 9 and Run.objects.filter(team=team).count() == 10


@pytest.mark.django_db
def test_limits_default_to_the_settings_and_a_teams_row_overrides_them(team, alice, bob, pipeline, settings):
    settings.REFINERY_QUOTA_QUEUED_RUNS = 1
    settings.REFINERY_QUOTA_STORAGE_BYTES = 50 * GiB
    assert team_limits(team=team).queued_runs == 1 and team_limits(team=team).storage_bytes == 50 * GiB
    run_create(pipeline=pipeline, user=alice)
    with pytest.raises(RunError, match="its limit is 1"):
        run_create(pipeline=pipeline, user=alice)

    TeamQuota.objects.create(team=team, queued_runs=None)  # the team's own row: blank means no limit
    assert team_limits(team=team).queued_runs is None and team_limits(team=team).storage_bytes is None
    run_create(pipeline=pipeline, user=alice)
    assert team_limits(team=bob.teams.get()).queued_runs == 1  # other teams keep the defaults


def test_the_settings_read_sizes_and_refuse_garbage(monkeypatch):
    from refinery.settings.base import _quota_env

    monkeypatch.setenv("Q", "50GiB")
    assert _quota_env("Q", size=True) == 50 * GiB
    monkeypatch.setenv("Q", "")
    assert _quota_env("Q") is None
    monkeypatch.setenv("Q", "ten")
    with pytest.raises(ValueError, match="Q='ten'"):
        _quota_env("Q")


# --- dataset storage ----------------------------------------------------------------------------------


def _jsonl(rows: int) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in (ROWS * 100)[:rows]).encode()


@pytest.mark.django_db
def test_an_upload_over_the_storage_limit_is_refused_and_stores_nothing(team, alice, dataset_dir, api):
    first = _jsonl(100)
    dataset_version_create(
        team=team, user=alice, name="a", kind="prompt_completion", filename="a.jsonl", chunks=iter([first])
    )
    team_quota_set(team=team, storage_bytes=len(first) + 1000)
    big = _jsonl(300)

    with pytest.raises(DatasetUploadError) as refused:
        dataset_version_create(
            team=team,
            user=alice,
            name="b",
            kind="prompt_completion",
            filename="b.jsonl",
            chunks=(big[i : i + 500] for i in range(0, len(big), 500)),
        )
    assert str(refused.value) == (
        f"this upload ({format_bytes(len(big))}) would take team {team.name!r} to {format_bytes(len(first) + len(big))}"
        f" of datasets, over its limit of {format_bytes(len(first) + 1000)}: delete old dataset versions or ask an "
        "operator for more"
    )
    assert DatasetVersion.objects.filter(dataset__team=team).count() == 1
    assert len([p for p in dataset_dir.rglob("*") if p.is_file()]) == 1  # only the first file
    assert not any((dataset_dir.parent / "tmp").glob("*"))  # the spooled part was removed

    upload = io.BytesIO(big)
    upload.name = "b.jsonl"
    response = api.post("/api/v1/datasets", {"name": "b", "kind": "prompt_completion"}, files={"file": upload})
    assert response.status_code == 400 and "over its limit of" in response.json()["detail"]

    small = _jsonl(5)
    assert dataset_version_create(
        team=team, user=alice, name="c", kind="prompt_completion", filename="c.jsonl", chunks=iter([small])
    ).created  # still fits


@pytest.mark.django_db
def test_the_datasets_page_shows_storage_used_and_the_limit(team, alice, dataset_dir, browser_client):
    dataset_version_create(
        team=team, user=alice, name="a", kind="prompt_completion", filename="a.jsonl", chunks=iter([_jsonl(10)])
    )
    team_quota_set(team=team, storage_bytes=50 * GiB)
    html = browser_client.get("/datasets/").content.decode()
    assert f"Storage {format_bytes(len(_jsonl(10)))} of 50 GiB" in html


# --- the quota page -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_quota_page_shows_the_teams_limits_and_usage_only(team, alice, bob, pipeline, browser_client, client):
    team_quota_set(team=team, running_stages=2, queued_runs=10, stage_seconds=7200, storage_bytes=50 * GiB)
    team_quota_set(team=bob.teams.get(), queued_runs=77)
    run_create(pipeline=pipeline, user=alice)
    stored = format_bytes(sum(DatasetVersion.objects.filter(dataset__team=team).values_list("size_bytes", flat=True)))
    html = browser_client.get("/teams/quota/").content.decode()
    for row, used, limit in (
        ("running_stages", "0", "2"),
        ("queued_runs", "1", "10"),
        ("stage_seconds", "—", "2h"),
        ("storage_bytes", stored, "50 GiB"),
    ):
        cells = html.split(f'data-testid="quota-{row}"', 1)[1].split("</tr>", 1)[0]
        assert f">{used}<" in cells and f">{limit}<" in cells
    # Bob's team's limit is nowhere on the page, once the random values (CSP nonces, CSRF tokens) are left out.
    fixed = re.sub(r'(nonce|value|content)="[A-Za-z0-9+/=_-]{16,}"', "", html)
    assert "77" not in fixed
    assert client.get("/teams/quota/").status_code == 302  # anonymous: to the login page


# --- wall-clock budget per stage ----------------------------------------------------------------------


def test_the_budget_message_names_the_budget_and_the_time_run():
    from datetime import datetime, timedelta

    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert stage_budget_exceeded(started_at=start, budget_seconds=7200, now=start + timedelta(seconds=7200)) is None
    assert stage_budget_exceeded(started_at=start, budget_seconds=7200, now=start + timedelta(seconds=7203)) == (
        "stopped: over the team's wall-clock budget of 2h per stage (ran 2h 0m 3s)"
    )
    assert stage_budget_exceeded(started_at=start, budget_seconds=None, now=start + timedelta(days=9)) is None
    assert stage_budget_exceeded(started_at=None, budget_seconds=5, now=start) is None


@pytest.mark.django_db(transaction=True)
def test_a_stage_over_its_teams_budget_is_stopped_and_fails(demo_pipeline, sent_stages, mlflow_server):
    from jobs.supervisor import supervise_stage
    from tests.helpers import wait_until
    from tests.jobs.test_supervisor import _trainer_pid

    pipeline = demo_pipeline({"name": "sft", "method": "sft", "config": {"max_steps": 100_000}})
    TeamQuota.objects.create(team=pipeline.team, stage_seconds=8)
    stage = run_create(pipeline=pipeline, user=pipeline.created_by).stages.get()
    result: dict = {}

    def work():
        from django.db import connection

        try:
            result["status"] = supervise_stage(stage_run_id=stage.pk, worker="w")
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        pid = wait_until(lambda: _trainer_pid(stage), timeout=60, message="trainer process not found")
        wait_until(
            lambda: StageRun.objects.get(pk=stage.pk).is_finished,
            timeout=60,
            interval=0.2,
            message="the stage was not stopped at its budget",
        )
    finally:
        worker.join(timeout=60)
    stage.refresh_from_db()
    assert result["status"] == Status.FAILED and stage.status == Status.FAILED and stage.attempt == 1
    ran = (stage.finished_at - stage.started_at).total_seconds()
    assert 8 < ran < 8 + 15  # stopped gracefully (SIGTERM), SIGKILL only after the grace period
    assert stage.error.startswith("stopped: over the team's wall-clock budget of 8s per stage (ran ")
    assert stage.run.status == Status.FAILED
    time.sleep(0.5)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat", "rb").read().split(b")")[1][:3]
    except OSError:
        return False
    return b"Z" not in state


# --- the operator's command and the formats -----------------------------------------------------------


@pytest.mark.django_db
def test_the_team_quota_command_sets_shows_and_resets(team, sent_stages, capsys):
    call_command(
        "team_quota",
        team.slug,
        "--running-stages",
        "2",
        "--queued-runs",
        "10",
        "--stage-seconds",
        "2h",
        "--storage",
        "50GiB",
    )
    quota = TeamQuota.objects.get(team=team)
    assert (quota.running_stages, quota.queued_runs, quota.stage_seconds, quota.storage_bytes) == (
        2,
        10,
        7200,
        50 * GiB,
    )
    call_command("team_quota", team.name, "--queued-runs", "none")
    quota.refresh_from_db()
    assert quota.queued_runs is None and quota.running_stages == 2
    out = capsys.readouterr().out
    assert "running stages: 0 of 2" in out and "queued runs:    0 of no limit" in out
    assert "storage:        0 B of 50 GiB" in out

    for bad, message in (
        (["--storage", "lots"], "not a size"),
        (["--running-stages", "-1"], "not a whole number"),
        (["--stage-seconds", "0"], "at least 1"),
        (["--reset", "--queued-runs", "2"], "alone"),
    ):
        with pytest.raises(CommandError, match=message):
            call_command("team_quota", team.slug, *bad)
    with pytest.raises(CommandError, match="no team"):
        call_command("team_quota", "nope", "--show")
    call_command("team_quota", team.slug, "--reset")
    assert not TeamQuota.objects.filter(team=team).exists()


@pytest.mark.parametrize(
    ("text", "size"), [("50GiB", 50 * GiB), ("1.5 GB", 1_500_000_000), ("1024", 1024), ("500mb", 500_000_000)]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("3600", 3600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "2x", "h", "1h 2q"])
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_formats():
    assert format_bytes(int(1.2 * GiB)) == "1.2 GiB" and format_bytes(50 * GiB) == "50 GiB"
    assert format_bytes(512) == "512 B"
    assert format_duration(7200) == "2h" and format_duration(7203, full=True) == "2h 0m 3s"
    assert format_duration(65, full=True) == "1m 5s" and format_duration(5400) == "1h 30m"


@pytest.mark.django_db
def test_an_operator_sets_limits_in_the_admin_and_the_teams_queue_wakes_up(
    team, alice, pipeline, sent_stages, django_capture_on_commit_callbacks
):
    from django.contrib.auth import get_user_model
    from django.test import Client

    run = run_create(pipeline=pipeline, user=alice)
    operator = get_user_model().objects.create_superuser("op", "op@example.com", "pw-op-12345")
    client = Client()
    client.force_login(operator)
    sent_stages.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/teams/teamquota/add/",
            {
                "team": team.pk,
                "running_stages": "2",
                "queued_runs": "",
                "stage_seconds": "7200",
                "storage_bytes": str(50 * GiB),
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    quota = TeamQuota.objects.get(team=team)
    assert (quota.running_stages, quota.queued_runs, quota.stage_seconds) == (2, None, 7200)
    assert sent_stages == [run.stages.get().pk]  # queued stages may start under the new limit
    response = client.post("/admin/teams/teamquota/add/", {"team": team.pk, "stage_seconds": "0"})
    assert response.status_code == 200 and "greater than or equal to 1" in response.content.decode()
    assert client.get("/admin/teams/teamquota/").status_code == 200
