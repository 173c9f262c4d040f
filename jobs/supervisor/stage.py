"""One stage, start to end: the parts (process, heartbeat, events, sinks, outcome, publish) put together.

claim -> heartbeat (lease + cancel polling) for as long as the stage is ours
      -> MLflow run + input model + spec.json          (jobs.stage_inputs)
      -> the trainer process; its events feed the state, the metric sinks and the row
      -> the trainer exits: the outcome decides; succeeded (a gate stage's decision applied
         first), failed, canceled, requeued for a resuming attempt, or given up (lease lost)
      -> the row first, then the MLflow mirror; the work dir and checkpoint area go
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time

from django.conf import settings
from django.db import connection
from django.utils import timezone
from trainers.events import Checkpoint, Event, Failed, Finished, Metrics, Started

from jobs.stage_inputs import (
    StageSetupError,
    aux_model_references,
    build_stage_spec,
    gate_references,
    input_references,
    materialize_aux_models,
    materialize_inputs,
    materialize_model,
    model_card_facts,
    model_reference,
    redact,
    resolve_configs,
    stage_checkpoint_dir,
    stage_redactions,
    stage_work_dir,
    tracking_params,
    tracking_tags,
)
from jobs.supervisor.dirs import stage_dirs_make, stage_dirs_remove, sweep_ended_stage_dirs
from jobs.supervisor.events import TrainerState, read_events
from jobs.supervisor.heartbeat import Heartbeat
from jobs.supervisor.logs import log_append, log_tail
from jobs.supervisor.outcome import Action, stage_outcome
from jobs.supervisor.process import TrainerProcess
from jobs.supervisor.publish import mlflow_mirror, outputs_upload
from jobs.supervisor.retrying import DB_ERRORS, db_retrying, one_line, with_own_connection
from jobs.supervisor.sinks import DbMetricSink, MlflowMetricSink
from jobs.trainer_env import hub_model_used, trainer_environment
from refinery.runs import selectors, services
from refinery.runs.models import IllegalTransition, StageRun, Status
from refinery.teams import quotas
from refinery.teams.models import TeamSecret
from refinery.teams.team_secrets import team_secret_reveal
from refinery.tracking import runs as tracking_runs
from refinery.tracking.client import tracking_client

log = logging.getLogger(__name__)

REACT_SECONDS = 0.2  # how often the main thread looks at the trainer while it runs


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
        self.spec: dict | None = None
        self.champion: dict | None = None  # a gate stage's champion (refinery.registry.gates.gate_champion)
        self.state = TrainerState()
        self.heartbeat = Heartbeat(
            stage_run_id=stage.pk, worker=worker, attempt=self.attempt, progress=self.state.progress
        )
        self.trainer: TrainerProcess | None = None
        self.db_metrics = DbMetricSink(stage.pk)
        self.mlflow_metrics: MlflowMetricSink | None = None
        # Why the supervisor stops the trainer (set by _react), and when it sent SIGTERM.
        self.term_sent_at: float | None = None
        self.stalled: str | None = None  # hung: no event for too long
        self.over_budget: str | None = None  # its team's wall-clock budget per stage is spent
        self.budget_seconds: int | None = None  # read once, when the trainer starts

    # -- entry point ----------------------------------------------------------------
    def run(self) -> str:
        stage = self.stage
        log.info("stage %s (run %s, attempt %s) claimed by %s", stage.pk, stage.run_id, self.attempt, self.worker)
        stage_dirs_make(self.work_dir, self.checkpoint_dir)
        self.heartbeat.start()  # downloads and uploads can outlast a lease, not only training
        try:
            try:
                self._prepare()
            except Exception as exc:  # noqa: BLE001 - every setup failure fails the stage with a clear line
                reason = str(exc) if isinstance(exc, StageSetupError) else f"{type(exc).__name__}: {exc}"
                log.exception("stage %s could not start", stage.pk)
                return self._finish(Status.FAILED, error=one_line(f"could not start the stage: {reason}"))
            if self.heartbeat.lease_lost.is_set():
                return self._give_up()
            if self.heartbeat.cancel_requested.is_set() or db_retrying(
                self.heartbeat.cancel_pending, what=f"stage {stage.pk}"
            ):
                return self._finish(Status.CANCELED, error="canceled before the trainer started")
            try:
                self._train()
            except Exception as exc:  # noqa: BLE001 - a supervisor bug must not leave the stage running
                log.exception("supervising stage %s failed", stage.pk)
                self._kill()
                return self._finish(
                    Status.FAILED,
                    error=one_line(f"supervisor error: {type(exc).__name__}: {exc}"),
                    tail=log_tail(self.log_path),
                )
            return self._conclude()
        finally:
            self.heartbeat.stop()
            self._close_mlflow_metrics()  # normally done by _finish already; this covers the lost-lease path

    def _redactions(self) -> list[tuple[str, str]]:
        return stage_redactions(self.stage, self.work_dir)

    def _append_log(self, text: str) -> None:
        log_append(self.log_path, text)

    # -- before the trainer ------------------------------------------------------------
    def _prepare(self) -> None:
        stage = self.stage
        shutil.rmtree(self.work_dir / "output", ignore_errors=True)  # checkpoints stay: a retry resumes
        config, adapter = resolve_configs(stage.spec)
        self.input_ref = model_reference(stage)
        input_refs = input_references(stage)
        params = tracking_params(
            stage=stage, config=config, adapter=adapter, input_ref=self.input_ref, inputs=input_refs
        )
        self.mlflow_run_id = tracking_runs.stage_run_ensure(
            stage=stage,
            params=params,
            tags=tracking_tags(stage=stage, input_ref=self.input_ref, inputs=input_refs),
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
        spec = build_stage_spec(
            stage=stage,
            model=model,
            config=config,
            adapter=adapter,
            work_dir=self.work_dir,
            aux_models=aux_models,
            inputs=inputs,
            card=card,
        )
        self.spec_path.write_text(json.dumps(spec, indent=2))
        self.spec = spec

    def _hub_token_env(self) -> dict[str, str]:
        """HF_TOKEN for a stage that loads its team's hub base model, if the team set a hub token: decrypted
        here, just before the trainer starts, and handed over only in its environment (never in spec.json,
        the logs or MLflow). Any other stage, and every stage of another team, gets none."""
        spec = self.spec if self.spec is not None else json.loads(self.spec_path.read_text())
        run = self.stage.run
        if not hub_model_used(spec, base_model=run.snapshot.get("base_model") or {}):
            return {}
        token = db_retrying(
            lambda: team_secret_reveal(team=run.team_id, name=TeamSecret.Name.HF_TOKEN),
            what=f"stage {self.stage.pk}: reading the team's hub token",
        )
        return {"HF_TOKEN": token} if token else {}

    # -- while the trainer runs ----------------------------------------------------------
    def _train(self) -> None:
        env = trainer_environment(base_env=os.environ, extra=self._hub_token_env())  # an allow-list
        self.trainer = trainer = TrainerProcess.start(
            spec_path=self.spec_path, work_dir=self.work_dir, log_path=self.log_path, env=env
        )
        log.info("stage %s: trainer pid %s started: %s", self.stage.pk, trainer.pid, " ".join(trainer.args))
        self.mlflow_metrics = MlflowMetricSink(
            stage_run_id=self.stage.pk,
            mlflow_run_id=self.mlflow_run_id,
            client=self.client,
            spool_path=self.work_dir / "mlflow-metrics.ndjson",
        )
        if self.attempt > 1:
            recorded = db_retrying(
                lambda: selectors.stage_metric_last_steps(stage_run_id=self.stage.pk),
                what=f"stage {self.stage.pk}: reading recorded metrics",
            )
            self.mlflow_metrics.resume(recorded)
        reader = threading.Thread(
            target=with_own_connection(self._read_events), name=f"events-{self.stage.pk}", daemon=True
        )
        reader.start()
        try:
            while trainer.running():
                self._react()
                self.db_metrics.flush()
                time.sleep(REACT_SECONDS)
        finally:
            trainer.kill_stragglers()
            reader.join(timeout=30)
            if self.db_metrics.drain():
                log.error("stage %s: metric points never reached the database", self.stage.pk)
        log.info("stage %s: trainer exited with %s", self.stage.pk, trainer.returncode)

    def _read_events(self) -> None:
        assert self.trainer is not None and self.trainer.stdout is not None
        read_events(
            self.trainer.stdout,
            self.state,
            on_event=self._on_event,
            on_bad_line=lambda line: self._append_log(f"[stdout, not an event] {line}"),
        )

    def _on_event(self, event: Event) -> None:
        """What an event causes besides the state (TrainerState.apply has run)."""
        if isinstance(event, Metrics):
            ts = event.time or time.time()
            for key, value in event.metrics.items():
                self.db_metrics.add(key, event.step, value, ts)
                if self.mlflow_metrics is not None:
                    self.mlflow_metrics.add(key, value, event.step, ts)
        elif isinstance(event, Started):
            fields = {
                k: v
                for k, v in (
                    ("trainable_params", event.trainable_params),
                    ("total_params", event.total_params),
                    ("total_steps", event.total_steps),
                )
                if v is not None
            }
            if fields:
                db_retrying(
                    lambda: services.stage_update(stage_run_id=self.stage.pk, **fields),
                    what=f"stage {self.stage.pk}: recording parameter counts",
                )
            if event.resumed_from:
                log.info("stage %s: resumed from %s (step %s)", self.stage.pk, event.resumed_from, event.step)
        elif isinstance(event, Checkpoint):
            log.info("stage %s: checkpoint at step %s", self.stage.pk, event.step)
        elif isinstance(event, Failed):
            # The traceback travels in the event; put it in the log so that the log tail
            # and the trainer.log artifact show where the trainer failed.
            self._append_log(f"\n[trainer failed] {event.error}\n{event.traceback}")
        self.db_metrics.flush()

    def _react(self) -> None:
        """Stop the trainer when asked (SIGTERM, then SIGKILL after the grace period), or when it hangs."""
        assert self.trainer is not None
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
            self.over_budget = quotas.stage_budget_exceeded(
                started_at=self.stage.started_at, now=timezone.now(), budget_seconds=self._budget_seconds()
            )
            if self.over_budget:
                self._append_log(f"[supervisor] {self.over_budget}")
        cancel, lease_lost = self.heartbeat.cancel_requested.is_set(), self.heartbeat.lease_lost.is_set()
        if (cancel or lease_lost or self.over_budget is not None) and self.term_sent_at is None:
            why = "cancel requested" if cancel else self.over_budget or "lease lost"
            log.info("stage %s: %s, sending SIGTERM to the trainer", self.stage.pk, why)
            self.trainer.signal(signal.SIGTERM)
            self.term_sent_at = now
        elif (
            self.term_sent_at is not None
            and not self.trainer.killed
            and now - self.term_sent_at >= settings.REFINERY_CANCEL_GRACE_SECONDS
        ):
            log.warning(
                "stage %s: trainer still running %.0fs after SIGTERM, killing it",
                self.stage.pk,
                now - self.term_sent_at,
            )
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

    def _kill(self) -> None:
        if self.trainer is not None:
            self.trainer.kill()

    # -- after the trainer ---------------------------------------------------------------
    def _conclude(self) -> str:
        assert self.trainer is not None
        last_event = self.state.terminal
        tail = log_tail(self.log_path)
        outcome = stage_outcome(
            returncode=self.trainer.returncode,
            last_event=last_event,
            cancel_requested=self.heartbeat.cancel_requested.is_set(),
            lease_lost=self.heartbeat.lease_lost.is_set(),
            stalled=self.stalled,
            over_budget=self.over_budget,
            killed=self.trainer.killed,
            step=self.state.step,
            last_log_line=tail.splitlines()[-1] if tail else "",
        )
        if outcome.action is Action.GIVE_UP:
            return self._give_up()
        if outcome.action is Action.RETRY:
            return self._retry(outcome.message)
        if outcome.action is Action.CANCEL:
            return self._finish(Status.CANCELED, error=outcome.message, tail=tail)
        if outcome.action is Action.FAIL:
            return self._finish(Status.FAILED, error=outcome.message, tail=tail)
        assert isinstance(last_event, Finished)
        return self._succeed(last_event, tail)

    def _succeed(self, finished: Finished, tail: str) -> str:
        """Upload the outputs; for a gate stage, apply its decision; then mark the stage succeeded."""
        try:
            outputs = outputs_upload(
                finished,
                stage_run_id=self.stage.pk,
                mlflow_run_id=self.mlflow_run_id,
                client=self.client,
                input_ref=self.input_ref,
            )
        except Exception as exc:  # noqa: BLE001 - outputs that did not reach MLflow cannot feed the next stage
            log.exception("stage %s: uploading outputs failed", self.stage.pk)
            return self._finish(
                Status.FAILED, error=one_line(f"could not upload the outputs to MLflow: {exc}"), tail=tail
            )
        summary = finished.summary
        if self.stage.method == "gate":
            try:
                summary = self._gate_apply(outputs, summary)
            except Exception as exc:  # noqa: BLE001 - a decision that could not be applied fails the stage
                log.exception("stage %s: applying the gate decision failed", self.stage.pk)
                return self._finish(Status.FAILED, error=one_line(str(exc)), tail=tail)
        return self._finish(Status.SUCCEEDED, outputs=outputs, summary=summary)

    def _gate_apply(self, outputs: dict, summary: dict) -> dict:
        """Record a gate stage's decision and move (or keep) the alias, before the stage is marked succeeded
        (refinery.registry.gates.gate_apply; a retried stage gets the decision recorded the first time)."""
        from refinery.registry.gates import gate_apply

        champion = self.champion
        outputs["champion"] = {k: v for k, v in champion.items() if k != "ref"} if champion else None
        decision = db_retrying(
            lambda: gate_apply(stage_run_id=self.stage.pk, summary=summary, champion=champion),
            what=f"stage {self.stage.pk}: applying the gate decision",
        )
        self._append_log(f"[supervisor] gate: {decision.message}")
        return {**summary, "decision": {"id": decision.pk, "outcome": decision.outcome, "message": decision.message}}

    def _retry(self, reason: str) -> str:
        """The trainer was stopped from outside: queue the next attempt, which resumes from the newest
        complete checkpoint; or fail the stage when this was its last attempt."""
        self._append_log(f"[supervisor] {reason}")
        tail = log_tail(self.log_path)
        self.heartbeat.stop()
        try:
            stage = db_retrying(
                lambda: services.stage_requeue(stage_run_id=self.stage.pk, reason=reason, attempt=self.attempt),
                what=f"stage {self.stage.pk}: requeueing",
            )
        except IllegalTransition as exc:
            log.warning("stage %s: not requeueing: %s", self.stage.pk, exc)
            return "lost"
        tail = redact(tail, self._redactions())
        db_retrying(
            lambda: services.stage_update(stage_run_id=stage.pk, log_tail=tail),
            what=f"stage {stage.pk}: saving the log tail",
        )
        if stage.status == Status.QUEUED:
            log.warning(
                "stage %s: %s; queued attempt %s of %s", stage.pk, reason, stage.attempt + 1, stage.max_attempts
            )
            self._close_mlflow_metrics()  # the MLflow run stays open for the next attempt
            return "retrying"
        log.error("stage %s: %s", stage.pk, stage.error)
        self._mirror_to_mlflow(stage, stage.status)
        stage_dirs_remove(self.work_dir, self.checkpoint_dir, stage_run_id=self.stage.pk)  # the last attempt
        return stage.status

    def _give_up(self) -> str:
        log.warning("stage %s: giving the stage up (lease lost); another attempt owns it", self.stage.pk)
        self._kill()
        return "lost"

    def _finish(
        self,
        status: str,
        *,
        error: str = "",
        outputs: dict | None = None,
        summary: dict | None = None,
        tail: str | None = None,
    ) -> str:
        """Write the outcome to the row (the source of truth), then bring MLflow in line."""
        self.heartbeat.stop()
        if tail:
            tail = redact(tail, self._redactions())
        try:
            stage = db_retrying(
                lambda: services.stage_finish(
                    stage_run_id=self.stage.pk,
                    status=status,
                    error=error,
                    outputs=outputs,
                    summary=summary,
                    log_tail=tail,
                    attempt=self.attempt,
                ),
                what=f"stage {self.stage.pk}: finishing as {status}",
            )
        except IllegalTransition as exc:
            log.warning("stage %s: not finishing as %s: %s", self.stage.pk, status, exc)
            return "lost"
        log.info("stage %s finished: %s%s", stage.pk, status, f" ({error})" if error else "")
        if self.heartbeat.cancel_seen_at is not None:
            log.info(
                "stage %s: %.1fs from seeing the cancel to the row saying %s",
                stage.pk,
                time.monotonic() - self.heartbeat.cancel_seen_at,
                status,
            )
        self._mirror_to_mlflow(stage, status)
        # Whatever the outcome: outputs, spec and log are in MLflow, the tail on the row.
        stage_dirs_remove(self.work_dir, self.checkpoint_dir, stage_run_id=self.stage.pk)
        return status

    def _mirror_to_mlflow(self, stage: StageRun, status: str) -> None:
        if not self.mlflow_run_id:
            return
        self._close_mlflow_metrics()
        mlflow_mirror(
            stage,
            status,
            mlflow_run_id=self.mlflow_run_id,
            client=self.client,
            spec_path=self.spec_path,
            spec=self.spec,
            log_path=self.log_path,
            redactions=self._redactions(),
        )

    def _close_mlflow_metrics(self) -> None:
        if self.mlflow_metrics is None:
            return
        sink, self.mlflow_metrics = self.mlflow_metrics, None
        sink.close()


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
