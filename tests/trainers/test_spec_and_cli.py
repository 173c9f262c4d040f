"""Spec checking and the light CLI commands (none of these may import torch)."""

import json
import os
import subprocess
import sys

import pytest
from trainers.events import EventLog, EventWriter
from trainers.stage import execute
from trainers.stage_spec import SpecError, parse_spec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "trainers", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_methods_json_lists_schemas_without_importing_torch():
    probe = (
        "import io, json, sys, contextlib\n"
        "from trainers.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    code = main(['methods', '--json'])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'out': json.loads(buf.getvalue())}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["code"] == 0
    assert report["heavy"] == []
    sft = {m["name"]: m for m in report["out"]["methods"]}["sft"]
    assert sft["runner"] == "trainers.methods.sft:run"
    assert {f["name"] for f in sft["config_fields"]} >= {"learning_rate", "completion_only_loss", "eval_fraction"}

    # and the real command prints the same JSON
    result = _cli("methods", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["methods"][0]["name"] == "sft"


# deathsig: a standard-library process helper (runstack starts its children through it).
WEB_READABLE = {"catalog", "schema", "configs", "dataset_kinds", "metrics", "rewards", "deathsig"}


def test_the_import_contract_names_every_trainers_module_the_web_side_may_not_import():
    """pyproject's contract forbids the web side every trainers module but the light ones that hold facts; a new
    module must be put on one side or the other."""
    import pkgutil
    import tomllib

    import trainers

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        contracts = tomllib.load(fh)["tool"]["importlinter"]["contracts"]
    contract = next(c for c in contracts if c["name"].startswith("the web side reads only trainers' facts"))
    assert contract["source_modules"] == ["refinery"] and contract["type"] == "forbidden"
    forbidden = {name.removeprefix("trainers.") for name in contract["forbidden_modules"]}
    every = {info.name for info in pkgutil.iter_modules(trainers.__path__)}
    assert not forbidden & WEB_READABLE
    assert forbidden | WEB_READABLE == every, sorted(every ^ (forbidden | WEB_READABLE))


def test_light_modules_import_no_heavy_library():
    probe = (
        "import sys, json\n"
        "import trainers, trainers.schema, trainers.configs, trainers.catalog, trainers.stage_spec, trainers.events, "
        "trainers.stage, trainers.cancel, trainers.cli, trainers.data, trainers.dataset_kinds, trainers.metrics, "
        "trainers.rewards, trainers.deathsig\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_bad_spec_fails_with_one_line_error_and_exit_1(make_spec, tmp_path):
    spec = make_spec()
    spec["model"]["name_or_path"] = str(tmp_path / "no-such-model")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))

    result = _cli("run", str(path))

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "failed"
    assert isinstance(event["time"], float)
    assert "\n" not in event["error"]
    assert "model.name_or_path: no such model directory" in event["error"]
    assert "SpecError" in event["traceback"]
    assert not os.path.exists(spec["output_dir"])


def test_missing_spec_file_fails(tmp_path):
    result = _cli("run", str(tmp_path / "nope.json"))
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"].startswith("invalid stage spec: spec: no such file")


def test_spec_errors_are_collected(make_spec, tmp_path):
    spec = make_spec(config={"learning_rate": 5}, adapter={"type": "lora", "r": 0})
    spec["data"]["train"]["kind"] = "preference"
    spec["data"]["eval"] = {"path": str(tmp_path / "missing.jsonl"), "kind": "preference"}
    spec["seed"] = -3
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    errors = info.value.errors
    assert errors["data.train.kind"] == (
        "data.train.kind: sft cannot train on 'preference' data; it needs prompt_completion or chat data"
    )
    assert errors["config.learning_rate"] == "learning_rate: must be > 0 and <= 1, got 5"
    assert errors["adapter.r"] == "r: must be >= 1 and <= 1024, got 0"
    assert errors["data.eval.path"].startswith("data.eval.path: no such file")
    assert "seed" in errors
    assert "\n" not in str(info.value)


def test_spec_checks_sha256(make_spec):
    spec = make_spec()
    spec["data"]["train"]["sha256"] = "0" * 64
    with pytest.raises(SpecError, match="data.train.sha256: file content does not match"):
        parse_spec(spec)
    import hashlib

    with open(spec["data"]["train"]["path"], "rb") as fh:
        spec["data"]["train"]["sha256"] = hashlib.sha256(fh.read()).hexdigest()
    parsed = parse_spec(spec)
    assert parsed.train.kind == "prompt_completion"
    assert parsed.config.learning_rate == 3e-3
    assert parsed.adapter.type == "none"


def test_execute_reports_unknown_method_as_failed(make_spec):
    spec = make_spec()
    spec["method"] = "ppo"
    log = EventLog()
    assert execute(spec, log) == 1
    assert [e["event"] for e in log.events] == ["failed"]
    assert "unknown method 'ppo'" in log.events[0]["error"]


def test_event_writer_emits_ndjson_and_strict_json(tmp_path):
    import io

    stream = io.StringIO()
    writer = EventWriter(stream)
    writer.emit("metrics", step=1, metrics={"train/loss": float("nan"), "train/lr": 0.1})
    writer.emit("progress", step=2, total_steps=4, epoch=0.5)
    lines = stream.getvalue().splitlines()
    first = json.loads(lines[0])
    assert first["metrics"] == {"train/loss": None, "train/lr": 0.1}
    assert json.loads(lines[1])["event"] == "progress"
    with pytest.raises(ValueError):
        writer.emit("exploded")
