"""`make run`'s embedded default, end to end: SQLite (WAL), kombu's filesystem broker and an
MLflow server with a SQLite store, all under a fresh var/ dir. `manage.py runstack` seeds the
demo and starts the demo run, which must succeed within 2 minutes; Ctrl-C stops every process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest

from tests.conftest import REPO_ROOT, free_port
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

# Everything the test session points at real services; the embedded stack must use none of it.
SERVICE_ENV = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "MLFLOW_TRACKING_URI",
    "DJANGO_SETTINGS_MODULE",
    "REFINERY_BROKER_KEYPREFIX",
    "REFINERY_VAR_DIR",
)


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(out[::2], out[1::2]):
        children.setdefault(int(parent), []).append(int(child))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = open(f"/proc/{pid}/stat").read() if os.path.exists(f"/proc/{pid}/stat") else ""
    return ") Z " not in stat  # a zombie is dead


def test_runstack_embedded_demo_run_succeeds_and_ctrl_c_stops_everything(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_ENV}
    env.update({"REFINERY_VAR_DIR": str(var), "NO_COLOR": "1", "PYTHONPATH": str(REPO_ROOT / "platform")})
    web_port, mlflow_port = free_port(), free_port()
    log = open(tmp_path / "runstack.log", "wb")
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "runstack", "--web-port", str(web_port), "--mlflow-port", str(mlflow_port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{web_port}"
    try:
        token = None

        def api_ready():
            nonlocal token
            if stack.poll() is not None:
                raise AssertionError("runstack exited:\n" + (tmp_path / "runstack.log").read_text()[-3000:])
            if not (var / "refinery.sqlite3").exists():
                return False
            result = subprocess.run(
                [sys.executable, "manage.py", "api_token", "demo"],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            token = result.stdout.strip() if result.returncode == 0 else None
            return bool(token)

        wait_until(api_ready, timeout=180, interval=2, message="demo user")
        started = time.monotonic()

        def demo_run():
            request = urllib.request.Request(f"{base}/api/v1/runs/1", headers={"Authorization": f"Bearer {token}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    run = json.load(response)
            except OSError:
                return None
            if run["status"] in ("failed", "canceled"):
                raise AssertionError(
                    f"demo run {run['status']}: {run['error']}\n" + (tmp_path / "runstack.log").read_text()[-3000:]
                )
            return run if run["status"] == "succeeded" else None

        run = wait_until(demo_run, timeout=240, interval=2, message="demo run succeeded")
        elapsed = time.monotonic() - started

        # DEBUG off by default (the banner says so); static files and the API docs' Swagger UI are
        # served by gunicorn all the same, and an unknown page is the friendly 404.
        def banner_printed():
            text = (tmp_path / "runstack.log").read_text()
            return text if "Refinery is running" in text else None

        banner = wait_until(banner_printed, timeout=60, interval=1, message="the banner")
        assert "DEBUG off" in banner and "development mode: DEBUG on" not in banner
        for path in (
            "/static/css/app.css",
            "/static/vendor/htmx.min.js",
            "/static/vendor/swagger-ui/swagger-ui-bundle.js",
            "/api/v1/docs",
        ):
            with urllib.request.urlopen(f"{base}{path}", timeout=10) as response:
                assert response.status == 200, path
        try:
            urllib.request.urlopen(f"{base}/no/such/page/", timeout=10)
        except urllib.error.HTTPError as missing:
            body = missing.read().decode()
            assert missing.code == 404 and "Page not found" in body and "URLconf" not in body
        else:
            raise AssertionError("an unknown page answered 200")
        # Two SFT stages, then the automatic evaluation of the final model on the held-out sums.
        assert [(s["name"], s["status"]) for s in run["stages"]] == [
            ("sft-full", "succeeded"),
            ("sft-lora", "succeeded"),
            ("evaluate-sft-lora", "succeeded"),
        ]
        target = run["stages"][2]["summary"]["target"]
        assert target["metric"] == "loss" and target["gain"] > 0, target  # better than the random base model
        assert run["mlflow_run_id"] and all(s["mlflow_run_id"] for s in run["stages"])
        loss = run["stages"][0]["metrics"]["train/loss"]
        assert loss["last"] < loss["first"] / 2
        duration = (
            datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["created_at"])
        ).total_seconds()
        assert duration < 120, f"demo run took {duration:.0f}s (budget 120s); observed {elapsed:.0f}s"
        assert (var / "refinery.sqlite3").exists() and (var / "mlflow").exists()
        assert (var / "broker").is_dir()  # messages went through kombu's filesystem transport
    finally:
        children = _descendants(stack.pid)
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            raise
    survivors = [pid for pid in children if _alive(pid)]
    assert stack.returncode is not None and not survivors, survivors
    assert children, "runstack started no processes"
