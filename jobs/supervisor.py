"""Run one stage: claim it, start the trainer subprocess, turn its events into state.

    claim -> heartbeat thread (lease + cancel polling) for as long as the stage is ours
          -> MLflow run + input model + spec.json          (jobs.stage_inputs)
          -> `python -m trainers run spec.json` in its own process group, stderr to trainer.log
          -> events (stdout, NDJSON): metrics to the DB (live chart) and to MLflow (batched),
             progress to the heartbeat, parameter counts to the row
          -> finished: upload outputs to MLflow, stage_finish(succeeded) (next stages get queued)
             failed / crashed: stage_finish(failed, one-line error, log tail)
             killed or stopped by a signal nobody here sent (OOM killer, kill -9, a host
             shutting down): stage_requeue, the next attempt resumes
             from the newest complete checkpoint (fails after the stage's max attempts)
             canceled: SIGTERM, SIGKILL after the grace period, stage_finish(canceled)
          -> then the MLflow mirror: drain buffered metrics, spec.json + trainer.log (copies without host
             paths or global run ids), run status; and the stage's work dir and checkpoint area are
             removed, whatever the outcome (a queued retry keeps both: it resumes from them)

Metrics are keyed by step: an attempt that resumes from a checkpoint replays the steps after
it, and the points an earlier attempt already recorded (in the DB, or accepted by the on-disk
MLflow spool) are not recorded again, so neither store drops or duplicates a step.

A database outage (PostgreSQL restarting) is waited out: DB writes are retried on a fresh
connection for up to REFINERY_DB_OUTAGE_SECONDS while the trainer keeps training.

The database row is written first at the end of a stage and MLflow is brought in line
after, so an MLflow outage delays the mirror but never a cancel or the next stage's start
(outputs are the exception: the next stage needs them, so their upload is retried).
The Celery process never imports torch: training happens in the subprocess, which knows
nothing of Django or MLflow (docs/stage-spec.md is the contract).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Q
from django.utils import timezone

from jobs.stage_inputs import (
    StageSetupError,
    aux_model_references,
    gate_references,
    build_stage_spec,
    input_references,
    materialize_aux_models,
    materialize_inputs,
    materialize_model,
    model_card_facts,
    model_reference,
    redact,
    redacted_spec,
    resolve_configs,
    stage_checkpoint_dir,
    stage_redactions,
    stage_work_dir,
    tracking_params,
    tracking_tags,
)
from jobs.trainer_env import hub_model_used, trainer_environment
from refinery.runs import selectors, services
from refinery.runs.models import TERMINAL_STATES, IllegalTransition, StageRun, Status
from refinery.teams import quotas
from refinery.teams.models import TeamSecret
from refinery.teams.team_secrets import team_secret_reveal
from refinery.tracking import runs as tracking_runs
from refinery.tracking.buffer import MetricBuffer
from refinery.tracking.client import artifacts_upload, tracking_client

log = logging.getLogger(__name__)

T = TypeVar("T")

CODE_ROOT = Path(__file__).resolve().parent.parent  # holds the `trainers` package
LOG_TAIL_LINES = 60
EXIT_CANCELED = 3
CANCEL_POLL_SECONDS = 1.0  # a cancel is seen within a second, whatever the heartbeat interval
DB_METRICS_FLUSH_SECONDS = 1.0
DB_METRICS_FLUSH_POINTS = 200
OUTPUT_UPLOAD_SECONDS = 300.0  # how long an MLflow outage may delay the upload of a finished stage's outputs
BACKFILL_SECONDS = 30.0  # how long a resumed attempt waits for MLflow to backfill the DB's missing points
SWEEP_AFTER_SECONDS = 900.0  # a stage ended this long ago without removing its work dir: its supervisor is gone
DB_METRICS_MAX_POINTS = 200_000  # kept in memory while the database is away; the oldest go first
# A trainer killed by one of these, without saying why, is retried (the next attempt resumes): the
# kernel's OOM killer, kill -9, a host shutting down. Anything else it dies of fails the stage.
RETRY_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
DB_ERRORS = (OperationalError, InterfaceError)


def one_line(text: object, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last `lines` non-empty lines of a log file (reading at most `max_bytes` from its end)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def trainer_command(spec_path: Path) -> list[str]:
    python = settings.REFINERY_TRAINER_PYTHON or sys.executable
    return [python, "-m", "trainers", "run", str(spec_path)]


def retrying(fn: Callable[[], T], *, what: str, timeout: float, first_wait: float = 1.0, max_wait: float = 30.0,
             errors: tuple[type[BaseException], ...] = (Exception,),
             before_retry: Callable[[], None] | None = None) -> T:
    """Call fn until it succeeds, waiting first_wait, twice that ... max_wait between tries; re-raise after
    `timeout` seconds. Only `errors` are retried; `before_retry` runs after each failure."""
    deadline = time.monotonic() + timeout
    wait = first_wait
    while True:
        try:
            return fn()
        except errors as exc:
            if before_retry is not None:
                before_retry()
            if time.monotonic() + wait > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.1fs", what, one_line(exc, 200), wait)
            time.sleep(wait)
            wait = min(max_wait, wait * 2)


def db_retrying(fn: Callable[[], T], *, what: str) -> T:
    """Call fn, retrying on a lost database connection (on a fresh one) for REFINERY_DB_OUTAGE_SECONDS.

    Other errors, such as IllegalTransition, are not retried."""
    return retrying(fn, what=f"{what} (database unavailable?)", timeout=float(settings.REFINERY_DB_OUTAGE_SECONDS),
                    first_wait=0.5, max_wait=10.0, errors=DB_ERRORS,
                    before_retry=connection.close)  # this thread's broken connection; the next query opens one


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Ask Linux to SIGKILL the trainer if the worker dies, so a lost worker leaves no orphan on the GPU.

    SIGKILL, not SIGTERM: with nobody reading its events a trainer cannot stop gracefully (its
    next event write fails), and the next attempt resumes from the newest complete checkpoint."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, not on every platform
        pass


@dataclass
class TrainerState:
    """What the event reader learned; read by the heartbeat and the conclusion."""

    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    started: dict | None = None
    terminal: dict | None = None  # the finished / failed / canceled event
    bad_lines: int = 0
    last_event_at: float = field(default_factory=time.monotonic)  # for hang detection
    lock: threading.Lock = field(default_factory=threading.Lock)


class DbMetricSink:
    """Metric points for the live chart, written to the DB in small batches (one insert a second).

    While the database is away the points wait in memory (the newest DB_METRICS_MAX_POINTS) and
    the next flush on a fresh connection writes them; flushing never raises for an outage."""

    def __init__(self, stage_run_id: int):
        self.stage_run_id = stage_run_id
        self._points: list[tuple[str, int, float, float]] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self.recorded = 0

    def add(self, key: str, step: int, value: float, timestamp: float) -> None:
        with self._lock:
            self._points.append((key, step, value, timestamp))

    def flush(self, *, force: bool = False) -> None:
        with self._lock:
            due = force or len(self._points) >= DB_METRICS_FLUSH_POINTS or (
                time.monotonic() - self._last >= DB_METRICS_FLUSH_SECONDS)
            if not due or not self._points:
                return
            points, self._points = self._points, []
            self._last = time.monotonic()
        try:
            services.stage_metrics_record(stage_run_id=self.stage_run_id, points=points)
        except DB_ERRORS as exc:
            connection.close()
            with self._lock:
                self._points[:0] = points
                del self._points[:-DB_METRICS_MAX_POINTS]
            log.warning("stage %s: %d metric points wait for the database (%s)", self.stage_run_id,
                        len(self._points), one_line(exc, 200))
            return
        self.recorded += len(points)

    def drain(self) -> int:
        """Flush until nothing is left, waiting out a database outage (REFINERY_DB_OUTAGE_SECONDS).
        Returns the number of points that could not be written."""
        deadline = time.monotonic() + float(settings.REFINERY_DB_OUTAGE_SECONDS)
        wait = 0.5
        while True:
            self.flush(force=True)
            with self._lock:
                left = len(self._points)
            if not left or time.monotonic() + wait > deadline:
                return left
            time.sleep(wait)
            wait = min(10.0, wait * 2)


def _with_own_connection(target: Callable[[], None]) -> Callable[[], None]:
    """A thread body that logs its crash and closes the DB connection Django opened for the thread."""
    def run() -> None:
        try:
            target()
        except Exception:  # noqa: BLE001 - logged; the main thread decides from the exit status
            log.exception("supervisor thread %s crashed", threading.current_thread().name)
        finally:
            connection.close()
    return run


class StageSupervisor:
    """Runs one claimed stage to a terminal state (or gives it up when its lease is lost)."""

    def __init__(self, stage: StageRun, *, worker: str):
        self.stage = stage
        self.worker = worker
        self.attempt = stage.attempt
        self.work_dir = stage_work_dir(stage)
        self.checkpoint_dir = stage_checkpoint_dir(stage)  # outlives the attempt, not the stage
        self.log_path = self.work_dir / "trainer.log"
        self.spec_path = self.work_dir / "spec.json"
        self.client = tracking_client()
        self.mlflow_run_id = ""
        self.input_ref: dict = {}
        self.state = TrainerState()
        self.proc: subprocess.Popen | None = None
        self.buffer: MetricBuffer | None = None
        self.db_metrics = DbMetricSink(stage.pk)
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        self.term_sent_at: float | None = None
        self.cancel_seen_at: float | None = None
        self.killed = False
        self.stalled: str | None = None  # why the trainer was killed as hung
        self.over_budget: str | None = None  # why the trainer was stopped: its team's wall-clock budget
        self.budget_seconds: int | None = None  # read once, when the trainer starts
        self.replayed: dict[str, int] = {}  # per metric, the last step earlier attempts sent to MLflow
        self.skipped_points = 0
        self.spec: dict | None = None
        self.champion: dict | None = None  # a gate stage's champion (refinery.registry.gates.gate_champion)

    # -- entry point ----------------------------------------------------------------
    def run(self) -> str:
        stage = self.stage
        log.info("stage %s (run %s, attempt %s) claimed by %s", stage.pk, stage.run_id, self.attempt, self.worker)
        self._make_dirs()
        self._start_heartbeat()  # downloads and uploads can outlast a lease, not only training
        try:
            try:
                self._prepare()
            except Exception as exc:  # noqa: BLE001 - every setup failure fails the stage with a clear line
                reason = str(exc) if isinstance(exc, StageSetupError) else f"{type(exc).__name__}: {exc}"
                log.exception("stage %s could not start", stage.pk)
                return self._finish(Status.FAILED, error=one_line(f"could not start the stage: {reason}"))
            if self.lease_lost.is_set():
                return self._give_up()
            if self.cancel_requested.is_set() or db_retrying(self._cancel_pending, what=f"stage {stage.pk}"):
                return self._finish(Status.CANCELED, error="canceled before the trainer started")
            try:
                self._train()
            except Exception as exc:  # noqa: BLE001 - a supervisor bug must not leave the stage running
                log.exception("supervising stage %s failed", stage.pk)
                self._kill()
                return self._finish(Status.FAILED, error=one_line(f"supervisor error: {type(exc).__name__}: {exc}"),
                                    tail=log_tail(self.log_path))
            return self._conclude()
        finally:
            self._stop_heartbeat()
            self._close_buffer()  # normally done by _finish already; this covers the lost-lease path

    # -- work dir and checkpoint area -----------------------------------------------------
    def _make_dirs(self) -> None:
        """The work dir, and in it `checkpoints`: a link to the stage's checkpoint area, which every attempt
        of the stage finds again (a work dir from before the area existed keeps its own folder)."""
        for _ in range(3):  # another stage of the run may remove the (empty) run folder in between
            try:
                self.work_dir.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                continue
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        link = self.work_dir / "checkpoints"
        if not link.exists() and not link.is_symlink():
            link.symlink_to(self.checkpoint_dir, target_is_directory=True)

    def _remove_dirs(self) -> None:
        """The stage has ended: its work dir and checkpoint area go (MLflow has the outputs, spec and log;
        the row has the log tail)."""
        for folder in (self.work_dir, self.checkpoint_dir):
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                log.warning("stage %s: could not remove %s", self.stage.pk, folder)
        try:
            self.work_dir.parent.rmdir()  # the run's folder, once its last stage's is gone
        except OSError:
            pass

    def _redactions(self) -> list[tuple[str, str]]:
        return stage_redactions(self.stage, self.work_dir)

    # -- before the trainer ------------------------------------------------------------
    def _prepare(self) -> None:
        stage = self.stage
        shutil.rmtree(self.work_dir / "output", ignore_errors=True)  # checkpoints stay: a retry resumes
        config, adapter = resolve_configs(stage.spec)
        self.input_ref = model_reference(stage)
        input_refs = input_references(stage)
        params = tracking_params(stage=stage, config=config, adapter=adapter, input_ref=self.input_ref,
                                 inputs=input_refs)
        self.mlflow_run_id = tracking_runs.stage_run_ensure(
            stage=stage, params=params, tags=tracking_tags(stage=stage, input_ref=self.input_ref, inputs=input_refs),
            client=self.client,
        )
        model = materialize_model(self.input_ref, self.work_dir / "inputs", client=self.client)
        aux_refs = aux_model_references(stage)
        if stage.method == "gate":
            self.champion, gate_refs = gate_references(stage)
            aux_refs.update(gate_refs)
        aux_models = materialize_aux_models(aux_refs, self.work_dir / "inputs", client=self.client)
        inputs = materialize_inputs(input_refs, self.work_dir / "inputs", client=self.client)
        card = model_card_facts(stage) if stage.method == "export" else None
        spec = build_stage_spec(stage=stage, model=model, config=config, adapter=adapter, work_dir=self.work_dir,
                                aux_models=aux_models, inputs=inputs, card=card)
        self.spec_path.write_text(json.dumps(spec, indent=2))
        self.spec = spec

    def _cancel_pending(self) -> bool:
        return selectors.stage_cancel_requested(stage_run_id=self.stage.pk)

    # -- heartbeat: lease renewal and cancel polling --------------------------------------
    def _start_heartbeat(self) -> None:
        self._heartbeat_thread = threading.Thread(target=_with_own_connection(self._heartbeat),
                                                  name=f"heartbeat-{self.stage.pk}", daemon=True)
        self._heartbeat_thread.start()

    def _stop_heartbeat(self) -> None:
        self._heartbeat_stop.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=30)

    def _heartbeat(self) -> None:
        """Renew the lease and report progress; look for a cancel request every second; and reap.

        Beat's reaper task waits in the cpu queue, where busy workers do not look: when every
        worker is training, the supervisors' heartbeats do its work (reaping and re-sending are
        safe to run from many places at once)."""
        from jobs.app import reaper_interval_seconds

        interval = float(settings.REFINERY_HEARTBEAT_SECONDS)
        next_beat = time.monotonic()  # renew at once: the claim's lease started before this thread did
        reap_every = reaper_interval_seconds()
        next_reap = time.monotonic() + reap_every
        sent_step = -1
        pause = 0.0
        while not self._heartbeat_stop.wait(pause):
            pause = min(CANCEL_POLL_SECONDS, interval)
            try:
                with self.state.lock:
                    step, total, epoch = self.state.step, self.state.total_steps, self.state.epoch
                # Progress moves the live page's bar: send it as soon as it changes (once a
                # second at most), and renew the lease at least every heartbeat interval.
                if time.monotonic() >= next_beat or step != sent_step:
                    next_beat = time.monotonic() + interval
                    sent_step = step
                    ours, cancel = services.stage_heartbeat(
                        stage_run_id=self.stage.pk, worker=self.worker, attempt=self.attempt,
                        step=step, total_steps=total, epoch=epoch,
                    )
                    if not ours and not self._heartbeat_stop.is_set():
                        log.warning("stage %s: lease lost (attempt %s is no longer the owner)",
                                    self.stage.pk, self.attempt)
                        self.lease_lost.set()
                elif not self.cancel_requested.is_set():
                    cancel = self._cancel_pending()
                else:
                    cancel = False
                # Reap after renewing our own lease, so that a slow start never reaps this very stage.
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + reap_every
                    services.stage_reap_expired()
                    services.stage_redispatch_stale()
                if cancel and not self.cancel_requested.is_set():
                    self.cancel_seen_at = time.monotonic()
                    self.cancel_requested.set()
            except DB_ERRORS as exc:  # PostgreSQL restarting: a fresh connection on the next beat
                log.warning("stage %s: heartbeat failed: %s", self.stage.pk, one_line(exc, 200))
                connection.close()
            except Exception:  # noqa: BLE001 - keep beating: the lease has slack
                log.exception("stage %s: heartbeat failed", self.stage.pk)
                connection.close()

    # -- while the trainer runs ----------------------------------------------------------
    def _hub_token_env(self) -> dict[str, str]:
        """HF_TOKEN for a stage that loads its team's hub base model, if the team set a hub token: decrypted
        here, just before the trainer starts, and handed over only in its environment (never in spec.json,
        the logs or MLflow). Any other stage, and every stage of another team, gets none."""
        spec = self.spec if self.spec is not None else json.loads(self.spec_path.read_text())
        run = self.stage.run
        if not hub_model_used(spec, base_model=run.snapshot.get("base_model") or {}):
            return {}
        token = db_retrying(lambda: team_secret_reveal(team=run.team_id, name=TeamSecret.Name.HF_TOKEN),
                            what=f"stage {self.stage.pk}: reading the team's hub token")
        return {"HF_TOKEN": token} if token else {}

    def _train(self) -> None:
        env = trainer_environment(base_env=os.environ, extra=self._hub_token_env())  # an allow-list
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CODE_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                trainer_command(self.spec_path), stdout=subprocess.PIPE, stderr=log_file, stdin=subprocess.DEVNULL,
                cwd=self.work_dir, env=env, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        log.info("stage %s: trainer pid %s started: %s", self.stage.pk, self.proc.pid, " ".join(self.proc.args))
        # Points go to MLflow through a spool on disk in the work dir: what an earlier attempt left
        # unsent is sent first, and the steps it spooled are not sent twice. On another host (no
        # spool) the steps in the DB stand in for them.
        self.buffer = MetricBuffer(run_id=self.mlflow_run_id, client=self.client,
                                   spool_path=self.work_dir / "mlflow-metrics.ndjson").start()
        self.replayed = dict(self.buffer.prior_steps)
        if self.attempt > 1:
            recorded = db_retrying(lambda: selectors.stage_metric_last_steps(stage_run_id=self.stage.pk),
                                   what=f"stage {self.stage.pk}: reading recorded metrics")
            if self.buffer.recovered:
                log.info("stage %s: sending %d metric points an earlier attempt left unsent",
                         self.stage.pk, self.buffer.recovered)
            self._backfill_db(recorded)
            for key, step in recorded.items():
                self.replayed[key] = max(step, self.replayed.get(key, step))
        reader = threading.Thread(target=_with_own_connection(self._read_events), name=f"events-{self.stage.pk}",
                                  daemon=True)
        reader.start()
        try:
            while self.proc.poll() is None:
                self._react()
                self.db_metrics.flush()
                time.sleep(0.2)
        finally:
            self._kill_stragglers()
            reader.join(timeout=30)
            if self.db_metrics.drain():
                log.error("stage %s: metric points never reached the database", self.stage.pk)
        log.info("stage %s: trainer exited with %s", self.stage.pk, self.proc.returncode)

    def _backfill_db(self, recorded: dict[str, int]) -> None:
        """Copy into the DB the points an earlier attempt spooled for MLflow but never wrote to the DB
        (its worker died within a DB flush interval). The resumed trainer replays only the steps after
        its checkpoint, so without this the live chart would miss the ones just before it."""
        assert self.buffer is not None
        behind = {key: recorded.get(key, 0) for key, last in self.buffer.prior_steps.items()
                  if last > recorded.get(key, 0)}
        if not behind:
            return
        deadline = time.monotonic() + BACKFILL_SECONDS
        while self.buffer.pending and time.monotonic() < deadline:  # MLflow must have them first
            if not self.buffer.flush():
                time.sleep(1.0)
        try:
            points = [(key, m.step, m.value, m.timestamp / 1000.0)
                      for key, after in behind.items()
                      for m in self.client.get_metric_history(self.mlflow_run_id, key) if m.step > after]
        except Exception as exc:  # noqa: BLE001 - MLflow away: the chart keeps a gap, MLflow has it all
            log.warning("stage %s: could not backfill metrics from MLflow: %s", self.stage.pk, one_line(exc, 200))
            return
        db_retrying(lambda: services.stage_metrics_record(stage_run_id=self.stage.pk, points=points),
                    what=f"stage {self.stage.pk}: backfilling metrics")
        log.info("stage %s: backfilled %d metric points the last attempt had not written to the DB",
                 self.stage.pk, len(points))

    def _kill_stragglers(self) -> None:
        """Once the trainer is gone, kill what it left in its process group (data loaders, launchers)
        so nothing keeps holding the GPU or the events pipe."""
        if self.proc is not None and self.proc.poll() is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is empty: the usual case

    def _react(self) -> None:
        """Stop the trainer when asked (SIGTERM, then SIGKILL after the grace period), or when it hangs."""
        now = time.monotonic()
        with self.state.lock:
            quiet, step, started = now - self.state.last_event_at, self.state.step, self.state.started is not None
        # Until the trainer says `started` it is importing, downloading and loading: a longer allowance.
        stall = float(settings.REFINERY_STALL_SECONDS if started else settings.REFINERY_STARTUP_SECONDS)
        if stall > 0 and quiet > stall and self.stalled is None and self.term_sent_at is None:
            # A hung trainer (deadlock, stuck collective, stopped process) may ignore SIGTERM: kill it.
            self.stalled = f"stalled at step {step}: no event from the trainer for {quiet:.0f}s (limit {stall:.0f}s)"
            log.error("stage %s: %s; killing the trainer", self.stage.pk, self.stalled)
            self._append_log(f"[supervisor] {self.stalled}")
            self._kill()
            return
        if self.term_sent_at is None and self.over_budget is None:  # stopped like a cancel, then failed
            self.over_budget = quotas.stage_budget_exceeded(started_at=self.stage.started_at, now=timezone.now(),
                                                            budget_seconds=self._budget_seconds())
            if self.over_budget:
                self._append_log(f"[supervisor] {self.over_budget}")
        stop = self.cancel_requested.is_set() or self.lease_lost.is_set() or self.over_budget is not None
        if stop and self.term_sent_at is None:
            why = "cancel requested" if self.cancel_requested.is_set() else self.over_budget or "lease lost"
            log.info("stage %s: %s, sending SIGTERM to the trainer", self.stage.pk, why)
            self._signal(signal.SIGTERM)
            self.term_sent_at = now
        elif (self.term_sent_at is not None and not self.killed
              and now - self.term_sent_at >= settings.REFINERY_CANCEL_GRACE_SECONDS):
            log.warning("stage %s: trainer still running %.0fs after SIGTERM, killing it",
                        self.stage.pk, now - self.term_sent_at)
            self._kill()

    def _budget_seconds(self) -> int | None:
        """The team's wall-clock budget per stage (counted from the stage's first start, across attempts)."""
        if self.budget_seconds is None:
            try:
                self.budget_seconds = quotas.team_limits(team=self.stage.run.team_id).stage_seconds or 0
            except DB_ERRORS:  # the database restarting: read it on a later tick, keep supervising
                connection.close()
                return None
        return self.budget_seconds or None

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # the trainer leads its own process group
        except ProcessLookupError:
            pass

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.killed = True
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("stage %s: trainer pid %s survived SIGKILL", self.stage.pk, self.proc.pid)

    def _read_events(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            with self.state.lock:
                self.state.last_event_at = time.monotonic()
            try:
                event = json.loads(line)
                kind = event["event"]
            except (ValueError, KeyError, TypeError):
                self.state.bad_lines += 1
                self._append_log(f"[stdout, not an event] {line}")
                continue
            self._on_event(kind, event)
            self.db_metrics.flush()

    def _on_event(self, kind: str, event: dict) -> None:
        state = self.state
        if kind == "metrics":
            step = int(event.get("step") or 0)
            ts = float(event.get("time") or time.time())
            buffer = self.buffer
            for key, value in (event.get("metrics") or {}).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    continue  # None (NaN/inf in the trainer) and non-numbers are not points
                # The DB keeps the first point per step by itself (a unique key); MLflow would keep
                # both, so a step an earlier attempt already spooled for it is not sent again.
                self.db_metrics.add(key, step, float(value), ts)
                if step <= self.replayed.get(key, -1):
                    self.skipped_points += 1
                elif buffer is not None:
                    buffer.add(key, value, step, ts)
            with state.lock:
                state.step = max(state.step, step)
        elif kind == "progress":
            with state.lock:
                state.step = int(event.get("step") or state.step)
                state.total_steps = event.get("total_steps") or state.total_steps
                state.epoch = event.get("epoch", state.epoch)
        elif kind == "started":
            with state.lock:
                state.started = event
                state.total_steps = event.get("total_steps") or state.total_steps
                state.step = int(event.get("step") or 0)
            fields = {k: event[k] for k in ("trainable_params", "total_params", "total_steps")
                      if isinstance(event.get(k), int)}
            if fields:
                db_retrying(lambda: services.stage_update(stage_run_id=self.stage.pk, **fields),
                            what=f"stage {self.stage.pk}: recording parameter counts")
            if event.get("resumed_from"):
                log.info("stage %s: resumed from %s (step %s)", self.stage.pk, event["resumed_from"],
                         event.get("step"))
        elif kind == "checkpoint":
            log.info("stage %s: checkpoint at step %s", self.stage.pk, event.get("step"))
        elif kind in ("finished", "failed", "canceled"):
            with state.lock:
                state.terminal = event
            if kind == "failed":
                # The traceback travels in the event; put it in the log so that the log tail
                # and the trainer.log artifact show where the trainer failed.
                self._append_log(f"\n[trainer failed] {event.get('error', '')}\n{event.get('traceback') or ''}")

    def _append_log(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n")

    # -- after the trainer ---------------------------------------------------------------
    def _conclude(self) -> str:
        assert self.proc is not None
        rc = self.proc.returncode
        terminal = self.state.terminal or {}
        kind = terminal.get("event")
        if self.lease_lost.is_set() and not self.cancel_requested.is_set():
            return self._give_up()
        tail = log_tail(self.log_path)
        if kind == "finished" and rc == 0:
            try:
                outputs = self._upload_outputs(terminal)
            except Exception as exc:  # noqa: BLE001 - outputs that did not reach MLflow cannot feed the next stage
                log.exception("stage %s: uploading outputs failed", self.stage.pk)
                return self._finish(Status.FAILED, error=one_line(f"could not upload the outputs to MLflow: {exc}"),
                                    tail=tail)
            summary = terminal.get("summary") or {}
            if self.stage.method == "gate":
                try:
                    summary = self._gate_apply(outputs, summary)
                except Exception as exc:  # noqa: BLE001 - a decision that could not be applied fails the stage
                    log.exception("stage %s: applying the gate decision failed", self.stage.pk)
                    return self._finish(Status.FAILED, error=one_line(str(exc)), tail=tail)
            return self._finish(Status.SUCCEEDED, outputs=outputs, summary=summary)
        if self.stalled is not None and not self.cancel_requested.is_set():
            return self._finish(Status.FAILED, error=self.stalled, tail=tail)
        if self.over_budget is not None and not self.cancel_requested.is_set():
            return self._finish(Status.FAILED, error=self.over_budget, tail=tail)
        if self.cancel_requested.is_set():
            return self._finish(Status.CANCELED, tail=tail,
                                error="canceled" + (" (killed after the grace period)" if self.killed else ""))
        if kind == "canceled" or rc == EXIT_CANCELED:
            # Stopped by a SIGTERM nobody here sent (a host shutting down): interrupted, not canceled.
            return self._retry(f"the trainer was stopped by SIGTERM at step {self.state.step}")
        if kind is None and rc is not None and -rc in RETRY_SIGNALS:
            reason = f"the trainer was killed by {signal.Signals(-rc).name} at step {self.state.step}"
            if -rc == signal.SIGKILL:
                reason += " (by the out-of-memory killer, or kill -9)"
            return self._retry(reason)
        if kind == "failed":
            error = terminal.get("error") or "the trainer failed"
        elif rc is not None and rc < 0:
            error = f"the trainer was killed by {signal.Signals(-rc).name}"
        elif kind == "finished":
            error = f"the trainer reported success but exited with status {rc}"
        else:
            last = tail.splitlines()[-1] if tail else ""
            error = f"the trainer exited with status {rc}" + (f": {last}" if last else "")
        return self._finish(Status.FAILED, error=one_line(error), tail=tail)

    def _upload_outputs(self, terminal: dict) -> dict:
        """Upload what the trainer produced (a model, an adapter or an evaluation report, plus any extra
        directories such as an export's quantized copy) and return the outputs a later stage reads."""
        produced = terminal.get("outputs") or {}
        kind = produced.get("kind")
        path = Path(produced.get("path") or "")
        if kind not in ("model", "adapter", "report") or not path.is_dir():
            raise StageSetupError(f"the trainer reported no usable output ({kind!r} at {str(path)!r})")
        uploads = [(path, kind)] + [(Path(extra.get("path") or ""), str(extra.get("artifact_path") or ""))
                                    for extra in produced.get("extra") or []]
        for local, artifact_path in uploads:
            if not local.is_dir() or not artifact_path or "/" in artifact_path or artifact_path.startswith("."):
                raise StageSetupError(f"the trainer reported an unusable extra output ({artifact_path!r} at "
                                      f"{str(local)!r})")
            retrying(lambda local=local, artifact_path=artifact_path: artifacts_upload(
                         mlflow_run_id=self.mlflow_run_id, local_path=local, artifact_path=artifact_path,
                         client=self.client),
                     what=f"stage {self.stage.pk}: uploading the {artifact_path}", timeout=OUTPUT_UPLOAD_SECONDS)
        outputs = {
            "kind": kind,
            "artifact_path": kind,
            "mlflow_run_id": self.mlflow_run_id,
            "base": self.input_ref if kind == "adapter" else None,
        }
        if len(uploads) > 1:
            outputs["extra"] = [artifact_path for _, artifact_path in uploads[1:]]
        return outputs

    def _gate_apply(self, outputs: dict, summary: dict) -> dict:
        """Record a gate stage's decision and move (or keep) the alias, before the stage is marked succeeded
        (refinery.registry.gates.gate_apply; a retried stage gets the decision recorded the first time)."""
        from refinery.registry.gates import gate_apply

        champion = self.champion
        outputs["champion"] = {k: v for k, v in champion.items() if k != "ref"} if champion else None
        decision = db_retrying(lambda: gate_apply(stage_run_id=self.stage.pk, summary=summary, champion=champion),
                               what=f"stage {self.stage.pk}: applying the gate decision")
        self._append_log(f"[supervisor] gate: {decision.message}")
        return {**summary, "decision": {"id": decision.pk, "outcome": decision.outcome, "message": decision.message}}

    def _retry(self, reason: str) -> str:
        """The trainer was stopped from outside: queue the next attempt, which resumes from the newest
        complete checkpoint; or fail the stage when this was its last attempt."""
        self._append_log(f"[supervisor] {reason}")
        tail = log_tail(self.log_path)
        self._stop_heartbeat()
        try:
            stage = db_retrying(lambda: services.stage_requeue(stage_run_id=self.stage.pk, reason=reason,
                                                               attempt=self.attempt),
                                what=f"stage {self.stage.pk}: requeueing")
        except IllegalTransition as exc:
            log.warning("stage %s: not requeueing: %s", self.stage.pk, exc)
            return "lost"
        tail = redact(tail, self._redactions())
        db_retrying(lambda: services.stage_update(stage_run_id=stage.pk, log_tail=tail),
                    what=f"stage {stage.pk}: saving the log tail")
        if stage.status == Status.QUEUED:
            log.warning("stage %s: %s; queued attempt %s of %s", stage.pk, reason, stage.attempt + 1,
                        stage.max_attempts)
            self._close_buffer()  # the MLflow run stays open for the next attempt
            return "retrying"
        log.error("stage %s: %s", stage.pk, stage.error)
        self._mirror_to_mlflow(stage, stage.status)
        self._remove_dirs()  # the last attempt: the stage has ended
        return stage.status

    def _give_up(self) -> str:
        log.warning("stage %s: giving the stage up (lease lost); another attempt owns it", self.stage.pk)
        self._kill()
        return "lost"

    def _finish(self, status: str, *, error: str = "", outputs: dict | None = None, summary: dict | None = None,
                tail: str | None = None) -> str:
        """Write the outcome to the row (the source of truth), then bring MLflow in line."""
        self._stop_heartbeat()
        if tail:
            tail = redact(tail, self._redactions())
        try:
            stage = db_retrying(lambda: services.stage_finish(
                stage_run_id=self.stage.pk, status=status, error=error, outputs=outputs, summary=summary,
                log_tail=tail, attempt=self.attempt), what=f"stage {self.stage.pk}: finishing as {status}")
        except IllegalTransition as exc:
            log.warning("stage %s: not finishing as %s: %s", self.stage.pk, status, exc)
            return "lost"
        log.info("stage %s finished: %s%s", stage.pk, status, f" ({error})" if error else "")
        if self.cancel_seen_at is not None:
            log.info("stage %s: %.1fs from seeing the cancel to the row saying %s", stage.pk,
                     time.monotonic() - self.cancel_seen_at, status)
        self._mirror_to_mlflow(stage, status)
        self._remove_dirs()  # whatever the outcome: outputs, spec and log are in MLflow, the tail on the row
        return status

    def _mirror_to_mlflow(self, stage: StageRun, status: str) -> None:
        if not self.mlflow_run_id:
            return
        self._close_buffer()
        redactions = self._redactions()
        with tempfile.TemporaryDirectory(prefix="refinery-publish-") as tmp:
            for path in (self.spec_path, self.log_path):
                if not path.exists():
                    continue
                try:
                    # A copy without host paths or global run ids (the team sees its artifacts).
                    public = Path(tmp) / path.name
                    if path == self.spec_path:
                        spec = self.spec if self.spec is not None else json.loads(path.read_text())
                        public.write_text(redacted_spec(spec, redactions))
                    else:
                        with open(path, encoding="utf-8", errors="replace") as src, \
                                open(public, "w", encoding="utf-8") as dst:
                            for line in src:
                                dst.write(redact(line, redactions))
                    artifacts_upload(mlflow_run_id=self.mlflow_run_id, local_path=public, client=self.client)
                except Exception as exc:  # noqa: BLE001 - best effort: the row has the log tail
                    log.warning("stage %s: could not upload %s: %s", stage.pk, path.name, one_line(exc, 200))
        try:
            tracking_runs.mlflow_run_end(mlflow_run_id=self.mlflow_run_id, status=status, client=self.client)
            tracking_runs.pipeline_run_end(run=stage.run, client=self.client)
        except Exception as exc:  # noqa: BLE001 - the DB is the source of truth; MLflow status is a mirror
            log.warning("stage %s: could not set the MLflow run status: %s", stage.pk, one_line(exc, 200))

    def _close_buffer(self) -> None:
        if self.buffer is None:
            return
        buffer, self.buffer = self.buffer, None
        if self.skipped_points:
            log.info("stage %s: %d replayed metric points were already recorded by an earlier attempt",
                     self.stage.pk, self.skipped_points)
        undelivered = buffer.close(timeout=float(settings.REFINERY_METRICS_DRAIN_SECONDS))
        if undelivered:
            log.error("stage %s: %d metric points never reached MLflow (%s); the DB has them",
                      self.stage.pk, undelivered, buffer.last_error)


def sweep_ended_stage_dirs() -> int:
    """Remove the work dirs (and checkpoint areas) of stages that ended without their supervisor: a queued
    retry that was canceled, or a stage the reaper failed after its last attempt. Returns how many went."""
    found: dict[tuple[int, int], Path] = {}
    root = Path(settings.REFINERY_WORK_DIR)
    for run_dir in root.glob("run-*") if root.is_dir() else ():
        for stage_dir in run_dir.glob("stage-*"):
            match = re.fullmatch(r"run-(\d+)/stage-(\d+)", f"{run_dir.name}/{stage_dir.name}")
            if match:
                found[(int(match[1]), int(match[2]))] = stage_dir
    if not found:
        return 0
    # A supervisor that just ended its stage is still publishing the log: leave recent ones to it.
    settled = timezone.now() - timedelta(seconds=SWEEP_AFTER_SECONDS)
    removed = 0
    for stage in StageRun.objects.select_related("run").filter(
            Q(finished_at__lt=settled) | Q(finished_at__isnull=True), run_id__in={run for run, _ in found},
            status__in=TERMINAL_STATES):
        work = found.get((stage.run_id, stage.index))
        if work is None:
            continue
        for folder in (work, stage_checkpoint_dir(stage)):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            work.parent.rmdir()
        except OSError:
            pass
        removed += 1
    if removed:
        log.info("removed the work dirs of %d ended stages", removed)
    return removed


def supervise_stage(*, stage_run_id: int, worker: str) -> str | None:
    """Claim and run one stage. None when it was not ours to run (claimed elsewhere, finished, canceled).

    Returns the terminal status, or "lost" when the lease was lost on the way.
    """
    # Import MLflow's client before claiming: in a fresh worker process that takes about a second, which
    # would otherwise come out of the lease between the claim and the supervisor's first renewal.
    tracking_client()
    try:
        sweep_ended_stage_dirs()
    except Exception:  # noqa: BLE001 - housekeeping never stops a stage
        log.exception("sweeping the work dirs of ended stages failed")
    stage = services.stage_claim(stage_run_id=stage_run_id, worker=worker)
    if stage is None:
        log.info("stage %s: nothing to do (already claimed, finished or canceled)", stage_run_id)
        return None
    return StageSupervisor(stage, worker=worker).run()
