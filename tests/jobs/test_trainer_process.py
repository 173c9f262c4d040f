"""The trainer dies with its supervisor (jobs.supervisor.process, trainers.deathsig): the real trainer,
started the way the supervisor starts it from a process that already runs a thread, is gone soon after
that process is SIGKILLed; and a child whose parent is gone before it asks for the signal never starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

# A stand-in for the Celery worker: Django set up, a thread running (the heartbeat's place), then the trainer
# started by TrainerProcess.start exactly as the supervisor starts it; its events are read until it is killed.
# A second process holds the events pipe open without reading it, so that the trainer cannot learn of its
# supervisor's death from a broken pipe (as when it is loading, evaluating or hung): only the signal kills it.
SUPERVISOR = """
import os, subprocess, sys, threading, time
import django
django.setup()
from pathlib import Path
from jobs.supervisor.process import TrainerProcess
threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
work = Path(sys.argv[1])
trainer = TrainerProcess.start(spec_path=work / "spec.json", work_dir=work, log_path=work / "trainer.log",
                               env=dict(os.environ))
holder = subprocess.Popen(["sleep", "600"], pass_fds=[trainer.stdout.fileno()], start_new_session=True)
print("trainer", trainer.pid, "holder", holder.pid, " ".join(trainer.args), flush=True)
for line in trainer.stdout:
    print(line.decode().strip(), flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Exited (a zombie waiting for its new parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except OSError:
        return True


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_killing_the_supervisor_with_sigkill_kills_the_trainer(demo_kit, tmp_path):
    data = demo_kit["data"]["train"]
    spec = {
        "version": 1,
        "stage": {"name": "sft", "index": 0, "stage_run_id": 1},
        "method": "sft",
        "config": {"max_steps": 100_000, "save_steps": 100_000, "logging_steps": 1},
        "adapter": {"type": "none"},
        "model": {"name_or_path": demo_kit["model"], "revision": None, "adapter_path": None},
        "data": {
            "train": {"path": data, "format": Path(data).suffix[1:], "kind": demo_kit["kinds"]["train"]},
            "eval": None,
        },
        "output_dir": str(tmp_path / "output"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "seed": 42,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
    }
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    trainer_pid = holder_pid = None
    try:
        assert supervisor.stdout is not None
        first = supervisor.stdout.readline().decode()
        assert first.startswith("trainer "), first + supervisor.stdout.read().decode()[-3000:]
        trainer_pid, holder_pid = int(first.split()[1]), int(first.split()[3])
        assert f"--parent-pid {supervisor.pid}" in first  # the trainer asks for the signal itself
        deadline = time.monotonic() + 180
        for raw in supervisor.stdout:  # until it trains: torch imported, the model loaded
            if b'"event":"metrics"' in raw or time.monotonic() > deadline:
                break
        assert not _gone(trainer_pid), (tmp_path / "trainer.log").read_text()[-3000:]
        stat = Path(f"/proc/{trainer_pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        assert int(stat[1]) == supervisor.pid  # its parent is the supervisor, not a shim

        killed = time.monotonic()
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.wait(timeout=10)
        wait_until(lambda: _gone(trainer_pid), timeout=10, interval=0.05, message="the trainer outlived its supervisor")
        print(f"\n[measure] supervisor SIGKILLed to trainer gone: {time.monotonic() - killed:.2f}s")
    finally:
        _kill_group(supervisor.pid)
        for pid in (trainer_pid, holder_pid):
            if pid is not None:
                _kill_group(pid)
        supervisor.wait(timeout=10)


def test_a_trainer_whose_parent_is_gone_before_it_starts_exits_at_once(tmp_path):
    """--parent-pid names a process that is not the trainer's parent (it died in between): no events, exit 1."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers",
            "run",
            str(tmp_path / "spec.json"),
            "--parent-pid",
            str(os.getpid() + 1_000_000),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert "is gone; not starting" in result.stderr


def test_runstack_children_get_sigterm_when_runstack_is_killed(tmp_path):
    """The wrapper `manage.py runstack` starts its children with (trainers.deathsig.command): the child is the
    real program (exec, same pid), and it gets SIGTERM when the process that started it is SIGKILLed."""
    parent_code = (
        "import subprocess, sys, threading, time\n"
        "from trainers import deathsig\n"
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
        "child = subprocess.Popen(deathsig.command([sys.executable, '-c', sys.argv[1]]), start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    marker = tmp_path / "got-sigterm"
    child_code = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: (open({str(marker)!r}, 'w').close(), sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code, child_code], cwd=REPO_ROOT, stdout=subprocess.PIPE, start_new_session=True
    )
    child_pid = None
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == b"ready"  # exec'd, its SIGTERM handler installed
        assert b"trainers.deathsig" not in Path(f"/proc/{child_pid}/cmdline").read_bytes()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(lambda: _gone(child_pid), timeout=10, interval=0.05, message="the child outlived its parent")
        assert marker.exists()  # SIGTERM, handled: runstack's children may stop cleanly
    finally:
        _kill_group(parent.pid)
        if child_pid is not None:
            _kill_group(child_pid)
        parent.wait(timeout=10)
