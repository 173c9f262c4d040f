"""Buffered metric logging: points pile up in memory and leave in one `log_batch` per flush.

One `log_metric` call costs a round trip (tens of milliseconds); a `log_batch` of
a thousand points costs little more (see bench/mlflow_batching.py). The buffer also
rides out an MLflow outage: a failed flush keeps its points, and the next flush,
after a growing pause, sends them again (MLflow drops exact duplicates, so a
retried batch that did arrive the first time does no harm). Memory stays bounded:
past `max_points` the oldest points are dropped, counted and reported.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's own limit for one log_batch


@dataclass(frozen=True)
class Point:
    key: str
    value: float
    step: int
    timestamp_ms: int


class MetricBuffer:
    """Collects metric points of one MLflow run and sends them with log_batch from a thread.

    `add()` never blocks on the network and never raises because MLflow is down. The
    background thread flushes every `flush_seconds` or as soon as `flush_points` are
    waiting; `close()` drains what is left, retrying until `close_timeout` seconds.
    """

    def __init__(self, *, run_id: str, tracking_uri: str | None = None, client=None,
                 flush_seconds: float = 2.0, flush_points: int = 500, max_points: int = 1_000_000,
                 retry_min_seconds: float = 1.0, retry_max_seconds: float = 30.0):
        if client is None:
            from refinery.tracking.client import tracking_client

            client = tracking_client(tracking_uri)
        self.client = client
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.flush_points = max(1, min(flush_points, MAX_METRICS_PER_BATCH))
        self.max_points = max_points
        self.retry_min_seconds = retry_min_seconds
        self.retry_max_seconds = retry_max_seconds
        self.sent = 0
        self.dropped = 0
        self.failures = 0
        self.last_error: str = ""
        self._pending: deque[Point] = deque()
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()  # one log_batch in flight at a time
        self._closing = False
        self._thread: threading.Thread | None = None

    # -- producer side ----------------------------------------------------------
    def add(self, key: str, value: float | None, step: int, timestamp: float | None = None) -> bool:
        """Queue one point (`timestamp` in unix seconds); None and non-finite values are skipped."""
        if value is None:
            return False
        value = float(value)
        if not math.isfinite(value):
            return False
        ts = int((timestamp if timestamp is not None else time.time()) * 1000)
        with self._cond:
            self._pending.append(Point(key, value, int(step), ts))
            overflow = len(self._pending) - self.max_points
            for _ in range(max(0, overflow)):
                self._pending.popleft()
                self.dropped += 1
            if overflow > 0 and self.dropped == overflow:
                log.warning("metric buffer for run %s is full (%d points); dropping the oldest",
                            self.run_id, self.max_points)
            if len(self._pending) >= self.flush_points:
                self._cond.notify_all()
        return True

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    # -- sending ----------------------------------------------------------------
    def flush(self) -> bool:
        """Send up to 1000 waiting points in one log_batch. True if nothing is left unsent by it."""
        from mlflow.entities import Metric

        with self._send_lock:
            with self._cond:
                batch = [self._pending[i] for i in range(min(len(self._pending), MAX_METRICS_PER_BATCH))]
            if not batch:
                return True
            try:
                self.client.log_batch(
                    self.run_id,
                    metrics=[Metric(p.key, p.value, p.timestamp_ms, p.step) for p in batch],
                    synchronous=True,
                )
            except Exception as exc:  # noqa: BLE001 - any failure means: keep the points, try later
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                if self.failures == 1 or self.failures % 10 == 0:
                    log.warning("MLflow log_batch for run %s failed (%d failures so far, %d points kept): %s",
                                self.run_id, self.failures, self.pending, self.last_error)
                return False
            with self._cond:
                # The points sent are the oldest ones, unless the overflow dropped some meanwhile.
                for point in batch:
                    if self._pending and self._pending[0] == point:
                        self._pending.popleft()
                self.sent += len(batch)
            return True

    def start(self) -> MetricBuffer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"mlflow-metrics-{self.run_id[:8]}",
                                            daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                wait = backoff or self.flush_seconds
                deadline = time.monotonic() + wait
                while not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (not backoff and len(self._pending) >= self.flush_points):
                        break
                    self._cond.wait(remaining)
                if self._closing:
                    return
            if self.flush():
                backoff = 0.0
            else:
                backoff = min(self.retry_max_seconds, max(self.retry_min_seconds, backoff * 2))

    def close(self, timeout: float = 60.0) -> int:
        """Stop the thread and send everything left, retrying for up to `timeout` seconds.

        Returns the number of points that could not be delivered (0 when all arrived).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        backoff = self.retry_min_seconds
        while self.pending and time.monotonic() < deadline:
            if self.flush():
                continue
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(self.retry_max_seconds, backoff * 2)
        left = self.pending
        if left:
            log.error("gave up sending %d metric points to MLflow run %s: %s", left, self.run_id, self.last_error)
        return left

    def __enter__(self) -> MetricBuffer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
