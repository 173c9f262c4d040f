"""jobs.stage_inputs: the extra models a stage names (grpo's reward model, distill's teacher) are fetched
from the named stage's MLflow run like the input model and land in the trainer spec's aux_models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from trainers.stage_spec import parse_spec

from jobs.stage_inputs import (
    StageSetupError,
    aux_model_references,
    build_stage_spec,
    materialize_aux_models,
    materialize_model,
    model_reference,
    resolve_configs,
)
from refinery.data.models import DatasetKind
from refinery.runs.models import Status
from refinery.runs.services import run_create, stage_claim, stage_finish
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


class FolderArtifacts:
    """An MLflow client stand-in: run artifacts are folders under `root/<run id>/`."""

    def __init__(self, root: Path):
        self.root = root
        self.downloads: list[tuple[str, str]] = []

    def download_artifacts(self, run_id: str, path: str, dst_path: str) -> str:
        self.downloads.append((run_id, path))
        target = Path(dst_path) / path
        shutil.copytree(self.root / run_id / path, target)
        return str(target)


@pytest.fixture
def base_dir(_isolated_paths) -> Path:
    """A model folder in the shared model root (the worker checks that the base model is in one)."""
    import secrets

    from tests.conftest import SHARED_MODELS

    folder = _isolated_paths / SHARED_MODELS / secrets.token_hex(4) / "base-model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


@pytest.fixture
def artifacts(tmp_path) -> FolderArtifacts:
    adapter = tmp_path / "mlflow" / "run-rm" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "task_type": "SEQ_CLS"}))
    return FolderArtifacts(tmp_path / "mlflow")


def _run(base_dir, stages, capture):
    user = UserFactory()
    team = TeamFactory(members=[user])
    ids = {
        kind: DatasetVersionFactory(dataset__team=team, dataset__kind=kind).dataset_id
        for kind in (DatasetKind.PREFERENCE, DatasetKind.REFERENCE)
    }
    for stage in stages:
        stage["dataset_id"] = ids[stage.pop("kind")]
    pipeline = PipelineFactory(
        team=team, created_by=user, stages=stages, base_model=BaseModelFactory(team=team, name_or_path=str(base_dir))
    )
    with capture(execute=True):
        run = run_create(pipeline=pipeline, user=user)
    return {s.name: s for s in run.stages.order_by("index")}


def _succeed(stage, outputs, capture):
    stage_claim(stage_run_id=stage.pk, worker="w")
    with capture(execute=True):
        stage_finish(stage_run_id=stage.pk, status=Status.SUCCEEDED, outputs=outputs)


def test_the_reward_stage_adapter_becomes_the_grpo_specs_reward_model(
    base_dir, artifacts, tmp_path, sent_stages, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    stages = _run(
        base_dir,
        [
            {"name": "rm", "method": "reward", "kind": "preference", "adapter": {"type": "lora"}},
            {
                "name": "rl",
                "method": "grpo",
                "kind": "reference",
                "adapter": {"type": "none"},
                "config": {"reward_reward_model_weight": 1.0, "reward_model_stage": "rm"},
            },
        ],
        capture,
    )
    base_ref = model_reference(stages["rm"])
    # What the supervisor stores for an adapter stage (jobs.supervisor): artifact path, run id, its base.
    _succeed(
        stages["rm"],
        {"kind": "adapter", "artifact_path": "adapter", "mlflow_run_id": "run-rm", "base": base_ref},
        capture,
    )
    rl = stages["rl"]
    rl.refresh_from_db()

    refs = aux_model_references(rl)
    assert refs == {
        "reward_model": {
            "source": "stage",
            "stage": "rm",
            "kind": "adapter",
            "artifact_path": "adapter",
            "mlflow_run_id": "run-rm",
            "base": base_ref,
        }
    }
    inputs = tmp_path / "work" / "inputs"
    aux = materialize_aux_models(refs, inputs, client=artifacts)
    assert aux == {
        "reward_model": {
            "name_or_path": str(base_dir),
            "revision": None,
            "adapter_path": str(inputs / "rm" / "adapter"),
        }
    }
    assert artifacts.downloads == [("run-rm", "adapter")]
    # Downloaded exactly as an input model is: a second materialization reuses the finished download.
    assert (
        materialize_model(refs["reward_model"], inputs, client=artifacts)["adapter_path"]
        == aux["reward_model"]["adapter_path"]
    )
    assert artifacts.downloads == [("run-rm", "adapter")]

    config, adapter = resolve_configs(rl.spec)
    model = materialize_model(model_reference(rl), inputs, client=artifacts)
    spec = build_stage_spec(
        stage=rl, model=model, config=config, adapter=adapter, work_dir=tmp_path / "work", aux_models=aux
    )
    assert spec["aux_models"] == aux
    parsed = parse_spec(spec)  # the trainer accepts it as it is
    assert parsed.aux_models["reward_model"].adapter_path == str(inputs / "rm" / "adapter")


def test_a_distill_teacher_defaults_to_the_base_model_and_a_missing_output_is_a_setup_error(
    base_dir, tmp_path, sent_stages, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    stages = _run(base_dir, [{"name": "student", "method": "distill", "kind": "reference"}], capture)
    assert materialize_aux_models(aux_model_references(stages["student"]), tmp_path) == {
        "teacher": {"name_or_path": str(base_dir), "revision": None, "adapter_path": None}
    }
    # A stage that names no extra model gets no aux_models block (specs of older methods do not change).
    assert "aux_models" not in build_stage_spec(
        stage=stages["student"], model={"name_or_path": str(base_dir)}, config={}, adapter=None, work_dir=tmp_path
    )

    stages = _run(
        base_dir,
        [
            {"name": "rm", "method": "reward", "kind": "preference"},
            {
                "name": "rl",
                "method": "grpo",
                "kind": "reference",
                "config": {"reward_reward_model_weight": 1.0, "reward_model_stage": "rm"},
            },
        ],
        capture,
    )
    with pytest.raises(StageSetupError, match="reward model stage 'rm' has no output to use as reward_model"):
        aux_model_references(stages["rl"])
