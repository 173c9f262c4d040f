"""Issue 11, hole 1: cross-team model theft through "local path" base models.

Team B registered team A's stage checkpoint (var/work/run-N/stage-0/checkpoints/checkpoint-200) as its
own base model and exported A's weights. Local paths are now accepted only inside the team's model
roots, after resolving links and "..", with one message for every refusal; the worker checks again.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from jobs.stage_inputs import StageSetupError, model_reference, stage_checkpoint_dir
from refinery.basemodels.models import BaseModel
from refinery.basemodels.paths import model_path_check, model_roots, model_roots_check
from refinery.basemodels.services import BaseModelError, base_model_create, local_model_layout
from refinery.runs.services import run_create
from tests.factories import BaseModelFactory, TeamFactory, UserFactory

REFUSED = "not a model folder (with a config.json) inside this team's model roots"

pytestmark = pytest.mark.django_db


def model_folder(path: Path) -> Path:
    """A minimal transformers folder (config.json + a safetensors header), as a checkpoint holds."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    (path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    return path


@pytest.fixture
def teams():
    alice, bob = UserFactory(), UserFactory()
    return (TeamFactory(members=[alice]), alice), (TeamFactory(members=[bob]), bob)


def own_root(team) -> Path:
    root = model_roots(team.pk)[0]
    root.mkdir(parents=True, exist_ok=True)
    return root


def register(team, user, path, name="stolen"):
    return base_model_create(team=team, user=user, name=name, source="local", name_or_path=str(path))


def refused_message(team, user, path) -> str:
    with pytest.raises(BaseModelError) as caught:
        register(team, user, path)
    assert set(caught.value.errors) == {"name_or_path"}
    assert not BaseModel.objects.filter(team=team, name="stolen").exists()
    return caught.value.errors["name_or_path"]


def test_team_b_cannot_register_team_as_stage_checkpoint(settings, teams):
    """The attack as reported: a checkpoint of team A's stage, in the work dir and in the checkpoint area."""
    (team_a, alice), (team_b, bob) = teams
    in_work_dir = model_folder(
        Path(settings.REFINERY_WORK_DIR) / "run-3" / "stage-0" / "checkpoints" / "checkpoint-200"
    )
    in_area = model_folder(Path(settings.REFINERY_CHECKPOINT_DIR) / str(team_a.pk) / "0123abcd" / "checkpoint-200")
    try:
        messages = {refused_message(team_b, bob, path) for path in (in_work_dir, in_area)}
        # Not even team A may register its own checkpoints: they are not in a model root.
        messages.add(refused_message(team_a, alice, in_area))
    finally:
        shutil.rmtree(Path(settings.REFINERY_WORK_DIR) / "run-3", ignore_errors=True)
        shutil.rmtree(Path(settings.REFINERY_CHECKPOINT_DIR) / str(team_a.pk), ignore_errors=True)
    assert len({m.replace(str(team_a.pk), "A") for m in messages}) <= 2  # the same text, up to the team's roots
    assert all(REFUSED in m for m in messages)


def test_team_b_cannot_register_a_model_in_team_as_root(teams):
    (team_a, alice), (team_b, bob) = teams
    theirs = model_folder(own_root(team_a) / "private-llama")
    assert register(team_a, alice, theirs, name="mine").name_or_path == str(theirs)  # A itself may
    assert REFUSED in refused_message(team_b, bob, theirs)


def test_links_and_dotdot_out_of_the_own_root_are_refused(teams, tmp_path):
    (team_a, alice), (team_b, bob) = teams
    theirs = model_folder(own_root(team_a) / "private-llama")
    outside = model_folder(tmp_path / "anywhere" / "model")
    mine = own_root(team_b)
    (mine / "link-to-a").symlink_to(theirs, target_is_directory=True)
    (mine / "link-out").symlink_to(outside, target_is_directory=True)
    dotdot = f"{mine}/../{team_a.pk}/private-llama"
    # A real folder in B's root whose weights are a link to A's.
    sneaky = mine / "sneaky"
    sneaky.mkdir()
    (sneaky / "config.json").write_text("{}")
    (sneaky / "model.safetensors").symlink_to(theirs / "model.safetensors")
    config_link = mine / "config-link"
    config_link.mkdir()
    (config_link / "config.json").symlink_to(theirs / "config.json")

    cases = [
        mine / "link-to-a",
        mine / "link-out",
        dotdot,
        f"{mine}/link-out/../../anywhere/model",
        sneaky,
        config_link,
        outside,
        mine / "missing",
        mine,
        "relative/path",
        "/",
        "/etc",
        mine / "empty",
    ]
    (mine / "empty").mkdir()
    messages = {refused_message(team_b, bob, path) for path in cases}
    assert len(messages) == 1, messages  # one message: nothing tells which paths exist
    assert REFUSED in messages.pop()


def test_a_model_inside_the_own_root_registers_with_its_details(teams):
    (team_a, alice), _ = teams
    folder = model_folder(own_root(team_a) / "llama")
    (own_root(team_a) / "alias").symlink_to(folder, target_is_directory=True)  # a link that stays inside
    model = register(team_a, alice, own_root(team_a) / "alias", name="aliased")
    assert model.architecture == "LlamaForCausalLM" and model.parameter_count == 4


def test_a_shared_root_is_readable_by_every_team(settings, teams, tmp_path):
    (team_a, alice), (team_b, bob) = teams
    shared = tmp_path / "shared"
    settings.REFINERY_MODEL_ROOTS = [str(tmp_path / "per-team" / "{team}"), str(shared)]
    folder = model_folder(shared / "public-llama")
    assert register(team_a, alice, folder, name="a").name_or_path == str(folder)
    assert register(team_b, bob, folder, name="b").name_or_path == str(folder)
    assert REFUSED in refused_message(team_b, bob, model_folder(tmp_path / "per-team" / str(team_a.pk) / "x"))


def test_a_row_from_before_the_roots_cannot_be_trained_on(settings, teams, sent_stages):
    """A base model registered before the upgrade (or written straight into the table) points at another
    team's checkpoint: the worker refuses it when the stage materializes its input, for the run's team."""
    (team_a, alice), (team_b, bob) = teams
    theirs = model_folder(own_root(team_a) / "private-llama")
    from tests.factories import DatasetVersionFactory, PipelineFactory

    version = DatasetVersionFactory(dataset__team=team_b)
    base = BaseModelFactory(team=team_b, name_or_path=str(theirs))  # bypasses the service, as an old row
    pipeline = PipelineFactory(
        team=team_b,
        base_model=base,
        created_by=bob,
        stages=[
            {"name": "export", "method": "export", "config": {}, "dataset_id": None, "input": "base"},
            {
                "name": "sft",
                "method": "sft",
                "config": {"max_steps": 2},
                "adapter": {"type": "none"},
                "dataset_id": version.dataset_id,
                "input": "base",
            },
        ],
    )
    run = run_create(pipeline=pipeline, user=bob)
    for stage in run.stages.all():
        with pytest.raises(StageSetupError, match=re.escape(REFUSED)):
            model_reference(stage)
    assert local_model_layout(base) is None  # the web side does not read it either
    # The same row in team A's own run passes.
    own = BaseModelFactory(team=team_a, name_or_path=str(theirs))
    a_run = run_create(
        pipeline=PipelineFactory(
            team=team_a,
            base_model=own,
            created_by=alice,
            stages=[{"name": "export", "method": "export", "config": {}, "dataset_id": None, "input": "base"}],
        ),
        user=alice,
    )
    assert model_reference(a_run.stages.get())["name_or_path"] == str(theirs)


def test_checkpoint_areas_are_per_team_opaque_and_stable(teams, make_pipeline, sent_stages, settings):
    run = run_create(pipeline=(pipeline := make_pipeline(("a", "base"), ("b", "a"))), user=pipeline.created_by)
    a, b = run.stages.order_by("index")
    area = stage_checkpoint_dir(a)
    assert area.parent == Path(settings.REFINERY_CHECKPOINT_DIR) / str(run.team_id)
    assert area == stage_checkpoint_dir(type(a).objects.get(pk=a.pk))  # every attempt finds it again
    assert area != stage_checkpoint_dir(b) and len(area.name) == 32 and "run-" not in str(area)
    with pytest.raises(Exception, match=re.escape(REFUSED)):
        model_path_check(team_id=run.team_id, path=str(model_folder(area / "checkpoint-1")))
    shutil.rmtree(area.parent, ignore_errors=True)


def test_startup_check_refuses_roots_that_overlap_work_or_checkpoint_areas(settings, tmp_path):
    assert model_roots_check() == []
    for bad in (
        str(Path(settings.VAR_DIR)),
        str(Path(settings.REFINERY_WORK_DIR) / "{team}"),
        str(Path(settings.REFINERY_CHECKPOINT_DIR) / "x"),
        "relative/{team}",
    ):
        settings.REFINERY_MODEL_ROOTS = [str(tmp_path / "ok" / "{team}"), bad]
        assert {e.id for e in model_roots_check()} in ({"refinery.E101"}, {"refinery.E102"}), bad
    with pytest.raises(SystemCheckError, match="REFINERY_MODEL_ROOTS"):
        call_command("check")
