"""How much batching metrics saves: N `log_metric` calls vs `log_batch` calls of 1000 points.

    python bench/bench_mlflow_batching.py                       # starts a throwaway `mlflow server` (SQLite)
    python bench/bench_mlflow_batching.py --tracking-uri http://127.0.0.1:5000   # or measure a running one
    python bench/bench_mlflow_batching.py --calls 300 --batches 20 --batch-size 1000

Prints the time per log_metric call, per log_batch call, per point for each, and the ratio
(how many times faster one point travels in a batch). This is why the supervisor logs
through refinery.tracking.MetricBuffer: a trainer reporting 6 metrics per step at 20 steps/s
would need ~120 log_metric round trips a second, far beyond what one client can do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server writes to it until stopped
    proc = subprocess.Popen(
        [
            mlflow_cli,
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
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow server exited:\n{(root / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("mlflow server did not become healthy in 120 s")


def bench(url: str, *, calls: int, batches: int, batch_size: int) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment(f"bench-batching-{time.time_ns()}")
    run_id = client.create_run(experiment_id).info.run_id
    client.log_metric(run_id, "warmup", 0.0, step=0)  # open the connection

    single = []
    for step in range(calls):
        t0 = time.perf_counter()
        client.log_metric(run_id, "train/loss", 1.0 / (step + 1), step=step)
        single.append(time.perf_counter() - t0)

    batched = []
    now_ms = int(time.time() * 1000)
    for b in range(batches):
        points = [
            Metric("train/loss_batched", 1.0 / (i + 1), now_ms + i, b * batch_size + i) for i in range(batch_size)
        ]
        t0 = time.perf_counter()
        client.log_batch(run_id, metrics=points, synchronous=True)
        batched.append(time.perf_counter() - t0)

    assert len(client.get_metric_history(run_id, "train/loss")) == calls
    assert len(client.get_metric_history(run_id, "train/loss_batched")) == batches * batch_size

    per_call = statistics.mean(single)
    per_batch = statistics.mean(batched)
    per_point_batched = per_batch / batch_size
    print(f"server: {url}")
    print(
        f"log_metric: {calls} calls, mean {per_call * 1000:.1f} ms/call "
        f"(median {statistics.median(single) * 1000:.1f} ms) -> {1 / per_call:.0f} points/s"
    )
    print(
        f"log_batch:  {batches} calls x {batch_size} points, mean {per_batch * 1000:.0f} ms/call "
        f"(median {statistics.median(batched) * 1000:.0f} ms) -> {1 / per_point_batched:.0f} points/s"
    )
    print(
        f"{batch_size} points: {batch_size * per_call:.2f} s as log_metric calls vs {per_batch:.2f} s as one log_batch"
    )
    print(f"ratio (per point, log_metric / log_batch): {per_call / per_point_batched:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("BENCH_MLFLOW_URI", ""),
        help="an MLflow server to measure (default: start a throwaway one)",
    )
    parser.add_argument("--calls", type=int, default=200, help="log_metric calls")
    parser.add_argument("--batches", type=int, default=10, help="log_batch calls")
    parser.add_argument("--batch-size", type=int, default=1000, help="points per log_batch (MLflow allows 1000)")
    args = parser.parse_args()
    if args.tracking_uri:
        bench(args.tracking_uri, calls=args.calls, batches=args.batches, batch_size=args.batch_size)
        return
    with tempfile.TemporaryDirectory(prefix="mlflow-bench-") as tmp:
        proc, url = start_server(Path(tmp))
        try:
            bench(url, calls=args.calls, batches=args.batches, batch_size=args.batch_size)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
