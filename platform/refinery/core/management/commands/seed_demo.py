"""Seed the demo team: the tiny offline model, the addition datasets, a pipeline and one run.

Idempotent: a second call finds the demo pipeline and starts nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from refinery.basemodels.models import BaseModel
from refinery.basemodels.services import base_model_create
from refinery.data.models import Dataset
from refinery.data.services import dataset_version_create
from refinery.pipelines.models import Pipeline
from refinery.pipelines.services import pipeline_create
from refinery.runs.services import run_create
from refinery.teams.models import Membership, Team
from refinery.teams.services import team_create

DEMO_USER = "demo"
DEMO_PASSWORD = "refinery-demo"
DEMO_TEAM = "Demo"
DEMO_MODEL = "tiny-llama-demo"
DEMO_PIPELINE = "addition: full SFT, then LoRA"
DEMO_GATED_PIPELINE = "addition: nightly retrain behind a gate"
DEMO_REGISTERED_MODEL = "adder"

DATASETS = [
    # (name, demo kit key, kind, description)
    ("addition-train", "train", "prompt_completion", "Single-digit sums as prompt/completion pairs (80 of 100 pairs)."),
    ("addition-eval", "eval", "prompt_completion", "The 20 held-out single-digit sums."),
    ("addition-chat", "chat", "chat", "The same sums as user/assistant conversations."),
    ("addition-prefs", "prefs", "preference", "Preference pairs: the correct sum is chosen, a wrong one rejected."),
    ("addition-reference", "reference", "reference", "Held-out prompts with reference answers."),
    (
        "addition-prefs-eval",
        "prefs_eval",
        "preference",
        "Held-out preference pairs: each held-out sum against every wrong answer 1 or 2 away.",
    ),
    (
        "addition-feedback",
        "feedback",
        "feedback",
        "Feedback rows: each training sum once right (label true) and once wrong (label false).",
    ),
]


def _chunks(path: Path, size: int = 1 << 20):
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def build_demo_kit(out_dir: Path) -> dict:
    """Build the kit in a subprocess: this process never imports torch."""
    manifest = out_dir / "manifest.json"
    if manifest.is_file():
        kit = json.loads(manifest.read_text())
        if all(key in kit["data"] for _, key, _, _ in DATASETS):  # else a kit from an older version: rebuild
            return kit
    out_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "demo", "--out", str(out_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(settings.BASE_DIR)},
    )
    if result.returncode != 0:
        raise CommandError(f"building the demo kit failed:\n{result.stderr[-2000:]}")
    kit = json.loads(result.stdout)
    manifest.write_text(json.dumps(kit))
    return kit


class Command(BaseCommand):
    help = "Create the demo user, team, tiny model, datasets and pipeline, and start one demo run."

    def add_arguments(self, parser):
        parser.add_argument("--no-run", action="store_true", help="seed everything but do not start the demo run")
        parser.add_argument("--kit-dir", default=None, help="where to build the demo model and data (default var/demo)")

    def handle(self, *args, no_run=False, kit_dir=None, **options):
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USER).first()
        if user is None:
            user = User.objects.create_user(username=DEMO_USER, password=DEMO_PASSWORD)
            self.stdout.write(f"created user {DEMO_USER} / {DEMO_PASSWORD}")
        team = Team.objects.filter(name=DEMO_TEAM).first() or team_create(name=DEMO_TEAM, owner=user)
        Membership.objects.get_or_create(team=team, user=user, defaults={"role": Membership.Role.OWNER})

        if Pipeline.objects.filter(team=team, name=DEMO_PIPELINE).exists():
            self.stdout.write("demo already seeded")
            return

        # The demo model lives in the team's own model root (local models are read from nowhere else).
        from refinery.basemodels.paths import team_upload_root

        kit = build_demo_kit(
            Path(kit_dir) if kit_dir else (team_upload_root(team.pk) or settings.VAR_DIR / "demo") / "demo-kit"
        )
        with transaction.atomic():
            model = BaseModel.objects.filter(team=team, name=DEMO_MODEL).first() or base_model_create(
                team=team,
                user=user,
                name=DEMO_MODEL,
                source=BaseModel.Source.LOCAL,
                name_or_path=kit["model"],
                description="A 2-layer Llama with a BPE tokenizer, built offline. It knows nothing until trained.",
            )
            ids = {}
            for name, key, kind, description in DATASETS:
                dataset = Dataset.objects.filter(team=team, name=name).first()
                if dataset is None:
                    path = Path(kit["data"][key])
                    dataset = dataset_version_create(
                        team=team,
                        user=user,
                        name=name,
                        kind=kind,
                        filename=path.name,
                        chunks=_chunks(path),
                        description=description,
                    ).version.dataset
                ids[key] = dataset.pk
            pipeline = pipeline_create(
                team=team,
                user=user,
                name=DEMO_PIPELINE,
                base_model_id=model.pk,
                description="Teach a tiny model single-digit addition: full fine-tuning, then a LoRA pass on its output.",
                spec={
                    "seed": 42,
                    "stages": [
                        {
                            "name": "sft-full",
                            "method": "sft",
                            "dataset_id": ids["train"],
                            "eval_dataset_id": ids["eval"],
                            "input": "base",
                            "config": {},
                            "adapter": {"type": "none"},
                        },
                        {
                            "name": "sft-lora",
                            "method": "sft",
                            "dataset_id": ids["chat"],
                            "input": "sft-full",
                            "config": {"num_train_epochs": 10, "learning_rate": 0.002},
                            "adapter": {"type": "lora", "r": 8, "alpha": 16},
                        },
                    ],
                },
            )
            # A schedule to look at: nightly, paused until someone resumes it, retraining a pipeline that ends in a
            # promotion gate: the new model replaces adder@production only if it beats it on the held-out sums and
            # forgot at most 0.5 nats/token of the training sums (docs/schedules.md).
            from refinery.schedules.services import schedule_create

            gated = pipeline_create(
                team=team,
                user=user,
                name=DEMO_GATED_PIPELINE,
                base_model_id=model.pk,
                description="Full SFT on the sums, then a promotion gate against adder@production.",
                spec={
                    "seed": 42,
                    "retention_dataset_id": ids["train"],
                    "stages": [
                        {
                            "name": "sft",
                            "method": "sft",
                            "dataset_id": ids["train"],
                            "input": "base",
                            "config": {},
                            "adapter": {"type": "none"},
                        },
                        {
                            "name": "gate",
                            "method": "gate",
                            "dataset_id": ids["eval"],
                            "input": "sft",
                            "config": {
                                "registered_model": DEMO_REGISTERED_MODEL,
                                "alias": "production",
                                "max_forgetting": "0.5",
                            },
                        },
                    ],
                },
            )
            schedule_create(
                team=team,
                user=user,
                name="nightly-addition",
                pipeline_id=gated.pk,
                trigger="interval",
                interval_seconds=86400,
                paused=True,
            )
            if not no_run:
                run = run_create(pipeline=pipeline, user=user)
        self.stdout.write(
            f"seeded team {DEMO_TEAM}: model {DEMO_MODEL}, {len(DATASETS)} datasets, pipeline {pipeline.name!r}"
        )
        if not no_run:
            self.stdout.write(f"started demo run #{run.number}")
