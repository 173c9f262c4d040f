"""Issue 11, hole 1: what a stage publishes (spec.json, trainer.log, the row's log tail) names no host
path and no global run id. The end-to-end check is tests/integration/test_stage_dirs.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from django.conf import settings

from jobs.stage_inputs import (
    build_stage_spec,
    redact,
    redacted_spec,
    stage_checkpoint_dir,
    stage_redactions,
    stage_work_dir,
)
from refinery.basemodels.paths import model_roots
from refinery.runs.services import run_create

pytestmark = pytest.mark.django_db


def test_log_lines_and_spec_lose_host_paths_and_global_ids(make_pipeline, sent_stages):
    pipeline = make_pipeline(("sft", "base"))
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()
    work = stage_work_dir(stage)
    area = stage_checkpoint_dir(stage)
    root = model_roots(run.team_id)[0]
    redactions = stage_redactions(stage, work)
    lines = [
        f"Saving model checkpoint to {work}/checkpoints/checkpoint-8",
        f"resumed from {area}/checkpoint-8",
        f'  File "{sys.prefix}/lib/python3.11/site-packages/transformers/trainer.py", line 1',
        f"loading {root}/llama-1234abcd/config.json",
        f"reading {Path(settings.REFINERY_DATASET_DIR)}/ab/abcdef.jsonl",
        f"elsewhere {Path(settings.REFINERY_WORK_DIR)}/run-{run.pk}/stage-3/output",
    ]
    out = redact("\n".join(lines), redactions)
    assert str(settings.VAR_DIR) not in out and sys.prefix not in out and f"run-{run.pk}" not in out
    assert out.splitlines() == [
        "Saving model checkpoint to ./checkpoints/checkpoint-8",
        "resumed from ./checkpoints/checkpoint-8",
        '  File "<python>/lib/python3.11/site-packages/transformers/trainer.py", line 1',
        "loading <models>/llama-1234abcd/config.json",
        "reading <datasets>/ab/abcdef.jsonl",
        "elsewhere <work>/stage/output",
    ]

    spec = build_stage_spec(
        stage=stage,
        model={"name_or_path": f"{root}/llama", "revision": None, "adapter_path": None},
        config={},
        adapter=None,
        work_dir=work,
    )
    assert spec["stage"]["run_id"] == run.pk  # the trainer's own copy keeps them
    public = json.loads(redacted_spec(spec, redactions))
    assert public["stage"] == {"name": "sft", "index": 0, "attempt": stage.attempt}
    assert public["output_dir"] == "./output" and public["checkpoint_dir"] == "./checkpoints"
    assert public["model"]["name_or_path"] == "<models>/llama"
    assert public["data"]["train"]["path"].startswith("<datasets>/")
