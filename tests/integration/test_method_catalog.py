"""Every registered method runs as a stage through a real Celery worker over Redis, with its
method-specific metrics in MLflow and on the run page's charts.

One pipeline, stages in dependency order: SFT teaches the tiny model to answer; DPO, KTO, ORPO and
SimPO train on its output from preference data; a reward model is trained; GRPO optimises the SFT
model against exact match plus that reward model; distillation uses the SFT model as its teacher."""

from __future__ import annotations

import time

import pytest
from django.test import Client
from trainers.catalog import METHODS

from refinery.runs.models import Run, Status
from refinery.runs.services import run_create
from refinery.tracking.client import metric_history
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

FAST = {"max_steps": 6, "logging_steps": 1, "save_steps": 1000}
STAGES = [
    {"name": "sft", "method": "sft", "config": {"max_steps": 40}},
    {"name": "dpo", "method": "dpo", "input": "sft", "data": "prefs", "config": FAST},
    {"name": "kto", "method": "kto", "input": "sft", "data": "feedback", "config": FAST},
    {"name": "orpo", "method": "orpo", "input": "sft", "data": "prefs", "config": FAST},
    {"name": "simpo", "method": "simpo", "input": "sft", "data": "prefs", "config": FAST},
    {"name": "rm", "method": "reward", "input": "sft", "data": "prefs", "config": FAST},
    {
        "name": "grpo",
        "method": "grpo",
        "input": "sft",
        "data": "reference",
        "config": {
            **FAST,
            "max_steps": 4,
            "reward_exact_match_weight": 1.0,
            "reward_reward_model_weight": 0.5,
            "reward_model_stage": "rm",
        },
    },
    {
        "name": "distill",
        "method": "distill",
        "input": "base",
        "data": "train",
        "config": {**FAST, "max_steps": 4, "teacher_stage": "sft"},
    },
    # Stages that train nothing: merge two preference-tuned models, export the soup, evaluate the export.
    {"name": "soup", "method": "merge", "inputs": ["dpo", "orpo"], "config": {"merge_method": "task_arithmetic"}},
    {"name": "ship", "method": "export", "input": "soup", "data": "eval", "config": {"max_rows": 10}},
    {
        "name": "check",
        "method": "evaluate",
        "input": "ship",
        "data": "prefs_eval",
        "config": {"max_rows": 10, "reward_model_stage": "rm"},
    },
    # A promotion gate: the export against catalog@production (no holder yet: the first candidate passes).
    {
        "name": "promote",
        "method": "gate",
        "input": "ship",
        "data": "eval",
        "config": {"registered_model": "catalog", "max_rows": 10, "sample_count": 0},
    },
]
# What each method must have logged (to MLflow and to the run page), besides train/loss.
METHOD_METRICS = {
    "dpo": "rewards/margins",
    "kto": "rewards/chosen",
    "orpo": "log_odds_ratio",
    "simpo": "rewards/margins",
    "reward": "accuracy",
    "grpo": "reward",
    "distill": "loss",
    "merge": "merge/",
    "export": "export/",
    "evaluate": "eval/preference_accuracy",
    "gate": "gate/passed",
}
ONE_OFF = {"merge", "export", "evaluate", "gate"}  # one-off numbers: shown in their cards, not as step charts


def test_every_method_runs_through_the_worker(celery_worker_process, mlflow_server, demo_pipeline):
    stages = [s for s in STAGES if s["method"] in METHODS]
    assert {s["method"] for s in stages} == set(METHODS), "a registered method is missing from this test"
    pipeline = demo_pipeline(*stages, name="method-catalog")
    started = time.monotonic()
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    wait_until(
        lambda: Run.objects.get(pk=run.pk).is_finished,
        timeout=900,
        interval=1,
        message=lambda: f"worker log:\n{celery_worker_process.log_tail(60)}",
    )
    run.refresh_from_db()
    by_name = {s.name: s for s in run.stages.all()}
    print(
        f"\n[measure] {len(stages)} method stages through the worker: {time.monotonic() - started:.0f}s "
        + ", ".join(f"{n} {s.duration.total_seconds():.1f}s" for n, s in by_name.items())
    )
    failed = {n: (s.error, s.log_tail[-1500:]) for n, s in by_name.items() if s.status != Status.SUCCEEDED}
    assert not failed, failed
    assert run.status == Status.SUCCEEDED

    client = Client()
    client.force_login(pipeline.created_by)
    page = client.get(f"/runs/{run.number}/").content.decode()
    for stage in stages:
        row = by_name[stage["name"]]
        keys = {m.key for m in row.metrics.all()}
        wanted = METHOD_METRICS.get(stage["method"])
        if wanted:
            logged = sorted(k for k in keys if wanted in k)
            assert logged, (stage["name"], sorted(keys))
            # The same metric reached MLflow and the run page's charts.
            assert metric_history(row.mlflow_run_id, logged[0]), (stage["name"], logged[0])
            assert logged[0] in page or stage["method"] in ("merge", "export", "gate"), logged[0]
        card = {"evaluate": "evaluation", "export": "export", "gate": "gate"}.get(stage["method"])
        if card:
            assert f'data-testid="{card}-{stage["name"]}"' in page, stage["name"]
        if stage["method"] not in ONE_OFF:
            assert row.trainable_params and row.total_params
