"""Run the whole Refinery stack in the foreground: `python manage.py runstack` (what `make run` starts).

With no environment this is the embedded default: SQLite, kombu's filesystem
broker and a local MLflow server, all under var/. With DATABASE_URL,
CELERY_BROKER_URL or MLFLOW_TRACKING_URI set, the same command uses those
instead (and starts no MLflow server when MLFLOW_TRACKING_URI is set).

Steps: create the var/ folders, migrate, make sure the demo user exists; start
MLflow and the web, wait for MLflow's /health, start the Celery workers (one for
training stages on the `gpu` queue, one for the light `cpu` tasks) and beat,
wait for the web's /login/, seed the demo (`manage.py seed_demo`, idempotent)
and print a banner.

Each child runs in its own process group, so that Ctrl-C reaches only this
command, which then stops every group: SIGTERM, then SIGKILL after
REFINERY_STOP_TIMEOUT seconds (a second Ctrl-C kills at once). If a child dies,
the whole stack stops and its name and last log lines are shown. Child output
goes to var/logs/<name>.log and, prefixed with the name, to the console.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from trainers import deathsig

from refinery.teams.models import Membership, Team
from refinery.teams.services import membership_add, team_create

# The same values as seed_demo, which also creates them when it runs first.
DEMO_USER = "demo"
DEMO_PASSWORD = "refinery-demo"
DEMO_TEAM = "Demo"

TAIL_LINES = 40
COLORS = ["\033[36m", "\033[35m", "\033[33m", "\033[32m", "\033[34m", "\033[31m"]
RESET = "\033[0m"


def _with_death_signal(argv: list[str]) -> list[str]:
    """Children start through trainers.deathsig: Linux SIGTERMs the child if runstack itself dies without
    cleaning up (kill -9); then it execs the real command."""
    return deathsig.command(argv, sig=signal.SIGTERM)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, starttime) from /proc/<pid>/stat, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], fields[19]


def _descendants(root: int) -> dict[int, str]:
    """pid -> start time of every live descendant of `root` (Linux; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    try:
        entries = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return {}
    for pid in entries:
        if (stat := _proc_stat(pid)) is not None:
            children.setdefault(stat[0], []).append(pid)
            starts[pid] = stat[2]
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for pid in children.get(stack.pop(), []):
            found[pid] = starts[pid]
            stack.append(pid)
    return found


def _alive(pid: int, start: str) -> bool:
    """The same process (not a reused pid) still runs and is not a zombie."""
    stat = _proc_stat(pid)
    return stat is not None and stat[2] == start and stat[1] not in ("Z", "X")


@dataclass
class Child:
    name: str
    argv: list[str]
    color: str = ""
    proc: subprocess.Popen | None = None
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))
    reader: threading.Thread | None = None

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # start_new_session=True: the child leads its own group

    def group_alive(self) -> bool:
        if self.proc is None:
            return False
        self.proc.poll()
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Command(BaseCommand):
    help = "Start the whole stack (MLflow, web, Celery worker and beat) in the foreground; Ctrl-C stops it."

    def add_arguments(self, parser):
        parser.add_argument("--web-port", type=int, default=int(os.environ.get("REFINERY_WEB_PORT", 8000)))
        parser.add_argument("--mlflow-port", type=int, default=int(os.environ.get("REFINERY_MLFLOW_PORT", 5000)))
        parser.add_argument("--no-demo", action="store_true", help="create no demo user and seed nothing")
        parser.add_argument(
            "--startup-timeout", type=float, default=180.0, help="seconds to wait for web and MLflow to answer"
        )

    # ------------------------------------------------------------------ setup
    def handle(self, *args, web_port, mlflow_port, no_demo=False, startup_timeout=180.0, **options):
        self.children: list[Child] = []
        self.print_lock = threading.Lock()
        self.console_broken = False
        self.seed_proc: subprocess.Popen | None = None
        self.use_color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.stop_requested = 0
        self.stop_timeout = float(os.environ.get("REFINERY_STOP_TIMEOUT", 10))
        self.root = Path(settings.BASE_DIR)
        self.var = Path(settings.VAR_DIR)
        self.logs = self.var / "logs"

        external_mlflow = bool(os.environ.get("MLFLOW_TRACKING_URI"))
        tracking_uri = os.environ["MLFLOW_TRACKING_URI"] if external_mlflow else f"http://127.0.0.1:{mlflow_port}"

        ports = [("web", web_port, "WEB_PORT")]
        if not external_mlflow:
            ports.append(("mlflow", mlflow_port, "MLFLOW_PORT"))
        for name, port, var in ports:
            if not _port_free(port):
                raise CommandError(
                    f"port {port} ({name}) is already in use: stop what holds it, or `make run {var}=<free port>`"
                )

        if external_mlflow and tracking_uri.startswith("http"):
            if not _http_ok(f"{tracking_uri.rstrip('/')}/health"):
                self._log(f"warning: MLFLOW_TRACKING_URI={tracking_uri} does not answer /health (starting anyway)")
        self._make_dirs()
        self._log(
            f"starting in {self.var} (code {settings.REFINERY_CODE_VERSION})"
            + (" in development mode: DEBUG on" if settings.DEBUG else "")
        )
        self._log("migrating the database")
        call_command("migrate", interactive=False, verbosity=0)
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)
        if not no_demo:
            self._ensure_demo_user()

        env = self._child_env(tracking_uri)
        python = sys.executable
        if not external_mlflow:
            self.children.append(
                Child(
                    "mlflow",
                    [
                        python,
                        "-m",
                        "mlflow",
                        "server",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(mlflow_port),
                        "--workers",
                        "1",
                        "--backend-store-uri",
                        f"sqlite:///{self.var / 'mlflow' / 'mlflow.db'}",
                        "--artifacts-destination",
                        str(self.var / "mlflow" / "artifacts"),
                        # MLflow 3's host-header check: only loopback names may talk to it.
                        "--allowed-hosts",
                        "127.0.0.1,127.0.0.1:*,localhost,localhost:*",
                    ],
                )
            )
        self.children += [
            Child(
                "web",
                [
                    python,
                    "-m",
                    "gunicorn",
                    "refinery.wsgi",
                    "-b",
                    f"127.0.0.1:{web_port}",
                    "--workers",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "120",
                    "--graceful-timeout",
                    "10",
                    "--access-logfile",
                    "-",
                    "--error-logfile",
                    "-",
                    "--no-control-socket",  # else every gunicorn shares ~/.gunicorn/gunicorn.ctl
                ],
            ),
            # Two workers, as in the compose file: training stages on `gpu` (one at a time), and the light
            # tasks on `cpu` (schedule ticks, webhooks, the reaper), which would otherwise wait for
            # the end of whatever stage is training.
            Child(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "jobs.app",
                    "worker",
                    "-Q",
                    "gpu",
                    "--concurrency",
                    "1",
                    "--prefetch-multiplier",
                    "1",
                    "-n",
                    "worker@%h",
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel",
                    "INFO",
                ],
            ),
            Child(
                "cpu-worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "jobs.app",
                    "worker",
                    "-Q",
                    "cpu",
                    "--concurrency",
                    "1",
                    "--prefetch-multiplier",
                    "1",
                    "-n",
                    "cpu@%h",
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel",
                    "INFO",
                ],
            ),
            Child(
                "beat",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "jobs.app",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(self.var / "celerybeat-schedule"),  # unused by the DatabaseScheduler
                ],
            ),
        ]

        by_name = {child.name: child for child in self.children}
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            # Tracking first: a worker that resumes a stage talks to MLflow at once.
            for name in ("mlflow", "web"):
                if name in by_name:
                    self._start(by_name[name], env)
            if not external_mlflow:
                self._wait_ready({"mlflow": f"{tracking_uri}/health"}, startup_timeout)
            for name in ("worker", "cpu-worker", "beat"):
                self._start(by_name[name], env)
            self._wait_ready({"web": f"http://127.0.0.1:{web_port}/login/"}, startup_timeout)
            if not no_demo:
                self._seed_demo(env)
            if not self.stop_requested:
                self._banner(web_port, tracking_uri, external_mlflow, no_demo)
            self._supervise()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _make_dirs(self) -> None:
        for sub in ("logs", "mlflow/artifacts", "datasets", "work", "broker/queue", "broker/control", "demo"):
            (self.var / sub).mkdir(parents=True, exist_ok=True)
        for extra in (settings.REFINERY_DATASET_DIR, settings.REFINERY_WORK_DIR):
            Path(extra).mkdir(parents=True, exist_ok=True)

    def _ensure_demo_user(self) -> None:
        User = get_user_model()
        with transaction.atomic():
            user = User.objects.filter(username=DEMO_USER).first()
            if user is None:
                user = User.objects.create_user(username=DEMO_USER, password=DEMO_PASSWORD)
                self._log(f"created user {DEMO_USER!r} (password {DEMO_PASSWORD!r})")
            team = Team.objects.filter(name=DEMO_TEAM).first()
            if team is None:
                team_create(name=DEMO_TEAM, owner=user)
            elif not Membership.objects.filter(team=team, user=user).exists():
                membership_add(team=team, user=user, role=Membership.Role.OWNER)

    def _child_env(self, tracking_uri: str) -> dict[str, str]:
        env = dict(os.environ)
        pythonpath = [str(self.root / "platform"), str(self.root)]
        if env.get("PYTHONPATH"):
            pythonpath.append(env["PYTHONPATH"])
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(pythonpath),
                "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "refinery.settings.base"),
                "REFINERY_VAR_DIR": str(self.var),
                "MLFLOW_TRACKING_URI": tracking_uri,
            }
        )
        # MLflow 3 starts a job runner and seven huey consumers for its GenAI jobs
        # (scorers, prompt optimisation); Refinery uses none of them.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        # Keep the children's view of the code version identical to ours.
        env.setdefault("REFINERY_CODE_VERSION", str(settings.REFINERY_CODE_VERSION))
        return env

    # -------------------------------------------------------------- children
    def _start(self, child: Child, env: dict[str, str]) -> None:
        if self.stop_requested:
            return
        index = self.children.index(child)
        child.color = COLORS[index % len(COLORS)] if self.use_color else ""
        shown = child.argv[1:] if child.argv[0] == sys.executable else child.argv
        self._log(f"starting {child.name}: {' '.join(shown)}")
        child.proc = subprocess.Popen(
            _with_death_signal(child.argv),
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.reader = threading.Thread(target=self._pump, args=(child,), name=f"log-{child.name}", daemon=True)
        child.reader.start()

    def _pump(self, child: Child) -> None:
        width = max(len(c.name) for c in self.children)
        prefix = f"{child.color}{child.name:<{width}} |{RESET if child.color else ''} "
        with open(self.logs / f"{child.name}.log", "a", encoding="utf-8", errors="replace") as log:
            started = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- {started} runstack started {child.name} (pid {child.proc.pid})\n")
            log.flush()
            for raw in iter(child.proc.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                child.tail.append(line)
                log.write(line + "\n")
                log.flush()
                self._emit(prefix + line + "\n")

    def _dead_child(self) -> Child | None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                return child
        return None

    def _fail_with(self, child: Child) -> None:
        if child.reader is not None:
            child.reader.join(timeout=2)
        lines = "\n".join(f"    {line}" for line in child.tail) or "    (no output)"
        rc = child.proc.returncode
        how = f"was killed by {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
        raise CommandError(
            f"{child.name} {how}; the stack is stopping.\n  last lines of {self.logs / (child.name + '.log')}:\n{lines}"
        )

    def _wait_ready(self, checks: dict[str, str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while checks and not self.stop_requested:
            if (dead := self._dead_child()) is not None:
                self._fail_with(dead)
            for name, url in list(checks.items()):
                if _http_ok(url):
                    self._log(f"{name} is up: {url}")
                    del checks[name]
            if time.monotonic() > deadline:
                raise CommandError(f"not up after {timeout:.0f}s: {', '.join(checks)} (see {self.logs}/)")
            time.sleep(0.5)

    def _seed_demo(self, env: dict[str, str]) -> None:
        if self.stop_requested:
            return
        if "seed_demo" not in get_commands():
            self._log("no seed_demo command yet: skipping the demo data")
            return
        self._log("seeding the demo (manage.py seed_demo)")
        child = Child("seed", [sys.executable, str(self.root / "manage.py"), "seed_demo"])
        width = max(len(c.name) for c in self.children)
        with open(self.logs / "seed.log", "a", encoding="utf-8", errors="replace") as log:
            proc = self.seed_proc = subprocess.Popen(
                child.argv,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                log.write(line + "\n")
                self._emit(f"{'seed':<{width}} | {line}\n")
            proc.wait()
        self.seed_proc = None
        if self.stop_requested:
            return
        if proc.returncode != 0:
            log_path = self.logs / "seed.log"
            self._log(f"seed_demo failed (exit {proc.returncode}); the stack keeps running: see {log_path}")

    def _supervise(self) -> None:
        while not self.stop_requested:
            if (dead := self._dead_child()) is not None:
                self._fail_with(dead)
            time.sleep(0.5)

    def _on_signal(self, signum, frame) -> None:
        # No printing here: a signal can land in the middle of a write to stdout.
        self.stop_requested += 1
        if self.stop_requested == 1:
            if self.seed_proc is not None:
                try:
                    os.killpg(self.seed_proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        else:
            for child in self.children:
                if child.proc is not None:
                    child.signal_group(signal.SIGKILL)

    def _stop_all(self) -> None:
        started = [c for c in self.children if c.proc is not None]
        if not started:
            return
        if self.stop_requested:
            self._log("stopping (Ctrl-C again to kill at once)")
        tree = _descendants(os.getpid())  # before anything exits and orphans get reparented
        # The web, beat and worker first; MLflow last, so that the worker can flush to it.
        waves = [[c for c in started if c.name != "mlflow"], [c for c in started if c.name == "mlflow"]]
        for wave in waves:
            # The leader first: gunicorn, celery (a warm shutdown) and MLflow's launcher
            # stop their own workers.
            live = [c for c in wave if c.proc.poll() is None]
            for child in live:
                child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while live and time.monotonic() < deadline:
                time.sleep(0.1)
                live = [c for c in live if c.proc.poll() is None]
            for child in live:
                self._log(f"{child.name} did not stop in {self.stop_timeout:.0f}s: killing it")
                child.signal_group(signal.SIGKILL)
            # Then whatever is left in each group.
            for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
                lingering = [c for c in wave if c.group_alive()]
                for child in lingering:
                    child.signal_group(sig)
                deadline = time.monotonic() + grace
                while lingering and time.monotonic() < deadline:
                    time.sleep(0.1)
                    lingering = [c for c in lingering if c.group_alive()]
            for child in wave:
                try:
                    child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        # Anything that left our process groups (a trainer leads its own) must go too.
        leftovers = [pid for pid, start in tree.items() if _alive(pid, start)]
        if leftovers:
            self._log(f"stopping {len(leftovers)} leftover process(es): {leftovers}")
            for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
                for pid in leftovers:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + grace
                while leftovers and time.monotonic() < deadline:
                    time.sleep(0.1)
                    leftovers = [pid for pid in leftovers if _alive(pid, tree[pid])]
        for child in started:
            if child.reader is not None:
                child.reader.join(timeout=2)
        self._log("stopped")

    # ------------------------------------------------------------------ output
    def _emit(self, text: str) -> None:
        """Write to the console. A console that went away (`make run | tee log` whose tee
        died of the same Ctrl-C) must never stop the shutdown: the logs keep everything."""
        with self.print_lock:
            if self.console_broken:
                return
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except (OSError, ValueError):
                self.console_broken = True
                try:  # so that the interpreter's last flush does not fail either
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, sys.stdout.fileno())
                    os.close(devnull)
                except (OSError, ValueError):
                    pass

    def _log(self, message: str) -> None:
        self._emit(f"runstack: {message}\n")
        try:
            with open(self.logs / "runstack.log", "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        except OSError:
            pass

    def _banner(self, web_port: int, tracking_uri: str, external_mlflow: bool, no_demo: bool) -> None:
        web = f"http://127.0.0.1:{web_port}"
        rows = [("web", f"{web}/")]
        if not no_demo:
            rows.append(("login", f"{DEMO_USER} / {DEMO_PASSWORD}"))
        rows += [
            ("api", f"{web}/api/v1/docs   (token: python manage.py api_token {'USER' if no_demo else DEMO_USER})"),
            ("mlflow", f"{tracking_uri}/" + ("   (external)" if external_mlflow else "")),
            ("database", settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]),
            ("broker", str(settings.CELERY_BROKER_URL).split("://", 1)[0] + "://"),
            ("logs", f"{self.logs}/"),
        ]
        if settings.DEBUG:
            rows.append(
                ("mode", "development mode: DEBUG on (error pages show code and settings: keep this port private)")
            )
        else:
            rows.append(
                ("mode", "DEBUG off (friendly error pages); development mode: make run DEV=1 (or DJANGO_DEBUG=true)")
            )
        lines = ["", "=" * 72, "  Refinery is running", ""]
        lines += [f"  {key:<9} {value}" for key, value in rows]
        lines += ["", "  Ctrl-C stops everything.", "=" * 72, ""]
        self._emit("\n".join(lines) + "\n")
