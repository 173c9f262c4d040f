"""Issue 11, hole 5: the trainer subprocess no longer inherits the worker's secrets.

The pure allow-list by a table, then end to end: a real trainer started by the supervisor (read through
/proc/<pid>/environ while a failpoint holds it at a step) sees none of DATABASE_URL, DJANGO_SECRET_KEY,
CELERY_BROKER_URL, MLFLOW_TRACKING_URI, REFINERY_SECRETS_KEY or the worker's HF_TOKEN, and still gets the
failpoint switch the chaos suite relies on."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from jobs.supervisor import CODE_ROOT
from jobs.tasks import run_stage
from jobs.trainer_env import allowed, hub_model_used, trainer_environment
from refinery.runs.models import Status
from refinery.runs.services import run_create

WORKER_SECRETS = {
    "DATABASE_URL": "postgres://refinery:db-password@db:5432/refinery",
    "DJANGO_SECRET_KEY": "worker-django-secret",
    "CELERY_BROKER_URL": "redis://:broker-password@redis:6379/0",
    "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
    "REFINERY_SECRETS_KEY": "worker-secrets-key",
    "REFINERY_SECRETS_OLD_KEYS": "older-key",
    "HF_TOKEN": "hf_worker_level_token_0000",
    "HUGGING_FACE_HUB_TOKEN": "hf_worker_level_token_1111",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "MLFLOW_TRACKING_PASSWORD": "mlflow-password",
    "POSTGRES_PASSWORD": "pg",
}


@pytest.mark.parametrize(
    ("name", "passed"),
    [
        ("PATH", True),
        ("HOME", True),
        ("LANG", True),
        ("LC_ALL", True),
        ("LC_CTYPE", True),
        ("TZ", True),
        ("TMPDIR", True),
        ("PYTHONPATH", True),
        ("PYTHONUNBUFFERED", True),
        ("VIRTUAL_ENV", True),
        ("CUDA_VISIBLE_DEVICES", True),
        ("CUDA_HOME", True),
        ("NVIDIA_VISIBLE_DEVICES", True),
        ("NVIDIA_DRIVER_CAPABILITIES", True),
        ("NCCL_DEBUG", True),
        ("PYTORCH_CUDA_ALLOC_CONF", True),
        ("HF_HOME", True),
        ("HF_HUB_CACHE", True),
        ("TRANSFORMERS_CACHE", True),
        ("HF_HUB_OFFLINE", True),
        ("TRANSFORMERS_OFFLINE", True),
        ("HF_DATASETS_OFFLINE", True),
        ("HF_HUB_DISABLE_TELEMETRY", True),
        ("OMP_NUM_THREADS", True),
        ("MKL_NUM_THREADS", True),
        ("OPENBLAS_NUM_THREADS", True),
        ("TOKENIZERS_PARALLELISM", True),
        ("REFINERY_FAILPOINTS", True),
        *((name, False) for name in WORKER_SECRETS),
        ("HF_TOKEN_PATH", False),
        ("HUGGINGFACE_TOKEN", False),
        ("DJANGO_SETTINGS_MODULE", False),
        ("REFINERY_WORK_DIR", False),
        ("REFINERY_VAR_DIR", False),
        ("MLFLOW_S3_ENDPOINT_URL", False),
        ("SSH_AUTH_SOCK", False),
        ("LD_PRELOAD", False),
        ("PYTHONSTARTUP", False),
        ("GITHUB_TOKEN", False),
        ("path", False),
        ("HF_TOKEN ", False),
    ],
)
def test_the_allow_list(name, passed):
    assert allowed(name) is passed
    env = trainer_environment(base_env={name: "value"}, extra={})
    assert (name in env) is passed


def test_extra_wins_and_output_is_unbuffered():
    env = trainer_environment(
        base_env={"PATH": "/bin", "PYTHONUNBUFFERED": "0", **WORKER_SECRETS}, extra={"HF_TOKEN": "hf_team_token_abcd"}
    )
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1", "HF_TOKEN": "hf_team_token_abcd"}
    assert trainer_environment(base_env=WORKER_SECRETS) == {"PYTHONUNBUFFERED": "1"}


HUB = {"source": "hub", "name_or_path": "acme/gated-7b", "revision": "main"}
LOCAL = {"source": "local", "name_or_path": "/srv/models/tiny", "revision": None}


@pytest.mark.parametrize(
    ("spec", "base", "used"),
    [
        ({"model": {"name_or_path": "acme/gated-7b", "adapter_path": None}}, HUB, True),
        ({"model": {"name_or_path": "acme/gated-7b", "adapter_path": "/w/inputs/sft/adapter"}}, HUB, True),  # adapter
        ({"model": {"name_or_path": "/w/inputs/sft/model", "adapter_path": None}}, HUB, False),  # a full stage output
        (
            {
                "model": {"name_or_path": "/w/inputs/sft/model"},
                "aux_models": {"teacher": {"name_or_path": "acme/gated-7b"}},
            },
            HUB,
            True,
        ),  # distill's teacher is the base
        (
            {
                "model": {"name_or_path": "/w/inputs/a/model"},
                "inputs": [{"stage": "a", "name_or_path": "/w/a"}, {"stage": "b", "name_or_path": "acme/gated-7b"}],
            },
            HUB,
            True,
        ),
        ({"model": {"name_or_path": "/srv/models/tiny"}}, LOCAL, False),  # a local base model needs no token
        ({"model": {"name_or_path": "acme/gated-7b"}}, {}, False),
    ],
)
def test_hub_model_used(spec, base, used):
    assert hub_model_used(spec, base_model=base) is used


# --- end to end: a real trainer under the supervisor ------------------------------------------------


def _children_running(marker: str) -> list[int]:
    """Pids of this process's children whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and marker in cmdline:
            found.append(int(entry.name))
    return found


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


@pytest.mark.django_db(transaction=True)
def test_a_real_trainer_sees_none_of_the_workers_secrets(demo_pipeline, sent_stages, mlflow_server, monkeypatch):
    for name, value in WORKER_SECRETS.items():
        monkeypatch.setenv(name, value)
    # The chaos suite's switch: hold the trainer 4 s at step 3 (long enough to read its environment).
    monkeypatch.setenv("REFINERY_FAILPOINTS", "step.end@3:sleep=4")
    pipeline = demo_pipeline({"name": "sft", "method": "sft"})
    run = run_create(pipeline=pipeline, user=pipeline.created_by)
    stage = run.stages.get()

    seen: dict[str, dict[str, str]] = {}

    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not seen:
            for pid in _children_running(" -m trainers run "):
                try:
                    seen[str(pid)] = _environ_of(pid)
                except OSError:
                    continue
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert run_stage(stage.pk) == Status.SUCCEEDED
    watcher.join(timeout=5)
    assert seen, "the trainer process was never seen"
    env = next(iter(seen.values()))

    leaked = set(WORKER_SECRETS) & set(env)
    assert not leaked, f"the trainer inherited {sorted(leaked)}"
    assert not [v for v in env.values() if any(secret in v for secret in WORKER_SECRETS.values())]
    assert env["REFINERY_FAILPOINTS"] == "step.end@3:sleep=4"  # the fault-injection suite keeps working
    assert env["PYTHONUNBUFFERED"] == "1" and env["PATH"] == os.environ["PATH"]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(CODE_ROOT)
    assert set(env) <= {name for name in os.environ if allowed(name)} | {"PYTHONPATH", "PYTHONUNBUFFERED"}
