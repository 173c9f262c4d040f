"""``python -m trainers ...`` as the supervisor runs it: a subprocess with events on stdout."""

import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(spec, tmp_path) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every stdout line must be an event


def test_run_emits_ndjson_events_in_order(make_spec, tmp_path):
    spec = make_spec(config={"max_steps": 6, "save_steps": 3, "logging_steps": 1})
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "run", _write(spec, tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = _events(result.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["artifact", "finished"], kinds
    assert all(isinstance(e["time"], float) for e in events)
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    assert events[0]["total_steps"] == 6
    assert [e["step"] for e in events if e["event"] == "metrics"] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [3, 6]
    assert [e for e in events if e["event"] == "progress"][-1]["step"] == 6
    model_dir = os.path.join(spec["output_dir"], "model")
    assert events[-1]["outputs"] == {"kind": "model", "path": model_dir}
    assert os.path.isfile(os.path.join(model_dir, "model.safetensors"))


def test_sigterm_cancels_at_step_end_with_exit_3(make_spec, tmp_path):
    spec = make_spec(config={"max_steps": 100_000, "save_steps": 100_000})
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainers", "run", _write(spec, tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        events = []
        deadline = time.monotonic() + 150
        for line in proc.stdout:  # wait until training is under way
            events.append(json.loads(line))
            if events[-1]["event"] == "progress" or time.monotonic() > deadline:
                break
        assert events and events[-1]["event"] == "progress", events
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    events += _events(rest)
    assert proc.returncode == 3
    assert events[-1]["event"] == "canceled"
    assert 1 <= events[-1]["step"] < 100_000
    assert not any(e["event"] in ("artifact", "finished", "failed") for e in events)
    assert not os.path.exists(os.path.join(spec["output_dir"], "model"))


def test_preference_method_run_emits_reward_metrics(make_spec, demo_kit, tmp_path):
    spec = make_spec(data="prefs", eval_data="prefs_eval", config={"max_steps": 4, "save_steps": 2})
    spec["method"] = "orpo"
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "run", _write(spec, tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    events = _events(result.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["artifact", "finished"], kinds
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 4]
    metrics = [e for e in events if e["event"] == "metrics"]
    assert [e["step"] for e in metrics] == sorted(e["step"] for e in metrics)
    train = [e["metrics"] for e in metrics if "train/loss" in e["metrics"]]
    assert len(train) == 4
    for name in ("train/rewards/chosen", "train/rewards/rejected", "train/rewards/accuracies", "train/rewards/margins"):
        assert all(isinstance(m[name], float) for m in train), name
    summary = events[-1]["summary"]
    for name in ("eval/loss", "eval/rewards/accuracies", "eval/rewards/margins", "eval/preference_accuracy",
                 "eval/preference_margin", "eval/preference_accuracy_initial"):  # fmt: skip
        assert isinstance(summary[name], float), name
    assert events[-1]["outputs"] == {"kind": "model", "path": os.path.join(spec["output_dir"], "model")}
