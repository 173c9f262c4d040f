"""Platform vs plain TRL: the same SFT and DPO stage through Refinery's whole stack and as a plain TRL script.

    .venv/bin/python bench/bench_parity.py                    # sft 7000 steps, dpo 3200 (~8 min on 2 cores)
    .venv/bin/python bench/bench_parity.py --steps 200 --method sft     # a quick look
    .venv/bin/python bench/bench_parity.py --threads 2 --keep          # keep the logs and var/

Each method trains the demo kit's tiny Llama (`python -m trainers demo`, built offline) with
full fine-tuning, seed 42 and the method's default config except max_steps (sft on the
addition prompt/completion pairs, dpo on the addition preference pairs), twice:

* plain: bench/parity_plain_trl.py, a plain TRL script (SFTTrainer / DPOTrainer) given the
  same model, data file, seed and hyperparameters (the platform config with its defaults
  filled in), run as a subprocess. Its losses come from trainer.state.log_history.
* platform: `manage.py runstack --no-demo` in a temp var/ dir (SQLite, filesystem broker,
  MLflow server, Celery worker, gunicorn), then through /api/v1: upload the data, register
  the model, create a one-stage pipeline, start it, poll until it succeeds. Its losses are
  the stage's train/loss history in MLflow.

The plain runs go first, before the stack starts, so that the stack's idle processes do not
slow them down. Both sides get the same OMP_NUM_THREADS (--threads, default 1): the worker
passes its environment to the trainer subprocess unchanged, and the bench checks the
trainer's /proc/PID/environ while it runs.

What is timed (the table):
  platform_s  the stage row's started_at -> finished_at (API): from the worker claiming the
              stage through MLflow run creation, spec writing, the trainer subprocess (python
              start, imports, data, model, train(), save) to the outputs uploaded to MLflow and
              the row marked succeeded.
  plain_s     the plain script's subprocess, start to exit (python start, imports, data,
              model, train(), save_model).
  ratio       platform_s / plain_s; target <= 1.05 when plain_s >= 60 s.
  e2e_s       the run's created_at -> finished_at (API): from the start request through the
              queue and the stage to the run marked succeeded.
  max|dloss|  the largest |platform - plain| train/loss over the logged steps; target <= 1e-6.
And below it, per method:
  train()     the Trainer's own train_runtime on each side. The platform's is the stage's
              finished summary (train/runtime), which the API does not show, so it is read
              from the stage row in the stack's SQLite database.
  CPU seconds what each side cost the machine, which load on a shared machine does not
              inflate the way it inflates wall time: the trainer subprocess (reaped by the
              Celery worker, so read from the worker's children's CPU time) plus every other
              process of the stack meanwhile (the worker's supervisor thread that turns
              events into DB rows and MLflow batches, MLflow, the web answering the polls,
              beat), against the plain script's.

Differences between the two sides that cannot change the losses: the platform's trainer adds
its EventsCallback (events on stdout; it only reads the trainer state) and drops the
PrinterCallback; it reads the data with trainers.data (Dataset.from_list) where the plain
script calls datasets.load_dataset("json") (same rows, same order); for DPO with full
fine-tuning it passes a frozen deep copy of the model as ref_model where plain TRL loads the
reference from the same model directory (same weights).

Prints one row per method and a PASS/FAIL line per target. Exits 0 whatever the numbers;
non-zero only when something crashed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # trainers.catalog (light: no torch) for the resolved configs

PLAIN_SCRIPT = REPO / "bench" / "parity_plain_trl.py"
SEED = 42
LOSS_TOLERANCE = 1e-6
RATIO_TARGET = 1.05
MIN_STAGE_S = 60.0
DEFAULT_STEPS = {"sft": 7000, "dpo": 3200}  # ~9.6 and ~20 ms of CPU a step: plain train() >= 60 s with one thread
# Method -> (demo kit data key, dataset kind).
DATA = {"sft": ("train", "prompt_completion"), "dpo": ("prefs", "preference")}
# Anything pointing at other services, and every Refinery setting: the stack gets only what we set.
SCRUBBED = ("DATABASE_URL", "CELERY_BROKER_URL", "MLFLOW_TRACKING_URI", "MLFLOW_UI_URL", "DJANGO_SETTINGS_MODULE")
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


@dataclasses.dataclass
class Case:
    method: str
    steps: int
    overrides: dict
    config: dict  # the method config with every default filled in, as the trainer receives it
    data_path: str
    kind: str
    plain: dict = dataclasses.field(default_factory=dict)
    platform: dict = dataclasses.field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("REFINERY_")}
    env.update(OFFLINE)
    env.update({"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false", "NO_COLOR": "1"})
    return env


def resolved_config(method: str, overrides: dict, kind: str) -> dict:
    from trainers.catalog import validate_stage

    config, _, errors = validate_stage(method, overrides, {"type": "none"}, kind)
    if errors:
        raise SystemExit(f"{method}: invalid bench config {overrides}: {errors}")
    return dataclasses.asdict(config)


def build_kit(out: Path, env: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "trainers", "demo", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"building the demo kit failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def compare(platform: list[tuple[int, float]], plain: list[tuple[int, float]]) -> tuple[float, str]:
    """(max |difference| over common steps, a note when the step sets differ)."""
    a, b = dict(platform), dict(plain)
    common = sorted(set(a) & set(b))
    note = ""
    if set(a) != set(b):
        note = f"steps differ: platform {len(a)} points, plain {len(b)}, {len(common)} in common"
    if not common:
        return float("inf"), note or "no losses"
    return max(abs(a[s] - b[s]) for s in common), note


# --- plain TRL ----------------------------------------------------------------------


def run_plain(case: Case, model_dir: str, work: Path, env: dict) -> None:
    work.mkdir(parents=True)
    (work / "config.json").write_text(json.dumps(case.config))
    result_path = work / "result.json"
    cmd = [
        sys.executable,
        str(PLAIN_SCRIPT),
        "--method",
        case.method,
        "--model",
        model_dir,
        "--data",
        case.data_path,
        "--config",
        str(work / "config.json"),
        "--seed",
        str(SEED),
        "--out",
        str(work),
        "--result",
        str(result_path),
    ]
    print(f"[{case.method}] plain TRL: {case.steps} steps ...", flush=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(work / "plain.log", "wb") as log:
        proc = subprocess.run(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"[{case.method}] the plain TRL script failed:\n{(work / 'plain.log').read_text()[-3000:]}")
    result = json.loads(result_path.read_text())
    case.plain = {
        "losses": [tuple(p) for p in result["losses"]],
        "wall_s": wall,
        "train_s": result["train_runtime"],
        "train_cpu_s": result["train_cpu_s"],
        "cpu_s": cpu,
        "threads": result["torch_threads"],
    }
    print(f"[{case.method}] plain TRL: {wall:.1f} s (train() {result['train_runtime']:.1f} s)", flush=True)


# --- the platform -------------------------------------------------------------------


class Stack:
    """`manage.py runstack --no-demo` in its own var/ dir; stopped with SIGINT, as Ctrl-C would."""

    def __init__(self, root: Path, env: dict):
        self.var = root / "var"
        self.web_port, self.mlflow_port = free_port(), free_port()
        # The demo kit's model (built in root/kit) is registered from a model root: the team's own, and the kit.
        roots = os.pathsep.join([str(self.var / "models" / "{team}"), str(root / "kit")])
        self.env = {
            **env,
            "REFINERY_VAR_DIR": str(self.var),
            "PYTHONPATH": str(REPO / "platform"),
            "REFINERY_MODEL_ROOTS": roots,
        }
        self.log_path = root / "runstack.log"
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{self.web_port}"
        self.tracking_uri = f"http://127.0.0.1:{self.mlflow_port}"
        self.token = ""

    def __enter__(self) -> Stack:
        print(f"starting the stack (web :{self.web_port}, mlflow :{self.mlflow_port}) ...", flush=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - runstack writes to it until stopped
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "runstack",
                "--no-demo",
                "--web-port",
                str(self.web_port),
                "--mlflow-port",
                str(self.mlflow_port),
            ],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait(
                lambda: _http_ok(f"{self.base}/login/") and _http_ok(f"{self.tracking_uri}/health"),
                180,
                "web and MLflow",
            )
            self._wait(lambda: "ready." in _read(self.var / "logs" / "worker.log"), 120, "the Celery worker")
            self.token = self._create_user()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise SystemExit(f"runstack exited ({self.proc.returncode}):\n{_read(self.log_path)[-3000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{what} not up after {timeout:.0f} s:\n{_read(self.log_path)[-3000:]}")
            time.sleep(0.5)

    def _create_user(self) -> str:
        code = (
            "from refinery.teams.services import api_token_create, user_create\n"
            "user = user_create(username='bench', password='bench-parity-1', team_name='Bench')\n"
            "print(api_token_create(user=user, name='bench')[1])\n"
        )
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"creating the bench user failed:\n{result.stderr[-3000:]}")
        return result.stdout.strip().splitlines()[-1]

    # -- the API
    def api(self, method: str, path: str, **kwargs):
        import requests

        response = requests.request(
            method, f"{self.base}/api/v1{path}", timeout=60, headers={"Authorization": f"Bearer {self.token}"}, **kwargs
        )
        if response.status_code >= 400:
            raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json()

    def stage_summary(self, mlflow_run_id: str) -> dict:
        """The stage's finished summary (the trainer's final metrics), which the API does not show."""
        db = sqlite3.connect(f"file:{self.var / 'refinery.sqlite3'}?mode=ro", uri=True, timeout=30)
        try:
            row = db.execute("SELECT summary FROM runs_stagerun WHERE mlflow_run_id = ?", (mlflow_run_id,)).fetchone()
        finally:
            db.close()
        return json.loads(row[0]) if row and row[0] else {}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _trainer_env(var: Path, name: str) -> str | None:
    """An environment variable of the running trainer subprocess of this stack, if one runs now."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            if b"trainers" not in cmdline or not any(str(var).encode() in arg for arg in cmdline):
                continue
            for item in Path(entry.path, "environ").read_bytes().split(b"\0"):
                key, _, value = item.decode(errors="replace").partition("=")
                if key == name:
                    return value
            return ""
        except OSError:
            continue
    return None


def _cpu_by_process(root: int) -> dict[int, tuple[str, float, float]]:
    """pid -> (name, CPU seconds of the process itself, CPU seconds of its children it has waited for) for
    `root` (runstack, which pumps its children's logs) and every live descendant. A finished trainer's CPU
    time lands in its worker's second number."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    stats: dict[int, tuple[str, float, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is the state (field 3 of proc(5))
        parent[int(entry.name)] = int(fields[1])
        name = _process_name(" ".join(a.decode(errors="replace") for a in cmdline if a))
        stats[int(entry.name)] = (
            name,
            (int(fields[11]) + int(fields[12])) / ticks,
            (int(fields[13]) + int(fields[14])) / ticks,
        )
    found = {root: ("runstack", *stats[root][1:])} if root in stats else {}
    todo = [root]
    while todo:
        pid = todo.pop()
        for child, ppid in parent.items():
            if ppid == pid:
                found[child] = stats[child]
                todo.append(child)
    return found


def _process_name(cmdline: str) -> str:
    for needle, name in (
        ("trainers", "trainer"),
        ("celery", "worker+beat"),
        ("gunicorn", "web"),
        ("mlflow", "mlflow"),
        ("uvicorn", "mlflow"),
        ("huey", "mlflow"),
    ):
        if needle in cmdline:
            return name
    return "other"


def _cpu_spent(before: dict, after: dict) -> tuple[dict[str, float], float]:
    """(CPU seconds per process name, CPU seconds of reaped children) between two snapshots."""
    spent: dict[str, float] = {}
    reaped = 0.0
    for pid, (name, own, children) in after.items():
        _, own0, children0 = before.get(pid, (name, 0.0, 0.0))
        spent[name] = spent.get(name, 0.0) + own - own0
        if name != "runstack":  # its children are the stack's long-lived processes
            reaped += children - children0
    return spent, reaped


def _seconds(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_platform(case: Case, stack: Stack, model_id: int) -> None:
    from mlflow.tracking import MlflowClient

    with open(case.data_path, "rb") as fh:
        dataset = stack.api(
            "POST",
            "/datasets",
            data={"name": f"parity-{case.method}", "kind": case.kind},
            files={"file": (Path(case.data_path).name, fh)},
        )
    pipeline = stack.api(
        "POST",
        "/pipelines",
        json={
            "name": f"parity {case.method}",
            "base_model_id": model_id,
            "spec": {
                "seed": SEED,
                "stages": [
                    {
                        "name": case.method,
                        "method": case.method,
                        "dataset_id": dataset["dataset_id"],
                        "adapter": {"type": "none"},
                        "config": case.overrides,
                    }
                ],
            },
        },
    )
    print(f"[{case.method}] platform: {case.steps} steps ...", flush=True)
    cpu_before = _cpu_by_process(stack.proc.pid)
    started = time.perf_counter()
    run = stack.api("POST", f"/pipelines/{pipeline['id']}/runs", json={})
    resolved = run["snapshot"]["stages"][0].get("config")
    threads = None
    while run["status"] not in ("succeeded", "failed", "canceled"):
        time.sleep(1.0)
        if threads is None:
            threads = _trainer_env(stack.var, "OMP_NUM_THREADS")
        run = stack.api("GET", f"/runs/{run['number']}")
    observed = time.perf_counter() - started
    cpu, reaped = _cpu_spent(cpu_before, _cpu_by_process(stack.proc.pid))
    stage = run["stages"][0]
    if run["status"] != "succeeded":
        raise SystemExit(f"[{case.method}] the platform run {run['status']}: {run['error'] or stage['error']}")

    # The row is written first, MLflow mirrored after: wait for the stage's MLflow run to end.
    client = MlflowClient(tracking_uri=stack.tracking_uri)
    deadline = time.monotonic() + 120
    while client.get_run(stage["mlflow_run_id"]).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    history = client.get_metric_history(stage["mlflow_run_id"], "train/loss")
    summary = stack.stage_summary(stage["mlflow_run_id"])
    case.platform = {
        "losses": sorted((m.step, m.value) for m in history),
        "wall_s": _seconds(stage["started_at"], stage["finished_at"]),
        "train_s": summary.get("train/runtime"),
        "e2e_s": _seconds(run["created_at"], run["finished_at"]),
        "observed_s": observed,
        "threads": threads,
        "resolved": resolved,
        "stack_cpu": {k: v for k, v in cpu.items() if k != "trainer"},
        "trainer_cpu": reaped,  # the trainer subprocess, reaped by the worker
    }
    print(
        f"[{case.method}] platform: stage {case.platform['wall_s']:.1f} s, run {case.platform['e2e_s']:.1f} s "
        f"(observed {observed:.1f} s); trainer OMP_NUM_THREADS={threads}",
        flush=True,
    )


# --- report -------------------------------------------------------------------------


def report(cases: list[Case], threads: int, load: tuple[tuple[float, ...], tuple[float, ...]]) -> None:
    head = f"{'method':<7}{'steps':>7}{'max|dloss|':>12}{'platform_s':>12}{'plain_s':>9}{'ratio':>8}{'e2e_s':>8}"
    lines = [
        "",
        f"platform vs plain TRL (CPU, OMP_NUM_THREADS={threads}, seed {SEED}, full fine-tuning)",
        head,
        "-" * len(head),
    ]
    details, verdicts = [], []
    for case in cases:
        p, q = case.platform, case.plain
        delta, note = compare(p["losses"], q["losses"])
        ratio = p["wall_s"] / q["wall_s"]
        lines.append(
            f"{case.method:<7}{case.steps:>7}{delta:>12.2e}{p['wall_s']:>12.1f}{q['wall_s']:>9.1f}"
            f"{ratio:>8.3f}{p['e2e_s']:>8.1f}"
        )
        if p["train_s"] and q["train_s"]:
            details.append(
                f"{case.method}: train() alone (Trainer train_runtime): platform {p['train_s']:.1f} s, "
                f"plain {q['train_s']:.1f} s (its CPU {q['train_cpu_s']:.1f} s), "
                f"ratio {p['train_s'] / q['train_s']:.3f}"
            )
        stack_cpu = sum(p["stack_cpu"].values())
        parts = ", ".join(f"{name} {cpu:.1f}" for name, cpu in sorted(p["stack_cpu"].items()) if cpu >= 0.05)
        details.append(
            f"{case.method}: CPU seconds: platform trainer process {p['trainer_cpu']:.1f} + rest of the "
            f"stack {stack_cpu:.1f} ({parts}) = {p['trainer_cpu'] + stack_cpu:.1f}; plain script "
            f"{q['cpu_s']:.1f}; ratio {(p['trainer_cpu'] + stack_cpu) / q['cpu_s']:.3f}"
        )
        parity_ok = delta <= LOSS_TOLERANCE and not note
        verdicts.append(
            f"{case.method}: loss curves {'PASS' if parity_ok else 'FAIL'} "
            f"(max|dloss| {delta:.2e} over {len(q['losses'])} steps, target <= {LOSS_TOLERANCE:g})"
            + (f"; {note}" if note else "")
        )
        if q["wall_s"] < MIN_STAGE_S:
            verdicts.append(
                f"{case.method}: wall time n/a (plain run {q['wall_s']:.0f} s < {MIN_STAGE_S:.0f} s; "
                f"raise --steps to judge the ratio)"
            )
        else:
            verdicts.append(
                f"{case.method}: wall time {'PASS' if ratio <= RATIO_TARGET else 'FAIL'} "
                f"(platform/plain {ratio:.3f}, target <= {RATIO_TARGET})"
            )
        if p.get("threads") not in (None, str(threads)):
            verdicts.append(
                f"{case.method}: WARNING the platform trainer ran with OMP_NUM_THREADS={p['threads']!r}, "
                f"plain with {threads}"
            )
    lines += [
        "",
        *details,
        "",
        *verdicts,
        "",
        f"load average (1, 5, 15 min): before {'/'.join(f'{x:.2f}' for x in load[0])}, "
        f"after {'/'.join(f'{x:.2f}' for x in load[1])} on {os.cpu_count()} CPUs",
    ]
    print("\n".join(lines), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimizer steps of every stage (default: {DEFAULT_STEPS['sft']} for sft, "
        f"{DEFAULT_STEPS['dpo']} for dpo: about a minute or more of train() each on a quiet CPU)",
    )
    parser.add_argument("--method", choices=("sft", "dpo", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, var/) and print its path")
    args = parser.parse_args()

    from trainers.catalog import METHODS

    methods = ["sft", "dpo"] if args.method == "all" else [args.method]
    for method in list(methods):
        if method not in METHODS:
            print(f"{method}: not a registered method yet; skipped", flush=True)
            methods.remove(method)
    if not methods:
        return
    env = base_env(args.threads)
    load_before = os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="bench-parity-")
    try:
        root = Path(tmp)
        kit = build_kit(root / "kit", env)
        # Warm the page cache for both sides alike: the first import of trl & co. from disk is the slowest.
        subprocess.run(
            [sys.executable, "-c", "import trl, datasets, transformers; from trl import SFTTrainer, DPOTrainer"],
            cwd=root,
            env=env,
            capture_output=True,
            check=False,
        )
        cases = []
        for method in methods:
            steps = args.steps or DEFAULT_STEPS[method]
            key, kind = DATA[method]
            overrides = {"max_steps": steps}
            cases.append(
                Case(method, steps, overrides, resolved_config(method, overrides, kind), kit["data"][key], kind)
            )
        for case in cases:  # plain first: nothing of the stack runs yet
            run_plain(case, kit["model"], root / f"plain-{case.method}", env)
        with Stack(root, env) as stack:
            model = stack.api(
                "POST",
                "/base-models",
                json={"name": "tiny-llama-parity", "source": "local", "name_or_path": kit["model"]},
            )
            for case in cases:
                run_platform(case, stack, model["id"])
        for case in cases:
            if case.platform["resolved"] not in (None, case.config):
                print(
                    f"[{case.method}] WARNING the run snapshot's config differs from the plain script's:\n"
                    f"  platform {case.platform['resolved']}\n  plain    {case.config}"
                )
        report(cases, args.threads, (load_before, os.getloadavg()))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
