"""Shared fixtures. Keep them grouped by what they stand up:

1. Session isolation (autouse): datasets and work dirs under a tmp dir; Redis keys under
   a per-session prefix, so parallel sessions and leftovers never meet.
2. Real services: `mlflow_server` (an `mlflow server` subprocess), `celery_worker_process`
   (a `celery worker` subprocess on the test database and the session's Redis prefix).
3. Pipelines: `make_pipeline` (rows for the state machine, no real model), `demo_kit` (the
   trainers' offline tiny Llama + addition data, built once) and `demo_pipeline` (rows for a
   pipeline that really trains on it).
4. Wake-ups: `sent_stages` records `jobs.run_stage` sends instead of reaching the broker, so a
   test that calls the task function itself never races a worker for the same stage.
5. The web side (defined in tests/fixtures.py, imported here): users `alice` (team Alpha), `bob`
   (team Beta), `team`, `viewer`, `browser_client`, `api` / `bob_api` (ApiClient with a token),
   `dataset_dir`, `tiny_model_dir`.

Factories live in tests/factories.py, plain helpers in tests/helpers.py. Tests whose rows a
separate process (worker, supervisor thread) must see use `transactional_db`.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures import (  # noqa: F401 - fixtures for every test folder
    alice,
    api,
    bob,
    bob_api,
    browser_client,
    dataset_dir,
    team,
    tiny_model_dir,
    viewer,
)
from tests.helpers import read_tail, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent

# tests/chaos restart their own PostgreSQL and Redis: only `python -m tests.chaos.launch` runs them.
collect_ignore = [] if os.environ.get("REFINERY_CHAOS_RUN") else ["chaos"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect `chaos` tests named on the command line (collect_ignore skips only what pytest finds itself)."""
    if os.environ.get("REFINERY_CHAOS_RUN"):
        return
    chaos = [item for item in items if item.get_closest_marker("chaos") is not None]
    if chaos:
        config.hook.pytest_deselected(items=chaos)
        items[:] = [item for item in items if item.get_closest_marker("chaos") is None]


# --- 1. session isolation -------------------------------------------------------------------

# Trainer subprocesses (started by supervisors and workers) inherit these: one intra-op thread
# is faster for the tiny demo model and steadier on a small shared machine; no model hub calls.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Every Redis key this session's producer and worker touch starts with this prefix (kombu's
# global_keyprefix; see settings.base). Set before Django settings are read where possible,
# and patched into the Celery app by `_isolated_broker` otherwise.
BROKER_KEYPREFIX = f"refinery-test:{os.getpid()}:{secrets.token_hex(3)}:"
os.environ["REFINERY_BROKER_KEYPREFIX"] = BROKER_KEYPREFIX


def _redis_client():
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=5)


def _delete_keys(client, pattern: str) -> int:
    keys = list(client.scan_iter(match=pattern, count=500))
    return client.delete(*keys) if keys else 0


def _sweep_dead_sessions(client) -> None:
    """Delete the keys of earlier test sessions on this host whose process is gone."""
    dead = set()
    for key in client.scan_iter(match="refinery-test:*", count=500):
        parts = key.decode(errors="replace").split(":")
        if len(parts) > 2 and parts[1].isdigit() and int(parts[1]) != os.getpid():
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                dead.add(f"{parts[0]}:{parts[1]}:{parts[2]}:")
            except PermissionError:
                pass
    for prefix in dead:
        _delete_keys(client, prefix + "*")


SHARED_MODELS = "shared-models"  # under the session's var dir: a model root of every team


@pytest.fixture(scope="session", autouse=True)
def _isolated_paths(tmp_path_factory):
    """Datasets, work dirs, checkpoints and the embedded var dir of this session live in a tmp dir.

    Model roots: each team's own `var/models/<team id>`, and `var/shared-models` (SHARED_MODELS), where the
    demo kit and the web tests' tiny model live, readable by every team as an operator's shared folder."""
    from django.conf import settings

    var = tmp_path_factory.mktemp("var")
    roots = [str(var / "models" / "{team}"), str(var / SHARED_MODELS)]
    paths = {
        "VAR_DIR": var,
        "REFINERY_DATASET_DIR": var / "datasets",
        "REFINERY_WORK_DIR": var / "work",
        "REFINERY_CHECKPOINT_DIR": var / "checkpoints",
        "REFINERY_MODEL_ROOTS": roots,
    }
    saved = {k: getattr(settings, k) for k in paths}
    for key, value in paths.items():
        setattr(settings, key, value)
    env = {"REFINERY_VAR_DIR": str(var), "REFINERY_MODEL_ROOTS": os.pathsep.join(roots)}
    saved_env = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # subprocesses (worker) derive the same dirs from them
    yield var
    for key, value in saved.items():
        setattr(settings, key, value)
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session", autouse=True)
def _isolated_broker():
    """Route this session's Celery messages under BROKER_KEYPREFIX; delete them at the end."""
    from jobs.app import app

    options = dict(app.conf.broker_transport_options or {})
    if str(app.conf.broker_url or "").startswith(("redis://", "rediss://")):
        options["global_keyprefix"] = BROKER_KEYPREFIX
        app.conf.broker_transport_options = options
    yield BROKER_KEYPREFIX
    if "global_keyprefix" in options:
        try:
            client = _redis_client()
            _delete_keys(client, BROKER_KEYPREFIX + "*")
            _sweep_dead_sessions(client)
        except Exception:  # noqa: BLE001 - Redis down: nothing of ours is left in it either
            pass


# --- 2. real services -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    proc: subprocess.Popen
    log_path: Path
    url: str = ""

    def log_tail(self, lines: int = 40) -> str:
        return read_tail(self.log_path, lines)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group we started, SIGKILL what is left after `grace` seconds."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers: pool children, trainers
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)


def _start(cmd: list[str], *, log_path: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    log_file = open(log_path, "wb")  # noqa: SIM115 - the child keeps writing after we return
    try:
        return subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        log_file.close()


def mlflow_server_command(root: Path, port: int) -> list[str]:
    """`mlflow server` with a SQLite store and proxied artifacts under `root`."""
    return [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def mlflow_server_env() -> dict:
    # MLflow 3 also starts a job runner and 7 huey consumers by default: not needed to track runs.
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def celery_worker_command(name: str) -> list[str]:
    """A Celery worker on queues gpu and cpu, one prefork process, as the tests run it."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "jobs.app",
        "worker",
        "-Q",
        "gpu,cpu",
        "--concurrency",
        "1",
        "--pool",
        "prefork",
        "--prefetch-multiplier",
        "1",
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "INFO",
    ]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, proxied artifacts in a tmp dir) for the session.

    Points settings.MLFLOW_TRACKING_URI and the environment (for workers
    and other subprocesses) at it, and puts them back at the end.
    """
    from django.conf import settings

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServiceProcess(
        _start(mlflow_server_command(root, port), log_path=root / "server.log", env=mlflow_server_env(), cwd=root),
        root / "server.log",
        url,
    )

    def healthy() -> bool:
        if server.proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(
            healthy, timeout=120, interval=0.5, message=lambda: f"mlflow server not healthy:\n{server.log_tail()}"
        )
    except BaseException:
        server.stop()
        raise
    saved = settings.MLFLOW_TRACKING_URI
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    settings.MLFLOW_TRACKING_URI = url
    os.environ["MLFLOW_TRACKING_URI"] = url
    yield server
    settings.MLFLOW_TRACKING_URI = saved
    if saved_env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved_env
    server.stop()


def database_url_for_subprocess() -> str:
    """A DATABASE_URL for the test database pytest-django created (for worker subprocesses)."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup, django_db_blocker, mlflow_server, _isolated_paths, _isolated_broker, tmp_path_factory
):
    """A real Celery worker (`-Q gpu,cpu`, prefork, concurrency 1) on Redis and the test database.

    Tests that use it must use `transactional_db`, so that the worker sees their rows.
    """
    from django.conf import settings

    if not settings.DATABASES["default"]["ENGINE"].endswith(("postgresql", "postgis")):
        pytest.fail("the worker fixture needs the PostgreSQL test database (refinery.settings.test)")
    redis_client = _redis_client()
    _sweep_dead_sessions(redis_client)  # leftovers of crashed sessions on this host
    _delete_keys(redis_client, _isolated_broker + "*")  # start from an empty broker
    root = tmp_path_factory.mktemp("worker")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "refinery.settings.test",
        "DATABASE_URL": database_url_for_subprocess(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "REFINERY_BROKER_KEYPREFIX": _isolated_broker,
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "REFINERY_VAR_DIR": str(_isolated_paths),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
    }
    worker = start_celery_worker(f"pytest-{os.getpid()}", env=env, root=root)
    worker.env = env  # for tests that start a second worker beside it (start_celery_worker)
    yield worker
    worker.stop(grace=15)


def start_celery_worker(name: str, *, env: dict, root: Path) -> ServiceProcess:
    """Start a Celery worker (celery_worker_command) and wait until it is ready."""
    log_path = root / f"{name}.log"
    worker = ServiceProcess(_start(celery_worker_command(name), log_path=log_path, env=env, cwd=REPO_ROOT), log_path)

    def ready() -> bool:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        return " ready." in worker.log_path.read_text(errors="replace")

    try:
        wait_until(ready, timeout=90, interval=0.5, message=lambda: f"celery worker not ready:\n{worker.log_tail()}")
    except BaseException:
        worker.stop()
        raise
    return worker


# --- 3. pipelines ---------------------------------------------------------------------------


@pytest.fixture
def make_pipeline():
    """make_pipeline(("a", "base"), ("b", "a")) -> a Pipeline whose stage b trains on a's output.

    The base model path does not exist: these pipelines are for the state machine, not for training.
    """
    from tests.factories import BaseModelFactory, DatasetVersionFactory, PipelineFactory, TeamFactory, UserFactory

    def make(*stages: tuple[str, str], seed: int = 3):
        user = UserFactory()
        team = TeamFactory(members=[user])
        version = DatasetVersionFactory(dataset__team=team)
        specs = [
            {
                "name": name,
                "method": "sft",
                "config": {"max_steps": 2},
                "adapter": {"type": "none"},
                "dataset_id": version.dataset_id,
                "input": source,
            }
            for name, source in stages
        ]
        return PipelineFactory(
            team=team, base_model=BaseModelFactory(team=team), created_by=user, stages=specs, seed=seed
        )

    return make


@pytest.fixture(scope="session")
def demo_kit(_isolated_paths) -> dict:
    """`python -m trainers demo --out DIR`, once: {"model": dir, "data": {name: file}, "kinds": {...}}.

    Built in the shared model root, so that every test team may register its model."""
    out = _isolated_paths / SHARED_MODELS / "demo-kit"
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        pytest.fail(f"building the demo kit failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


# Small enough that a stage trains in a couple of seconds on a CPU, long enough to see the loss fall.
QUICK_SFT = {"max_steps": 16, "logging_steps": 1, "save_steps": 1000, "learning_rate": 3e-3}


@pytest.fixture
def demo_pipeline(demo_kit):
    """Build rows for a runnable pipeline on the demo kit.

        pipeline = demo_pipeline({"name": "sft", "method": "sft"},
                                 {"name": "lora", "method": "sft", "input": "sft", "adapter": {"type": "lora"}})

    Each stage defaults to full SFT (adapter none) with QUICK_SFT on the kit's prompt/completion
    addition data; give "config" to override single fields, "data" to name another kit file
    ("chat", "eval", ...), "eval_data" for its eval set, "inputs" for a merge; merge/evaluate/export stages
    get a dataset only when given "data". On the pipeline: "model_path" to break the base model, "retention"
    (a kit file name) for the retention set, "auto_evaluate". The test picks `db` or `transactional_db`.
    """
    from tests.factories import (
        BaseModelFactory,
        DatasetVersionFactory,
        PipelineFactory,
        TeamFactory,
        UserFactory,
    )

    def make(
        *stages: dict,
        model_path: str | None = None,
        seed: int = 7,
        name: str | None = None,
        retention: str | None = None,
        auto_evaluate: bool = False,
    ):
        user = UserFactory()
        team = TeamFactory(members=[user])
        base = BaseModelFactory(team=team, name="tiny-llama", name_or_path=model_path or demo_kit["model"])
        datasets: dict[str, int] = {}

        def dataset_id(key: str) -> int:
            if key not in datasets:
                datasets[key] = DatasetVersionFactory(
                    dataset__team=team,
                    dataset__name=f"addition-{key}",
                    dataset__kind=demo_kit["kinds"][key],
                    source=Path(demo_kit["data"][key]),
                ).dataset_id
            return datasets[key]

        from trainers.catalog import METHODS

        specs = []
        for i, stage in enumerate(stages or ({"name": "sft", "method": "sft"},)):
            method = METHODS[stage.get("method", "sft")]
            spec = {
                "name": stage.get("name", f"stage-{i + 1}"),
                "method": method.name,
                # Training stages get QUICK_SFT; merge/evaluate/export stages only what the test gives.
                "config": {**QUICK_SFT, **stage.get("config", {})} if method.trains else stage.get("config", {}),
                "adapter": stage.get("adapter", {"type": "none"}) if method.uses_adapter else None,
                "dataset_id": dataset_id(stage.get("data", "train")) if method.trains or "data" in stage else None,
                "input": stage.get("input", "base"),
            }
            if "eval_data" in stage:
                spec["eval_dataset_id"] = dataset_id(stage["eval_data"])
            if "inputs" in stage:
                spec["inputs"] = stage["inputs"]
            specs.append(spec)
        extra = {"name": name} if name else {}
        pipeline = PipelineFactory(
            team=team, base_model=base, created_by=user, stages=specs, seed=seed, auto_evaluate=auto_evaluate, **extra
        )
        if retention:
            pipeline.spec["retention_dataset_id"] = dataset_id(retention)
            pipeline.save()
        return pipeline

    return make


# --- 4. wake-ups ----------------------------------------------------------------------------


@pytest.fixture
def sent_stages(monkeypatch) -> list[int]:
    """The stage ids `jobs.run_stage` was sent for, recorded instead of sent to the broker."""
    from refinery.runs.services import dispatch

    sent: list[int] = []
    monkeypatch.setattr(dispatch, "send_run_stage", sent.append)
    return sent


@pytest.fixture
def sent_notifications(monkeypatch) -> list[bool]:
    """`jobs.deliver_notifications` wake-ups, recorded instead of sent to the broker (a worker of this
    session must not send a test's webhooks anywhere)."""
    from refinery.notifications import dispatch

    sent: list[bool] = []
    monkeypatch.setattr(dispatch, "send_deliver_notifications", lambda: sent.append(True))
    return sent


@pytest.fixture
def webhook_receiver():
    """A real HTTP server on 127.0.0.1 that records webhook POSTs (tests.notifications.receiver)."""
    from tests.notifications.receiver import Receiver

    receiver = Receiver().start()
    yield receiver
    receiver.stop()
