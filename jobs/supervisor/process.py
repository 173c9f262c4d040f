"""The trainer process: start it, signal it, make it die with its supervisor, clean up after it.

`python -m trainers run spec.json --parent-pid <this process>` in its own process group (so that a
signal reaches its data loaders and launchers too), stdout a pipe (the events), stderr appended to
trainer.log. The trainer itself asks Linux for SIGKILL when this process dies (trainers.deathsig):
with nobody reading its events a trainer cannot stop gracefully, and the next attempt resumes from
the newest complete checkpoint. Nothing runs between fork and exec: the heartbeat thread is
already running when the trainer starts, and `preexec_fn` is unsafe with threads.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings

log = logging.getLogger(__name__)

CODE_ROOT = Path(__file__).resolve().parents[2]  # holds the `trainers` package
EXIT_CANCELED = 3
KILL_WAIT_SECONDS = 10


def trainer_command(spec_path: Path) -> list[str]:
    python = settings.REFINERY_TRAINER_PYTHON or sys.executable
    return [python, "-m", "trainers", "run", str(spec_path), "--parent-pid", str(os.getpid())]


class TrainerProcess:
    """One trainer subprocess, the leader of its own process group."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.killed = False  # SIGKILLed by us (after the grace period, as hung, or on the way out)

    @classmethod
    def start(cls, *, spec_path: Path, work_dir: Path, log_path: Path, env: dict[str, str]) -> TrainerProcess:
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                trainer_command(spec_path),
                stdout=subprocess.PIPE,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                cwd=work_dir,
                env=env,
                start_new_session=True,
            )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def args(self) -> list[str]:
        return list(self.proc.args)  # type: ignore[arg-type]

    @property
    def stdout(self):
        return self.proc.stdout

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Signal the trainer's whole process group (nothing when the trainer has exited)."""
        if not self.running():
            return
        try:
            os.killpg(self.proc.pid, sig)  # the trainer leads its own process group
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the group and wait for the trainer to be gone."""
        if not self.running():
            return
        self.signal(signal.SIGKILL)
        self.killed = True
        try:
            self.proc.wait(timeout=KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("trainer pid %s survived SIGKILL", self.proc.pid)

    def kill_stragglers(self) -> None:
        """Once the trainer is gone, kill what it left in its process group (data loaders, launchers)
        so nothing keeps holding the GPU or the events pipe."""
        if not self.running():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is empty: the usual case
