"""Schedules on the embedded default (`make run` on a bare laptop): SQLite (WAL), kombu's filesystem broker and
an MLflow server with a SQLite store, all under a fresh var/ dir, driven as a user would, through the REST API.

`manage.py runstack` starts MLflow, the web, two workers (gpu, cpu) and a beat; the test starts a second `celery
beat` on the same SQLite database. Then: an interval schedule of 3 s fires runs that succeed, one run per window
and no window twice although both beats send the tick (SQLite has no row locks: the unique (schedule, window)
key decides); two uploads of a bound dataset inside the debounce start exactly one run; windows that come while
a run trains are handled then; and a local receiver gets the runs' `run.succeeded` webhooks, signed, from the
embedded worker. Every process stops at the end, and on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from refinery.core.management.commands.runstack import _with_death_signal
from refinery.notifications.signing import signature_verify
from tests.conftest import REPO_ROOT, free_port
from tests.helpers import read_tail, wait_until
from tests.integration.test_embedded_stack import SERVICE_ENV, _alive, _descendants
from tests.notifications.receiver import Receiver

pytestmark = pytest.mark.integration

INTERVAL = 3  # seconds between the interval schedule's windows
DEBOUNCE = 4  # seconds the dataset schedule waits after the newest upload
TICK_SENT = "Sending due task refinery: fire schedules"


@dataclass
class Stack:
    var: Path
    env: dict
    base: str
    token: str
    logs: Path
    beat_logs: tuple[Path, Path]

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, f"{self.base}/api/v1{path}", timeout=30, headers={"Authorization": f"Bearer {self.token}"}, **kwargs
        )

    def ok(self, method: str, path: str, expected: int = 200, **kwargs):
        response = self.api(method, path, **kwargs)
        assert response.status_code == expected, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json() if response.content else None

    def tails(self) -> str:
        logs = sorted(self.logs.glob("*.log")) + [self.beat_logs[1]]
        return "\n".join(f"--- {p.name}\n{read_tail(p, 25)}" for p in logs)


def _stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGINT the process (runstack stops its children), SIGKILL its group if it is still there."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _start(argv: list[str], *, env: dict, log: Path) -> subprocess.Popen:
    """In a session of its own (Ctrl-C in the terminal reaches pytest only, which stops it), and SIGTERMed by
    Linux should pytest itself die without cleaning up (runstack's own shim)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            _with_death_signal(argv),
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _manage(*args: str, env: dict, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}: {result.returncode}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`manage.py runstack --no-demo` on a fresh var dir, the demo seeded without its run, an API token, and a
    second beat beside runstack's. Stops everything (runstack's children, the second beat) at the end."""
    root = tmp_path_factory.mktemp("embedded-schedules")
    var, logs = root / "var", root / "logs"
    logs.mkdir()
    # Nothing of the test session's services (PostgreSQL, Redis, the session's MLflow and model roots).
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV + ("REFINERY_MODEL_ROOTS",)}
    env.update(
        {
            "REFINERY_VAR_DIR": str(var),
            "NO_COLOR": "1",
            "PYTHONPATH": str(REPO_ROOT / "platform"),
            "REFINERY_SCHEDULE_TICK_SECONDS": "1",
            "REFINERY_NOTIFY_POLL_SECONDS": "1",
            "REFINERY_WEBHOOK_ALLOW_PRIVATE": "true",
            "REFINERY_STOP_TIMEOUT": "10",
        }
    )
    web_port, mlflow_port = free_port(), free_port()
    runstack_log = logs / "runstack-console.log"
    started = time.monotonic()
    runstack = _start(
        [
            sys.executable,
            "manage.py",
            "runstack",
            "--no-demo",
            "--web-port",
            str(web_port),
            "--mlflow-port",
            str(mlflow_port),
        ],
        env=env,
        log=runstack_log,
    )
    beat: subprocess.Popen | None = None
    children: set[int] = set()
    try:

        def console(text: str) -> bool:
            if runstack.poll() is not None:
                raise AssertionError(f"runstack exited {runstack.returncode}:\n{read_tail(runstack_log, 60)}")
            return text in runstack_log.read_text(errors="replace")

        # Migrated once runstack starts its first child: seed the demo (no demo run) while the rest starts.
        wait_until(lambda: console("runstack: starting mlflow"), timeout=120, interval=0.3, message="migrations")
        child_env = {
            **env,
            "DJANGO_SETTINGS_MODULE": "refinery.settings.base",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        }
        _manage("seed_demo", "--no-run", env=child_env)
        wait_until(
            lambda: console("Refinery is running"),
            timeout=180,
            interval=0.5,
            message=lambda: f"the banner:\n{read_tail(runstack_log, 60)}",
        )
        children = set(_descendants(runstack.pid))
        token = _manage("api_token", "demo", env=child_env).strip()
        # A second beat on the same SQLite database, the same command runstack starts.
        beat_log = logs / "beat-2.log"
        beat = _start(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "jobs.app",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(var / "celerybeat-schedule-2"),
            ],
            env=child_env,
            log=beat_log,
        )
        runstack_beat = var / "logs" / "beat.log"
        wait_until(
            lambda: all(TICK_SENT in p.read_text(errors="replace") for p in (beat_log, runstack_beat)),
            timeout=90,
            interval=0.3,
            message=lambda: f"the beats send no tick:\n{read_tail(beat_log)}",
        )
        print(f"\nembedded stack up in {time.monotonic() - started:.0f}s")
        yield Stack(
            var=var,
            env=child_env,
            base=f"http://127.0.0.1:{web_port}",
            token=token,
            logs=var / "logs",
            beat_logs=(runstack_beat, beat_log),
        )
    finally:
        if beat is not None:
            _stop_group(beat)
        children |= set(_descendants(runstack.pid))
        _stop_group(runstack, grace=60)
        survivors = [pid for pid in children if _alive(pid)]
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
    assert runstack.returncode is not None and not survivors, f"left running: {survivors}"


def _team_setup(stack: Stack) -> dict:
    """The demo's tiny model and addition data, a one-stage pipeline (2 SFT steps) reading them."""
    datasets = {d["name"]: d for d in stack.ok("GET", "/datasets")}
    model = next(m for m in stack.ok("GET", "/base-models") if m["name"] == "tiny-llama-demo")
    pipeline = stack.ok(
        "POST",
        "/pipelines",
        201,
        json={
            "name": "tiny-sft",
            "base_model_id": model["id"],
            "spec": {
                "seed": 1,
                "stages": [
                    {
                        "name": "sft",
                        "method": "sft",
                        "dataset_id": datasets["addition-train"]["id"],
                        "config": {"max_steps": 2, "logging_steps": 1, "save_steps": 1000},
                        "adapter": {"type": "none"},
                    }
                ],
            },
        },
    )
    return {"pipeline": pipeline, "train": datasets["addition-train"]}


def _ticks(stack: Stack, schedule_id: int) -> list[dict]:
    return stack.ok("GET", f"/schedules/{schedule_id}/ticks?limit=500")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_schedules_fire_once_per_window_on_sqlite_and_the_filesystem_broker(stack):
    started = time.monotonic()
    team = _team_setup(stack)
    pipeline, train = team["pipeline"], team["train"]
    receiver = Receiver().start()
    try:
        hook = stack.ok("POST", "/webhooks", 201, json={"url": receiver.url, "kinds": ["run.succeeded", "run.failed"]})

        # 1. An interval schedule of 3 s, with both beats sending the tick every second.
        every = stack.ok(
            "POST",
            "/schedules",
            201,
            json={
                "name": "every-3s",
                "pipeline_id": pipeline["id"],
                "trigger": "interval",
                "interval_seconds": INTERVAL,
            },
        )

        # 2. A dataset schedule on the training data; two uploads 1 s apart, inside the 4 s debounce.
        on_data = stack.ok(
            "POST",
            "/schedules",
            201,
            json={
                "name": "on-new-data",
                "pipeline_id": pipeline["id"],
                "trigger": "dataset",
                "debounce_seconds": DEBOUNCE,
                "bindings": {str(train["id"]): "latest"},
            },
        )
        uploads = []
        for extra in (1, 2):
            rows = [
                {"prompt": f"{a}+{b}=", "completion": str(a + b)}
                for a in range(10)
                for b in range(10)
                if (a * 10 + b) % 5 != extra
            ]
            body = "".join(json.dumps(r) + "\n" for r in rows).encode()
            uploads.append(
                stack.ok(
                    "POST",
                    "/datasets",
                    201,
                    data={"name": "addition-train", "kind": train["kind"]},
                    files={"file": (f"train-{extra}.jsonl", body, "application/jsonl")},
                )
            )
            time.sleep(1)
        assert [u["version"] for u in uploads] == [2, 3]

        def fired(schedule: dict, count: int) -> list[dict] | None:
            runs = {r["number"]: r for r in stack.ok("GET", "/runs?limit=200")}
            failed = [r for r in runs.values() if r["status"] in ("failed", "canceled")]
            assert not failed, f"a scheduled run {failed[0]['status']}: {failed[0]['error']}\n{stack.tails()}"
            ticks = [t for t in _ticks(stack, schedule["id"]) if t["run"] is not None]
            done = [t for t in ticks if runs[t["run"]]["status"] == "succeeded"]
            return done if len(done) >= count else None

        wait_until(
            lambda: fired(on_data, 1),
            timeout=120,
            interval=0.5,
            message=lambda: f"no dataset run succeeded:\n{_ticks(stack, on_data['id'])}\n{stack.tails()}",
        )
        wait_until(
            lambda: fired(every, 2),
            timeout=150,
            interval=0.5,
            message=lambda: f"no two interval runs succeeded:\n{_ticks(stack, every['id'])}\n{stack.tails()}",
        )
        stack.ok("POST", f"/schedules/{every['id']}/pause")
        time.sleep(3)  # a pass that read the schedule before the pause may still fire a window
        wait_until(
            lambda: all(r["status"] in ("succeeded", "failed", "canceled") for r in stack.ok("GET", "/runs?limit=200")),
            timeout=120,
            interval=0.5,
            message=lambda: f"runs still going:\n{stack.tails()}",
        )

        runs = {r["number"]: r for r in stack.ok("GET", "/runs?limit=200")}
        assert all(r["status"] == "succeeded" for r in runs.values()), runs

        # Interval: every window once (both beats sent the tick many times), on the 3 s grid; one run per fired
        # window and no other run.
        ticks = _ticks(stack, every["id"])
        windows = [_at(t["window"]) for t in ticks]
        assert len(windows) == len(set(windows)), windows
        created = _at(every["created_at"])
        assert all((w - created) % timedelta(seconds=INTERVAL) == timedelta(0) for w in windows), windows
        fired_ticks = [t for t in ticks if t["outcome"] == "fired"]
        assert {t["outcome"] for t in ticks} <= {"fired", "skipped"}, ticks
        assert all("is still" in t["reason"] for t in ticks if t["outcome"] == "skipped"), ticks
        interval_runs = [t["run"] for t in fired_ticks]
        assert len(interval_runs) == len(set(interval_runs)) >= 2 and None not in interval_runs, ticks
        # Windows that came while a run was training were handled then (skipped, naming it), by the cpu worker:
        # the schedule does not wait for the training worker to be free.
        during = [
            t
            for t in ticks
            if t["outcome"] == "skipped"
            and any(
                f"run #{n} is still running" in t["reason"]
                and runs[n]["started_at"]
                and _at(runs[n]["started_at"]) <= _at(t["created_at"]) <= _at(runs[n]["finished_at"])
                for n in interval_runs
            )
        ]
        assert during, ticks
        for log in stack.beat_logs:  # both beats kept sending the tick, about once a second
            assert log.read_text(errors="replace").count(TICK_SENT) >= 5, log

        # Dataset: two uploads inside the debounce, one window (the newest upload + 4 s), one run, on version 3.
        data_ticks = _ticks(stack, on_data["id"])
        assert [(t["outcome"], t["manual"]) for t in data_ticks] == [("fired", False)], data_ticks
        newest = _at(uploads[1]["created_at"]).replace(microsecond=0)
        assert abs(_at(data_ticks[0]["window"]) - (newest + timedelta(seconds=DEBOUNCE))) <= timedelta(seconds=1)
        late = (_at(data_ticks[0]["created_at"]) - _at(data_ticks[0]["window"])).total_seconds()
        assert late < 5, f"the dataset window fired {late:.1f}s late"  # beat ticks every second
        data_run = runs[data_ticks[0]["run"]]
        read = data_run["snapshot"]["stages"][0]["train_data"]
        assert (read["version"], read["version_id"]) == (3, uploads[1]["id"]), read
        assert set(runs) == set(interval_runs) | {data_run["number"]}  # nothing else started a run

        # Webhooks: each run's run.succeeded, signed with the endpoint's secret, sent by the embedded worker.
        def delivered() -> dict[int, object] | None:
            got = {}
            for request in list(receiver.requests):
                body = json.loads(request.body)
                if body["kind"] == "run.succeeded":
                    got[body["data"]["run"]["number"]] = request
            return got if set(got) >= set(runs) else None

        got = wait_until(
            delivered,
            timeout=30,
            interval=0.5,
            message=lambda: f"webhooks: {[json.loads(r.body)['kind'] for r in receiver.requests]}",
        )
        for number, request in got.items():
            headers = {k.lower(): v for k, v in request.headers.items()}
            assert headers["x-refinery-event"] == "run.succeeded"
            assert signature_verify(
                secret=hook["secret"],
                timestamp=headers["x-refinery-timestamp"],
                body=request.body,
                signature=headers["x-refinery-signature"],
            )
            assert not signature_verify(
                secret=hook["secret"] + "x",
                timestamp=headers["x-refinery-timestamp"],
                body=request.body,
                signature=headers["x-refinery-signature"],
            )
        log = stack.ok("GET", f"/webhooks/{hook['id']}/deliveries")
        assert log and all(d["status"] == "succeeded" and d["status_code"] == 200 for d in log), log

        # Web, two workers and two beats wrote to one SQLite file all along: none of them ever waited in vain.
        for path in [*stack.logs.glob("*.log"), stack.beat_logs[1]]:
            text = path.read_text(errors="replace")
            assert "database is locked" not in text and "OperationalError" not in text, f"{path}:\n{read_tail(path)}"
    finally:
        receiver.stop()
    print(
        f"schedules on the embedded default: {time.monotonic() - started:.0f}s, {len(runs)} runs, "
        f"{len(ticks)} interval ticks ({len(during)} skipped while a run trained), dataset window {late:.1f}s late"
    )


def _probe_slow_receiver() -> None:
    """Run in a subprocess on the embedded settings (SQLite): one webhook to a receiver that answers after 3 s,
    sent as the cpu worker sends it, while another connection writes. Prints what it measured as JSON."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction

    from refinery.notifications.models import Delivery
    from refinery.notifications.services import deliveries_send_due, endpoint_create, notify
    from refinery.teams.models import Team
    from refinery.teams.services import team_create

    assert connection.vendor == "sqlite", connection.vendor
    call_command("migrate", verbosity=0)
    answering = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answering.set()
            time.sleep(3)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    user = get_user_model().objects.create_user("owner", password="x")
    team = team_create(name="T", owner=user)
    endpoint_create(team=team, user=user, url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    with transaction.atomic():
        notify(team=team.pk, kind="run.failed", payload={"summary": "a run failed"})
    sender = threading.Thread(target=lambda: (deliveries_send_due(), connection.close()))
    sender.start()
    answering.wait(timeout=30)
    result = {}

    def write():  # what the web, a supervisor's lease renewal or a schedule pass does meanwhile
        started = time.monotonic()
        try:
            with transaction.atomic():
                Team.objects.filter(pk=team.pk).update(name="T2")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            result["error"] = repr(exc)
        result["write_s"] = time.monotonic() - started
        connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    sender.join()
    server.shutdown()
    result["deliveries"] = list(Delivery.objects.values_list("status", "status_code"))
    print(json.dumps(result))


def test_a_slow_webhook_receiver_does_not_lock_the_sqlite_database(tmp_path):
    """The worker sends a webhook outside any transaction: on SQLite a transaction holds the one write lock,
    so a receiver taking its time (here 3 s, within the 5 s timeout) kept every other writer of the stack
    waiting, and a few such deliveries in a row made them fail with "database is locked" (busy timeout 20 s)."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV + ("REFINERY_MODEL_ROOTS",)}
    env.update(
        {
            "REFINERY_VAR_DIR": str(tmp_path / "var"),
            "DJANGO_SETTINGS_MODULE": "refinery.settings.base",
            "REFINERY_WEBHOOK_ALLOW_PRIVATE": "true",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "platform"), str(REPO_ROOT)]),
        }
    )
    (tmp_path / "var").mkdir()
    code = (
        "import django; django.setup(); "
        "from tests.integration.test_schedules_embedded import _probe_slow_receiver; _probe_slow_receiver()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["deliveries"] == [["succeeded", 200]], measured
    assert "error" not in measured and measured["write_s"] < 1.5, measured  # it waited ~3 s for the receiver
