"""Fixtures for the fault-injection suite: a cluster of real processes that tests may break.

`python -m tests.chaos.launch` (make chaos) runs this session on a private PostgreSQL and Redis
(tests/chaos/services.py), so a test can restart them. Here:

- `chaos_mlflow`: an MLflow server on a fixed port that a test can stop and start again;
- `cluster`: starts Celery workers and beat as subprocesses on the test database, with short
  heartbeats and leases, and kills whatever is left at the end;
- `record`: keeps a test's measurements in test-results/chaos.json (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.chaos.services import PrivateRedis
from tests.conftest import (
    REPO_ROOT,
    ServiceProcess,
    _start,
    celery_worker_command,
    database_url_for_subprocess,
    free_port,
    mlflow_server_command,
    mlflow_server_env,
)
from tests.helpers import wait_until

# Short heartbeats make every recovery fast enough to test; the proportions are the defaults'.
HEARTBEAT_SECONDS = 1
LEASE_SECONDS = 3
REDISPATCH_SECONDS = 5
RESULTS = REPO_ROOT / "test-results" / "chaos.json"


class RestartableMlflow:
    """`mlflow server` on one port; stop() and start() keep the URL, the store and the artifacts."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: ServiceProcess | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = self.root / f"server-{self.starts}.log"
        self.service = ServiceProcess(
            _start(mlflow_server_command(self.root, self.port), log_path=log, env=mlflow_server_env(), cwd=self.root),
            log,
            self.url,
        )
        wait_until(
            self.healthy,
            timeout=120,
            interval=0.3,
            message=lambda: f"mlflow server not healthy:\n{self.service.log_tail()}",
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace=10)
            self.service = None


@pytest.fixture(scope="session")
def chaos_mlflow(tmp_path_factory):
    from django.conf import settings

    server = RestartableMlflow(tmp_path_factory.mktemp("mlflow"))
    server.start()
    saved = settings.MLFLOW_TRACKING_URI
    settings.MLFLOW_TRACKING_URI = server.url
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    yield server
    settings.MLFLOW_TRACKING_URI = saved
    server.stop()


@dataclass
class Cluster:
    """Workers and beat for one test. Every process is in its own session, so a kill takes its pool too."""

    root: Path
    env: dict
    processes: list[ServiceProcess] = field(default_factory=list)

    def _spawn(self, name: str, cmd: list[str], extra_env: dict | None) -> ServiceProcess:
        env = {**self.env, **{k: str(v) for k, v in (extra_env or {}).items()}}
        log = self.root / f"{name}.log"
        service = ServiceProcess(_start(cmd, log_path=log, env=env, cwd=REPO_ROOT), log)
        self.processes.append(service)
        return service

    def start_worker(self, name: str, **extra_env) -> ServiceProcess:
        worker = self._spawn(name, celery_worker_command(name), extra_env)
        wait_until(
            lambda: self._ready(worker),
            timeout=90,
            interval=0.3,
            message=lambda: f"worker {name} not ready:\n{worker.log_tail()}",
        )
        return worker

    def start_beat(self, **extra_env) -> ServiceProcess:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "jobs.app",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(self.root / "celerybeat-schedule"),
        ]
        beat = self._spawn("beat", cmd, extra_env)
        wait_until(
            lambda: "beat: Starting" in beat.log_path.read_text(errors="replace"),
            timeout=60,
            interval=0.3,
            message=lambda: f"beat not started:\n{beat.log_tail()}",
        )
        return beat

    @staticmethod
    def _ready(worker: ServiceProcess) -> bool:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        return " ready." in worker.log_path.read_text(errors="replace")

    @staticmethod
    def kill(service: ServiceProcess) -> None:
        """kill -9 a worker and its pool (the host is gone); its trainer gets the parent-death signal."""
        os.killpg(service.proc.pid, signal.SIGKILL)
        service.proc.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.processes)

    def stop(self) -> None:
        for service in reversed(self.processes):
            service.stop(grace=10)


@pytest.fixture
def cluster(transactional_db, chaos_mlflow, _isolated_paths, _isolated_broker, tmp_path):
    from django.conf import settings

    redis = PrivateRedis.from_env()
    redis.flushall()  # nothing left from an earlier test
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "refinery.settings.test",
        "DATABASE_URL": database_url_for_subprocess(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "REFINERY_BROKER_KEYPREFIX": _isolated_broker,
        "MLFLOW_TRACKING_URI": chaos_mlflow.url,
        "REFINERY_VAR_DIR": str(_isolated_paths),
        "REFINERY_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
        "REFINERY_LEASE_SECONDS": str(LEASE_SECONDS),
        "REFINERY_REDISPATCH_SECONDS": str(REDISPATCH_SECONDS),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
    }
    env.pop("REFINERY_FAILPOINTS", None)
    group = Cluster(root=tmp_path, env=env)
    yield group
    group.stop()
    if not chaos_mlflow.healthy():  # a test that stopped it and failed before starting it again
        chaos_mlflow.start()


@pytest.fixture
def record(request):
    """record(**numbers): keep this test's measurements in test-results/chaos.json (merged by test name)."""

    def save(**numbers) -> None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(RESULTS.read_text())
        except (OSError, ValueError):
            data = {}
        data[request.node.name] = {k: round(v, 2) if isinstance(v, float) else v for k, v in numbers.items()}
        RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True))
        print(f"\n[measure] {request.node.name}: {numbers}")

    return save


def trainer_pids(spec_path: Path) -> list[int]:
    """Processes running `python -m trainers run <spec_path>`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"trainers" in argv and str(spec_path).encode() in argv:
            pids.append(int(entry.name))
    return pids


def wait_for(predicate, *, timeout: float, message: str, interval: float = 0.2):
    """wait_until that survives the test's own DB connection breaking (a restarted PostgreSQL)."""
    from django.db import InterfaceError, OperationalError, connection

    def check():
        try:
            return predicate()
        except (OperationalError, InterfaceError):
            connection.close()
            return False

    return wait_until(check, timeout=timeout, interval=interval, message=message)


def elapsed(since: float) -> float:
    return time.monotonic() - since
