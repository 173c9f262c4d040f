"""Where metric points go: the database (the live chart) and MLflow (through a spool on disk).

Points are keyed by step: an attempt that resumes from a checkpoint replays the steps after it, and
the points an earlier attempt already recorded (in the DB, or accepted by the on-disk MLflow spool)
are not recorded again, so neither store drops or duplicates a step. The DB keeps the first point
per step by itself (a unique key); MLflow would keep both, so this sink skips them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

from jobs.supervisor.retrying import DB_ERRORS, db_retrying, one_line
from refinery.runs import services
from refinery.tracking.buffer import MetricBuffer

log = logging.getLogger(__name__)

DB_METRICS_FLUSH_SECONDS = 1.0
DB_METRICS_FLUSH_POINTS = 200
DB_METRICS_MAX_POINTS = 200_000  # kept in memory while the database is away; the oldest go first
BACKFILL_SECONDS = 30.0  # how long a resumed attempt waits for MLflow to backfill the DB's missing points


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
            due = (
                force
                or len(self._points) >= DB_METRICS_FLUSH_POINTS
                or (time.monotonic() - self._last >= DB_METRICS_FLUSH_SECONDS)
            )
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
            log.warning(
                "stage %s: %d metric points wait for the database (%s)",
                self.stage_run_id,
                len(self._points),
                one_line(exc, 200),
            )
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


class MlflowMetricSink:
    """Metric points for MLflow, batched through a spool on disk in the work dir: what an earlier attempt
    left unsent is sent first, and the steps it spooled are not sent twice. On another host (no spool)
    the steps in the DB stand in for them (:meth:`resume`)."""

    def __init__(self, *, stage_run_id: int, mlflow_run_id: str, client, spool_path: Path):
        self.stage_run_id = stage_run_id
        self.mlflow_run_id = mlflow_run_id
        self.client = client
        self.buffer = MetricBuffer(run_id=mlflow_run_id, client=client, spool_path=spool_path).start()
        self.replayed: dict[str, int] = dict(self.buffer.prior_steps)  # per metric, the last step already sent
        self.skipped_points = 0

    def add(self, key: str, value: float, step: int, timestamp: float) -> None:
        if step <= self.replayed.get(key, -1):
            self.skipped_points += 1
        else:
            self.buffer.add(key, value, step, timestamp)

    def resume(self, recorded: dict[str, int]) -> None:
        """A later attempt: `recorded` is the last step per metric in the DB. Backfill the DB from MLflow,
        and skip what either store has."""
        if self.buffer.recovered:
            log.info(
                "stage %s: sending %d metric points an earlier attempt left unsent",
                self.stage_run_id,
                self.buffer.recovered,
            )
        self._backfill_db(recorded)
        for key, step in recorded.items():
            self.replayed[key] = max(step, self.replayed.get(key, step))

    def _backfill_db(self, recorded: dict[str, int]) -> None:
        """Copy into the DB the points an earlier attempt spooled for MLflow but never wrote to the DB
        (its worker died within a DB flush interval). The resumed trainer replays only the steps after
        its checkpoint, so without this the live chart would miss the ones just before it."""
        behind = {
            key: recorded.get(key, 0) for key, last in self.buffer.prior_steps.items() if last > recorded.get(key, 0)
        }
        if not behind:
            return
        deadline = time.monotonic() + BACKFILL_SECONDS
        while self.buffer.pending and time.monotonic() < deadline:  # MLflow must have them first
            if not self.buffer.flush():
                time.sleep(1.0)
        try:
            points = [
                (key, m.step, m.value, m.timestamp / 1000.0)
                for key, after in behind.items()
                for m in self.client.get_metric_history(self.mlflow_run_id, key)
                if m.step > after
            ]
        except Exception as exc:  # noqa: BLE001 - MLflow away: the chart keeps a gap, MLflow has it all
            log.warning("stage %s: could not backfill metrics from MLflow: %s", self.stage_run_id, one_line(exc, 200))
            return
        db_retrying(
            lambda: services.stage_metrics_record(stage_run_id=self.stage_run_id, points=points),
            what=f"stage {self.stage_run_id}: backfilling metrics",
        )
        log.info(
            "stage %s: backfilled %d metric points the last attempt had not written to the DB",
            self.stage_run_id,
            len(points),
        )

    def close(self) -> None:
        """Send what is left (waiting up to REFINERY_METRICS_DRAIN_SECONDS) and stop."""
        if self.skipped_points:
            log.info(
                "stage %s: %d replayed metric points were already recorded by an earlier attempt",
                self.stage_run_id,
                self.skipped_points,
            )
        undelivered = self.buffer.close(timeout=float(settings.REFINERY_METRICS_DRAIN_SECONDS))
        if undelivered:
            log.error(
                "stage %s: %d metric points never reached MLflow (%s); the DB has them",
                self.stage_run_id,
                undelivered,
                self.buffer.last_error,
            )
