"""Dashboard pages at scale: the runs list and the run page with 10,000 runs and 1,000,000 metric points.

    .venv/bin/python bench/dashboard/bench_dashboard.py                  # ~2-4 min on 2 cores
    .venv/bin/python bench/dashboard/bench_dashboard.py --runs 2000 --points 200000 --load-seconds 3
    .venv/bin/python bench/dashboard/bench_dashboard.py --keep            # keep the database to look around

It creates a PostgreSQL database of its own (refinery_bench_<pid>, on the server of DATABASE_URL, by default
the tests' postgres://postgres@127.0.0.1:5432), migrates it, seeds one team with --runs runs (pipelines of
1-3 stages with realistic snapshots, stage summaries, tags on ~30% of the runs, notes on ~20%, the newest
runs still active) and --points StageMetric points with COPY (every 100th run is a long one with 26x the
points of the others), and drops the database at the end.

Then, per page:
  server-side  the Django test client in this process (DEBUG off, persistent connection): p50/p95/max of
               --repeat requests after 3 warm-ups, and the SQL queries of one more (CaptureQueriesContext).
               Targets: p95 < 150 ms; the list's query count the same for a page of 50 rows and one of 5.
  load         gunicorn (2 sync workers, this database) on 127.0.0.1 and a threaded http.client generator
               (--concurrency connections) for --load-seconds per page: requests/s and client-side p50/p95.
               The generator shares the machine's cores with the server, so it is a floor.
Results are printed as a table and written to test-results/bench-dashboard.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT), str(HERE)]
DEFAULT_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/refinery")
TARGET_MS = 150.0

PIPELINES = [  # name, stage methods (the last stage of some is an automatic-style evaluation)
    ("sft-lora", ["sft"]),
    ("sft-dpo", ["sft", "dpo"]),
    ("sft-dpo-eval", ["sft", "dpo", "evaluate"]),
    ("grpo-math", ["sft", "grpo"]),
    ("kto-chat", ["kto", "evaluate"]),
    ("orpo", ["orpo"]),
    ("reward-model", ["reward"]),
    ("sft-eval", ["sft", "evaluate"]),
]
NAME_WORDS = [
    "baseline",
    "ablation",
    "lr-sweep",
    "rank-16",
    "rank-64",
    "nightly",
    "retry",
    "long-context",
    "math",
    "code",
    "chat",
    "distill",
    "warmup",
    "cosine",
    "packing",
    "qlora",
    "dora",
    "full",
    "seed-3",
    "v2",
]
TAGS = [
    "baseline",
    "paper",
    "candidate",
    "prod",
    "regression",
    "ablation",
    "long",
    "broken",
    "keep",
    "v2",
    "v3",
    "math",
    "code",
    "chat",
    "needs-eval",
    "promoted",
    "smoke",
    "ood",
    "safety",
    "golden",
]
NOTE_WORDS = (
    "loss diverged after warmup tokenizer mismatch fixed learning rate too high plateau reward hacking "
    "eval gain retention forgot looks good promote compare with baseline rerun on new data checkpoint "
    "memory spike gradient norm exploded cosine schedule helps rank sixteen enough"
).split()
METRIC_KEYS = ["train/loss", "train/learning_rate", "train/grad_norm", "train/mean_token_accuracy"]


# --- database -----------------------------------------------------------------------------------


def admin_connection(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True)


def create_database(url: str) -> tuple[str, str]:
    name = f"refinery_bench_{os.getpid()}"
    with admin_connection(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, urlsplit(url)._replace(path=f"/{name}").geturl()


def drop_database(url: str, name: str) -> None:
    with admin_connection(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_rows(model, rows: list[dict]) -> int:
    """COPY plain dicts (attname -> value; defaults for the rest, JSON dumped) into the model's table."""
    from django.db import connection
    from django.db.models import JSONField

    fields = [f for f in model._meta.concrete_fields if not f.primary_key or (rows and f.attname in rows[0])]
    columns = ", ".join(f'"{f.column}"' for f in fields)

    def value(field, row):
        v = row[field.attname] if field.attname in row else field.get_default()  # "" for blank text fields
        return json.dumps(v) if isinstance(field, JSONField) and v is not None else v

    with connection.cursor() as cursor:
        with cursor.cursor.copy(f'COPY "{model._meta.db_table}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row([value(f, row) for f in fields])
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{model._meta.db_table}\"', 'id'), "
            f'(SELECT COALESCE(MAX(id), 1) FROM "{model._meta.db_table}"))'
        )
    return len(rows)


# --- seeding ------------------------------------------------------------------------------------


def _summary(method: str, rng: random.Random) -> dict:
    if method == "evaluate":
        loss, base = rng.uniform(0.3, 1.5), rng.uniform(0.4, 1.6)
        return {
            "metrics": {
                "eval/loss": loss,
                "baseline/loss": base,
                "eval/accuracy": rng.random(),
                "retention/loss": rng.uniform(0.5, 1.0),
                "retention_baseline/loss": rng.uniform(0.5, 1.0),
            },
            "target": {"metric": "eval/loss", "gain": base - loss},
            "retention": {"metric": "retention/loss", "forgetting": rng.uniform(-0.05, 0.2)},
        }
    out = {
        "train/loss": rng.uniform(0.05, 2.5),
        "train/runtime": rng.uniform(30, 9000),
        "train/samples_per_second": rng.uniform(1, 200),
        "train/epoch": rng.choice([1.0, 2.0, 3.0]),
    }
    if method in ("dpo", "orpo", "kto"):
        out.update({"train/rewards/margins": rng.uniform(0, 5), "train/rewards/accuracies": rng.random()})
    if method == "grpo":
        out.update({"train/reward": rng.uniform(0, 1), "train/kl": rng.uniform(0, 0.2)})
    return out


def seed(*, runs: int, points: int, rng: random.Random) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from refinery.basemodels.models import BaseModel
    from refinery.data.models import Dataset
    from refinery.pipelines.models import Pipeline
    from refinery.runs.models import Run, RunMetric, RunNote, RunTag, StageMetric, StageRun
    from refinery.runs.selectors.summaries import run_summary_metrics
    from refinery.teams.models import Membership, Team

    t0 = time.perf_counter()
    User = get_user_model()
    team, other = Team.objects.create(name="Bench", slug="bench"), Team.objects.create(name="Other", slug="other")
    users = [User.objects.create_user(username=f"user{i}", password="x") for i in range(6)]
    for i, user in enumerate(users):
        Membership.objects.create(team=team, user=user, role="owner" if i == 0 else "member")
    models = [
        BaseModel.objects.create(team=team, name=n, source="hub", name_or_path=f"org/{n}")
        for n in ("llama-3.2-1b", "qwen2.5-0.5b", "smollm2-360m")
    ]
    datasets = [
        Dataset.objects.create(team=team, name=n, kind="prompt_completion")
        for n in ("gsm8k", "alpaca", "ultrafeedback", "code-contests", "hh-rlhf", "retention-ref")
    ]
    pipelines = []
    for i, (name, methods) in enumerate(PIPELINES):
        stages = []
        for j, method in enumerate(methods):
            dataset = datasets[(i + j) % len(datasets)]
            stages.append(
                {
                    "name": method if methods.count(method) == 1 else f"{method}-{j}",
                    "method": method,
                    "input": stages[-1]["name"] if stages else "base",
                    "dataset_id": dataset.pk,
                    "eval_dataset_id": None,
                    "config": {
                        "learning_rate": 2e-5,
                        "max_steps": 1000,
                        "per_device_train_batch_size": 8,
                        "gradient_accumulation_steps": 4,
                        "warmup_ratio": 0.03,
                        "seed": 42,
                        "lr_scheduler_type": "cosine",
                        "logging_steps": 10,
                        "save_steps": 500,
                    },
                    "adapter": {
                        "type": "lora",
                        "r": 16,
                        "alpha": 32,
                        "dropout": 0.05,
                        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                    },
                }
            )
        pipelines.append(
            Pipeline.objects.create(
                team=team,
                name=name,
                base_model=models[i % len(models)],
                spec={"seed": 42, "stages": stages},
                created_by=users[0],
            )
        )

    now = datetime.now(UTC)
    run_rows, stage_rows, metric_rows, tag_rows, note_rows, heavy, active = [], [], [], [], [], [], []
    stage_id = 0
    steps_normal = max(1, round(points / (1.25 * runs) / len(METRIC_KEYS)))
    for number in range(1, runs + 1):
        pipeline = pipelines[rng.randrange(len(pipelines))]
        model = models[pipelines.index(pipeline) % len(models)]
        created = now - timedelta(days=365) + timedelta(days=365) * (number / runs)
        status = "succeeded" if rng.random() < 0.85 else rng.choice(["failed", "canceled"])
        if number > runs - 30:
            status = rng.choice(["running", "queued", "running"])
            active.append(number)
        stages = []
        for stage in pipeline.spec["stages"]:
            ds = next(d for d in datasets if d.pk == stage["dataset_id"])
            stages.append(
                {
                    **stage,
                    "train_data": {
                        "dataset_id": ds.pk,
                        "name": ds.name,
                        "kind": ds.kind,
                        "version": 1 + number % 3,
                        "sha256": f"{number:064x}",
                        "format": "jsonl",
                        "rows": 5000,
                    },
                    "eval_data": None,
                }
            )
        snapshot = {
            "pipeline": {"id": pipeline.pk, "name": pipeline.name, "version": 1},
            "base_model": {
                "id": model.pk,
                "name": model.name,
                "source": "hub",
                "name_or_path": model.name_or_path,
                "revision": None,
            },
            "stages": stages,
            "retention_data": None,
            "seed": 42,
            "code_version": "bench",
        }
        run_rows.append(
            {
                "id": number,
                "team_id": team.pk,
                "pipeline_id": pipeline.pk,
                "number": number,
                "name": f"{pipeline.name} {rng.choice(NAME_WORDS)} {rng.choice(NAME_WORDS)}",
                "status": status,
                "snapshot": snapshot,
                "seed": 42,
                "code_version": "bench",
                "created_by_id": users[rng.randrange(len(users))].pk,
                "created_at": created,
                "started_at": created + timedelta(seconds=5),
                "finished_at": None if status in ("running", "queued") else created + timedelta(hours=2),
            }
        )
        stage_objs = []
        for j, stage in enumerate(stages):
            stage_id += 1
            st = status if status != "running" or j == len(stages) - 1 else "succeeded"
            summary = _summary(stage["method"], rng) if st == "succeeded" else {}
            stage_rows.append(
                {
                    "id": stage_id,
                    "run_id": number,
                    "index": j,
                    "name": stage["name"],
                    "method": stage["method"],
                    "status": st,
                    "spec": stage,
                    "summary": summary,
                    "total_steps": 1000,
                    "step": 1000 if st == "succeeded" else 400,
                    "started_at": created,
                    "finished_at": created + timedelta(hours=1),
                    "log_tail": "step 1000/1000 loss 0.4\n" * 20,
                }
            )
            stage_objs.append(SimpleNamespace(name=stage["name"], summary=summary))
            if j == 0:
                first_stage = stage_id
        for key, value in run_summary_metrics(
            SimpleNamespace(stages=SimpleNamespace(all=lambda s=stage_objs: s))
        ).items():
            metric_rows.append({"team_id": team.pk, "run_id": number, "key": key, "value": value})
        steps = steps_normal * 26 if number % 100 == 0 else steps_normal
        if number % 100 == 0:
            heavy.append(number)
        run_rows[-1]["_points"] = (first_stage, steps)
        if rng.random() < 0.3:
            for name in rng.sample(TAGS[:-1], rng.choice([1, 1, 2])):
                tag_rows.append({"team_id": team.pk, "run_id": number, "name": name, "created_at": created})
        if number % 2000 == 0:  # a rare tag: a handful of runs
            tag_rows.append({"team_id": team.pk, "run_id": number, "name": "golden", "created_at": created})
        if rng.random() < 0.2:
            for _ in range(rng.choice([1, 1, 2, 3])):
                note_rows.append(
                    {
                        "run_id": number,
                        "author_id": users[rng.randrange(len(users))].pk,
                        "body": " ".join(rng.choice(NOTE_WORDS) for _ in range(rng.randint(6, 30))),
                        "created_at": created + timedelta(hours=3),
                    }
                )
    # The other team: a few hundred runs, so that team scoping is not free.
    other_pipeline = Pipeline.objects.create(
        team=other,
        name="other",
        base_model=BaseModel.objects.create(team=other, name="m", source="hub", name_or_path="org/m"),
        spec={"stages": []},
    )
    for i in range(1, 201):
        run_rows.append(
            {
                "id": runs + i,
                "team_id": other.pk,
                "pipeline_id": other_pipeline.pk,
                "number": i,
                "name": f"other diverged {i}",
                "status": "succeeded",
                "snapshot": {"stages": []},
                "seed": 1,
                "code_version": "bench",
                "created_at": now,
            }
        )
    t_rows = time.perf_counter()
    points_per_run = {r["id"]: r.pop("_points") for r in run_rows if "_points" in r}
    copy_rows(Run, run_rows)
    copy_rows(StageRun, stage_rows)
    copy_rows(RunMetric, metric_rows)
    copy_rows(RunTag, tag_rows)
    copy_rows(RunNote, note_rows)

    total = 0
    with connection.cursor() as cursor:
        table = StageMetric._meta.db_table
        with cursor.cursor.copy(f"COPY {table} (stage_run_id, key, step, value, timestamp) FROM STDIN") as cp:
            for stage, steps in points_per_run.values():
                for key_index, key in enumerate(METRIC_KEYS):
                    scale = 2.0 / (key_index + 1)
                    for step in range(1, steps + 1):
                        cp.write_row((stage, key, step, scale / (1 + 0.01 * step) + 0.01 * (step % 7), 1.7e9 + step))
                total += steps * len(METRIC_KEYS)
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
    with connection.cursor() as cursor:  # what autovacuum does to a settled database: stats, visibility map
        cursor.execute("VACUUM ANALYZE")
    t_end = time.perf_counter()
    return {
        "team": team,
        "users": users,
        "pipelines": pipelines,
        "datasets": datasets,
        "models": models,
        "heavy": heavy,
        "active": active,
        "runs": runs,
        "points": total,
        "stages": len(stage_rows),
        "run_metrics": len(metric_rows),
        "tags": len(tag_rows),
        "notes": len(note_rows),
        "seed_s": round(t_end - t0, 1),
        "copy_s": round(t_end - t_rows, 1),
    }


# --- measuring ----------------------------------------------------------------------------------


def pages(data: dict) -> list[tuple[str, str, dict]]:
    """(label, url, headers) of every page measured."""
    runs, heavy = data["runs"], data["heavy"]
    typical = next(n for n in range(runs // 2, runs) if n % 100 and n not in data["active"])
    live_heavy = max(heavy)  # the newest long run, still active
    last = (runs + 49) // 50
    ds, model, user = data["datasets"][1].pk, data["models"][1].pk, data["users"][2].pk
    hx_rows = {"HX-Request": "true", "HX-Target": "run-rows"}
    hx_results = {"HX-Request": "true", "HX-Target": "run-results"}
    return [
        ("list: newest, page 1", "/runs/", {}),
        (f"list: newest, page {last} (deep)", f"/runs/?page={last}", {}),
        ("list: rare tag (5 rows)", "/runs/?tag=golden", {}),
        ("list: status+method, by name", "/runs/?status=succeeded&method=dpo&sort=name", {}),
        ("list: by metric, page 1", "/runs/?metric=sft/train/loss&sort=metric", {}),
        ("list: by metric, page 100", "/runs/?metric=sft/train/loss&sort=metric&page=100", {}),
        ("list: by gain, desc", "/runs/?metric=evaluate/gain&sort=-metric", {}),
        ("list: search notes", "/runs/?q=diverged+warmup", {}),
        ("list: search + tag", "/runs/?q=ablation&tag=baseline", {}),
        (
            "list: dataset+model+user+date",
            f"/runs/?dataset={ds}&model={model}&user={user}&from={(datetime.now(UTC) - timedelta(days=180)).date()}",
            {},
        ),
        ("list: htmx results (filter)", "/runs/?status=succeeded&sort=-metric&metric=sft/train/loss", hx_results),
        ("list: htmx rows poll", "/runs/", hx_rows),
        (f"run page #{typical} ({data['points_typical']} pts)", f"/runs/{typical}/", {}),
        (f"run page #{live_heavy} ({data['points_heavy']} pts)", f"/runs/{live_heavy}/", {}),
        (
            f"run poll #{live_heavy} (htmx run-live)",
            f"/runs/{live_heavy}/",
            {"HX-Request": "true", "HX-Target": "run-live"},
        ),
        (f"run notes panel #{typical}", f"/runs/{typical}/annotations/", {"HX-Request": "true"}),
    ]


def measure(client, url: str, headers: dict, repeat: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        response = client.get(url, headers=headers)
    if response.status_code not in (200, 286):
        return {"error": f"HTTP {response.status_code}"}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, headers=headers)
    html = response.content.decode()
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
        "max_ms": round(times[-1], 1),
        "queries": len(queries),
        "rows": html.count('<tr data-testid="run-'),
        "kb": round(len(response.content) / 1024, 1),
        "status": response.status_code,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(database_url: str, workers: int) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-dashboard-gunicorn-{os.getpid()}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "dashboard_settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT), str(HERE)]),
    }
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen(
        [
            str(gunicorn),
            "refinery.wsgi:application",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "--worker-class",
            "sync",
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited:\n{log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/accounts/login/")
            conn.getresponse().read()
            return proc, port, log
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("gunicorn did not answer in 60 s")


def load(port: int, url: str, headers: dict, *, seconds: float, concurrency: int) -> dict:
    latencies, errors, lock = [], [0], threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker():
        mine, bad = [], 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", url, headers=headers)
                response = conn.getresponse()
                response.read()
                conn.close()
                if response.status not in (200, 286):
                    bad += 1
                    continue
            except OSError:
                bad += 1
                continue
            mine.append((time.perf_counter() - t0) * 1000)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    latencies.sort()
    if not latencies:
        return {"rps": 0, "errors": errors[0]}
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "requests": len(latencies),
        "errors": errors[0],
        "p50_ms": round(statistics.median(latencies), 1),
        "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=25, help="timed requests per page (server side)")
    parser.add_argument("--load-seconds", type=float, default=6.0, help="per page under load (0: skip)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="a PostgreSQL server to create the bench database on"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    parser.add_argument("--out", default=str(ROOT / "test-results" / "bench-dashboard.json"))
    args = parser.parse_args()

    name, url = create_database(args.database_url)
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard_settings"
    server = None
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection
        from django.test import Client

        t0 = time.perf_counter()
        call_command("migrate", verbosity=0)
        print(f"database {name}: migrated in {time.perf_counter() - t0:.1f} s")
        data = seed(runs=args.runs, points=args.points, rng=random.Random(7))
        steps = max(1, round(args.points / (1.25 * args.runs) / len(METRIC_KEYS)))
        data["points_typical"], data["points_heavy"] = steps * len(METRIC_KEYS), steps * 26 * len(METRIC_KEYS)
        print(
            f"seeded {data['runs']:,} runs, {data['stages']:,} stages, {data['points']:,} metric points, "
            f"{data['run_metrics']:,} summary metrics, {data['tags']:,} tags, {data['notes']:,} notes "
            f"in {data['seed_s']} s (COPY {data['copy_s']} s)"
        )

        client = Client()
        client.force_login(data["users"][0])
        results = []
        print(
            f"\nserver side (Django test client, {args.repeat} requests after 3 warm-ups; target p95 < "
            f"{TARGET_MS:.0f} ms)"
        )
        header = f"{'page':<44} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>8} {'rows':>5} {'KB':>7}"
        print(header + "\n" + "-" * len(header))
        for label, page_url, headers in pages(data):
            row = {
                "page": label,
                "url": page_url,
                "htmx": headers.get("HX-Target", ""),
                **measure(client, page_url, headers, args.repeat),
            }
            results.append(row)
            if "error" in row:
                print(f"{label:<44} {row['error']}")
                continue
            flag = "" if row["p95_ms"] < TARGET_MS else "  over target"
            print(
                f"{label:<44} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8} {row['queries']:>8} "
                f"{row['rows']:>5} {row['kb']:>7}{flag}"
            )
        full = [r for r in results if r["page"].startswith("list:") and not r["htmx"] and "error" not in r]
        constant = len({r["queries"] for r in full}) == 1
        print(
            f"list queries per full page: {sorted({r['queries'] for r in full})} "
            f"({'constant' if constant else 'NOT constant'} for pages of {sorted({r['rows'] for r in full})} rows)"
        )

        load_results = []
        if args.load_seconds > 0:
            connection.close()
            server, port, log = start_gunicorn(url, args.workers)
            cookie = {"Cookie": f"sessionid={client.cookies['sessionid'].value}"}
            print(
                f"\nunder load (gunicorn -w {args.workers} sync on 127.0.0.1:{port}, {args.concurrency} "
                f"concurrent clients, {args.load_seconds:.0f} s per page)"
            )
            header = f"{'page':<44} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7}"
            print(header + "\n" + "-" * len(header))
            chosen = [
                p
                for p in pages(data)
                if p[0].startswith(
                    (
                        "list: newest, page 1",
                        "list: by metric, page 100",
                        "list: search notes",
                        "list: htmx rows",
                        "run page #",
                        "run poll #",
                    )
                )
            ]
            for label, page_url, headers in chosen:
                row = {
                    "page": label,
                    "url": page_url,
                    **load(
                        port, page_url, {**headers, **cookie}, seconds=args.load_seconds, concurrency=args.concurrency
                    ),
                }
                load_results.append(row)
                print(
                    f"{label:<44} {row['rps']:>8} {row.get('p50_ms', '-'):>8} {row.get('p95_ms', '-'):>8} "
                    f"{row['errors']:>7}"
                )

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "cpus": os.cpu_count(),
                    "load_average": os.getloadavg(),
                    "target_p95_ms": TARGET_MS,
                    "seed": {k: v for k, v in data.items() if isinstance(v, (int, float, str))},
                    "server_side": results,
                    "list_queries_constant": constant,
                    "under_load": load_results,
                },
                indent=2,
            )
        )
        print(f"\nwrote {out}")
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        if args.keep:
            print(f"kept the database: DATABASE_URL={url}")
        else:
            drop_database(args.database_url, name)


if __name__ == "__main__":
    main()
