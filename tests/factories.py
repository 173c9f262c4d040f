"""factory_boy factories for the rows most tests need.

    user = UserFactory()                       # password "pw-<username>"
    team = TeamFactory(members=[user])         # with an owner membership each
    version = DatasetVersionFactory(dataset__team=team, source=Path("train.jsonl"))
    pipeline = PipelineFactory(team=team, base_model__name_or_path=str(model_dir), stages=[...])

DatasetVersionFactory stores a real file, content-addressed under
settings.REFINERY_DATASET_DIR exactly as refinery.data.services does, so that a
trainer can read it. Without `source` it writes a tiny addition dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import factory
from django.conf import settings
from django.contrib.auth import get_user_model

from refinery.basemodels.models import BaseModel
from refinery.data.models import Dataset, DatasetKind, DatasetVersion
from refinery.pipelines.models import Pipeline
from refinery.teams.models import Membership, Team

ADDITION_ROWS = [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a in range(10) for b in range(10)]


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")

    @factory.post_generation
    def password(obj, create, extracted, **kwargs):  # noqa: N805 - factory_boy hook
        obj.set_password(extracted or f"pw-{obj.username}")
        if create:
            obj.save(update_fields=["password"])


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")

    @factory.post_generation
    def members(obj, create, extracted, **kwargs):  # noqa: N805
        """TeamFactory(members=[user, ...]) makes each an owner."""
        if create and extracted:
            for user in extracted:
                Membership.objects.get_or_create(team=obj, user=user, defaults={"role": Membership.Role.OWNER})


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.OWNER


class BaseModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BaseModel

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"model-{n}")
    source = BaseModel.Source.LOCAL
    name_or_path = "/nonexistent/model"
    revision = ""


class DatasetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dataset

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"dataset-{n}")
    kind = DatasetKind.PROMPT_COMPLETION


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_dataset_file(source: Path, fmt: str) -> dict:
    """Copy a file to its content-addressed place; return the DatasetVersion fields it defines."""
    sha = _sha256(source)
    relative = f"{sha[:2]}/{sha}.{fmt}"
    target = Path(settings.REFINERY_DATASET_DIR) / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    rows = 0
    if fmt == "jsonl":
        rows = sum(1 for line in source.read_text().splitlines() if line.strip())
    return {
        "sha256": sha,
        "storage_path": relative,
        "size_bytes": target.stat().st_size,
        "row_count": rows,
        "original_filename": source.name,
    }


class DatasetVersionFactory(factory.django.DjangoModelFactory):
    """DatasetVersionFactory(dataset=..., source=Path(...)): stores the file and fills hash, size and rows."""

    class Meta:
        model = DatasetVersion

    dataset = factory.SubFactory(DatasetFactory)
    version = factory.LazyAttribute(lambda o: (o.dataset.versions.count() if o.dataset.pk else 0) + 1)
    format = DatasetVersion.Format.JSONL
    source = None
    columns = factory.LazyAttribute(lambda o: ["prompt", "completion"])

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        source = kwargs.pop("source", None)
        if source is not None:
            stored = store_dataset_file(Path(source), kwargs.get("format", "jsonl"))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                source = Path(tmp) / "addition.jsonl"
                source.write_text("".join(json.dumps(r) + "\n" for r in ADDITION_ROWS))
                stored = store_dataset_file(source, "jsonl")
        for key, value in stored.items():
            kwargs.setdefault(key, value)
        return super()._create(model_class, *args, **kwargs)


class PipelineFactory(factory.django.DjangoModelFactory):
    """PipelineFactory(team=..., base_model=..., stages=[{...}], seed=7, auto_evaluate=True).

    Automatic evaluation is off unless asked for, so a test's run has exactly the stages it lists."""

    class Meta:
        model = Pipeline
        exclude = ("stages", "seed", "auto_evaluate")

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"pipeline-{n}")
    base_model = factory.SubFactory(BaseModelFactory, team=factory.SelfAttribute("..team"))
    stages = factory.LazyFunction(list)
    seed = 42
    auto_evaluate = False
    spec = factory.LazyAttribute(lambda o: {"seed": o.seed, "stages": o.stages, "auto_evaluate": o.auto_evaluate})


def gate_decision_make(run, *, model=None, champion=None, candidate=None, outcome: str = "awaiting_approval"):
    """A gate stage row added to `run` (after its stages) and its decision, as refinery.registry.gates records
    one: for tests that need a decision without running a gate (permission matrix, fuzzing)."""
    from refinery.registry.models import GateDecision
    from refinery.runs.models import StageRun, Status

    index = run.stages.count()
    stage = StageRun.objects.create(
        run=run,
        index=index,
        name=f"gate-{index}",
        method="gate",
        status=Status.SUCCEEDED,
        spec={
            "name": f"gate-{index}",
            "method": "gate",
            "input": "sft",
            "config": {
                "registered_model": model.name if model else "bot",
                "alias": "production",
                "require_approval": True,
            },
        },
    )
    numbers = {
        "passed": True,
        "metric": "loss",
        "higher_is_better": False,
        "candidate": 0.4,
        "champion": 0.5,
        "gain": 0.1,
        "checks": [{"check": "gain", "passed": True, "text": "loss 0.4 vs 0.5 (+0.1; needs > 0)"}],
        "reasons": ["loss 0.4 vs 0.5 (+0.1; needs > 0)"],
        "has_champion": True,
    }
    return GateDecision.objects.create(
        team=run.team,
        run=run,
        stage_run=stage,
        candidate_stage="sft",
        model_name=model.name if model else "bot",
        alias="production",
        registered_model=model,
        champion=champion,
        candidate=candidate,
        passed=True,
        outcome=outcome,
        numbers=numbers,
        require_approval=True,
        message="v2 awaits approval for production (holder: v1): loss 0.4 vs 0.5 (+0.1; needs > 0)",
    )
