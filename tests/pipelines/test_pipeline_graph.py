"""Pipelines as graphs: several inputs, order-free references, refused cycles and type mismatches (nothing
saved), parallel branches queued together, automatic evaluation, versions and re-runs."""

from __future__ import annotations

import pytest

from refinery.data.models import DatasetKind
from refinery.pipelines.models import Pipeline, PipelineVersion
from refinery.pipelines.services import pipeline_create, pipeline_update
from refinery.pipelines.specs import SpecError, pipeline_spec_normalize, stage_dependencies
from refinery.runs.models import Status
from refinery.runs.services import RunError, run_create, run_rerun, stage_claim, stage_finish
from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def team():
    return TeamFactory(members=[UserFactory()])


@pytest.fixture
def user(team):
    return team.memberships.first().user


@pytest.fixture
def data(team) -> dict[str, int]:
    return {
        kind: DatasetVersionFactory(dataset__team=team, dataset__kind=kind).dataset_id
        for kind in (DatasetKind.PREFERENCE, DatasetKind.REFERENCE, DatasetKind.PROMPT_COMPLETION)
    }


def sft(data, name, **extra):
    return {"name": name, "method": "sft", "dataset_id": data["prompt_completion"], **extra}


def merge(*inputs, name="soup", **config):
    return {"name": name, "method": "merge", "inputs": list(inputs), "config": config}


def errors_of(team, stages, **spec) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        pipeline_spec_normalize(team=team, spec={"stages": stages, **spec})
    return caught.value.errors


def test_two_branches_feed_a_merge_in_any_listed_order(team, data):
    stages = [
        merge("a", "b", merge_method="ties", weights="0.7, 0.3"),
        sft(data, "a"),
        sft(data, "b", adapter={"type": "none"}),
    ]
    normalized = pipeline_spec_normalize(team=team, spec={"stages": stages})
    soup = normalized["stages"][0]
    assert soup["inputs"] == ["a", "b"] and soup["input"] == "base" and soup["dataset_id"] is None
    assert soup["config"] == {
        "merge_method": "ties",
        "weights": "0.7, 0.3",
        "density": 0.5,
        "majority_sign_method": "total",
    }
    assert stage_dependencies(soup) == ["a", "b"]


@pytest.mark.parametrize(
    ("stages", "key", "message"),
    [
        (
            [sft({"prompt_completion": None}, "a", input="b"), sft({"prompt_completion": None}, "b", input="a")],
            "stages.0.input",
            "stage 1 (a): its inputs form a cycle (a -> b -> a)",
        ),
        (
            [sft({"prompt_completion": None}, "a", input="a")],
            "stages.0.input",
            "stage 1 (a): input 'a' is this stage itself",
        ),
        ([merge("a", "ghost")], "stages.0.inputs", "stage 1 (soup): inputs 'ghost' is not a stage of this pipeline"),
        ([merge("a")], "stages.0.inputs", "stage 1 (soup): a merge stage needs at least 2 inputs"),
    ],
)
def test_bad_graphs_are_refused_naming_the_stage(team, data, stages, key, message):
    stages = [
        {**s, "dataset_id": s.get("dataset_id") or data["prompt_completion"]} if s["method"] == "sft" else s
        for s in stages
    ]
    if stages[0]["method"] == "merge":
        stages.append(sft(data, "a"))
    errors = errors_of(team, stages)
    assert errors[key].startswith(message), errors


def test_type_mismatches_are_refused(team, data):
    rm = {"name": "rm", "method": "reward", "dataset_id": data["preference"], "adapter": {"type": "none"}}
    errors = errors_of(team, [sft(data, "a"), rm, merge("a", "rm")])
    assert errors["stages.2.inputs"] == (
        "stage 3 (soup): inputs 'rm' is a reward stage whose output is a reward model, which scores text instead "
        "of generating it; cannot merge it; a grpo stage uses it as reward_model_stage"
    )

    ev = {"name": "ev", "method": "evaluate", "input": "a", "dataset_id": data["reference"]}
    errors = errors_of(team, [sft(data, "a"), ev, sft(data, "b", input="ev")])
    assert errors["stages.2.input"].startswith(
        "stage 3 (b): input 'ev' is a evaluate stage whose output is an evaluation report, not a model"
    )

    errors = errors_of(team, [sft(data, "a", adapter={"type": "prompt_tuning"}), sft(data, "b"), merge("a", "b")])
    assert "input 'a' outputs a prompt_tuning adapter, which cannot be merged" in errors["stages.2.inputs"]

    errors = errors_of(team, [sft(data, "a"), sft(data, "b", inputs=["a"])])
    assert "only a merge stage takes several inputs" in errors["stages.1.inputs"]

    errors = errors_of(team, [sft(data, "a"), {**merge("a", "b"), "dataset_id": data["reference"]}, sft(data, "b")])
    assert "merge cannot read 'reference' data" in errors["stages.1.dataset_kind"]

    errors = errors_of(team, [sft(data, "a"), {**ev, "config": {"baseline_stage": "rm"}}, rm])
    assert "baseline_stage 'rm' is a reward stage" in errors["stages.1.config.baseline_stage"]


def test_a_refused_pipeline_saves_nothing(team, user, data):
    base = BaseModelFactory(team=team)
    with pytest.raises(SpecError) as caught:
        pipeline_create(
            team=team,
            user=user,
            name="loop",
            base_model_id=base.pk,
            spec={"stages": [sft(data, "a", input="b"), sft(data, "b", input="a")]},
        )
    assert "cycle" in caught.value.errors["stages.0.input"]
    assert not Pipeline.objects.exists() and not PipelineVersion.objects.exists()


def test_ready_branches_are_queued_together_and_the_merge_waits(
    team, user, data, sent_stages, django_capture_on_commit_callbacks
):
    pipeline = PipelineFactory(team=team, created_by=user, stages=[sft(data, "a"), sft(data, "b"), merge("a", "b")])
    with django_capture_on_commit_callbacks(execute=True):
        run = run_create(pipeline=pipeline, user=user)
    stages = {s.name: s for s in run.stages.all()}
    assert [stages[n].status for n in ("a", "b", "soup")] == [Status.QUEUED, Status.QUEUED, Status.PENDING]
    assert sorted(sent_stages) == sorted([stages["a"].pk, stages["b"].pk])
    for name in ("a", "b"):
        stage_claim(stage_run_id=stages[name].pk, worker="w")
        with django_capture_on_commit_callbacks(execute=True):
            stage_finish(
                stage_run_id=stages[name].pk,
                status=Status.SUCCEEDED,
                outputs={"kind": "adapter", "artifact_path": "adapter", "mlflow_run_id": name},
            )
        stages["soup"].refresh_from_db()
        assert stages["soup"].status == (Status.PENDING if name == "a" else Status.QUEUED)


def test_automatic_evaluation_is_added_to_each_final_model(team, user, data):
    reference = data["reference"]
    retention = DatasetVersionFactory(dataset__team=team, dataset__kind=DatasetKind.PROMPT_COMPLETION).dataset_id
    stages = [
        sft(data, "a", eval_dataset_id=data["prompt_completion"]),
        sft(data, "b"),
        merge("a", "b"),
        {
            "name": "grpo",
            "method": "grpo",
            "dataset_id": reference,
            "input": "a",
            "adapter": {"type": "none"},  # a's output is a LoRA adapter: no second adapter on top of it
            "config": {"reward_exact_match_weight": 1.0},
        },
    ]
    pipeline = PipelineFactory(team=team, created_by=user, stages=stages, auto_evaluate=True)
    pipeline.spec["retention_dataset_id"] = retention
    pipeline.save()
    run = run_create(pipeline=pipeline, user=user)
    auto = {s.name: s.spec for s in run.stages.filter(method="evaluate")}
    assert set(auto) == {"evaluate-soup", "evaluate-grpo"}
    # The soup's held-out data is the nearest eval set up its inputs (a's); retention on every evaluate stage.
    assert auto["evaluate-soup"]["input"] == "soup" and auto["evaluate-soup"]["auto"] is True
    assert auto["evaluate-soup"]["train_data"]["dataset_id"] == data["prompt_completion"]
    assert auto["evaluate-grpo"]["retention_data"]["dataset_id"] == retention
    assert run.stages.get(name="evaluate-soup").status == Status.PENDING

    pipeline.spec["auto_evaluate"] = False
    pipeline.save()
    pipeline.versions.all().delete()
    assert not run_create(pipeline=pipeline, user=user).stages.filter(method="evaluate").exists()


def test_edits_make_versions_and_runs_keep_theirs(team, user, data):
    base = BaseModelFactory(team=team)
    pipeline = pipeline_create(team=team, user=user, name="p", base_model_id=base.pk, spec={"stages": [sft(data, "a")]})
    first = run_create(pipeline=pipeline, user=user)
    assert first.pipeline_version.number == 1 and first.snapshot["pipeline"]["version"] == 1

    assert (
        pipeline_update(
            pipeline=pipeline, user=user, name="p renamed", base_model_id=base.pk, spec={"stages": [sft(data, "a")]}
        )
        is False
    )  # same spec: no new version
    assert (
        pipeline_update(
            pipeline=pipeline,
            user=user,
            name="p renamed",
            base_model_id=base.pk,
            spec={"stages": [sft(data, "a", config={"learning_rate": 0.01})]},
        )
        is True
    )
    pipeline.refresh_from_db()
    assert pipeline.version == 2 and pipeline.versions.count() == 2
    second = run_create(pipeline=pipeline, user=user)
    assert second.pipeline_version.number == 2
    assert second.snapshot["stages"][0]["config"]["learning_rate"] == 0.01
    first.refresh_from_db()
    assert first.pipeline_version.number == 1 and first.snapshot["stages"][0]["config"]["learning_rate"] != 0.01

    with pytest.raises(SpecError):
        pipeline_update(
            pipeline=pipeline,
            user=user,
            name="p",
            base_model_id=base.pk,
            spec={"stages": [sft(data, "a", input="nowhere")]},
        )
    pipeline.refresh_from_db()
    assert pipeline.version == 2 and pipeline.name == "p renamed"  # nothing half-saved


def test_rerun_repeats_the_snapshot_and_latest_data_re_resolves(team, user, data):
    base = BaseModelFactory(team=team)
    pipeline = pipeline_create(
        team=team, user=user, name="p", base_model_id=base.pk, spec={"seed": 7, "stages": [sft(data, "a")]}
    )
    run = run_create(pipeline=pipeline, user=user)
    old_version = run.snapshot["stages"][0]["train_data"]["version_id"]
    from refinery.data.models import Dataset

    newer = DatasetVersionFactory(dataset=Dataset.objects.get(pk=data["prompt_completion"]))  # new data arrives
    pipeline_update(
        pipeline=pipeline,
        user=user,
        name="p",
        base_model_id=base.pk,
        spec={"seed": 7, "stages": [sft(data, "a", config={"learning_rate": 0.02})]},
    )

    again = run_rerun(run=run, user=user)
    assert again.snapshot == run.snapshot and again.seed == run.seed and again.rerun_of == run
    assert again.pipeline_version == run.pipeline_version

    latest = run_rerun(run=run, user=user, latest_data=True)
    assert latest.snapshot["stages"][0]["train_data"]["version_id"] == newer.pk != old_version
    assert latest.pipeline_version == run.pipeline_version  # the run's version, not the pipeline's newest
    assert latest.snapshot["stages"][0]["config"]["learning_rate"] != 0.02

    run.pipeline = None
    run.save()
    with pytest.raises(RunError, match="pipeline was deleted"):
        run_rerun(run=run, user=user)


def test_overrides_change_one_run_and_are_validated(team, user, data):
    base = BaseModelFactory(team=team)
    pipeline = pipeline_create(
        team=team,
        user=user,
        name="p",
        base_model_id=base.pk,
        spec={"stages": [sft(data, "a", adapter={"type": "lora"})]},
    )
    run = run_create(pipeline=pipeline, user=user, overrides={"a.config.learning_rate": 0.005, "a.adapter.r": 4})
    stage = run.snapshot["stages"][0]
    assert stage["config"]["learning_rate"] == 0.005 and stage["adapter"]["r"] == 4
    assert run.snapshot["overrides"] == {"a.config.learning_rate": 0.005, "a.adapter.r": 4}
    pipeline.refresh_from_db()
    assert "learning_rate" not in pipeline.stages[0].get("config", {}) or (
        pipeline.stages[0]["config"]["learning_rate"] != 0.005
    )  # the pipeline is unchanged
    for overrides, message in [
        ({"zz.config.learning_rate": 1e-3}, "the pipeline has no stage 'zz'"),
        ({"a.learning_rate": 1e-3}, "write it as <stage>.config.<field>"),
        ({"a.config.learning_rate": 7}, "learning_rate"),
        ({"a.config.warp": 1}, "unknown field"),
    ]:
        with pytest.raises(RunError, match=message):
            run_create(pipeline=pipeline, user=user, overrides=overrides)
