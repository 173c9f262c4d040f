"""The model registry: promote stage outputs into MLflow's Model Registry, move aliases, read the pages.

The main path runs against the real `mlflow_server`: a run made by run_create (real snapshot: datasets by
sha256, base model, code version, seed) whose stages hold real artifacts uploaded to their real MLflow runs,
and every check of the registry itself queries MLflow directly. Error paths use a dead MLflow address, or
replace one function of refinery.tracking.registry (the module boundary), or break the database write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.db import IntegrityError, connection
from django.db.models import RestrictedError
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from refinery.registry import services as registry_services
from refinery.registry.models import AliasEvent, ModelAlias, ModelVersion, RegisteredModel, rollback_target
from refinery.registry.services import (
    RegistryError,
    alias_clean,
    alias_remove,
    alias_rollback,
    alias_set,
    model_promote,
)
from refinery.runs.models import Run, StageRun, Status
from refinery.runs.services import run_create
from refinery.teams.models import AuditEvent
from refinery.tracking import registry as mlflow_registry
from refinery.tracking.client import artifacts_upload, tracking_client
from refinery.tracking.runs import stage_run_ensure
from tests.conftest import free_port
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory

integration = pytest.mark.integration


# --- a run with real outputs in MLflow ---------------------------------------------------------------

SFT_SUMMARY = {"train/loss": 0.81, "eval/loss": 0.93, "train_runtime": 3.5}
LORA_SUMMARY = {"train/loss": 0.42, "eval/loss": 0.55, "train_runtime": 2.0}
CHECK_SUMMARY = {
    "metrics": {"eval/accuracy": 0.7, "baseline/accuracy": 0.2, "retention/loss": 1.3, "retention_baseline/loss": 1.2},
    "target": {"metric": "accuracy", "model": 0.7, "baseline": 0.2, "gain": 0.5, "higher_is_better": True},
    "retention": {"metric": "loss", "model": 1.3, "baseline": 1.2, "forgetting": 0.1, "higher_is_better": False},
    "samples": [{"prompt": "1+1=", "model": "2", "baseline": "7"}],
}


def _dataset(team, name: str, rows: list[dict], tmp_path: Path):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DatasetVersionFactory(dataset__team=team, dataset__name=name, source=path)


def _pipeline(team, user, tmp_path: Path):
    """sft (full) -> lora (adapter on sft) -> check (evaluate lora: held-out accuracy, retention loss)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = _dataset(
        team,
        "addition",
        [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(10)],
        tmp_path,
    )
    held_out = _dataset(
        team,
        "addition-held-out",
        [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10, 14) for b in range(5)],
        tmp_path,
    )
    retention = _dataset(
        team, "general-chat", [{"prompt": f"say {w}", "completion": w} for w in ("hi", "yes", "no", "ok")], tmp_path
    )
    base = BaseModelFactory(team=team, name="tiny-llama", name_or_path="/models/tiny-llama", revision="rev-abc123")
    stages = [
        {
            "name": "sft",
            "method": "sft",
            "config": {"max_steps": 2, "learning_rate": 1e-3},
            "adapter": {"type": "none"},
            "dataset_id": train.dataset_id,
            "input": "base",
        },
        {
            "name": "lora",
            "method": "sft",
            "config": {"max_steps": 2, "learning_rate": 3e-3},
            "adapter": {"type": "lora", "r": 8, "alpha": 16},
            "dataset_id": train.dataset_id,
            "eval_dataset_id": held_out.dataset_id,
            "input": "sft",
        },
        {
            "name": "check",
            "method": "evaluate",
            "config": {},
            "adapter": None,
            "dataset_id": held_out.dataset_id,
            "input": "lora",
        },
    ]
    pipeline = PipelineFactory(team=team, base_model=base, created_by=user, stages=stages, seed=11, name="adder")
    pipeline.spec["retention_dataset_id"] = retention.dataset_id
    pipeline.save()
    return pipeline, {"train": train, "held_out": held_out, "retention": retention}


def _files(folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "adapter":
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    elif kind == "model":
        (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (folder / "model.safetensors").write_bytes(b"\0" * 64)
    else:
        (folder / "report.json").write_text(json.dumps(CHECK_SUMMARY))
    return folder


def finished_run(team, user, tmp_path: Path, *, fail: tuple[str, ...] = (), pipeline=None) -> Run:
    """A run of _pipeline (or of `pipeline`, made by it before) whose stages succeeded (or failed, by name)
    with real artifacts in real MLflow runs."""
    pipeline = pipeline or _pipeline(team, user, tmp_path)[0]
    run = run_create(pipeline=pipeline, user=user)
    kinds = {"sft": "model", "lora": "adapter", "check": "report"}
    summaries = {"sft": SFT_SUMMARY, "lora": LORA_SUMMARY, "check": CHECK_SUMMARY}
    refs: dict[str, dict] = {}
    for stage in run.stages.order_by("index"):
        mlflow_run_id = stage_run_ensure(stage=stage, params={"method": stage.method})
        if stage.name in fail:
            StageRun.objects.filter(pk=stage.pk).update(status=Status.FAILED, error="boom", finished_at=timezone.now())
            continue
        kind = kinds[stage.name]
        artifacts_upload(
            mlflow_run_id=mlflow_run_id,
            local_path=_files(tmp_path / f"out-{run.pk}" / stage.name, kind),
            artifact_path=kind,
        )
        outputs = {
            "kind": kind,
            "artifact_path": kind,
            "mlflow_run_id": mlflow_run_id,
            "base": refs.get("sft") if kind == "adapter" else None,
        }
        refs[stage.name] = {"source": "stage", "stage": stage.name, **outputs}
        StageRun.objects.filter(pk=stage.pk).update(
            status=Status.SUCCEEDED, outputs=outputs, summary=summaries[stage.name], finished_at=timezone.now()
        )
    Run.objects.filter(pk=run.pk).update(status=Status.FAILED if fail else Status.SUCCEEDED)
    run.refresh_from_db()
    return run


def stage(run: Run, name: str) -> StageRun:
    return run.stages.get(name=name)


def mlflow_aliases(model: RegisteredModel) -> dict[str, int]:
    found = tracking_client().get_registered_model(model.mlflow_name)
    return {alias: int(version) for alias, version in found.aliases.items()}


def post(client: Client, url: str, data: dict, *, htmx: bool = False):
    headers = {"HX-Request": "true", "HX-Target": "model-live"} if htmx else {}
    return client.post(url, data, headers=headers)


def login(user, password: str) -> Client:
    client = Client()
    assert client.login(username=user.username, password=password)
    return client


@pytest.fixture
def alice_run(alice, team, tmp_path, mlflow_server, sent_stages) -> Run:
    return finished_run(team, alice, tmp_path)


# --- promoting, against the real MLflow server ---------------------------------------------------------


@integration
@pytest.mark.django_db
def test_promoting_an_adapter_registers_a_real_mlflow_version_with_metrics_and_lineage(
    browser_client, alice_run, team, tmp_path
):
    run = alice_run
    lora = stage(run, "lora")
    page = browser_client.get(f"/registry/promote/?run={run.number}&stage=lora")
    assert page.status_code == 200 and b"Promote" in page.content
    assert b"accuracy gain" in page.content  # the evaluation that will be copied, previewed

    response = browser_client.post(
        "/registry/promote/",
        {
            "run": run.number,
            "stage": "lora",
            "model": "__new__",
            "new_name": "adder-assistant",
            "description": "adds small numbers",
            "alias": "staging",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/registry/adder-assistant/"

    model = RegisteredModel.objects.get(team=team, name="adder-assistant")
    assert model.mlflow_name == f"refinery.team-{team.pk}.adder-assistant" and model.description == "adds small numbers"
    version = model.versions.get()
    assert (version.version, version.kind, version.stage_run_id, version.run_id) == (1, "adapter", lora.pk, run.pk)
    assert version.source_uri == f"runs:/{lora.outputs['mlflow_run_id']}/adapter"

    # MLflow's registry, asked directly: the version, its source and run, its tags, the alias.
    client = tracking_client()
    found = client.get_model_version(model.mlflow_name, "1")
    assert found.source == version.source_uri and found.run_id == lora.outputs["mlflow_run_id"]
    assert found.status == "READY"
    assert found.tags["refinery.run_number"] == str(run.number) and found.tags["refinery.stage"] == "lora"
    assert found.tags["refinery.kind"] == "adapter" and found.tags["refinery.base_model"] == "/models/tiny-llama"
    assert run.snapshot["stages"][0]["train_data"]["sha256"] in found.tags["refinery.datasets"]
    assert mlflow_aliases(model) == {"staging": 1}
    assert client.get_model_version_by_alias(model.mlflow_name, "staging").version == "1"
    # The registered source is usable: the alias downloads the stage's HF files.
    import mlflow.artifacts  # tests may talk to MLflow directly

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{model.mlflow_name}@staging",
            dst_path=str(tmp_path / "dl"),
            tracking_uri=client.tracking_uri,
        )
    )
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in local.iterdir()}

    # Metrics copied at promotion: the stage's summary and the evaluation of this output.
    assert version.metrics["stage"]["train/loss"] == pytest.approx(0.42)
    assert version.metrics["evaluations"][0]["stage"] == "check"
    headline = {h["key"]: h["value"] for h in version.metrics["headline"]}
    assert headline["gain"] == pytest.approx(0.5) and headline["forgetting"] == pytest.approx(0.1)
    assert headline["train/loss"] == pytest.approx(0.42)

    # Lineage: run, pipeline version, base model + revision, datasets by sha256, the stage chain, code, seed.
    lineage = version.lineage
    snapshot = run.snapshot
    assert lineage["run"] == {"id": run.pk, "number": run.number, "name": run.name}
    assert lineage["pipeline"]["name"] == "adder" and lineage["pipeline"]["version"] == run.pipeline_version.number
    assert lineage["base_model"]["name_or_path"] == "/models/tiny-llama"
    assert lineage["base_model"]["revision"] == "rev-abc123"
    assert [s["name"] for s in lineage["chain"]] == ["sft", "lora"]
    assert {k: lineage["chain"][1]["adapter"][k] for k in ("type", "r", "alpha")} == {
        "type": "lora",
        "r": 8,
        "alpha": 16,
    }
    assert lineage["chain"][0]["adapter"] == {"type": "none"}
    assert lineage["chain"][1]["config"]["learning_rate"] == pytest.approx(3e-3)
    shas = {(d["role"], d["stage"]): d["sha256"] for d in lineage["datasets"]}
    assert shas[("train", "sft")] == snapshot["stages"][0]["train_data"]["sha256"]
    assert shas[("eval", "lora")] == snapshot["stages"][1]["eval_data"]["sha256"]
    assert shas[("retention", "check")] == snapshot["retention_data"]["sha256"]
    assert lineage["adapter_base"]["stage"] == "sft" and lineage["adapter_base"]["kind"] == "model"
    assert lineage["code_version"] == run.code_version and lineage["seed"] == run.seed == 11

    # The pages: the list and the model page show it, with the lineage and links back to the run.
    listing = browser_client.get("/registry/").content.decode()
    assert "adder-assistant" in listing and f"run #{run.number}" in listing and 'data-alias="staging"' in listing
    assert model.mlflow_name not in listing
    detail = browser_client.get("/registry/adder-assistant/").content.decode()
    assert f'href="/runs/{run.number}/"' in detail
    assert snapshot["retention_data"]["sha256"] in detail and snapshot["stages"][0]["train_data"]["sha256"] in detail
    assert "/models/tiny-llama" in detail and "rev-abc123" in detail and run.code_version in detail
    assert f'href="/datasets/{snapshot["retention_data"]["dataset_id"]}/"' in detail
    assert model.mlflow_name not in detail
    assert AuditEvent.objects.filter(team=team, action="registry.promoted", target="adder-assistant v1").exists()


@integration
@pytest.mark.django_db
def test_aliases_move_demote_and_roll_back_in_mlflow_and_in_the_history(browser_client, alice, alice_run, team):
    run = alice_run
    v1 = model_promote(team=team, user=alice, stage_run=stage(run, "lora"), model_name="adder", alias="staging")
    model = v1.registered_model
    url = "/registry/adder/aliases/"

    # staging -> production: v1 goes to production (one click on the version's row).
    response = post(browser_client, url + "set/", {"alias": "production", "version": 1})
    assert response.status_code == 302
    assert mlflow_aliases(model) == {"staging": 1, "production": 1}

    # A second version, first to staging, then to production (htmx: the page's fragment comes back).
    v2 = model_promote(team=team, user=alice, stage_run=stage(run, "sft"), model_name="adder")
    assert v2.version == 2 and v2.kind == "model" and v2.metrics["evaluations"] == []  # check measured lora only
    response = post(browser_client, url + "set/", {"alias": "staging", "version": 2}, htmx=True)
    assert response.status_code == 200 and b'id="model-live"' in response.content and b"<html" not in response.content
    assert b"staging now points at v2 (was v1)" in response.content
    post(browser_client, url + "set/", {"alias": "production", "version": 2}, htmx=True)
    assert mlflow_aliases(model) == {"staging": 2, "production": 2}
    assert dict(ModelAlias.objects.filter(registered_model=model).values_list("alias", "version__version")) == {
        "staging": 2,
        "production": 2,
    }

    # Roll production back: v1 again, in MLflow and in the mirror.
    response = post(browser_client, url + "rollback/", {"alias": "production"}, htmx=True)
    assert b"Rolled production back to v1 (from v2)" in response.content
    assert mlflow_aliases(model) == {"staging": 2, "production": 1}

    # Demote staging: gone from MLflow; a rollback brings it back.
    post(browser_client, url + "remove/", {"alias": "staging"})
    assert mlflow_aliases(model) == {"production": 1}
    assert not ModelAlias.objects.filter(registered_model=model, alias="staging").exists()
    post(browser_client, url + "rollback/", {"alias": "staging"})
    assert mlflow_aliases(model) == {"staging": 2, "production": 1}

    # production was new when v1 got it: nothing earlier to roll back to; clearly refused, nothing moves.
    response = post(browser_client, url + "rollback/", {"alias": "production"}, htmx=True)
    assert b"production of adder has no earlier version to roll back to" in response.content
    assert mlflow_aliases(model) == {"staging": 2, "production": 1}

    history = list(
        AliasEvent.objects.filter(registered_model=model)
        .order_by("at", "id")
        .values_list("alias", "action", "version__version", "previous_version__version")
    )
    assert history == [
        ("staging", "set", 1, None),
        ("production", "set", 1, None),
        ("staging", "set", 2, 1),
        ("production", "set", 2, 1),
        ("production", "rolled_back", 1, 2),
        ("staging", "removed", None, 2),
        ("staging", "rolled_back", 2, None),
    ]
    assert set(AliasEvent.objects.filter(registered_model=model).values_list("user__username", flat=True)) == {"alice"}

    page = browser_client.get("/registry/adder/").content.decode()
    assert page.count('data-testid="event"') == 7
    assert 'data-testid="alias-production" data-version="1"' in page
    assert 'data-testid="alias-staging" data-version="2"' in page
    assert 'data-testid="rollback-production"' not in page  # nothing to roll back to
    assert 'data-testid="rollback-staging"' in page  # staging can go back to v1 (its set before the demote)


@integration
@pytest.mark.django_db
def test_the_registry_is_scoped_by_team(browser_client, alice, bob, alice_run, team, tmp_path):
    v1 = model_promote(team=team, user=alice, stage_run=stage(alice_run, "lora"), model_name="assistant")
    bob_team = bob.teams.get()
    bob_client = login(bob, "pw-bob-123")

    # Another team's model, its alias forms and the promote page for a run it does not have: 404.
    assert bob_client.get("/registry/assistant/").status_code == 404
    assert bob_client.post("/registry/assistant/aliases/set/", {"alias": "production", "version": 1}).status_code == 404
    assert bob_client.post("/registry/assistant/aliases/rollback/", {"alias": "production"}).status_code == 404
    assert bob_client.get(f"/registry/promote/?run={alice_run.number}&stage=lora").status_code == 404
    assert b"assistant" not in bob_client.get("/registry/").content
    assert not ModelAlias.objects.exists()

    # The services refuse another team's stage and model outright.
    with pytest.raises(RegistryError, match="does not belong to your team"):
        model_promote(team=bob_team, user=bob, stage_run=stage(alice_run, "sft"), model_name="stolen")
    with pytest.raises(RegistryError, match="does not belong to your team"):
        alias_set(team=bob_team, user=bob, registered_model=v1.registered_model, alias="production", version=v1)
    assert not RegisteredModel.objects.filter(team=bob_team).exists()

    # Names are per team: bob's "assistant" is another model, another MLflow name.
    bob_run = finished_run(bob_team, bob, tmp_path / "bob")
    response = bob_client.post(
        "/registry/promote/", {"run": bob_run.number, "stage": "sft", "model": "__new__", "new_name": "assistant"}
    )
    assert response.status_code == 302
    bobs = RegisteredModel.objects.get(team=bob_team, name="assistant")
    assert bobs.mlflow_name != v1.registered_model.mlflow_name and bobs.versions.get().version == 1
    assert b"run #%d" % alice_run.number in browser_client.get("/registry/assistant/").content
    assert (
        tracking_client().get_model_version(bobs.mlflow_name, "1").run_id
        == stage(bob_run, "sft").outputs["mlflow_run_id"]
    )


@integration
@pytest.mark.django_db
def test_only_a_succeeded_model_or_adapter_can_be_promoted(
    browser_client, alice, team, tmp_path, mlflow_server, sent_stages, viewer
):
    run = finished_run(team, alice, tmp_path, fail=("lora", "check"))

    page = browser_client.get(f"/registry/promote/?run={run.number}&stage=lora")
    assert page.status_code == 200 and b'data-testid="refusal"' in page.content
    assert b"has not succeeded (it is failed)" in page.content and b'data-testid="promote-form"' not in page.content

    response = browser_client.post(
        "/registry/promote/", {"run": run.number, "stage": "lora", "model": "__new__", "new_name": "adder"}
    )
    assert response.status_code == 400 and b"has not succeeded" in response.content

    # A report (an evaluate stage's output) is no model.
    StageRun.objects.filter(pk=stage(run, "check").pk).update(
        status=Status.SUCCEEDED, outputs={"kind": "report", "artifact_path": "report", "mlflow_run_id": "x"}
    )
    with pytest.raises(RegistryError, match="produced an evaluation report; only a model or an adapter"):
        model_promote(team=team, user=alice, stage_run=stage(run, "check"), model_name="adder")
    # Bad names and aliases are refused before MLflow is asked.
    for name in ("Adder", "has space", "promote", "", "x" * 101):
        with pytest.raises(RegistryError):
            model_promote(team=team, user=alice, stage_run=stage(run, "sft"), model_name=name)
    with pytest.raises(RegistryError, match="reserved by MLflow"):
        model_promote(team=team, user=alice, stage_run=stage(run, "sft"), model_name="adder", alias="latest")
    assert not RegisteredModel.objects.exists() and not ModelVersion.objects.exists()
    assert not tracking_client().search_registered_models(f"name LIKE 'refinery.team-{team.pk}.%'")

    # Viewers read but cannot promote.
    viewer_client = login(viewer, "pw-victor-123")
    assert viewer_client.get(f"/registry/promote/?run={run.number}&stage=sft").status_code == 403
    assert viewer_client.get("/registry/").status_code == 200

    # The same stage twice in one model is refused; in another model it is fine.
    model_promote(team=team, user=alice, stage_run=stage(run, "sft"), model_name="adder")
    with pytest.raises(RegistryError, match=r"is already version 1 of adder"):
        model_promote(team=team, user=alice, stage_run=stage(run, "sft"), model_name="adder")
    assert model_promote(team=team, user=alice, stage_run=stage(run, "sft"), model_name="adder-2").version == 1

    # The form starts on the model this pipeline last went to; a new name with an existing model chosen is refused.
    page = browser_client.get(f"/registry/promote/?run={run.number}&stage=sft").content.decode()
    assert '<option value="adder-2" selected>' in page
    response = browser_client.post(
        "/registry/promote/", {"run": run.number, "stage": "sft", "model": "adder", "new_name": "typo"}
    )
    assert response.status_code == 400 and "New model…" in response.content.decode()
    assert not RegisteredModel.objects.filter(name="typo").exists()


@integration
@pytest.mark.django_db
def test_a_failed_database_write_after_mlflow_undoes_the_mlflow_change(alice, alice_run, team, monkeypatch):
    v1 = model_promote(
        team=team, user=alice, stage_run=stage(alice_run, "lora"), model_name="adder", alias="production"
    )
    model = v1.registered_model

    def broken(**kwargs):
        raise IntegrityError("the database went away")

    monkeypatch.setattr(registry_services, "_alias_write", broken)
    with pytest.raises(IntegrityError):
        model_promote(team=team, user=alice, stage_run=stage(alice_run, "sft"), model_name="adder", alias="production")
    # MLflow made version 2 and moved production, then both were undone; the database has neither.
    assert [v.version for v in tracking_client().search_model_versions(f"name = '{model.mlflow_name}'")] == ["1"]
    assert mlflow_aliases(model) == {"production": 1}
    assert list(model.versions.values_list("version", flat=True)) == [1]

    with pytest.raises(IntegrityError):
        alias_remove(team=team, user=alice, registered_model=model, alias="production")
    assert mlflow_aliases(model) == {"production": 1}
    assert ModelAlias.objects.get(registered_model=model, alias="production").version_id == v1.pk


@integration
@pytest.mark.django_db
def test_mlflow_refusing_an_alias_change_leaves_everything_as_it_was(
    browser_client, alice, alice_run, team, monkeypatch
):
    v1 = model_promote(team=team, user=alice, stage_run=stage(alice_run, "lora"), model_name="adder", alias="staging")

    def refused(**kwargs):
        raise mlflow_registry.RegistryBackendError(
            "MLflow refused to set the alias 'production': permission denied", code="PERMISSION_DENIED"
        )

    monkeypatch.setattr(mlflow_registry, "alias_set", refused)
    response = post(browser_client, "/registry/adder/aliases/set/", {"alias": "production", "version": 1}, htmx=True)
    assert b"MLflow refused to set the alias" in response.content and b"permission denied" in response.content
    assert dict(ModelAlias.objects.values_list("alias", "version_id")) == {"staging": v1.pk}
    assert AliasEvent.objects.count() == 1
    assert mlflow_aliases(v1.registered_model) == {"staging": 1}


# --- MLflow down: a real dead address, no server needed -------------------------------------------------


def _rows(team, user, *, versions: int, tag: str = "m") -> tuple[RegisteredModel, Run]:
    """A model with `versions` versions made as rows only (pages never call MLflow)."""
    number = (Run.objects.filter(team=team).order_by("-number").values_list("number", flat=True).first() or 0) + 1
    run = Run.objects.create(
        team=team,
        number=number,
        name="rows",
        status=Status.SUCCEEDED,
        seed=1,
        code_version="c0",
        snapshot={
            "base_model": {"name": "tiny", "name_or_path": "/m/tiny", "revision": "r1"},
            "pipeline": {"id": None, "name": "p", "version": 1},
            "stages": [],
        },
    )
    model = RegisteredModel.objects.create(
        team=team, name=f"{tag}-{number}", mlflow_name=f"test.team-{team.pk}.{tag}-{number}", created_by=user
    )
    for i in range(1, versions + 1):
        stage_run = StageRun.objects.create(
            run=run,
            index=i,
            name=f"s{i}",
            method="sft",
            status=Status.SUCCEEDED,
            outputs={"kind": "model", "artifact_path": "model", "mlflow_run_id": f"r{i}"},
        )
        version = ModelVersion.objects.create(
            registered_model=model,
            version=i,
            stage_run=stage_run,
            run=run,
            mlflow_run_id=f"r{i}",
            artifact_path="model",
            kind="model",
            promoted_by=user,
            metrics={
                "stage": {"train/loss": 1 / i},
                "evaluations": [],
                "pending": [],
                "headline": [
                    {
                        "key": "train/loss",
                        "label": "train/loss",
                        "value": 1 / i,
                        "better": "lower",
                        "stage": f"s{i}",
                        "model": None,
                    }
                ],
            },
            lineage={
                "run": {"id": run.pk, "number": run.number, "name": run.name},
                "stage": f"s{i}",
                "kind": "model",
                "source": f"runs:/r{i}/model",
                "pipeline": {"id": None, "name": "p", "version": 1},
                "base_model": {"name": "tiny", "name_or_path": "/m/tiny", "revision": "r1"},
                "adapter_base": None,
                "chain": [
                    {
                        "name": f"s{i}",
                        "method": "sft",
                        "input": "base",
                        "inputs": [],
                        "adapter": {"type": "lora", "r": 4},
                        "config": {"max_steps": 2},
                        "train_data": None,
                        "eval_data": None,
                    }
                ],
                "datasets": [
                    {
                        "role": "train",
                        "stage": f"s{i}",
                        "name": "d",
                        "version": 1,
                        "rows": 3,
                        "sha256": f"{i:064x}",
                        "dataset_id": 1,
                        "kind": "prompt_completion",
                    }
                ],
                "code_version": "c0",
                "seed": 1,
                "overrides": {},
            },
        )
        if i == 1:
            ModelAlias.objects.create(registered_model=model, alias="production", version=version)
            AliasEvent.objects.create(
                registered_model=model, alias="production", version=version, action="set", user=user
            )
        if i == 2:
            ModelAlias.objects.create(registered_model=model, alias="staging", version=version)
            AliasEvent.objects.create(registered_model=model, alias="staging", version=version, action="set", user=user)
    return model, run


@pytest.fixture
def mlflow_down(settings, monkeypatch):
    settings.MLFLOW_TRACKING_URI = f"http://127.0.0.1:{free_port()}"  # nobody listens
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


@pytest.mark.django_db
def test_mlflow_down_gives_a_clear_error_and_saves_nothing(browser_client, alice, team, mlflow_down):
    model, run = _rows(team, alice, versions=2)
    StageRun.objects.create(
        run=run,
        index=9,
        name="fresh",
        method="sft",
        status=Status.SUCCEEDED,
        outputs={"kind": "model", "artifact_path": "model", "mlflow_run_id": "abc"},
    )
    before = (RegisteredModel.objects.count(), ModelVersion.objects.count(), AliasEvent.objects.count())

    response = browser_client.post(
        "/registry/promote/",
        {"run": run.number, "stage": "fresh", "model": "__new__", "new_name": "brand-new", "alias": "staging"},
    )
    assert response.status_code == 400
    assert b"could not reach the tracking server (MLflow) to create the registered model" in response.content
    assert b"127.0.0.1" not in response.content  # no internal address in the message
    response = browser_client.post("/registry/promote/", {"run": run.number, "stage": "fresh", "model": model.name})
    assert response.status_code == 400 and b"could not reach the tracking server" in response.content

    response = post(
        browser_client, f"/registry/{model.name}/aliases/set/", {"alias": "production", "version": 2}, htmx=True
    )
    assert b"could not reach the tracking server (MLflow) to set the alias" in response.content
    post(browser_client, f"/registry/{model.name}/aliases/remove/", {"alias": "production"})
    assert (RegisteredModel.objects.count(), ModelVersion.objects.count(), AliasEvent.objects.count()) == before
    assert dict(ModelAlias.objects.filter(registered_model=model).values_list("alias", "version__version")) == {
        "production": 1,
        "staging": 2,
    }


# --- pages: constant queries, rows only ----------------------------------------------------------------


def _count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(ctx.captured_queries)


@pytest.mark.django_db
def test_registry_pages_make_the_same_number_of_queries_for_2_and_10_versions(
    browser_client, alice, team, django_assert_max_num_queries
):
    small, _ = _rows(team, alice, versions=2, tag="small")
    _count_queries(browser_client, "/registry/")  # warm the session and the user
    few = {
        "list": _count_queries(browser_client, "/registry/"),
        "detail": _count_queries(browser_client, f"/registry/{small.name}/"),
    }
    large, _ = _rows(team, alice, versions=10, tag="large")
    many = {
        "list": _count_queries(browser_client, "/registry/"),
        "detail": _count_queries(browser_client, f"/registry/{large.name}/"),
    }
    print(f"\n[measure] registry queries with 2 versions {few}, with 10 versions {many}")
    assert many == few, (few, many)
    with django_assert_max_num_queries(few["detail"]):
        page = browser_client.get(f"/registry/{large.name}/").content.decode()
    assert page.count('class="registry-version"') == 10 and f"{10:064x}" in page  # lineage sha256 of v10
    with django_assert_max_num_queries(few["list"]):
        listing = browser_client.get("/registry/").content.decode()
    assert f'data-testid="model-{large.name}"' in listing and "v10" in listing


@pytest.mark.django_db
def test_a_run_with_a_registered_output_cannot_be_deleted_but_its_team_can(alice, team):
    model, run = _rows(team, alice, versions=2)
    with pytest.raises(RestrictedError):
        run.delete()
    with pytest.raises(RestrictedError):
        run.stages.first().delete()
    team.delete()
    assert not RegisteredModel.objects.exists() and not ModelVersion.objects.exists() and not Run.objects.exists()


@pytest.mark.django_db
def test_promote_pages_list_only_promotable_stages_and_the_button_shows_only_for_them(browser_client, alice, team):
    from django.template.loader import render_to_string

    model, run = _rows(team, alice, versions=1)
    report = StageRun.objects.create(
        run=run,
        index=7,
        name="check",
        method="evaluate",
        status=Status.SUCCEEDED,
        outputs={"kind": "report", "artifact_path": "report", "mlflow_run_id": "x"},
    )
    failed = StageRun.objects.create(run=run, index=8, name="broken", method="sft", status=Status.FAILED)
    page = browser_client.get("/registry/promote/").content.decode()
    assert 'data-testid="promote-s1"' in page and "promote-check" not in page and "promote-broken" not in page

    good = run.stages.get(name="s1")
    assert f"/registry/promote/?run={run.number}&amp;stage=s1" in render_to_string(
        "registry/_promote_button.html", {"run": run, "stage": good}
    )
    assert "Promote" not in render_to_string("registry/_promote_button.html", {"run": run, "stage": report})
    assert "Promote" not in render_to_string("registry/_promote_button.html", {"run": run, "stage": failed})
    assert browser_client.get(f"/registry/promote/?run={run.number}&stage=nope").status_code == 404
    assert browser_client.get("/registry/nope/").status_code == 404
    # The model page already knows this stage is registered.
    page = browser_client.get(f"/registry/promote/?run={run.number}&stage=s1").content.decode()
    assert 'data-testid="registrations"' in page and f"/registry/{model.name}/" in page


# --- pure rules ----------------------------------------------------------------------------------------


def test_alias_names_are_checked_like_mlflow_and_stricter():
    assert alias_clean(" production ") == "production" and alias_clean("canary_2") == "canary_2"
    for bad in ("Production", "latest", "v2", "V3", "2fast", "has space", "a/b", "", "x" * 65):
        with pytest.raises(RegistryError):
            alias_clean(bad)


class _Event:
    def __init__(self, action, previous=None):
        self.action, self.previous_version = action, previous


def test_rollbacks_walk_back_through_the_history():
    v1, v2, v3 = "v1", "v2", "v3"
    assert rollback_target([]) == (False, None)
    history = [_Event("set", None), _Event("set", v1), _Event("set", v2)]  # v1, then v2, then v3
    assert rollback_target(history) == (True, v2)
    history.append(_Event("rolled_back", v3))  # now v2
    assert rollback_target(history) == (True, v1)
    history.append(_Event("rolled_back", v2))  # now v1; it was new before
    assert rollback_target(history) == (False, None)
    history.append(_Event("removed", v1))  # demoted
    assert rollback_target(history) == (True, v1)


@pytest.mark.django_db
def test_rollback_without_history_is_refused_clearly(alice, team):
    model, _ = _rows(team, alice, versions=2)
    with pytest.raises(RegistryError, match="canary of .* has never changed"):
        alias_rollback(team=team, user=alice, registered_model=model, alias="canary")
    with pytest.raises(RegistryError, match="production of .* has no earlier version to roll back to"):
        alias_rollback(team=team, user=alice, registered_model=model, alias="production")
    with pytest.raises(RegistryError, match="has no alias 'canary'"):
        alias_remove(team=team, user=alice, registered_model=model, alias="canary")
    with pytest.raises(RegistryError, match="already points at version 1"):
        alias_set(
            team=team, user=alice, registered_model=model, alias="production", version=model.versions.get(version=1)
        )
