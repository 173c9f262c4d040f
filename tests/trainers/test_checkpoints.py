"""Crash-safe checkpoints, with the trainer killed for real (SIGKILL from a failpoint) at chosen moments:
mid-training, between writing a checkpoint and renaming it, between renaming and marking it complete.
The resumed run must continue exactly where the newest complete checkpoint left it: the same loss at
every step as a run that was never interrupted (model, optimizer, scheduler, RNG and data position)."""

import json
import os
import signal
import subprocess
import sys

import pytest
from trainers.checkpoints import COMPLETE, checkpoints, discard_partial, newest_complete_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = {"max_steps": 12, "save_steps": 4, "logging_steps": 1, "save_total_limit": 2}


def _run(spec, tmp_path, *, failpoints: str = "") -> tuple[int, list[dict], str]:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k != "REFINERY_FAILPOINTS"}
    if failpoints:
        env["REFINERY_FAILPOINTS"] = failpoints
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "run", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _losses(events: list[dict]) -> dict[int, float]:
    return {
        e["step"]: e["metrics"]["train/loss"]
        for e in events
        if e["event"] == "metrics" and "train/loss" in e["metrics"]
    }


@pytest.fixture(scope="module")
def reference(demo_kit, tmp_path_factory):
    """Losses of the same 12 steps run without interruption."""
    from tests.trainers.conftest import _fmt

    out = tmp_path_factory.mktemp("reference")
    path = demo_kit["data"]["train"]
    spec = {
        "version": 1,
        "stage": {"name": "ref", "index": 0, "stage_run_id": 1},
        "method": "sft",
        "config": CONFIG,
        "adapter": {"type": "none"},
        "model": {"name_or_path": demo_kit["model"], "revision": None, "adapter_path": None},
        "data": {"train": {"path": path, "format": _fmt(path), "kind": demo_kit["kinds"]["train"]}, "eval": None},
        "output_dir": str(out / "out"),
        "checkpoint_dir": str(out / "out" / "checkpoints"),
        "seed": 42,
    }
    rc, events, stderr = _run(spec, out)
    assert rc == 0, (stderr[-3000:], events[-1:])
    losses = _losses(events)
    assert sorted(losses) == list(range(1, 13))
    return losses


@pytest.mark.parametrize(
    "fault, resumes_at, partial",
    [
        ("step.end@7:kill", 4, None),  # killed mid-training
        ("checkpoint.staged@8:kill", 4, ".tmp-checkpoint-8"),  # killed before the rename
        ("checkpoint.renamed@8:kill", 4, "checkpoint-8"),  # renamed, never marked complete
    ],
)
def test_a_killed_trainer_resumes_from_the_newest_complete_checkpoint_exactly(
    make_spec, tmp_path, reference, fault, resumes_at, partial
):
    spec = make_spec(config=CONFIG)
    ckpt = spec["checkpoint_dir"]

    rc, first, _ = _run(spec, tmp_path, failpoints=fault)
    assert rc == -signal.SIGKILL
    assert not any(e["event"] in ("finished", "failed", "canceled") for e in first)
    assert newest_complete_checkpoint(ckpt) == os.path.join(ckpt, f"checkpoint-{resumes_at}")
    if partial:
        assert os.path.isdir(os.path.join(ckpt, partial))  # the half-written checkpoint is there ...
        assert not os.path.exists(os.path.join(ckpt, partial, COMPLETE))

    rc, second, stderr = _run(spec, tmp_path, failpoints=fault)  # armed again: it fires once per directory
    assert rc == 0, stderr[-3000:]
    started = second[0]
    assert started["event"] == "started" and started["step"] == resumes_at
    assert started["resumed_from"] == os.path.join(ckpt, f"checkpoint-{resumes_at}")
    if partial:
        assert f"discarded the partial checkpoint {partial}" in stderr  # ... and skipped, then removed

    # Steps continue from the checkpoint: the second run logs exactly the steps after it, and the
    # stitched curve is the uninterrupted one, bit for bit on CPU.
    resumed = _losses(second)
    assert sorted(resumed) == list(range(resumes_at + 1, 13))
    stitched = {**{s: v for s, v in _losses(first).items() if s <= resumes_at}, **resumed}
    assert stitched == reference
    # Every checkpoint left is complete, and the rotation kept the newest two.
    assert [(step, ok) for step, _, ok in checkpoints(ckpt)] == [(8, True), (12, True)]


def test_discard_partial_keeps_complete_checkpoints(tmp_path):
    done = tmp_path / "checkpoint-4"
    done.mkdir()
    (done / "trainer_state.json").write_text("{}")
    (done / COMPLETE).write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()  # no marker
    (tmp_path / ".tmp-checkpoint-12").mkdir()
    (tmp_path / "unrelated").mkdir()
    assert discard_partial(str(tmp_path)) == [".tmp-checkpoint-12", "checkpoint-8"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4", "unrelated"]
    assert newest_complete_checkpoint(str(tmp_path)) == str(done)
