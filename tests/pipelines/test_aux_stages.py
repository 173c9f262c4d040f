"""Stages that name other stages for extra models (grpo's reward_model_stage, distill's teacher_stage):
refused at pipeline time when the named stage cannot serve, and scheduled after it when it can."""

from __future__ import annotations

import pytest

from refinery.data.models import DatasetKind
from refinery.pipelines.specs import SpecError, pipeline_spec_normalize
from refinery.runs.models import Status
from refinery.runs.services import run_create, stage_claim, stage_finish
from tests.factories import DatasetVersionFactory, PipelineFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

GRPO = {"reward_reward_model_weight": 1.0, "reward_model_stage": "rm"}


@pytest.fixture
def team():
    return TeamFactory(members=[UserFactory()])


@pytest.fixture
def datasets(team) -> dict[str, int]:
    return {
        kind: DatasetVersionFactory(dataset__team=team, dataset__kind=kind).dataset_id
        for kind in (DatasetKind.PREFERENCE, DatasetKind.REFERENCE, DatasetKind.PROMPT_COMPLETION)
    }


def reward(datasets, name="rm", **extra):
    return {
        "name": name,
        "method": "reward",
        "dataset_id": datasets["preference"],
        "adapter": {"type": "none"},
        **extra,
    }


def grpo(datasets, config=None, name="rl", **extra):
    return {
        "name": name,
        "method": "grpo",
        "dataset_id": datasets["reference"],
        "adapter": {"type": "none"},
        "config": config or dict(GRPO),
        **extra,
    }


def sft(datasets, name="sft", **extra):
    return {"name": name, "method": "sft", "dataset_id": datasets["prompt_completion"], **extra}


def errors_of(team, stages) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        pipeline_spec_normalize(team=team, spec={"stages": stages})
    return caught.value.errors


def test_a_reward_model_stage_must_be_a_reward_stage_of_the_pipeline(team, datasets):
    errors = errors_of(team, [grpo(datasets)])
    assert errors == {
        "stages.0.config.reward_model_stage": (
            "stage 1 (rl): config.reward_model_stage 'rm' is not a stage of this pipeline (use 'base' or one of: "
            "no other stages)"
        )
    }

    errors = errors_of(team, [sft(datasets, name="rm"), grpo(datasets)])
    assert errors["stages.1.config.reward_model_stage"] == (
        "stage 2 (rl): reward_model_stage 'rm' is a sft stage; it must name a stage of method reward "
        "(there is none in this pipeline)"
    )

    errors = errors_of(team, [reward(datasets, name="rm-a"), grpo(datasets), sft(datasets, name="rm")])
    assert errors["stages.1.config.reward_model_stage"].startswith(
        "stage 2 (rl): reward_model_stage 'rm' is a sft stage"
    )
    assert "(candidates: rm-a)" in errors["stages.1.config.reward_model_stage"]

    # Order does not matter: a stage may name one listed after it; the scheduler runs them by dependency.
    normalized = pipeline_spec_normalize(team=team, spec={"stages": [grpo(datasets), reward(datasets)]})
    assert normalized["stages"][0]["config"]["reward_model_stage"] == "rm"


def test_a_reward_stage_cannot_be_trained_on_or_teach(team, datasets):
    errors = errors_of(team, [reward(datasets), sft(datasets, input="rm")])
    assert (
        "input 'rm' is a reward stage whose output is a reward model, which scores text instead of "
        "generating it; cannot train on it"
    ) in errors["stages.1.input"]
    distill = {
        "name": "student",
        "method": "distill",
        "dataset_id": datasets["prompt_completion"],
        "config": {"teacher_stage": "rm"},
    }
    errors = errors_of(team, [reward(datasets), distill])
    assert (
        "teacher_stage 'rm' is a reward stage; it must name a stage that outputs a model"
        in (errors["stages.1.config.teacher_stage"])
    )
    ok = pipeline_spec_normalize(
        team=team, spec={"stages": [sft(datasets), {**distill, "config": {"teacher_stage": "sft"}}]}
    )
    assert ok["stages"][1]["config"]["teacher_stage"] == "sft"


def _start(team, stages, capture):
    user = team.memberships.first().user
    pipeline = PipelineFactory(team=team, created_by=user, stages=stages)
    with capture(execute=True):
        run = run_create(pipeline=pipeline, user=user)
    return {s.name: s for s in run.stages.order_by("index")}


def _finish(stage, status, capture):
    stage_claim(stage_run_id=stage.pk, worker="w")
    with capture(execute=True):
        stage_finish(
            stage_run_id=stage.pk,
            status=status,
            outputs={"kind": "model", "artifact_path": "model", "mlflow_run_id": "r1", "base": None},
        )


def test_a_grpo_stage_waits_for_its_reward_stage(team, datasets, sent_stages, django_capture_on_commit_callbacks):
    capture = django_capture_on_commit_callbacks
    stages = _start(team, [reward(datasets), grpo(datasets)], capture)  # both train from the base model
    assert [s.status for s in stages.values()] == [Status.QUEUED, Status.PENDING]
    assert sent_stages == [stages["rm"].pk]

    _finish(stages["rm"], Status.SUCCEEDED, capture)
    stages["rl"].refresh_from_db()
    assert stages["rl"].status == Status.QUEUED and sent_stages[-1] == stages["rl"].pk


def test_a_grpo_stage_is_canceled_when_its_reward_stage_fails(
    team, datasets, sent_stages, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    stages = _start(team, [reward(datasets), grpo(datasets)], capture)
    _finish(stages["rm"], Status.FAILED, capture)
    stages["rl"].refresh_from_db()
    assert stages["rl"].status == Status.CANCELED and "stage 'rm' failed" in stages["rl"].error
